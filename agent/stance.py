"""Stance acts: what a reply with no kind move does to the patient (issue 20).

Why a second layer beside the rubric's patterns: hostility is judged by what a reply does to the
patient -- blames them, belittles the complaint, brushes them off, mocks them -- and it takes many
sentence shapes. A pattern in the rubric runs on every reply, kind ones included, so it must stay
narrow ("you misheard" is blame, "if you misheard, that's on us" is not), and the narrow patterns found
4-7 of about 21 violations per step on the held-out hostility file. Two earlier tries read stance from
MiniLM sentence vectors and failed: the vectors group replies by topic, not by stance.

What this module uses instead is structure. A reply that makes *no kind move at all* -- no
acknowledgement, apology, offer, promise to find out, thanks, agreement, question that asks the
patient for something (the checks' do-step demonstrations and the ``kind`` list of the stance file) --
and that *asserts something at the patient* (a "you" statement about their conduct, a minimiser, a
comparison with others, a token reply such as "Noted.", a rhetorical question, two snapped one-word
sentences) is hostile. The acts are broad shapes, which is safe only behind that gate: a kind reply
never reaches them. Each finding quotes the sentence that earned it and names the act (``grounds``).

The data lives beside the rubric (``rubrics/<rubric id>.stance.yaml``); a rubric without one gets no
stance layer. Pure functions over the checks' normalised text and verdicts: no encoder, no model.
"""

from __future__ import annotations

import bisect
import itertools
import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent import checks
from agent.checks import SENTENCE_END, WORD, Normalized, Reading, StepVerdict
from agent.rubrics import Rubric, rubrics_dir

SENTENCE_START = r"(?:^|(?<=[.?!\n])\s*)"
SENTENCE_STOP = r"(?=\s*(?:[.?!\n]|$))"
CONFIDENCE_STANCE = 0.75


def _expand(pattern: str) -> str:
    """``{S}`` / ``{E}`` in a stance pattern: the start / end of a sentence."""
    return pattern.replace("{S}", SENTENCE_START).replace("{E}", SENTENCE_STOP)


def _compile(patterns: list[str]) -> list[re.Pattern[str]]:
    return [re.compile(_expand(p), re.IGNORECASE | re.MULTILINE) for p in patterns]


class Act(BaseModel):
    """One thing a sentence does to the patient, and the don't-steps it violates."""

    model_config = ConfigDict(extra="forbid")
    name: str
    steps: list[str] = Field(min_length=1)
    patterns: list[str] = Field(default_factory=list)
    question: bool = Field(default=False, description="match only inside questions that are not asking")
    snaps: int | None = Field(default=None, description="the reply ends in this many sentences of at most two words")
    overrides_kind: bool = Field(
        default=False, description="a kind phrase in the same sentence is the act's cushion, not a kind move"
    )

    @field_validator("patterns")
    @classmethod
    def _valid(cls, patterns: list[str]) -> list[str]:
        _compile(patterns)
        return patterns


class Stance(BaseModel):
    """The stance file of one rubric: the kind moves that close the gate and the acts read behind it."""

    model_config = ConfigDict(extra="forbid")
    kind_steps: list[str] = Field(default_factory=list)
    kind: list[str] = Field(default_factory=list)
    asking: list[str] = Field(default_factory=list)
    acts: list[Act] = Field(default_factory=list)

    @property
    def compiled_kind(self) -> list[re.Pattern[str]]:
        return _compiled(tuple(self.kind))

    @property
    def compiled_asking(self) -> list[re.Pattern[str]]:
        return _compiled(tuple(self.asking))


@lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return _compile(list(patterns))


@lru_cache(maxsize=8)
def _load(path: Path, mtime_ns: int) -> Stance:
    return Stance.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def stance_for(rubric: Rubric) -> Stance | None:
    """The stance file beside the rubric (``<rubric id>.stance.yaml``), or None."""
    path = rubrics_dir() / f"{rubric.id}.stance.yaml"
    if not path.is_file():
        return None
    return _load(path, path.stat().st_mtime_ns)


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, its end mark included, surrounding spaces left out."""
    spans, start = [], 0
    for mark in [*SENTENCE_END.finditer(text), None]:
        end = mark.end() if mark else len(text)
        piece = text[start:end]
        if piece.strip(" \t\n.?!"):
            left = start + len(piece) - len(piece.lstrip())
            spans.append((left, start + len(piece.rstrip())))
        start = end
    return spans


def _inside(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``[start, end)`` lies inside one of ``spans`` (sorted, disjoint: sentences), in O(log n)."""
    index = bisect.bisect_right(spans, (start, float("inf"))) - 1
    return index >= 0 and spans[index][0] <= start and end <= spans[index][1]


def _located(text: str, quote: str) -> tuple[int, int] | None:
    """Where a do-step's quoted evidence sits in the normalised ``text`` (None: not found)."""
    needle = Normalized(quote).text.strip().lower()
    at = text.lower().find(needle) if needle else -1
    return (at, at + len(needle)) if at >= 0 else None


def asking(stance: Stance, text: str, start: int, end: int) -> bool:
    """Whether the question ``text[start:end]`` asks the patient for something (not a rhetorical one)."""
    question = text[start:end]
    rhetorical = [p for act in stance.acts if act.question for p in _compiled(tuple(act.patterns))]
    return any(p.search(question) for p in stance.compiled_asking) and not any(p.search(question) for p in rhetorical)


def kind_move(
    stance: Stance,
    text: str,
    verdicts: dict[str, StepVerdict],
    hostile: list[tuple[int, int]] | None = None,
    cushioned: list[tuple[int, int]] | None = None,
    aimed: list[tuple[int, int]] | None = None,
) -> str | None:
    """The first kind move of the reply, quoted (a do-step demonstrated, a kind phrase, an asking question).

    The do-steps count whether the checks or the classifier found them: on the held-out human and test11
    guards, replies whose summary or question only the classifier saw were otherwise read as hostile.

    ``hostile``: sentence spans that hold an act. A do-step the checks quoted inside such a sentence is
    the act's own words read as kindness (empathize quoting "tough" in "Kids are tough.", offer_solution
    quoting "free parking" in "Good luck finding a clinic with free parking."), so it does not count;
    the ``kind`` phrases count anywhere but in ``cushioned`` spans (:func:`cushions`) and ``aimed`` ones
    (text aimed at the model or grader), the asking questions anywhere but in ``aimed`` ones.
    """
    hostile, cushioned = hostile or [], cushioned or []
    for step_id in stance.kind_steps:
        verdict = verdicts.get(step_id)
        if verdict is not None and verdict.verdict == "demonstrated":
            where = _located(text, verdict.evidence or "")
            if where is None or not _inside(hostile, *where):
                return verdict.evidence or step_id
    for pattern in stance.compiled_kind:
        for m in pattern.finditer(text):
            if not _inside(cushioned, *m.span()):
                return m.group()
    for start, end in sentences(text):
        if (
            text[start:end].endswith("?")
            and asking(stance, text, start, end)
            and not _inside(hostile, start, end)
            and not _inside(aimed or [], start, end)
        ):
            return text[start:end]
    return None


def _sentence_of(spans: list[tuple[int, int]], position: int) -> tuple[int, int]:
    """The sentence (of sorted, disjoint ``spans``) that holds ``position``, found by bisection."""
    index = bisect.bisect_right(spans, (position, float("inf"))) - 1
    if index >= 0 and spans[index][0] <= position < spans[index][1]:
        return spans[index]
    return (position, position + 1)


def _matches(stance: Stance, text: str) -> list[tuple[int, tuple[int, int], int]]:
    """(act index, sentence span, where the act's match starts) for every act found in ``text``."""
    spans = sentences(text)
    found: set[tuple[int, tuple[int, int], int]] = set()
    for index, act in enumerate(stance.acts):
        if act.snaps is not None:
            tail = list(itertools.takewhile(lambda span: 1 <= len(WORD.findall(text, *span)) <= 2, reversed(spans)))
            if len(tail) >= act.snaps:
                found.add((index, (tail[-1][0], tail[0][1]), tail[-1][0]))
            continue
        for pattern in _compiled(tuple(act.patterns)):
            for m in pattern.finditer(text):
                span = _sentence_of(spans, m.start())
                if act.question and not text[span[0] : span[1]].endswith("?"):
                    continue
                found.add((index, span, m.start()))
    return sorted(found)


def act_hits(stance: Stance, text: str) -> list[tuple[Act, tuple[int, int]]]:
    """Every act found in ``text``, with the sentence span that shows it (no gate), in the file's order."""
    unique = sorted({(index, span) for index, span, _ in _matches(stance, text)})
    return [(stance.acts[index], span) for index, span in unique]


CONTRAST = re.compile(r"\b(but|however|though|although|yet)\b", re.IGNORECASE)


def cushions(stance: Stance, text: str) -> list[tuple[int, int]]:
    """Spans where a kind phrase is the act's cushion, not a kind move (sorted, disjoint).

    Two shapes: the whole sentence of an act marked ``overrides_kind`` (sarcasm, talking down, a brush-off:
    "Sure, I'll get right on that.", "Oh, I'm so sorry the world doesn't ..."), and the part of any act's
    sentence before a "but" that comes ahead of the act ("We'll see what we can do, but I wouldn't hold
    your breath"): what follows "but" takes back what came before it. (A kind move after the act, as in
    "I can't do that, but here is what I can do", still counts.)
    """
    out: list[tuple[int, int]] = []
    for index, (start, end), at in _matches(stance, text):
        if stance.acts[index].overrides_kind:
            out.append((start, end))
            continue
        turn = [m.start() for m in CONTRAST.finditer(text, start, at)]
        if turn:
            out.append((start, turn[-1]))
    return _merged(out)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` sorted, overlapping ones joined (what :func:`_inside` needs)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def act_findings(stance: Stance, text: str) -> dict[str, tuple[str, tuple[int, int]]]:
    """For each don't-step, the first act found in ``text`` and its sentence span (no gate)."""
    found: dict[str, tuple[str, tuple[int, int]]] = {}
    for act, span in act_hits(stance, text):
        for step_id in act.steps:
            found.setdefault(step_id, (act.name, span))
    return found


def findings(
    stance: Stance, text: str, verdicts: dict[str, StepVerdict], aimed: list[tuple[int, int]] | None = None
) -> dict[str, tuple[str, tuple[int, int]]]:
    """The acts found per don't-step, or nothing when the reply makes a kind move outside the acts' sentences.

    ``aimed``: spans of text aimed at the model or the grader (a line under a speaker label, a bracketed
    stage direction: :func:`agent.checks.meta_spans`). A kind phrase or question there is not the
    trainee's: "Noted.\nMrs. Lopez: Thank you so much" stays a brush-off.
    """
    hits = act_hits(stance, text)
    if not hits:
        return {}
    aimed = _merged(aimed or [])
    not_kind = _merged([*cushions(stance, text), *aimed])
    if kind_move(stance, text, verdicts, sorted({span for _, span in hits}), not_kind, aimed):
        return {}
    return act_findings(stance, text)


def apply(
    stance: Stance, text: Normalized, verdicts: dict[str, StepVerdict], aimed: list[tuple[int, int]] | None = None
) -> dict[str, StepVerdict]:
    """Turn a don't-step ``ok`` into ``violated`` where the reply makes no kind move and an act shows.

    ``text``: what the don't-steps read (the checks' normalised reply). A step already violated keeps
    its evidence. The finding quotes the sentence, and ``grounds`` names the act and that no kind
    move was made.
    """
    out = dict(verdicts)
    for step_id, (act, (start, end)) in findings(stance, text.text, verdicts, aimed).items():
        current = out.get(step_id)
        if current is None or current.verdict != "ok":
            continue
        out[step_id] = StepVerdict(step_id=step_id, verdict="violated", evidence=text.quote(start, end),
                                   confidence=CONFIDENCE_STANCE, source="check",
                                   grounds=f"{act}, and no kind move in the reply")  # fmt: skip
    return out


def apply_to_reading(rubric: Rubric, reading: Reading, verdicts: dict[str, StepVerdict]) -> dict[str, StepVerdict]:
    """:func:`apply` with the rubric's stance file (none: ``verdicts`` unchanged), then the rubric's voids.

    Called by the checks (``checks.judge``) and, with the classifier's findings in ``verdicts``, by the
    grader (``grader.grade_fast``), which is why the rubric's ``applies_after`` / ``void_if`` rules run again.
    """
    table = stance_for(rubric)
    if table is None:
        return verdicts
    text = checks.donts_text(reading)
    out = apply(table, text, verdicts, _in_normalized(text, reading.meta))
    return checks.apply_voids(rubric, checks.apply_after_violations(rubric, out))


def _in_normalized(text: Normalized, spans: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """``spans`` of the original reply as spans of ``text`` (which dropped apostrophes)."""
    out = []
    for start, end in spans:
        first, last = bisect.bisect_left(text.index, start), bisect.bisect_left(text.index, end)
        if last > first:
            out.append((first, last))
    return out
