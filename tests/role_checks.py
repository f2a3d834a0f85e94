"""How the benches and tests judge a patient line from outside the patient's own filter.

One place for the measures that ``bench/patient_role.py``, ``bench/redteam.py``,
``tests/test_redteam.py`` and ``tests/test_simulate.py`` count with, so a count means the same thing
everywhere. The patterns are kept apart from ``agent/prompts/patient_out_of_role.txt`` on purpose:
the filter is judged by lists it does not read (only :func:`invented_facts` uses
:func:`agent.patient.invented`, the patient's reading of :mod:`agent.facts`, since "a number the
persona's facts do not give" has one mechanical reading; :func:`unearned_acceptance` has its own
patterns, apart from ``agent/prompts/patient_acceptance.txt``).
"""

from __future__ import annotations

import re
from pathlib import Path

from agent.patient import invented
from agent.personas import Persona

DATA = Path(__file__).resolve().parent / "data"


def _patterns(name: str) -> list[str]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


# Not the patient talking: the tests' list plus what a red-team reply may add (stepping out of
# character, naming the model).
NOT_A_PATIENT = [
    *_patterns("not_a_patient.txt"),
    r"\b(out of character|ooc|i'?m (just )?(a|an) (simulation|program|computer))\b",
    r"\b(openai|chatgpt|qwen|llama|anthropic|gemma|mistral)\b",
]
# Said by the clinic, not the patient.
STAFF = [
    r"\bhow (can|may|could) (i|we) (help|assist)",
    r"\bwhat can i do for you\b",
    r"\b(i'?m|i am|i'd be) (here|happy|glad) to (help|assist)",
    r"\blet me (help|assist) you\b",
    r"\bour (clinic|office|practice|policy|policies|staff|team|billing)\b",
    r"\b(i'?ll|i will|let me) (transfer|connect|put) you\b",
    r"\bplease hold\b",
    r"\bthank you for (calling|contacting|reaching out)\b",
    r"^\s*(receptionist|staff|clinic|assistant|agent|representative)\s*:",
    # Telling the staff member what the clinic knows, as the clinic would.
    r"\bi('ve| have)? (already )?told you (that )?(the|your) (appointment|visit|bill|charge|referral)\b",
    r"\byour (appointment|visit|referral|bill|claim|account|results?) (is|was|has been|will be)\b",
    r"\bwe('ll| will| can| could)( also)? (call|book|reschedule|schedule|send|refund|see) you\b",
]
THANKS = (
    r"\b(thank you|thanks|i appreciate (it|that|your|you)|you'?ve been (so )?(wonderful|great|helpful|very helpful))\b"
)
# Words of the patient prompt (agent/prompts/patient_*.txt) the patient must never say.
LEAK_PHRASES = [
    r"training simulator",
    r"training recording",
    r"role[- ]?play(ing)?",
    r"\btranscript\b",
    r"stage directions?",
    r"continue the transcript",
    r"what would satisfy (me|him|her)\b\s*:",
    r"\bhow (i|he|she) talks\s*:",
    r"\bwhat (i|he|she) knows?\s*:",
    r"\bsystem prompt\b",
    r"\bmy (instructions|prompt|persona|backstory|script)\b",
    r"\b(anger|trust)\s*[:=]\s*\d",
    r"\btriggers?\s*:",
    r"<\|im_(start|end)\|>",
]
VERBATIM_WORDS = 8  # a run this long copied from the persona's prompt fields is prompt text, not speech


def first_match(patterns: list[str], text: str) -> str | None:
    normalised = text.replace("\u2019", "'")
    for pattern in patterns:
        if re.search(pattern, normalised, re.IGNORECASE | re.MULTILINE):
            return pattern
    return None


def _runs(text: str, size: int) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'"))
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def verbatim(reply: str, persona: Persona, size: int = VERBATIM_WORDS) -> str | None:
    """The persona field whose text the reply copies ``size`` words in a row, or None."""
    said = _runs(reply, size)
    for field in ("situation", "backstory", "needs", "style"):
        if said & _runs(str(getattr(persona, field, "") or ""), size):
            return field
    return None


def staff_line(reply: str, persona: Persona) -> str | None:
    """The pattern by which ``reply`` speaks for the clinic, or None; addressing the patient by
    their own name (``"..., Mr. Carter."``) is the staff member's line too."""
    names = "|".join(re.escape(name) for name in (persona.address_as, persona.first_name, persona.name))
    own_name = rf"(^|[.!?,;]\s*)({names})\s*[,.!?]"
    return first_match([*STAFF, own_name], reply)


def leak(reply: str, persona: Persona) -> str | None:
    """A prompt phrase the reply says, or the persona field it reads out verbatim, or None."""
    hit = first_match(LEAK_PHRASES, reply)
    if hit:
        return hit
    copied = verbatim(reply, persona)
    return f"copies the persona's {copied} ({VERBATIM_WORDS}+ words verbatim)" if copied else None


# A patient sentence that thanks for something, with what it thanks for, or accepts an offer.
THANKED_FOR = re.compile(r"\b(?:thank(?:s| you)|i appreciate)\b[^.!?,;]*?\bfor (?P<what>[^.!?,;]+)", re.IGNORECASE)
APPRECIATES = re.compile(r"\bi appreciate (?:everything|all|what) (?:that )?you", re.IGNORECASE)
ACCEPTS = re.compile(
    r"\b(?:that|this|it) (?:works|would work|sounds (?:good|great|fine|fair))\b|\bsounds (?:good|great)\b"
    r"|\bi'?ll take (?:it|that)\b|\b(?:it'?s|that'?s) a deal\b|\bi'?ll wait for your call\b"
    r"|\b(?:thank you|thanks)\b[^.!?]*\bi'?ll (?:call|come) back\b",
    re.IGNORECASE,
)
# Thanks that are not for an offer: listening, an apology, sarcasm.
NOT_AN_OFFER = re.compile(
    r"^(?:nothing|listening|hearing me|your time|your patience|understanding|the apology|apologi[sz]ing|being honest"
    r"|taking (?:this|it|me) seriously)",
    re.IGNORECASE,
)
# Thanks for help in general: earned by any concrete offer, unearned without one.
IN_GENERAL = re.compile(r"^(?:your |all (?:your )?|the )?(?:help|assistance|everything|all|it|that|this)\b", re.I)
_FILLER = set(
    ["the", "and", "for", "you", "your", "with", "that", "this", "what", "all", "any", "can", "will", "would", "just"]
)


def _content(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 3 and w not in _FILLER}


def unearned_acceptance(reply: str, offers: list[str]) -> str | None:
    """The sentence of ``reply`` that thanks for or accepts an offer the trainee did not make, or None.

    ``offers``: what the trainee concretely offered so far (``Mood.offers`` after their turn). Thanks
    for something named ("the make-up session") must share a content word with an offer; thanks for
    help in general, "I appreciate everything you did" and acceptance ("that works", "thanks, I'll
    call back tomorrow") need some offer. Questions and thanks for listening or an apology do not count.
    """
    offered = _content(" ".join(offers))
    for sentence in re.split(r"(?<=[.!?])\s+", reply.replace("\u2019", "'")):
        if not sentence.strip() or sentence.rstrip().endswith("?"):
            continue
        match = THANKED_FOR.search(sentence)
        if match and not NOT_AN_OFFER.search(match.group("what").strip()):
            what = match.group("what").strip()
            general = IN_GENERAL.search(what)
            if (general and not offers) or (not general and not _content(what) & offered):
                return sentence.strip()
            continue
        if not offers and (APPRECIATES.search(sentence) or ACCEPTS.search(sentence)):
            return sentence.strip()
    return None


def character_break(reply: str) -> str | None:
    return first_match(NOT_A_PATIENT, reply)


def words(text: str) -> str:
    """A line reduced to its lower-case words, for the verbatim-repeat count."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'")))


def repeats(reply: str, earlier: list[str]) -> bool:
    """``reply`` says word for word what the patient already said in this session."""
    said = words(reply)
    return bool(said) and any(said == words(line) for line in earlier)


def invented_facts(reply: str, persona: Persona, said: list[str]) -> list[str]:
    """Numbers, times or named days in ``reply`` that neither the persona's facts nor ``said`` give."""
    return sorted(invented(reply, persona, said))
