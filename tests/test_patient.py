"""The patient chain: prompt building per backend style (no model), the role filter, and two
recorded replies from the real model (the only cassettes here)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agent import mood as mood_rules
from agent.models import PATIENT_SLOT
from agent.patient import (
    MAX_SENTENCES,
    PROMPTS,
    _clean_start,
    _sentences,
    build_messages,
    direction,
    out_of_role,
    patient_model,
    prefix_messages,
    prompt_tokens,
    release,
    stream_reply,
)
from agent.personas import load_persona
from agent.tokens import count_messages
from agent.transcript import Transcript

CARTER = load_persona("carter-wrong-day")


def transcript(*trainee_lines: str) -> Transcript:
    """The opening line, written under the starting mood, then the trainee's lines."""
    record = Transcript()
    record.add("patient", CARTER.opening_line, direction(CARTER, mood_rules.initial(CARTER)))
    for line in trainee_lines:
        record.add("trainee", line)
    return record


# -- the role filter ----------------------------------------------------------------------------

OUT_OF_ROLE = [
    "How can I help you today?",
    "Hi! How may I assist you?",
    "I'm happy to help with that.",
    "As an AI, I don't have feelings.",
    "I am an AI assistant.",
    "I'm just a language model.",
    "Receptionist: Let me check that for you.",
    "Thank you for calling our clinic.",
    "Our clinic policy says no same-day visits.",
    "I'll transfer you to the right department.",
    "Please hold.",
    "I understand your frustration.",
    "I'm sorry you're not getting the service you expected.",
    "You should empathize with the patient first.",
    "Is there anything else I can do for you?",
]
IN_ROLE = [
    "I want to see a doctor today.",
    "Your clinic is a joke.",
    "Don't tell me to calm down!",
    "I'm leaving town tomorrow, so that doesn't help me.",
    "Fine. Call me before five.",
    "Are you even listening to me?",
    "I need help, not excuses.",
    "My son is eight and he can't walk properly.",
]


@pytest.mark.parametrize("text", OUT_OF_ROLE)
def test_filter_catches_staff_coach_and_ai_talk(text):
    assert out_of_role(text) is not None


@pytest.mark.parametrize("text", IN_ROLE)
def test_filter_lets_the_patient_speak(text):
    assert out_of_role(text) is None


def test_filter_patterns_live_in_a_prompt_file():
    lines = (PROMPTS / "patient_out_of_role.txt").read_text().splitlines()
    assert sum(1 for line in lines if line and not line.startswith("#")) >= 10


def test_release_trims_at_the_first_out_of_role_sentence():
    notes: list[str] = []
    chunks = iter(["I waited forty", " minutes. I'm leaving", " town tomorrow! How can I help", " you today? Bye."])
    assert list(release(chunks, CARTER, notes)) == ["I waited forty minutes.", " I'm leaving town tomorrow!"]
    assert notes and notes[0].startswith("trimmed: ")


def test_release_rejects_an_out_of_role_first_sentence():
    notes: list[str] = []
    assert list(release(iter(["As an AI, I cannot be upset. ", "But fine."]), CARTER, notes)) == []
    assert notes[0].startswith("rejected: ")


def test_release_caps_the_reply_at_three_sentences():
    chunks = iter(["One. Two! Three? Four. Five."])
    assert len(list(release(chunks, CARTER))) == MAX_SENTENCES


def test_sentences_and_label_cleanup():
    assert list(_sentences(iter(["Hi. ", "You there?", " Ok"]))) == ["Hi.", "You there?", "Ok"]
    assert _clean_start("Mr. Carter: Fine.", CARTER) == "Fine."
    assert _clean_start("[angrily] Fine.", CARTER) == "Fine."
    assert _clean_start('"Fine."', CARTER) == "Fine."


# -- prompts (no model) ----------------------------------------------------------------------------

ANGRY = mood_rules.initial(CARTER)
CALMER = mood_rules.Mood(anger=5.5, trust=4.5, turn=1, previous_anger=8)


def test_direction_is_the_mood_in_words_or_the_ending():
    assert direction(CARTER, ANGRY) == mood_rules.describe(ANGRY, CARTER)
    assert direction(CARTER, CALMER) != direction(CARTER, ANGRY)
    ending = direction(CARTER, ANGRY, "walked_out")
    assert ending.startswith("Mr. Carter ") and "walks out" in ending


def test_transcript_prompt_is_an_assistant_prefill_ending_on_the_patient_label():
    messages = build_messages(CARTER, transcript("Calm down, sir."), CALMER, "transcript")
    assert len(messages) == 2 and isinstance(messages[0], HumanMessage) and isinstance(messages[-1], AIMessage)
    body = messages[-1].content
    assert body.endswith(f"\n[Mr. Carter is {mood_rules.describe(CALMER, CARTER)}.]\nMr. Carter:")
    assert "Receptionist: Calm down, sir.\n" in body
    # The opening line keeps the direction it was written under (the starting mood), right before it.
    assert f"[Mr. Carter is {mood_rules.describe(ANGRY, CARTER)}.]\nMr. Carter: {CARTER.opening_line}\n" in body
    assert CARTER.needs in body and CARTER.facts[0] in body


def test_each_patient_line_keeps_its_own_direction():
    history = transcript("Calm down, sir.")
    history.add("patient", "Don't tell me to calm down!", "furious, does not trust the staff at all")
    history.add("trainee", "I'm sorry, Mr. Carter.")
    body = build_messages(CARTER, history, CALMER)[-1].content
    lines = body.splitlines()
    start = lines.index(f"Mr. Carter: {CARTER.opening_line}") - 1
    assert lines[start:] == [
        f"[Mr. Carter is {direction(CARTER, ANGRY)}.]",
        f"Mr. Carter: {CARTER.opening_line}",
        "Receptionist: Calm down, sir.",
        "[Mr. Carter is furious, does not trust the staff at all.]",
        "Mr. Carter: Don't tell me to calm down!",
        "Receptionist: I'm sorry, Mr. Carter.",
        f"[Mr. Carter is {direction(CARTER, CALMER)}.]",
        "Mr. Carter:",
    ]


def test_the_prompt_only_grows_at_its_end():
    """Next turn's prompt is this one plus the answer, the trainee's line, a direction and the tag."""
    history = transcript("Calm down, sir.")
    first = build_messages(CARTER, history, ANGRY)
    history.add("patient", "Don't tell me to calm down!", direction(CARTER, ANGRY))
    history.add("trainee", "I'm sorry, Mr. Carter.")
    second = build_messages(CARTER, history, CALMER)
    assert first[0] == second[0]
    assert second[-1].content.startswith(first[-1].content + " Don't tell me to calm down!\n")


def test_prefix_messages_are_exactly_the_front_of_the_next_prompt():
    history = transcript()
    prefix = prefix_messages(CARTER, history, ANGRY)
    assert prefix[0] == build_messages(CARTER, history, ANGRY)[0]
    assert prefix[-1].content.endswith(f"Mr. Carter: {CARTER.opening_line}\n")
    history.add("trainee", "I'm sorry, Mr. Carter.")
    for mood in (ANGRY, CALMER):  # whatever the trainee's line does to the mood
        assert prefix_messages(CARTER, transcript(), mood) == prefix
        full = build_messages(CARTER, history, mood)[-1].content
        assert full.startswith(prefix[-1].content)
        assert full[len(prefix[-1].content) :].splitlines() == [
            "Receptionist: I'm sorry, Mr. Carter.",
            f"[Mr. Carter is {direction(CARTER, mood)}.]",
            "Mr. Carter:",
        ]


def test_the_mood_words_reach_the_prompt():
    calm = mood_rules.Mood(anger=1, trust=9, turn=3)
    furious = mood_rules.Mood(anger=9.5, trust=0.5, turn=3)
    calm_text = build_messages(CARTER, transcript("x"), calm)[-1].content
    furious_text = build_messages(CARTER, transcript("x"), furious)[-1].content
    assert calm_text.splitlines()[-2].startswith("[Mr. Carter is calm")
    assert furious_text.splitlines()[-2].startswith("[Mr. Carter is furious")


def test_chat_prompt_maps_roles_and_puts_the_mood_last():
    messages = build_messages(CARTER, transcript("I'm sorry, Mr. Carter."), CALMER, "chat")
    assert isinstance(messages[0], SystemMessage) and "still angry" not in messages[0].content
    assert messages[0] == build_messages(CARTER, transcript("x"), ANGRY, "chat")[0]  # a stable, cached front
    assert isinstance(messages[1], AIMessage) and messages[1].content == CARTER.opening_line
    assert isinstance(messages[2], HumanMessage) and messages[2].content == "I'm sorry, Mr. Carter."
    assert isinstance(messages[-1], SystemMessage) and direction(CARTER, CALMER) in messages[-1].content
    last = build_messages(CARTER, transcript("x"), CALMER, "chat", ending="resolved")[-1].content
    assert last.startswith("This is your last line:") and direction(CARTER, CALMER, "resolved") in last


@pytest.mark.parametrize("ending", ["resolved", "walked_out", "hung_up", "escalated"])
def test_endings_become_the_last_stage_direction(ending):
    body = build_messages(CARTER, transcript("x"), mood_rules.initial(CARTER), ending=ending)[-1].content
    assert body.splitlines()[-2] == f"[{direction(CARTER, ANGRY, ending)}.]"
    assert "Mr. Carter is" not in body.splitlines()[-2]


def test_prompt_tokens_are_counted_with_tiktoken():
    messages = build_messages(CARTER, transcript("x"), ANGRY)
    assert prompt_tokens(messages) == count_messages(messages) > 200


def test_staff_label_follows_the_channel():
    assert load_persona("lopez-deployed-hinge").staff_label == "Staff"
    assert load_persona("facebook-review").staff_label == "Clinic"


def test_the_patient_model_is_pinned_to_its_slot(llm_settings):
    model = patient_model(llm_settings)
    assert model.slot == PATIENT_SLOT and model.prompt_style == "transcript"


# -- recorded model traffic -------------------------------------------------------------------------


@pytest.mark.vcr
@pytest.mark.block_network
def test_streamed_reply_is_short_and_in_character(llm_settings):
    history = transcript("Your appointment is tomorrow at ten, Mr. Carter. There's nothing I can do today.")
    mood = mood_rules.Mood(anger=9, trust=2, turn=1, previous_anger=8)
    notes: list[str] = []
    pieces = list(stream_reply(CARTER, history, mood, patient_model(llm_settings), temperature=0, seed=7,
                               notes=notes))  # fmt: skip
    text = "".join(pieces)
    assert 1 <= len(pieces) <= MAX_SENTENCES
    assert text.strip() and out_of_role(text) is None
    assert not text.lower().startswith("mr. carter:")


@pytest.mark.vcr
@pytest.mark.block_network
def test_reply_to_a_calming_line(llm_settings):
    history = transcript("I'm so sorry, Mr. Carter. I'll check for a cancellation this afternoon right now.")
    mood = mood_rules.Mood(anger=3, trust=7, turn=3, previous_anger=5, credits={"offer_solution": 1.0})
    text = "".join(stream_reply(CARTER, history, mood, patient_model(llm_settings), temperature=0, seed=7))
    assert text.strip() and out_of_role(text) is None
