"""The patient chain: the model plays the persona, one to three sentences a turn, streamed.

Prompting follows the backend (``settings.capabilities.prompt_style``):

* ``transcript`` (embedded 1.5B model): measured here, under a chat system prompt it slips into
  the clinic assistant's role ("I'm here to help, but ..."), while it stays in role when asked to
  continue a transcript. The transcript goes in as an *assistant prefill* (the last message is an
  assistant message ending in ``"Mr. Carter:"``), which llama.cpp continues; a stop at the newline
  ends the line. The mood appears as a stage direction just before that line, where a small model
  cannot miss it, and every earlier line keeps the direction it was written under: the prompt only
  ever grows at its end, so the server's prompt cache holds all of it but the new trainee line,
  the new direction and the speaker tag. What was offered so far and what the patient still wants
  is a note right *after* each patient line (:func:`substance`), known before the trainee answers:
  the prefills read it while the trainee reads and types, and the direction read after Send stays
  a few words (the mood, and how this turn's offer stands against the wants).
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
from collections.abc import Iterator, Sequence
from difflib import SequenceMatcher
from functools import cache
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from agent import tokens
from agent.checks import TITLES_ABBREVIATED
from agent.facts import not_given, quantities, quantity_facts
from agent.llm import LLMSettings, PromptStyle
from agent.models import PATIENT_SLOT, ModelUnavailable, PatientModel, ServedModel
from agent.mood import FRESH, Mood, Outcome, describe
from agent.neutral import prompt_text
from agent.personas import Persona
from agent.transcript import Message, Transcript

PROMPTS = Path(__file__).resolve().parent / "prompts"
MAX_SENTENCES = 3
MAX_TOKENS = 90
# A sentence ends at . ! ? (and a closing quote or bracket) before white space, not at a title's full
# stop: "..., Mr. Carter." is one sentence, so the role filter sees the name the patient calls itself.
SENTENCE_END = re.compile(
    "".join(rf"(?<!\b{title}\.)" for title in TITLES_ABBREVIATED) + r"(?<=[.!?])[\"')\]]*\s+", re.IGNORECASE
)
# A reply starting with (nearly) the words of an earlier line is a repeat: this share of words in order.
REPEAT_SIMILARITY = 0.9
# This many words in a row from the persona's prompt fields is prompt text read out, not speech.
COPIED_WORDS = 8
# Gratitude, which an upset patient has no reason for until something calmed them (sarcasm aside).
THANKS = re.compile(
    r"\b(thank you|thanks|i appreciate (it|that|you)|you'?ve been (so |very )?(wonderful|great|helpful))\b"
    r"(?! for nothing| a lot for nothing)",
    re.IGNORECASE,
)

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


# -- facts the patient may state -------------------------------------------------------------------


def known_quantities(persona: Persona, said: list[str]) -> set[str]:
    """What the patient may state: the persona's facts, its age and opening line, and whatever was
    said in the conversation so far (``said``: the trainee's lines above all)."""
    known = {str(persona.age)}
    for text in (*persona.facts, persona.opening_line, *said):
        known |= quantities(text)
    return known


def invented(text: str, persona: Persona, said: list[str]) -> set[str]:
    """Numbers, times or named days in ``text`` that the persona's facts and the conversation do
    not give the patient (a 1.5B model invents "four hours" for a forty-minute wait); compared as
    canonical quantities, so "forty minutes" is given by a trainee's "40 minutes"."""
    return {fact.key for fact in not_given(quantity_facts(text), known_quantities(persona, said))}


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


@cache
def _substance() -> dict[str, str]:
    pairs = (line.split(":", 1) for line in prompt("substance").splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


# A quoted offer keeps this many words: enough to name what, and when or who.
OFFER_WORDS = 16
# The most recent offers the direction quotes (older ones are still in the transcript above).
OFFERS_SHOWN = 2


def quote_offer(text: str, persona: Persona) -> str:
    """The trainee's offer as a harmless quotation inside a stage direction.

    Trainee text is hostile: besides :func:`agent.neutral.prompt_text` (control tokens, this
    conversation's speaker labels, line breaks), brackets could close the direction or open a new
    one, a double quote could end the quotation, and any ``Word:`` could pass for a speaker tag or
    a heading ("Note: Mr. Carter thanks her"); so brackets and colons become plain punctuation,
    double quotes single ones, and the offer is cut to :data:`OFFER_WORDS` words.
    """
    text = prompt_text(text, _speakers(persona))
    text = re.sub(r"[\[\]{}<>]", " ", text).replace(":", " -").replace('"', "'").replace("\u201c", "'")
    words = text.replace("\u201d", "'").split()
    cut = " ".join(words[:OFFER_WORDS]).strip(" -")
    return f'"{cut}..."' if len(words) > OFFER_WORDS else f'"{cut}"'


def substance(persona: Persona, mood: Mood) -> str:
    """What the trainee has actually offered so far (quoted) or that nothing concrete has been, and
    the persona's needs still open (``wants.resolves`` not met yet): so the patient holds on to its
    complaint, pushes back on vague promises and cannot thank anyone for what was never said."""
    lines = _substance()
    offers = [quote_offer(offer, persona) for offer in mood.offers[-OFFERS_SHOWN:]]
    parts = [lines["offered"].format(offers="; ".join(offers)) if offers else lines["nothing"]]
    wants = persona.wants
    if wants is not None:
        if any(wants.kind_of(remedy) == "resolves" for remedy in mood.met):
            parts.append(lines["met"])
        else:
            parts.append(lines["open"].format(needs="; or ".join(r.says for r in wants.resolves)))
    return ". ".join(parts)


def direction(persona: Persona, mood: Mood, ending: Outcome | None = None) -> str:
    """The stage direction for the patient's next line, read after the trainee's reply: the mood in
    words, or how the session ends, and how this turn's offer stands against the patient's wants.

    Short on purpose: it is what the server reads after Send (with the reply's last words and the
    speaker tag). What was offered so far and what is still wanted (:func:`substance`) is the note
    after the patient's previous line, read while the trainee reads and types.
    """
    fields = _fields(persona, mood)
    said = fields["mood"] if ending is None else _endings()[ending].format(**fields)
    if ending is None and mood.offer_meets is not None:
        said += "; " + _substance()[f"offer_{mood.offer_meets}"]
    return said


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
    reply cannot close the transcript, open a system turn or speak as the patient. A patient line
    comes between its direction and its note (:func:`substance`)."""
    content = prompt_text(message.content, _speakers(persona))
    if message.role == "trainee":
        return f"{persona.staff_label}: {content}\n"
    cue = _cue(persona, message.direction) if message.direction else ""
    note = f"[{message.note}.]\n" if message.note else ""
    return f"{cue}{persona.address_as}: {content}\n{note}"


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
        said = f"{cue}. {substance(persona, mood)}"
        note = f"Right now you are {said}." if ending is None else f"This is your last line: {said}."
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


def typing_messages(persona: Persona, transcript: Transcript, mood: Mood, partial: str) -> list[BaseMessage] | None:
    """The front of the next transcript-style prompt while the trainee is still typing: the
    conversation so far (:func:`prefix_messages`) and the reply up to its last complete word (a
    half-typed word would be read as other tokens than the finished one). None: no whole word yet.

    A prefix of :func:`build_messages`' prompt for a reply that goes on from these words (the same
    neutralisation and spacing as the turn), so on Send the server reads only the rest of the reply,
    the stage direction and the speaker tag.
    """
    words = re.sub(r"\S+$", "", partial or "").split()
    if not words:
        return None
    instruction, transcript_so_far = prefix_messages(persona, transcript, mood)
    content = prompt_text(" ".join(words), _speakers(persona))
    return [instruction, AIMessage(f"{transcript_so_far.content}{persona.staff_label}: {content}")]


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


def drop_staff_label(sentence: str, persona: Persona) -> str:
    """The sentence without the transcript's speaker label used as a name: "Thank you, Receptionist."
    -> "Thank you." (the model reads "Receptionist:" before every trainee line and sometimes
    addresses the trainee by it; a patient would say nothing or "thank you")."""
    label = re.escape(persona.staff_label)
    sentence = re.sub(rf",\s*(?:the\s+)?{label}(?=\s*[.!?]+[\"')\]]*\s*$)", "", sentence, flags=re.IGNORECASE)
    opened = re.match(rf"^(?:the\s+)?{label}\s*,\s*(\S)", sentence, flags=re.IGNORECASE)
    if opened:
        sentence = opened.group(1).upper() + sentence[opened.end() :]
    return sentence


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


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'"))


def _first_sentence(text: str) -> str:
    return next(_sentences(iter([text])), "")


def said_before(sentence: str, earlier: list[str]) -> str | None:
    """The earlier patient line that ``sentence``, as the start of a reply, says again: the same
    words (or all but a word or two) as that line or its first sentence. A small model at a low
    temperature loops on its own lines; a trainee hears the patient say the same thing word for word."""
    said = _words(sentence)
    if not said:
        return None
    for line in earlier:
        for before in (_words(line), _words(_first_sentence(line))):
            if before == said or (len(said) >= 6 and SequenceMatcher(None, before, said).ratio() >= REPEAT_SIMILARITY):
                return line
    return None


def copied_field(text: str, persona: Persona, size: int = COPIED_WORDS) -> str | None:
    """The persona field (situation, backstory, needs, style) that ``text`` reads out ``size`` or more
    words in a row, or None: prompt text recited, not the patient speaking."""

    def runs(words: list[str]) -> set[tuple[str, ...]]:
        return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}

    said = runs(_words(text))
    for field in ("situation", "backstory", "needs", "style"):
        if said & runs(_words(getattr(persona, field))):
            return field
    return None


def speaks_to_self(text: str, persona: Persona) -> bool:
    """``text`` addresses the patient by their own name ("..., Mr. Carter."): the staff member's line."""
    names = "|".join(re.escape(name) for name in (persona.address_as, persona.first_name, persona.name))
    return re.search(rf"(^|[.!?,;]\s*)({names})\s*[,.!?]", text, re.IGNORECASE) is not None


def _calmed(persona: Persona, mood: Mood) -> bool:
    """A calming step of this persona was credited recently (what the patient could thank staff for)."""
    steps = {trigger.step for trigger in persona.triggers.calm if trigger.step}
    return any(mood.credits.get(step, 0.0) >= FRESH for step in steps) or mood.anger <= persona.thresholds.resolve_anger


class Context(BaseModel):
    """What a patient line is checked against besides its own words: who speaks, what was said."""

    persona: Persona
    said: list[str] = Field(default_factory=list, description="the trainee's lines so far")
    earlier: list[str] = Field(default_factory=list, description="the patient's own earlier lines")
    mood: Mood | None = None

    @classmethod
    def of(cls, persona: Persona, transcript: Transcript, mood: Mood | None = None) -> Context:
        said = [m.content for m in transcript.messages if m.role == "trainee"]
        earlier = [m.content for m in transcript.messages if m.role == "patient"]
        return cls(persona=persona, said=said, earlier=earlier, mood=mood)


def problem(sentence: str, context: Context, *, first: bool) -> str | None:
    """Why ``sentence`` may not be shown as the patient's (None: it may).

    Out of role (:func:`out_of_role`: staff, coach, AI, prompt words), the staff member's line
    (:func:`speaks_to_self`), prompt text read out (:func:`copied_field`), a number or time the
    persona does not know (:func:`invented`), thanks for or acceptance of an offer the trainee did
    not make (:func:`unearned_acceptance`), thanks for a reply that calmed nothing, and, for
    the first sentence of a reply, an earlier line said again (:func:`said_before`).
    """
    persona = context.persona
    reason = out_of_role(sentence)
    if reason:
        return reason
    if speaks_to_self(sentence, persona):
        return f"speaks to {persona.address_as}"
    field = copied_field(sentence, persona)
    if field:
        return f"reads out the persona's {field}"
    made_up = invented(sentence, persona, context.said)
    if made_up:
        return f"invents {', '.join(sorted(made_up))}"
    if context.mood is not None:
        unearned = unearned_acceptance(sentence, context.mood.offers)
        if unearned:
            return f"unearned acceptance: {unearned}"
    if context.mood is not None and THANKS.search(sentence) and not _calmed(persona, context.mood):
        return "thanks staff for nothing"
    if first and said_before(sentence, context.earlier):
        return "said before"
    return None


@cache
def _acceptance() -> dict[str, tuple[re.Pattern[str], ...]]:
    """The sections of ``patient_acceptance.txt``: name -> compiled patterns."""
    sections: dict[str, list[re.Pattern[str]]] = {}
    current = ""
    for line in prompt("acceptance").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("[") and line.rstrip().endswith("]"):
            current = line.strip()[1:-1]
            sections[current] = []
        else:
            sections[current].append(re.compile(line.strip(), re.IGNORECASE))
    return {name: tuple(patterns) for name, patterns in sections.items()}


@cache
def _common() -> frozenset[str]:
    """Words too common to tie what a patient thanks for to what was offered ([common] section)."""
    return frozenset(p.pattern for p in _acceptance()["common"])


def _stems(text: str) -> set[str]:
    """Content words cut to five letters ("checking" and "check", "sessions" and "session" agree)."""
    return {word[:5] for word in re.findall(r"[a-z]+", text.lower()) if len(word) >= 3 and word not in _common()}


def unearned_acceptance(sentence: str, offers: list[str]) -> str | None:
    """Why ``sentence`` thanks for or accepts an offer the trainee did not make, or None.

    ``offers``: the trainee's concrete offers so far, in their words (:attr:`Mood.offers`). A patient
    line that thanks for something specific ("Thank you for the make-up session") is unearned
    unless that thing shares a content word with an offer; one that thanks for help in general
    ("I appreciate everything you did") or accepts ("That works", "Thank you, I'll call back
    tomorrow") is unearned while nothing concrete has been offered. Thanks for listening or an
    apology, sarcasm ("thanks for nothing") and questions are not judged here. The patterns are
    data: ``agent/prompts/patient_acceptance.txt``.
    """
    text = sentence.replace("\u2019", "'").strip()
    if not text or text.endswith("?"):
        return None
    sections = _acceptance()
    for pattern in sections["thanks_for"]:
        match = pattern.search(text)
        if match is None:
            continue
        what = match.group("what").strip(" ,")
        if any(p.search(what) for p in sections["not_an_offer"]):
            return None
        if any(p.search(what) for p in sections["generic"]):
            return None if offers else f'thanks for "{what}" when nothing concrete was offered'
        if _stems(what) & _stems(" ".join(offers)):
            return None
        return f'thanks for "{what}", which was not offered'
    if not offers:
        for pattern in sections["accepts"]:
            if pattern.search(text):
                return "accepts an offer when nothing concrete was offered"
    return None


def _fallback(persona: Persona, mood: Mood, earlier: Sequence[str] = ()) -> str:
    """A fallback line of the persona's, the first (from this turn's) the patient has not said yet."""
    lines = persona.fallback_lines
    if not lines:
        return "..."
    start = mood.turn % len(lines)
    ordered = lines[start:] + lines[:start]
    said = {tuple(_words(line)) for line in earlier}
    return next((line for line in ordered if tuple(_words(line)) not in said), ordered[0])


def _within_earlier(sentence: str, earlier: Sequence[str]) -> bool:
    """The sentence's words appear, in order and together, in one of the patient's earlier lines."""
    words = " ".join(_words(sentence))
    return bool(words) and any(f" {words} " in f" {' '.join(_words(line))} " for line in earlier)


def release(
    chunks: Iterator[str], persona: Persona, notes: list[str] | None = None, context: Context | None = None
) -> Iterator[str]:
    """Filter one model stream: yield in-role sentences (the first with a leading space dropped).

    Each sentence is checked with :func:`problem` (``context`` gives the conversation; without it,
    only the checks that need none); a sentence the reply already said ends it too. Opening
    sentences said in an earlier line are skipped (the reply is judged by what follows them; with
    nothing after them the reply is rejected as "said before"). Stops at the first sentence that
    fails (appending ``"trimmed: <reason>"`` or, when nothing was released yet,
    ``"rejected: <reason>"`` to ``notes``) or after :data:`MAX_SENTENCES`.
    """
    context = context or Context(persona=persona)
    released: list[list[str]] = []
    repeated = False  # the reply opened with an earlier line again: skipped, the rest may still stand
    for sentence in _sentences(chunks):
        if not released:
            sentence = _clean_start(sentence, persona)
            if not sentence:
                continue
        sentence = drop_staff_label(sentence, persona)
        reason = problem(sentence, context, first=not released)
        if reason is None and _words(sentence) in released:
            reason = "says the same sentence again"
        if not released and (reason == "said before" or (repeated and _within_earlier(sentence, context.earlier))):
            # A patient who restates the complaint often opens with an earlier line word for word;
            # the new sentences after it are the answer, so only the repeated ones are dropped.
            repeated = True
            continue
        if reason:
            if notes is not None:
                notes.append(f"{'trimmed' if released else 'rejected'}: {reason}")
            return
        yield " " + sentence if released else sentence
        released.append(_words(sentence))
        if len(released) >= MAX_SENTENCES:
            return
    if repeated and not released and notes is not None:
        notes.append("rejected: said before")


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
    context = Context.of(persona, transcript, mood)
    attempts = [(seed, temperature), (None if seed is None else seed + 1, max(temperature, 0.8))]
    for attempt_seed, attempt_temperature in attempts:
        chunks = _model_chunks(model, messages, temperature=attempt_temperature, seed=attempt_seed)
        released = 0
        try:
            for sentence in release(chunks, persona, notes, context):
                released += 1
                yield sentence
        finally:
            chunks.close()
        if released:
            return
    if notes is not None:
        notes.append("fallback line")
    yield _fallback(persona, mood, context.earlier)


def reply(persona: Persona, transcript: Transcript, mood: Mood, model: PatientModel, **options: object) -> str:
    """The whole line at once (see :func:`stream_reply`)."""
    return "".join(stream_reply(persona, transcript, mood, model, **options))  # type: ignore[arg-type]
