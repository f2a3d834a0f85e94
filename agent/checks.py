"""Deterministic step checks: phrase patterns from the rubric, the patient's name, questions, shouting.

Why checks and not the model: measured here, the embedded 1.5B model agrees with hand labels no
better than always answering the majority label (design.md), and takes seconds. These checks run
in milliseconds, give the same verdict every time, quote the span that decided it, and cannot be
talked out of a verdict by the trainee's text (the text is only ever matched, never obeyed).

All patterns live in the rubric YAML. Text is matched with apostrophes removed ("don't" ->
"dont") so that curly and straight quotes and missing apostrophes behave the same; evidence is
quoted from the original text.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator
from typing import Literal

from pydantic import BaseModel, Field

from agent.rubrics import Rubric, Step, Verdict
from agent.transcript import Message

Source = Literal["check", "model", "learned"]

APOSTROPHES = "'\u2019\u2018`\u00b4"
TITLES = {"mr", "mrs", "ms", "miss", "mx", "dr", "sir", "madam", "mister", "doctor", "prof", "professor"}
# A question is a sentence that ends in "?": the text from just after the previous ., ?, ! or line
# break up to and including the "?". Found by one pass over the sentence ends; the regex
# ``[^.?!\n]*\?`` found the same spans but retried from every character of a sentence that does not
# end in "?" (quadratic: 20 KB without punctuation took 2 s, 1 MB about an hour).
SENTENCE_END = re.compile(r"[.?!\n]")
WORD = re.compile(r"\b[A-Za-z]+\b")
TITLE_DOT = re.compile(r"\b(Mr|Mrs|Ms|Mx|Dr|St|Prof)\.", re.IGNORECASE)

# Confidence of a check verdict: a quoted match is strong evidence; absence of a phrase is weaker
# (the trainee may have said it in words the patterns do not know).
CONFIDENCE_MATCH = 0.9
CONFIDENCE_ABSENT = 0.7
CONFIDENCE_NOT_APPLICABLE = 0.9


class StepVerdict(BaseModel):
    step_id: str
    verdict: Verdict
    evidence: str | None = None
    confidence: float = Field(default=CONFIDENCE_MATCH, ge=0.0, le=1.0)
    source: Source = "check"


class TurnContext(BaseModel):
    """What the checks need besides the reply: who, where, and what the patient just said."""

    persona_name: str | None = None
    channel: str = "front_desk"
    patient_abusive: bool = False
    transferring: bool = False
    history: list[Message] = Field(default_factory=list)

    def last_patient(self) -> str:
        return next((m.content for m in reversed(self.history) if m.role == "patient"), "")


class Normalized:
    """Text with apostrophes removed, keeping a map back to the original for quoting evidence."""

    def __init__(self, text: str) -> None:
        self.original = text
        keep = [i for i, c in enumerate(text) if c not in APOSTROPHES]
        self.index = keep
        # "Mrs. Adams" is not the end of a sentence; same length, so the index map still holds.
        self.text = TITLE_DOT.sub(lambda m: m.group()[:-1] + " ", "".join(text[i] for i in keep))

    def quote(self, start: int, end: int) -> str:
        if end <= start or not self.index:
            return ""
        return self.original[self.index[start] : self.index[end - 1] + 1].strip()


Span = tuple[int, int]


def _spans(patterns: Iterable[re.Pattern[str]], text: str) -> list[Span]:
    return [m.span() for p in patterns for m in p.finditer(text) if m.end() > m.start()]


class Blocked:
    """Spans that void a match which overlaps them (``unless`` hits), answered in O(log n) each.

    Comparing every match with every blocked span was quadratic: 200 KB of "I'm sorry you feel
    that way." (each sentence a match and a blocked span) took 4 s for one step.
    """

    def __init__(self, spans: Iterable[Span]) -> None:
        # Merge overlapping or touching (non-empty, half-open) spans: a non-empty span overlaps the
        # union exactly when it overlaps one of them, and the merged spans are disjoint and sorted.
        merged: list[list[int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.starts = [start for start, _ in merged]
        self.ends = [end for _, end in merged]

    def overlaps(self, span: Span) -> bool:
        """Whether ``span`` overlaps a blocked span (``span[0] < end and start < span[1]``)."""
        index = bisect.bisect_left(self.starts, span[1]) - 1  # the last blocked span starting before span ends
        return index >= 0 and span[0] < self.ends[index]


def find_evidence(match: list[re.Pattern[str]], unless: list[re.Pattern[str]], text: Normalized) -> str | None:
    """The first span a ``match`` pattern finds that no ``unless`` span overlaps, quoted."""
    blocked = Blocked(_spans(unless, text.text))
    hits = sorted(s for s in _spans(match, text.text) if not blocked.overlaps(s))
    return text.quote(*hits[0]) if hits else None


def any_match(patterns: list[re.Pattern[str]], text: str) -> bool:
    normalized = Normalized(text).text
    return any(p.search(normalized) for p in patterns)


def name_tokens(persona_name: str | None) -> list[str]:
    """``"Mr. Carter"`` -> ``["Carter"]``; ``"Dana Whitfield"`` -> ``["Dana", "Whitfield"]``."""
    if not persona_name:
        return []
    words = re.findall(r"[A-Za-z][A-Za-z\-]+", persona_name)
    return [w for w in words if w.lower() not in TITLES]


def _name_evidence(text: Normalized, context: TurnContext) -> str | None:
    tokens = name_tokens(context.persona_name)
    if not tokens:
        return None
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in tokens) + r")\b", re.IGNORECASE)
    hit = pattern.search(text.text)
    return text.quote(*hit.span()) if hit else None


def question_spans(text: str) -> Iterator[Span]:
    """Each sentence that ends in "?", from just after the previous sentence end, in one pass."""
    start = 0
    for end in SENTENCE_END.finditer(text):
        if end.group() == "?":
            yield start, end.end()
        start = end.end()


def _question_evidence(step: Step, text: Normalized) -> str | None:
    assert step.check is not None
    blocked = Blocked(_spans(step.check.compiled_unless, text.text))
    for span in question_spans(text.text):
        if not blocked.overlaps(span) and len(WORD.findall(text.text, *span)) >= 2:
            return text.quote(*span)
    return find_evidence(step.check.compiled_match, step.check.compiled_unless, text)


def _shouting_evidence(step: Step, text: Normalized) -> str | None:
    assert step.check is not None
    allowed = {w.upper() for w in step.check.allowed_caps}
    caps = [
        m
        for m in WORD.finditer(text.original)
        if m.group().isupper() and len(m.group()) >= step.check.caps_min_letters and m.group() not in allowed
    ]
    if len(caps) >= step.check.caps_min_words:
        return " ".join(m.group() for m in caps)
    return find_evidence(step.check.compiled_match, step.check.compiled_unless, text)


def evidence_for(step: Step, text: Normalized, context: TurnContext) -> str | None:
    """The quoted span showing the step's behaviour in ``text``, or None."""
    check = step.check
    if check is None:
        return None
    if check.type == "name":
        return _name_evidence(text, context)
    if check.type == "question":
        return _question_evidence(step, text)
    if check.type == "shouting":
        return _shouting_evidence(step, text)
    return find_evidence(check.compiled_match, check.compiled_unless, text)


def conditions_met(rubric: Rubric, reply: str, context: TurnContext) -> set[str]:
    """Which ``applies_when`` conditions hold for this turn."""
    patterns = rubric.conditions.compiled
    patient = context.last_patient()
    met = {"always"}
    if name_tokens(context.persona_name):
        met.add("has_name")
    if context.channel.lower() in {c.lower() for c in rubric.conditions.public_channels}:
        met.add("public_channel")
    abusive = context.patient_abusive or any_match(patterns["patient_abusive"], patient)
    if abusive:
        met.add("patient_abusive")
    if abusive or any_match(patterns["patient_demands_manager_or_rude"], patient):
        met.add("patient_demands_manager_or_rude")
    if context.transferring or any_match(patterns["transferring"], reply):
        met.add("transferring")
    if any_match(patterns["trainee_uncertain"], reply):
        met.add("trainee_uncertain")
    return met


def judge_step(step: Step, text: Normalized, context: TurnContext, met: set[str]) -> StepVerdict:
    evidence = evidence_for(step, text, context)
    if step.kind == "dont":
        if evidence is not None:
            return StepVerdict(step_id=step.id, verdict="violated", evidence=evidence, confidence=CONFIDENCE_MATCH)
        return StepVerdict(step_id=step.id, verdict="ok", confidence=CONFIDENCE_ABSENT)
    applies = bool(met.intersection(step.applies_when))
    if evidence is not None and (applies or not step.only_when_applicable):
        return StepVerdict(step_id=step.id, verdict="demonstrated", evidence=evidence, confidence=CONFIDENCE_MATCH)
    if applies:
        return StepVerdict(step_id=step.id, verdict="missed", confidence=CONFIDENCE_ABSENT)
    return StepVerdict(step_id=step.id, verdict="not_applicable", confidence=CONFIDENCE_NOT_APPLICABLE)


def first_violated(verdicts: dict[str, StepVerdict], step_ids: Iterable[str]) -> str | None:
    """The first of ``step_ids`` whose verdict is ``violated``, if any."""
    return next((s for s in step_ids if s in verdicts and verdicts[s].verdict == "violated"), None)


def apply_after_violations(rubric: Rubric, verdicts: dict[str, StepVerdict]) -> dict[str, StepVerdict]:
    """A do-step with ``applies_after`` applies once one of those don't-steps is violated.

    "Probably about six sessions" (a guess) is the moment the seeds say "let me find out", even
    when no uncertainty phrase makes ``find_out`` apply. Only ``not_applicable`` turns ``missed``.
    """
    for step in rubric.turn_steps():
        current = verdicts.get(step.id)
        if current is None or current.verdict != "not_applicable" or not step.applies_after:
            continue
        cause = first_violated(verdicts, step.applies_after)
        if cause is not None:
            verdicts[step.id] = StepVerdict(step_id=step.id, verdict="missed", confidence=CONFIDENCE_ABSENT,
                                            source=verdicts[cause].source)  # fmt: skip
    return verdicts


def apply_voids(rubric: Rubric, verdicts: dict[str, StepVerdict]) -> dict[str, StepVerdict]:
    """A demonstration of a step with ``void_if`` turns ``missed`` when one of those don't-steps is violated.

    On the held-out folds (test4-test7) this took ask_questions from 0.80 to 0.84 on test6 and
    changed nothing else: argumentative questions were the commonest false "asked a question".
    """
    for step in rubric.turn_steps():
        current = verdicts.get(step.id)
        if current is None or current.verdict != "demonstrated" or not step.void_if:
            continue
        cause = first_violated(verdicts, step.void_if)
        if cause is not None:
            verdicts[step.id] = StepVerdict(step_id=step.id, verdict="missed", confidence=CONFIDENCE_ABSENT,
                                            evidence=f"rhetorical: the reply also violates {cause}",
                                            source=verdicts[cause].source)  # fmt: skip
    return verdicts


def run(rubric: Rubric, reply: str, context: TurnContext | None = None) -> dict[str, StepVerdict]:
    """Verdicts for every graded per-turn step of ``rubric`` on one trainee ``reply``."""
    context = context or TurnContext()
    text = Normalized(reply)
    met = conditions_met(rubric, reply, context)
    verdicts = {step.id: judge_step(step, text, context, met) for step in rubric.turn_steps()}
    return apply_voids(rubric, apply_after_violations(rubric, verdicts))
