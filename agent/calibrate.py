"""Calibration: how well the grader agrees with hand labels (per-step accuracy, Cohen's kappa).

Input is JSONL in the format of design.md, one trainee reply a line; only the steps a line labels
are scored, so labellers can leave undecidable steps out. Kappa corrects accuracy for chance:
a step that is "ok" in 95% of lines gets 95% accuracy by always answering "ok", and kappa 0.
A step whose gold labels have one class only has no defined kappa (``null``): its accuracy is
still reported, and it is left out of ``macro_kappa``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from agent.checks import Meets, TurnContext, conditions_met
from agent.coach import grade
from agent.grader import grade_fast
from agent.grades import TurnGrade
from agent.llm import LLMSettings
from agent.personas import PersonaError, load_persona
from agent.rubrics import Rubric, Verdict, load_rubric
from agent.transcript import Message


class CalibrationError(ValueError):
    """A calibration file is unreadable or a line is invalid; names the file, line and field."""


class ExampleContext(BaseModel):
    persona_name: str | None = None
    channel: str = "front_desk"
    patient_abusive: bool = False
    transferring: bool = False


class Example(BaseModel):
    id: str
    rubric: str = "deescalation"
    situation: str | None = None
    context: ExampleContext = Field(default_factory=ExampleContext)
    # A persona id (grounded gold): the grader is given that persona's name, channel, conditions,
    # complaint facts and wants, as a session gives them (see :func:`persona_context`).
    persona: str | None = None
    history: list[Message] = Field(default_factory=list)
    reply: str
    labels: dict[str, Verdict] = Field(min_length=1)
    # offer_solution only: whether the offer meets the persona's wants, and which remedy.
    meets: Meets | None = None
    remedy: str | None = None
    # Who wrote the reply, where a file mixes authors: ``learn-stance`` leaves whole authors out when it
    # cross-validates (a reader must be judged on wording it never saw).
    author: str | None = None

    def turn_context(self) -> TurnContext:
        return TurnContext(**self.context.model_dump(), history=self.history)


def persona_context(example: Example, rubric: Rubric, use_learned: bool = True) -> TurnContext:
    """The context a session would give the grader for ``example``'s reply to its persona.

    Name, channel, conditions, facts and wants come from the persona file; ``earlier`` (how many
    earlier turns showed each step) from grading the trainee lines in ``history`` in order, each with
    the conversation before it, as a session counts them. Without a persona: :meth:`Example.turn_context`.
    """
    if example.persona is None:
        return example.turn_context()
    try:
        persona = load_persona(example.persona)
    except (PersonaError, OSError) as exc:
        raise CalibrationError(f"{example.id}: persona: {exc}") from exc

    def context(history: list[Message], earlier: dict[str, int]) -> TurnContext:
        return TurnContext.of_persona(persona, history, earlier=earlier)

    earlier: dict[str, int] = {}
    for index, message in enumerate(example.history):
        if message.role != "trainee":
            continue
        graded = grade_fast(rubric, message.content, context(example.history[:index], earlier), use_learned=use_learned)
        for step_id, verdict in graded.verdicts.items():
            if verdict.verdict == "demonstrated":
                earlier[step_id] = earlier.get(step_id, 0) + 1
    return context(example.history, earlier)


class StepScore(BaseModel):
    accuracy: float
    kappa: float | None
    n: int
    # gold verdict -> predicted verdict -> count
    confusion: dict[str, dict[str, int]]


class Mistake(BaseModel):
    id: str
    step: str
    gold: str
    predicted: str
    reply: str
    evidence: str | None = None


class CalibrationReport(BaseModel):
    file: str
    rubric: str
    examples: int
    macro_kappa: float | None
    macro_accuracy: float | None
    steps: dict[str, StepScore]
    # Per step: why some of its labels cannot be judged from what the file gives (see label_warnings).
    warnings: dict[str, str] = Field(default_factory=dict)
    # Replies the learned classifier left to the checks, being unlike any reply it learnt from.
    unfamiliar: int = 0
    # Lines labelled with ``meets``: agreement of offer_solution's ``meets`` ("none" where no concrete
    # offer was found); absent when the file labels none.
    meets: StepScore | None = None
    # Lines labelled on a don't-step: agreement on "violated some don't-step it labels" (hostile at all),
    # whichever step; absent when the file labels none.
    any_dont: StepScore | None = None
    mistakes: list[Mistake] = Field(default_factory=list)


def load_examples(path: str | Path, rubric: Rubric | None = None) -> list[Example]:
    """Parse and validate every line; any bad line raises naming ``file:line`` and the field."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    examples: list[Example] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        try:
            example = Example.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(line)'}: {e['msg']}" for e in exc.errors())
            raise CalibrationError(f"{path}:{number}: {problems}") from exc
        if rubric is not None:
            if example.rubric != rubric.id:
                raise CalibrationError(f"{path}:{number}: rubric: {example.rubric!r}, but grading with {rubric.id!r}")
            for step_id, verdict in example.labels.items():
                if step_id not in rubric.step_ids:
                    raise CalibrationError(f"{path}:{number}: labels.{step_id}: rubric {rubric.id!r} has no such step")
                allowed = rubric.step(step_id).verdicts
                if verdict not in allowed:
                    raise CalibrationError(
                        f"{path}:{number}: labels.{step_id}: {verdict!r} is not one of {', '.join(allowed)}"
                    )
        examples.append(example)
    if not examples:
        raise CalibrationError(f"{path}: no examples")
    return examples


# What the grader needs from the file to know that a step applies, per ``applies_when`` condition.
# ``trainee_uncertain`` and ``always`` come from the reply itself, so no file can lack them.
NEEDS = {
    "has_name": "context.persona_name (the patient's name as the trainee knows it)",
    "public_channel": "context.channel naming a public channel",
    "patient_abusive": "context.patient_abusive or the patient's abusive message in history",
    "patient_demands_manager_or_rude": "the patient's message in history (or context.patient_abusive)",
    "transferring": "context.transferring",
}
FROM_HISTORY = {"patient_abusive", "patient_demands_manager_or_rude"}


def label_warnings(examples: list[Example], rubric: Rubric) -> dict[str, str]:
    """Per step, a warning when labels say the step applies but the file gives the grader no way to know.

    A line labelled ``use_name: demonstrated`` without ``context.persona_name``, or ``take_offline``
    labelled on a line whose channel is not public, is scored ``not_applicable`` by the grader
    whatever the reply says: the step's agreement then measures the file, not the grader (issue 13).
    Conditions read from the patient's message only count as lacking when the line has no history.
    """
    lacking: dict[str, dict[str, int]] = {}
    labelled: dict[str, int] = {}
    for example in examples:
        met: set[str] | None = None
        for step_id, verdict in example.labels.items():
            step = rubric.step(step_id)
            if step.kind != "do" or verdict == "not_applicable" or "always" in step.applies_when:
                continue
            file_given = [c for c in step.applies_when if c in NEEDS]
            if not file_given:
                continue
            labelled[step_id] = labelled.get(step_id, 0) + 1
            if met is None:
                met = conditions_met(rubric, example.reply, example.turn_context())
            if met.intersection(step.applies_when):
                continue
            missing = [c for c in file_given if c not in FROM_HISTORY or not example.history]
            if missing:
                counts = lacking.setdefault(step_id, {})
                counts[missing[0]] = counts.get(missing[0], 0) + 1
    warnings: dict[str, str] = {}
    for step_id, counts in lacking.items():
        total = sum(counts.values())
        needs = " / ".join(NEEDS[c] for c in counts)
        warnings[step_id] = (
            f"{total} of {labelled[step_id]} lines labelled {step_id} as applying give no {needs}; "
            f"the grader scores it not_applicable there, so {step_id}'s agreement measures the file, not the grader"
        )
    return dict(sorted(warnings.items(), key=lambda item: rubric.step_ids.index(item[0])))


def cohen_kappa(gold: list[str], predicted: list[str]) -> float | None:
    """Cohen's kappa of two labelings; None when the gold labels have a single class."""
    if len(gold) != len(predicted) or not gold:
        raise ValueError("kappa needs two non-empty labelings of the same length")
    if len(set(gold)) < 2:
        return None
    n = len(gold)
    classes = sorted(set(gold) | set(predicted))
    observed = sum(g == p for g, p in zip(gold, predicted, strict=True)) / n
    expected = sum((gold.count(c) / n) * (predicted.count(c) / n) for c in classes)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def score(
    examples: list[Example], predictions: list[dict[str, str]], evidence: list[dict[str, str | None]] | None = None
) -> tuple[dict[str, StepScore], list[Mistake]]:
    """Per-step scores over the labelled steps only, and the list of disagreements."""
    pairs: dict[str, list[tuple[str, str]]] = {}
    mistakes: list[Mistake] = []
    for index, (example, predicted) in enumerate(zip(examples, predictions, strict=True)):
        for step_id, gold in example.labels.items():
            guess = predicted.get(step_id, "missing")
            pairs.setdefault(step_id, []).append((gold, guess))
            if guess != gold:
                quote = (evidence[index].get(step_id) if evidence else None) or None
                mistakes.append(Mistake(id=example.id, step=step_id, gold=gold, predicted=guess,
                                        reply=example.reply, evidence=quote))  # fmt: skip
    steps: dict[str, StepScore] = {}
    for step_id, rows in pairs.items():
        gold = [g for g, _ in rows]
        predicted = [p for _, p in rows]
        confusion: dict[str, dict[str, int]] = {}
        for g, p in rows:
            confusion.setdefault(g, {}).setdefault(p, 0)
            confusion[g][p] += 1
        steps[step_id] = StepScore(
            accuracy=sum(g == p for g, p in rows) / len(rows),
            kappa=cohen_kappa(gold, predicted),
            n=len(rows),
            confusion=confusion,
        )
    return steps, mistakes


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def calibrate(
    path: str | Path,
    rubric: Rubric | str = "deescalation",
    *,
    use_llm: bool = False,
    judge: bool = False,
    use_learned: bool = True,
    settings: LLMSettings | None = None,
    progress: bool = False,
    grader: Callable[[Rubric, Example], TurnGrade] | None = None,
) -> CalibrationReport:
    """Grade every example and compare with its labels.

    Default: the fast path (checks + learned classifier), which is what decides verdicts in the
    product; ``use_learned=False`` scores the checks alone. ``use_llm``
    runs the full :func:`agent.coach.grade` (one model call per line; verdicts change only with
    ``judge``).
    """
    rubric = load_rubric(rubric) if isinstance(rubric, str) else rubric
    examples = load_examples(path, rubric)
    if grader is None:
        if use_llm:

            def grader(r: Rubric, e: Example) -> TurnGrade:
                return grade(r, e.reply, persona_context(e, r), settings, situation=e.situation, judge=judge)
        else:

            def grader(r: Rubric, e: Example) -> TurnGrade:
                return grade_fast(r, e.reply, persona_context(e, r, use_learned), use_learned=use_learned)

    iterator: Iterable[Example] = examples
    if progress:
        from tqdm import tqdm

        iterator = tqdm(examples, desc="grading", unit="reply", file=sys.stderr, leave=False)
    predictions: list[dict[str, str]] = []
    evidence: list[dict[str, str | None]] = []
    unfamiliar = 0
    meets: list[tuple[str, str]] = []
    for example in iterator:
        result = grader(rubric, example)
        unfamiliar += result.learned_abstained
        predictions.append({sid: v.verdict for sid, v in result.verdicts.items()})
        evidence.append({sid: v.evidence for sid, v in result.verdicts.items()})
        if example.meets is not None:
            offer = result.verdicts.get("offer_solution")
            meets.append((example.meets, (offer.meets if offer else None) or "none"))
    steps, mistakes = score(examples, predictions, evidence)
    donts = {step.id for step in rubric.steps if step.kind == "dont"}
    return CalibrationReport(
        file=str(path),
        rubric=rubric.id,
        examples=len(examples),
        macro_kappa=_mean(s.kappa for s in steps.values()),
        macro_accuracy=_mean(s.accuracy for s in steps.values()),
        steps=dict(sorted(steps.items(), key=lambda item: rubric.step_ids.index(item[0]))),
        warnings=label_warnings(examples, rubric),
        unfamiliar=unfamiliar,
        meets=_pair_score(meets),
        any_dont=_pair_score(_any_dont_pairs(examples, predictions, donts)),
        mistakes=mistakes,
    )


def _any_dont_pairs(
    examples: list[Example], predictions: list[dict[str, str]], donts: set[str]
) -> list[tuple[str, str]]:
    """(gold, predicted) of "violated on some don't-step the line labels", per line that labels one.

    Why: an author and a careful second reader agree far more often on whether a reply is hostile at all than
    on which don't-step it breaks (tests/data/gold/README.md, stop 32), and the mood escalates on any of them.
    """
    pairs = []
    for example, predicted in zip(examples, predictions, strict=True):
        labelled = [s for s in example.labels if s in donts]
        if labelled:
            gold = any(example.labels[s] == "violated" for s in labelled)
            guess = any(predicted.get(s) == "violated" for s in labelled)
            pairs.append(("violated" if gold else "ok", "violated" if guess else "ok"))
    return pairs


def _pair_score(pairs: list[tuple[str, str]]) -> StepScore | None:
    """Agreement over (gold, predicted) pairs (offer_solution's ``meets``, any don't-step); None without any."""
    if not pairs:
        return None
    confusion: dict[str, dict[str, int]] = {}
    for gold, guess in pairs:
        confusion.setdefault(gold, {}).setdefault(guess, 0)
        confusion[gold][guess] += 1
    gold = [g for g, _ in pairs]
    predicted = [p for _, p in pairs]
    return StepScore(accuracy=sum(g == p for g, p in pairs) / len(pairs), kappa=cohen_kappa(gold, predicted),
                     n=len(pairs), confusion=confusion)  # fmt: skip


def _figure(value: float | None) -> str:
    """A score to three places, or "n/a" where it is undefined (kappa with one class, no lines)."""
    return "n/a" if value is None else f"{value:.3f}"


def _table_row(name: str, s: StepScore) -> list[Any]:
    """``[name, n, accuracy, kappa]`` for the trainer page's agreement table (kappa None where undefined)."""
    return [name, s.n, round(s.accuracy, 3), None if s.kappa is None else round(s.kappa, 3)]


def format_report(report: CalibrationReport, *, show_mistakes: bool = False) -> str:
    """Plain-text table plus confusion matrices (gold rows x predicted columns)."""
    lines = [f"{report.file}: {report.examples} replies, rubric {report.rubric}", ""]
    lines.append(f"{'step':<20} {'n':>4} {'accuracy':>9} {'kappa':>7}")
    for step_id, s in report.steps.items():
        lines.append(f"{step_id:<20} {s.n:>4} {s.accuracy:>9.3f} {_figure(s.kappa):>7}")
    lines += ["", f"macro accuracy {_figure(report.macro_accuracy)}   macro kappa {_figure(report.macro_kappa)}"]
    if report.meets is not None:
        scored = f"accuracy {report.meets.accuracy:.3f}, kappa {_figure(report.meets.kappa)}"
        lines.append(f"offer_solution meets: {report.meets.n} labelled, {scored}")
    if report.any_dont is not None:
        found = report.any_dont.confusion.get("violated", {})
        flagged = report.any_dont.confusion.get("ok", {})
        lines.append(
            f"any don't-step (hostile at all): {report.any_dont.n} labelled, accuracy {report.any_dont.accuracy:.3f}, "
            f"kappa {_figure(report.any_dont.kappa)}; "
            f"violations found {found.get('violated', 0)} of {sum(found.values())}, "
            f"ok lines flagged {flagged.get('violated', 0)} of {sum(flagged.values())}"
        )
    if report.unfamiliar:
        lines += ["", unfamiliar_note(report)]
    if report.warnings:
        lines += ["", "warnings (labels the file gives the grader no way to judge):"]
        lines += [f"  warning: {step_id}: {text}" for step_id, text in report.warnings.items()]
    lines += ["", "confusion (rows gold, columns predicted):"]
    for step_id, s in report.steps.items():
        classes = sorted(set(s.confusion) | {p for row in s.confusion.values() for p in row})
        lines.append(f"  {step_id}")
        lines.append("    " + " " * 15 + "".join(f"{c[:14]:>15}" for c in classes))
        for gold in classes:
            row = s.confusion.get(gold, {})
            lines.append(f"    {gold[:14]:<15}" + "".join(f"{row.get(c, 0):>15}" for c in classes))
    if show_mistakes and report.mistakes:
        lines += ["", "disagreements:"]
        for m in report.mistakes:
            lines.append(f"  {m.id} {m.step}: gold {m.gold}, got {m.predicted} ({m.evidence!r}) | {m.reply}")
    return "\n".join(lines)


def unfamiliar_note(report: CalibrationReport) -> str:
    """Why part of the file was graded by the checks alone (the classifier abstains on text unlike its own)."""
    return (
        f"note: the learned classifier left {report.unfamiliar} of {report.examples} replies to the checks: "
        "they are unlike every reply it learnt from (another register or domain)"
    )


def as_json(report: CalibrationReport, *, include_mistakes: bool = False) -> dict[str, Any]:
    data = report.model_dump(exclude={"mistakes"} if not include_mistakes else set())
    return data


def agreement_table(path: str | Path, rubric: str = "deescalation") -> tuple[list[list[Any]], str]:
    """Rows ``[step, n, accuracy, kappa]`` and a summary for the trainer page, with any per-step warnings."""
    report = calibrate(path, rubric)
    rows = [_table_row(step_id, s) for step_id, s in report.steps.items()]
    if report.any_dont is not None:  # hostile at all, whichever don't-step: the reading people agree on most
        rows.append(_table_row("any don't-step", report.any_dont))
    macro = f"macro accuracy {_figure(report.macro_accuracy)}, macro kappa {_figure(report.macro_kappa)}"
    note = f"{report.examples} replies: {macro}"
    if report.unfamiliar:
        note += f"\n{unfamiliar_note(report)}"
    for step_id, text in report.warnings.items():
        note += f"\n⚠ {step_id}: {text}"
    return rows, note
