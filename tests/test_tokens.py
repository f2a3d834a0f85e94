"""Token counting must work offline and agree with tiktoken's published encodings."""

import socket

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agent import tokens


def test_known_encodings_match_tiktoken_reference_ids():
    # Reference ids from OpenAI's cl100k_base / o200k_base ("hello world").
    assert tokens.encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert tokens.encoding("o200k_base").encode("hello world") == [24912, 2375]


def test_count_is_offline(monkeypatch):
    tokens.encoding.cache_clear()

    def no_network(*args, **kwargs):
        raise AssertionError("tokens tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert tokens.count("hi") == 1
    assert tokens.count("I understand how frustrating this wait has been, Mr. Carter.") > 8


def test_special_token_text_is_counted_not_rejected():
    assert tokens.count("<|endoftext|>") > 1


def test_unknown_encoding_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown encoding"):
        tokens.encoding("r2d2_base")


def test_count_messages_adds_the_per_message_overhead():
    history = [SystemMessage("You are Mr. Carter."), HumanMessage("hello"), AIMessage("what?")]
    text_only = sum(tokens.count(str(m.content)) for m in history)
    assert tokens.count_messages(history) == text_only + 3 * tokens.MESSAGE_OVERHEAD + 2
