"""The patient chain: the model plays the persona, one to three sentences a turn, streamed.

Prompting follows the backend (``settings.capabilities.prompt_style``):

* ``transcript`` (embedded 1.5B model): measured here, under a chat system prompt it slips into
  the clinic assistant's role ("I'm here to help, but ..."), while it stays in role when asked to
  continue a transcript. The transcript goes in as an *assistant prefill* (the last message is an
  assistant message ending in ``"Mr. Carter:"``), which llama.cpp continues; a stop at the newline
  ends the line. The mood appears as a stage direction just before that line, where a small model
  cannot miss it, and every earlier line keeps the direction it was written under: the prompt only
  ever grows at its end, so the server's prompt cache holds all of it but the new trainee line,
  the new direction and the speaker tag (a few dozen tokens to read per turn).
* ``chat`` (large hosted models): a system prompt describing the character, the conversation with
  the trainee as the user and the patient as the assistant, and the mood last, as a system note.

All prompt text lives in ``agent/prompts/patient_*.txt`` and the persona YAML.

Every reply passes a post-filter (:func:`out_of_role`) that catches the model speaking as staff,
coaching, or mentioning being an AI. Text is released sentence by sentence, each checked before
it is shown; an out-of-role first sentence triggers one regeneration (another seed), then a
persona fallback line; an out-of-role later sentence ends the reply there (trim).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from agent import tokens
from agent.llm import LLMSettings, PromptStyle
from agent.models import PATIENT_SLOT, ModelUnavailable, PatientModel, ServedModel
from agent.mood import Mood, Outcome, describe
from agent.neutral import prompt_text
from agent.personas import Persona
from agent.transcript import Message, Transcript

PROMPTS = Path(__file__).resolve().parent / "prompts"
MAX_SENTENCES = 3
MAX_TOKENS = 90
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")

_SCENES = {
    "front_desk": "a conversation at {setting}",
    "phone": "a phone call: {setting}",
    "chat": "a text chat: {setting}",
    "public_post": "a public comment thread: {setting}",
}


class PatientUnavailable(ModelUnavailable):
    """The model server could not produce the patient's reply (down, timed out, refused)."""


OMITTED = "[... earlier conversation not shown ...]"


@cache
def prompt(name: str) -> str:
    return (PROMPTS / f"patient_{name}.txt").read_text(encoding="utf-8")


@cache
def _out_of_role_patterns() -> tuple[re.Pattern[str], ...]:
    lines = [line.strip() for line in prompt("out_of_role").splitlines()]
    return tuple(re.compile(line, re.IGNORECASE) for line in lines if line and not line.startswith("#"))


@cache
def _endings() -> dict[str, str]:
    pairs = (line.split(":", 1) for line in prompt("endings").splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def out_of_role(text: str) -> str | None:
    """The pattern that shows ``text`` is not the patient speaking (staff, coach, AI), or None."""
    normalised = text.replace("\u2019", "'")
    for pattern in _out_of_role_patterns():
        if pattern.search(normalised):
            return pattern.pattern
    return None


def _fields(persona: Persona, mood: Mood) -> dict[str, str]:
    facts = "".join(f"{fact} " for fact in persona.facts) or "only what is described above. "
    return {
        "label": persona.address_as,
        "name": persona.name,
        "age": str(persona.age),
        "who": "patient" if persona.channel != "public_post" else "patient posting online",
        "pronoun_self": "themself",
        "staff": _staff_phrase(persona),
        "scene": _SCENES[persona.channel].format(setting=persona.setting),
        "situation": persona.situation,
        "backstory": persona.backstory,
        "needs": persona.needs,
        "facts": facts,
        "style": persona.style.rstrip("."),
        "mood": describe(mood, persona),
    }


def _staff_phrase(persona: Persona) -> str:
    return {
        "front_desk": "the Receptionist",
        "phone": "the Staff member on the line",
        "chat": "the Clinic's chat representative",
        "public_post": "the Clinic's social media team",
    }[persona.channel]


def direction(persona: Persona, mood: Mood, ending: Outcome | None = None) -> str:
    """The stage direction for the patient's next line: the mood in words, or how the session ends."""
    fields = _fields(persona, mood)
    return fields["mood"] if ending is None else _endings()[ending].format(**fields)


def _cue(persona: Persona, text: str) -> str:
    """The stage-direction line for :func:`direction`'s ``text``: ``[Mr. Carter is <mood>.]``, or an
    ending, which is a whole sentence about the patient already (``[Mr. Carter walks out ...]``)."""
    if text.startswith(f"{persona.address_as} "):
        return f"[{text}.]\n"
    return prompt("mood_direction").format(label=persona.address_as, mood=text)


def _speakers(persona: Persona) -> list[str]:
    return [persona.staff_label, persona.address_as, persona.name, persona.first_name]


def _line(persona: Persona, message: Message) -> str:
    """One transcript line; the words are neutralised (:func:`agent.neutral.prompt_text`), so a
    reply cannot close the transcript, open a system turn or speak as the patient."""
    content = prompt_text(message.content, _speakers(persona))
    if message.role == "trainee":
        return f"{persona.staff_label}: {content}\n"
    cue = _cue(persona, message.direction) if message.direction else ""
    return f"{cue}{persona.address_as}: {content}\n"


def build_messages(
    persona: Persona,
    transcript: Transcript,
    mood: Mood,
    style: PromptStyle = "transcript",
    ending: Outcome | None = None,
) -> list[BaseMessage]:
    """The messages for the patient's next line (pure: no model call).

    ``transcript`` is what the patient remembers (the session trims it to the model's context);
    each patient line carries the direction it was written under, so this prompt is the previous
    turn's prompt plus the patient's answer, the trainee's new line and the new direction.
    """
    fields = _fields(persona, mood)
    cue = direction(persona, mood, ending)
    if style == "chat":
        messages: list[BaseMessage] = [SystemMessage(prompt("chat").format(**fields))]
        for message in transcript.messages:
            content = prompt_text(message.content)
            messages.append(AIMessage(content) if message.role == "patient" else HumanMessage(content))
        note = f"Right now you are {cue}." if ending is None else f"This is your last line: {cue}."
        # Last, not in the system prompt: what changes every turn stays out of the cached front.
        messages.append(SystemMessage(note))
        return messages
    lines = [prompt("transcript").format(**fields), *(_line(persona, m) for m in transcript.messages)]
    lines.append(_cue(persona, cue))
    lines.append(f"{persona.address_as}:")
    instruction = prompt("transcript_instruction").format(**fields).strip()
    return [HumanMessage(instruction), AIMessage("".join(lines))]


def prefix_messages(persona: Persona, transcript: Transcript, mood: Mood) -> list[BaseMessage]:
    """The part of the next transcript-style prompt known before the trainee answers (for a prefill):
    exactly the front of :func:`build_messages`' prompt, up to the end of the patient's last line."""
    fields = _fields(persona, mood)
    lines = [prompt("transcript").format(**fields), *(_line(persona, m) for m in transcript.messages)]
    return [HumanMessage(prompt("transcript_instruction").format(**fields).strip()), AIMessage("".join(lines))]


def prompt_tokens(messages: list[BaseMessage]) -> int:
    """Tokens of a prompt, counted with tiktoken (a close estimate of the served model's count)."""
    return tokens.count_messages(messages)


def _clean_start(text: str, persona: Persona) -> str:
    """Drop a leading speaker label or stage direction the model sometimes repeats."""
    text = text.lstrip()
    for label in (persona.address_as, persona.name, persona.first_name):
        if text.lower().startswith(label.lower() + ":"):
            text = text[len(label) + 1 :].lstrip()
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.strip().strip('"').strip()


def _sentences(stream: Iterator[str]) -> Iterator[str]:
    """Complete sentences from a stream of chunks (the tail when the stream ends)."""
    buffer = ""
    for chunk in stream:
        buffer += chunk
        while True:
            match = SENTENCE_END.search(buffer)
            if match is None:
                break
            sentence, buffer = buffer[: match.end()].strip(), buffer[match.end() :]
            if sentence.strip():
                yield sentence.strip()
    if buffer.strip():
        yield buffer.strip()


def _model_chunks(model: PatientModel, messages: list[BaseMessage], *, temperature: float,
                  seed: int | None) -> Iterator[str]:  # fmt: skip
    stop = ["\n"] if model.prompt_style == "transcript" else None
    try:
        for text in model.stream(messages, temperature=temperature, seed=seed, max_tokens=MAX_TOKENS, stop=stop):
            if "\n" in text:  # a chat-style reply may run into a second speaker's line
                yield text.split("\n", 1)[0]
                return
            yield text
    except ModelUnavailable as exc:
        raise PatientUnavailable(f"{exc}; your message is kept, try again") from exc


def _fallback(persona: Persona, mood: Mood) -> str:
    if not persona.fallback_lines:
        return "..."
    return persona.fallback_lines[mood.turn % len(persona.fallback_lines)]


def release(chunks: Iterator[str], persona: Persona, notes: list[str] | None = None) -> Iterator[str]:
    """Filter one model stream: yield in-role sentences (the first with a leading space dropped).

    Stops at the first out-of-role sentence (appending ``"trimmed: <pattern>"`` or, when nothing
    was released yet, ``"rejected: <pattern>"`` to ``notes``) or after :data:`MAX_SENTENCES`.
    """
    released = 0
    for sentence in _sentences(chunks):
        if released == 0:
            sentence = _clean_start(sentence, persona)
            if not sentence:
                continue
        reason = out_of_role(sentence)
        if reason:
            if notes is not None:
                notes.append(f"{'trimmed' if released else 'rejected'}: {reason}")
            return
        yield sentence if released == 0 else " " + sentence
        released += 1
        if released >= MAX_SENTENCES:
            return


def patient_model(settings: LLMSettings | None = None) -> ServedModel:
    """The patient over ``settings`` (its own llama.cpp slot on the embedded server)."""
    return ServedModel(settings or LLMSettings.from_env(), slot=PATIENT_SLOT)


def stream_reply(
    persona: Persona,
    transcript: Transcript,
    mood: Mood,
    model: PatientModel,
    *,
    ending: Outcome | None = None,
    temperature: float = 0.7,
    seed: int | None = None,
    notes: list[str] | None = None,
) -> Iterator[str]:
    """The patient's next line as it arrives, sentence by sentence, already filtered for role.

    ``seed`` makes a request reproducible (cassettes, the simulator); ``None`` lets the server pick.
    An out-of-role first sentence costs one regeneration (seed + 1, warmer), then the persona's
    fallback line; what the filter did is appended to ``notes``.
    Raises :class:`PatientUnavailable` when the server fails; callers keep nothing partial.
    """
    messages = build_messages(persona, transcript, mood, model.prompt_style, ending)
    attempts = [(seed, temperature), (None if seed is None else seed + 1, max(temperature, 0.8))]
    for attempt_seed, attempt_temperature in attempts:
        chunks = _model_chunks(model, messages, temperature=attempt_temperature, seed=attempt_seed)
        released = 0
        try:
            for sentence in release(chunks, persona, notes):
                released += 1
                yield sentence
        finally:
            chunks.close()
        if released:
            return
    if notes is not None:
        notes.append("fallback line")
    yield _fallback(persona, mood)


def reply(persona: Persona, transcript: Transcript, mood: Mood, model: PatientModel, **options: object) -> str:
    """The whole line at once (see :func:`stream_reply`)."""
    return "".join(stream_reply(persona, transcript, mood, model, **options))  # type: ignore[arg-type]
