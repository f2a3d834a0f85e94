"""End-of-session scorecard: per-step coverage, strengths, what to practise next, and a debrief line.

The scorecard is data (a pydantic :class:`Scorecard`), so the app, the store and the exports all
read the same thing; Markdown/JSON exports and the per-step bar chart are views of it. The debrief
line is the seeds' advice for the trainee themself after a hard conversation ("Take a Minute",
seed 002; "Relax Outside of Work", seed 003), taken from the rubric's ``debrief`` step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from agent.checks import StepVerdict, TurnContext
from agent.grader import grade_session
from agent.grades import TurnGrade
from agent.rubrics import Rubric
from agent.transcript import Transcript

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PRACTISE = 3
MAX_STRENGTHS = 3


class StepCoverage(BaseModel):
    """How one per-turn step went over the session."""

    step_id: str
    title: str
    kind: str
    demonstrated: int = 0
    missed: int = 0
    not_applicable: int = 0
    violated: int = 0
    ok: int = 0
    rate: float | None = Field(
        default=None, description="do-steps: demonstrated / turns where it applied; don't-steps: clean turns / turns"
    )
    evidence: list[str] = Field(default_factory=list)

    @property
    def applicable(self) -> int:
        return self.demonstrated + self.missed if self.kind == "do" else self.violated + self.ok


class Focus(BaseModel):
    """One thing to practise next, with the rubric's advice and a good example."""

    step_id: str
    title: str
    why: str
    advice: str
    example: str | None = None
    sources: list[str] = Field(default_factory=list)


class MoodPoint(BaseModel):
    """The mood after ``turn`` trainee turns (0: the start), as 0-1 fractions for plots."""

    turn: int
    anger: float
    trust: float


class Scorecard(BaseModel):
    """The end-of-session result: the one scorecard type the store, the page and the exports share."""

    rubric: str
    turns: int
    outcome: str | None = None
    reason: str | None = None
    mood: list[MoodPoint] = Field(default_factory=list)
    score: float | None = Field(default=None, description="share of applicable step verdicts that went well, 0-1")
    steps: list[StepCoverage]
    session: dict[str, StepVerdict] = Field(default_factory=dict)
    strengths: list[str] = Field(default_factory=list)
    practise_next: list[Focus] = Field(default_factory=list)
    debrief: str
    debrief_sources: list[str] = Field(default_factory=list)
    checks_only_turns: int = Field(
        default=0,
        ge=0,
        description="turns the classifier left to the rubric's phrase checks (their wording was unlike every reply "
        "it learnt from): on those a step said in other words can go unseen, so their rates may read low; "
        "0 on cards saved before it was counted",
    )


def checks_only_turns(grades: Iterable[TurnGrade | None]) -> int:
    """How many graded turns the classifier abstained on, leaving them to the rubric's phrases alone.

    One definition for the scorecard and the History table, so the two never count differently;
    a turn not graded yet (``None``) is not counted.
    """
    return sum(1 for grade in grades if grade is not None and grade.learned_abstained)


def _coverage(rubric: Rubric, grades: Sequence[TurnGrade]) -> list[StepCoverage]:
    rows: list[StepCoverage] = []
    for step in rubric.turn_steps():
        row = StepCoverage(step_id=step.id, title=step.title, kind=step.kind)
        for grade in grades:
            verdict = grade.verdicts.get(step.id)
            if verdict is None:
                continue
            setattr(row, verdict.verdict, getattr(row, verdict.verdict) + 1)
            wanted = "violated" if step.kind == "dont" else "demonstrated"
            if verdict.verdict == wanted and verdict.evidence and len(row.evidence) < 2:
                row.evidence.append(verdict.evidence)
        if row.applicable:
            good = row.demonstrated if step.kind == "do" else row.ok
            row.rate = good / row.applicable
        rows.append(row)
    return rows


def _practise_next(rubric: Rubric, rows: list[StepCoverage], session: dict[str, StepVerdict]) -> list[Focus]:
    """Violations first (most frequent), then do-steps with the lowest rate, then session misses."""
    candidates: list[tuple[tuple[int, float, int], Focus]] = []
    for index, row in enumerate(rows):
        step = rubric.step(row.step_id)
        if row.kind == "dont" and row.violated:
            why = f"happened in {row.violated} of {row.applicable} turns"
            key = (0, -row.violated, index)
        elif row.kind == "do" and row.missed and row.rate is not None and row.rate < 0.5:
            why = f"shown in {row.demonstrated} of {row.applicable} turns where it applied"
            key = (1, row.rate, index)
        else:
            continue
        focus = Focus(step_id=step.id, title=step.title, why=why, advice=step.advice or step.description,
                      example=step.good[0] if step.good else None, sources=step.sources)  # fmt: skip
        candidates.append((key, focus))
    for index, (step_id, verdict) in enumerate(session.items()):
        if verdict.verdict == "missed":
            step = rubric.step(step_id)
            why = verdict.evidence or "not shown over the conversation"
            focus = Focus(step_id=step.id, title=step.title, why=why, advice=step.advice or step.description,
                          example=step.good[0] if step.good else None, sources=step.sources)  # fmt: skip
            candidates.append(((2, 0.0, index), focus))
    return [focus for _, focus in sorted(candidates, key=lambda c: c[0])][:MAX_PRACTISE]


def _strengths(rows: list[StepCoverage], session: dict[str, StepVerdict], rubric: Rubric) -> list[str]:
    done = [r for r in rows if r.kind == "do" and r.demonstrated and (r.rate or 0) >= 0.5]
    done.sort(key=lambda r: (-(r.rate or 0), -r.demonstrated))
    out = [f"{r.title} ({r.demonstrated} of {r.applicable} turns)" for r in done]
    out += [rubric.step(sid).title for sid, v in session.items() if v.verdict == "demonstrated"]
    return out[:MAX_STRENGTHS]


def _debrief(rubric: Rubric, rows: list[StepCoverage]) -> tuple[str, list[str]]:
    try:
        step = rubric.step("debrief")
    except KeyError:
        return "Take a minute before your next patient.", []
    text = " ".join((step.advice or step.description).split())
    heated = any(r.step_id in ("lose_cool", "argue_back") and r.violated for r in rows)
    if heated:
        text = "It got heated, and that is normal in hard calls. " + text
    return text, step.sources


def build_scorecard(
    rubric: Rubric,
    grades: Sequence[TurnGrade],
    transcript: Transcript,
    context: TurnContext | None = None,
    session: dict[str, StepVerdict] | None = None,
    *,
    outcome: str | None = None,
    reason: str | None = None,
    mood: Sequence[MoodPoint] = (),
) -> Scorecard:
    """The scorecard for one finished session (session steps are graded here unless given)."""
    rows = _coverage(rubric, grades)
    if session is None:
        session = grade_session(rubric, transcript, context, list(grades))
    applicable = sum(r.applicable for r in rows)
    applicable += sum(v.verdict in ("demonstrated", "missed") for v in session.values())
    good = sum(r.demonstrated if r.kind == "do" else r.ok for r in rows)
    good += sum(v.verdict == "demonstrated" for v in session.values())
    debrief, sources = _debrief(rubric, rows)
    return Scorecard(
        rubric=rubric.id,
        turns=len(grades),
        outcome=outcome,
        reason=reason,
        mood=list(mood),
        score=good / applicable if applicable else None,
        steps=rows,
        session=session,
        strengths=_strengths(rows, session, rubric),
        practise_next=_practise_next(rubric, rows, session),
        debrief=debrief,
        debrief_sources=sources,
        checks_only_turns=checks_only_turns(grades),
    )


def to_json(card: Scorecard) -> str:
    return card.model_dump_json(indent=2)


def checks_only_note(card: Scorecard) -> str | None:
    """The sentence saying how many turns only the rubric's phrases judged, or None when none were.

    Said because on those turns the grader saw less than usual: a trainee who said the right thing in
    their own words may find it missed, and should read those rates with that in mind.
    """
    count = card.checks_only_turns
    if not count:
        return None
    verb, their = ("was", "its") if count == 1 else ("were", "their")
    return (
        f"{count} of {card.turns} turns {verb} judged by the rubric's phrases alone: {their} wording was unlike "
        "every reply the classifier learnt from, so something you did in other words may have been missed."
    )


def to_markdown(card: Scorecard, rubric: Rubric | None = None, titles: Mapping[str, str] | None = None) -> str:
    """A readable report: summary (and how many turns only the phrases judged), what to practise,
    coverage table, session steps, debrief."""
    titles = dict(titles or ({s.id: s.title for s in rubric.steps} if rubric else {}))
    score = "n/a" if card.score is None else f"{card.score:.0%}"
    lines = [f"# Practice scorecard ({card.turns} turns)", ""]
    lines += [f"**Overall:** {score} of applicable steps went well.", ""]
    note = checks_only_note(card)
    if note:
        lines += [f"_{note}_", ""]
    lines.append("## Strengths")
    lines += [f"- {s}" for s in card.strengths] or ["- (none yet: keep practising)"]
    lines += ["", "## Practise next"]
    for focus in card.practise_next:
        example = f' Try: "{focus.example}"' if focus.example else ""
        lines.append(f"- **{focus.title}** ({focus.why}). {focus.advice}{example}")
    if not card.practise_next:
        lines.append("- Nothing stood out: try a harder patient next.")
    applied = [row for row in card.steps if row.applicable]
    if applied:
        lines += ["", "## Steps turn by turn", "", "| step | shown / applied | rate |", "|---|---|---|"]
    for row in applied:
        if row.kind == "do":
            counts = f"{row.demonstrated} / {row.applicable}"
        else:
            counts = f"avoided {row.ok} / {row.applicable}"
        rate = "n/a" if row.rate is None else f"{row.rate:.0%}"
        lines.append(f"| {row.title} | {counts} | {rate} |")
    if card.session:
        lines += ["", "## Over the whole conversation", ""]
        for step_id, verdict in card.session.items():
            note = f" ({verdict.evidence})" if verdict.evidence else ""
            lines.append(f"- {titles.get(step_id, step_id)}: {verdict.verdict.replace('_', ' ')}{note}")
    sources = f" (seeds: {', '.join(card.debrief_sources)})" if card.debrief_sources else ""
    lines += ["", "## After the call", "", card.debrief + sources, ""]
    return "\n".join(lines)


def step_chart(card: Scorecard, title: str | None = None) -> Figure:
    """Horizontal bar per step: rate over the session (do-steps green, don't-steps clean-turn rate)."""
    from matplotlib.figure import Figure

    rows = [r for r in card.steps if r.rate is not None]
    figure = Figure(figsize=(6, 0.35 * max(len(rows), 1) + 1))
    axes = figure.add_subplot()
    labels = [r.title for r in rows]
    values = [r.rate or 0.0 for r in rows]
    colours = ["#2e7d32" if r.kind == "do" else "#1565c0" for r in rows]
    axes.barh(labels, values, color=colours)
    axes.set_xlim(0, 1)
    axes.invert_yaxis()
    axes.set_xlabel("share of turns (do: shown where it applied; don't: avoided)")
    axes.set_title(title or f"Steps over {card.turns} turns")
    figure.tight_layout()
    return figure
