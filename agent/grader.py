"""Per-turn verdicts: checks + a learned classifier decide them; no chat model.

Why (design.md, measured here): the embedded 1.5B model agrees with hand labels no better than
the majority label and takes ~9 s for 14 verdicts, while the deterministic checks
(:mod:`agent.checks`) take milliseconds and the per-step classifiers over sentence vectors
(:mod:`agent.learned`) ~50 ms. So verdicts come from those two (``grade_fast``): the checks quote
what they match, the classifier adds what the patterns missed (on held-out replies: macro kappa
0.639 -> 0.732). The model is used for what it is good at, wording the tip and a better phrasing,
in :mod:`agent.coach`. A side effect is that the trainee's text cannot change a verdict by talking
to the model: the model never decides one; the classifier only embeds the text, and the 20
injection tests pass through it too.

After them, on the same reading: the stance acts (:mod:`agent.stance`, phrase shapes for a reply with no
kind move), the stance reader (:mod:`agent.stance_reader`, the encoder with a learned adapter, for
hostility said in words no pattern lists), then grounding (:mod:`agent.grounding`, the content steps held
against the conversation).

Session-level steps (let the patient vent, patience, simple to complex, agreed resolution) need the
whole conversation and are scored at the end by :func:`grade_session`.
"""

from __future__ import annotations

import time

from agent import checks, grounding, learned, stance, stance_reader
from agent.checks import StepVerdict, TurnContext
from agent.grades import TurnGrade
from agent.rubrics import Rubric, Step
from agent.transcript import Message, Transcript

__all__ = ["grade_fast", "grade_session"]


def grade_fast(
    rubric: Rubric,
    reply: str,
    context: TurnContext | None = None,
    *,
    use_learned: bool = True,
    use_reader: bool = True,
) -> TurnGrade:
    """Verdicts only: the checks, then the learned classifier for what the patterns did not find, then
    the stance reader for hostility none of them found (:mod:`agent.stance_reader`).

    No chat model, ~0.1 s on 2 cores, the same answer every time. ``use_learned=False`` (or
    ``DEESCALATE_GRADER=checks``, or no encoder installed) leaves the checks alone; ``use_reader=False``
    leaves out the stance reader only (``learn-stance`` chooses its thresholds against that grader).
    """
    started = time.perf_counter()
    context = context or TurnContext()
    # The meta parts (text to the grader, coach or model) are found once; both stages skip them.
    reading = checks.read(reply, rubric.step_ids, checks.name_tokens(context.persona_name))
    # The stance acts (agent.stance) run after the classifier, which may find a kind move the checks missed.
    verdicts = checked = checks.judge(rubric, reading, context, stance_layer=False)
    components = ["checks"]
    abstained = False  # the classifier left this reply to the checks (learned.LearnedModel.abstains)
    component = learned.component_for(rubric) if use_learned else None
    if component is not None and component.ready:
        assert component.model is not None and component.encoder is not None
        scores = learned.score_reading(component.model, component.encoder, reading)
        abstained = scores.abstained
        if not abstained:
            verdicts = learned.combine(rubric, verdicts, scores)
            components.append("learned")
    verdicts = _with_stance(rubric, reading, verdicts, checked)
    # The reader reads what the classifier reads: a reply it left to the checks (unlike every training reply:
    # other registers, other settings) is judged without either.
    use = component is not None and component.ready and use_reader and not abstained
    reader = stance_reader.reader_for(rubric) if use else None
    if reader is not None:
        verdicts = _with_violations(rubric, stance_reader.apply(reader, reading, verdicts), verdicts, checked)
        components.append("stance_reader")
    # The content steps held against the conversation: facts restated, offers concrete and meeting a want.
    verdicts = grounding.ground(rubric, reading, context, verdicts, component.encoder if component else None)
    return TurnGrade(verdicts=verdicts, components=components, learned_abstained=abstained,
                     verdicts_ms=(time.perf_counter() - started) * 1000)  # fmt: skip


def _with_stance(
    rubric: Rubric, reading: checks.Reading, verdicts: dict[str, StepVerdict], checked: dict[str, StepVerdict]
) -> dict[str, StepVerdict]:
    """The stance acts applied after the classifier; where they find a violation, the classifier's do-steps go.

    (The classifier adds no do-step to a reply that violates a don't-step, :func:`learned.combine`; a
    violation found after it takes back what it added, back to the checks' verdict in ``checked``.)
    """
    return _with_violations(rubric, stance.apply_to_reading(rubric, reading, verdicts), verdicts, checked)


def _with_violations(
    rubric: Rubric, out: dict[str, StepVerdict], verdicts: dict[str, StepVerdict], checked: dict[str, StepVerdict]
) -> dict[str, StepVerdict]:
    """``out`` (a later stage's verdicts); where it found a violation ``verdicts`` had not, the do-steps the
    classifier demonstrated go back to the checks' verdicts in ``checked`` and the voids are applied again.

    Only demonstrations: a ``missed`` the classifier's own violation caused (``find_out`` applies after a
    made-up fact, :func:`agent.checks.apply_after_violations`) is not something it added to a hostile reply.
    """
    if any(out[s].verdict != verdicts[s].verdict for s in out if s in verdicts):
        for step in rubric.turn_steps():
            current = out[step.id]
            if (
                step.kind == "do"
                and current.verdict == "demonstrated"
                and current.source == "learned"
                and step.id in checked
            ):
                out[step.id] = checked[step.id]
        out = checks.apply_voids(rubric, out)
    return out


# -- session-level steps ---------------------------------------------------------------------------


def _trainee_contexts(transcript: Transcript, context: TurnContext) -> list[tuple[str, TurnContext]]:
    out: list[tuple[str, TurnContext]] = []
    history: list[Message] = []
    for message in transcript.messages:
        if message.role == "trainee":
            out.append((message.content, context.model_copy(update={"history": list(history)})))
        history.append(message)
    return out


def _topics_in(step: Step, text: str) -> list[tuple[int, str, int]]:
    """(position of first mention, topic id, difficulty) for each topic mentioned in ``text``."""
    found = []
    normalized = checks.Normalized(text).text
    for topic in step.topics:
        positions = [m.start() for p in topic.compiled for m in p.finditer(normalized)]
        if positions:
            found.append((min(positions), topic.id, topic.difficulty))
    return sorted(found)


def _let_vent(step: Step, turns: list[tuple[str, TurnContext]], grades: list[TurnGrade]) -> StepVerdict:
    assert step.check is not None
    for index, (reply, _) in enumerate(turns):
        evidence = checks.find_evidence(step.check.compiled_match, [], checks.Normalized(reply))
        if evidence:
            return StepVerdict(step_id=step.id, verdict="missed", evidence=f"turn {index + 1}: {evidence}")
    first = grades[0].verdicts
    listened = any(first.get(s) and first[s].verdict == "demonstrated" for s in
                   ("empathize", "apologize", "summarize", "ask_questions"))  # fmt: skip
    if first.get("offer_solution") and first["offer_solution"].verdict == "demonstrated" and not listened:
        return StepVerdict(step_id=step.id, verdict="missed", confidence=0.6,
                           evidence="turn 1: went to a solution before acknowledging the complaint")  # fmt: skip
    return StepVerdict(step_id=step.id, verdict="demonstrated", confidence=0.7)


def _patience(step: Step, turns: list[tuple[str, TurnContext]], grades: list[TurnGrade]) -> StepVerdict:
    if len(turns) < 2:
        return StepVerdict(step_id=step.id, verdict="not_applicable", confidence=0.8)
    for index, turn in enumerate(grades):
        for sid in ("lose_cool", "argue_back", "dismiss_feelings"):
            verdict = turn.verdicts.get(sid)
            if verdict and verdict.verdict == "violated":
                return StepVerdict(step_id=step.id, verdict="missed",
                                   evidence=f"turn {index + 1}: {verdict.evidence}")  # fmt: skip
    return StepVerdict(step_id=step.id, verdict="demonstrated", confidence=0.7)


def _simple_to_complex(step: Step, transcript: Transcript) -> StepVerdict:
    patient = " ".join(m.content for m in transcript.messages if m.role == "patient")
    raised = {topic_id: difficulty for _, topic_id, difficulty in _topics_in(step, patient)}
    if len({d for d in raised.values()}) < 2:
        return StepVerdict(step_id=step.id, verdict="not_applicable", confidence=0.8)
    order: list[tuple[str, int]] = []
    for message in transcript.trainee_turns():
        for _, topic_id, difficulty in _topics_in(step, message.content):
            if topic_id in raised and topic_id not in [t for t, _ in order]:
                order.append((topic_id, difficulty))
    if len(order) < 2:
        addressed = order[0][0] if order else "none"
        return StepVerdict(step_id=step.id, verdict="missed", confidence=0.6,
                           evidence=f"addressed {addressed} of {', '.join(raised)}")  # fmt: skip
    evidence = " -> ".join(t for t, _ in order)
    ascending = all(a[1] <= b[1] for a, b in zip(order, order[1:], strict=False))
    return StepVerdict(step_id=step.id, verdict="demonstrated" if ascending else "missed",
                       evidence=evidence, confidence=0.7)  # fmt: skip


def _agreed_resolution(step: Step, transcript: Transcript, grades: list[TurnGrade]) -> StepVerdict:
    assert step.check is not None
    last = transcript.messages[-1] if transcript.messages else None
    offered = any(g.verdicts.get("offer_solution") and g.verdicts["offer_solution"].verdict == "demonstrated"
                  for g in grades)  # fmt: skip
    if last is None or last.role != "patient":
        return StepVerdict(step_id=step.id, verdict="missed", confidence=0.5,
                           evidence="the conversation ended without the patient's answer")  # fmt: skip
    text = checks.Normalized(last.content)
    refused = checks.find_evidence(step.check.compiled_unless, [], text)
    agreed = checks.find_evidence(step.check.compiled_match, step.check.compiled_unless, text)
    if agreed and not refused and offered:
        return StepVerdict(step_id=step.id, verdict="demonstrated", evidence=f"patient: {agreed}", confidence=0.7)
    reason = f"patient: {refused}" if refused else ("no solution was offered" if not offered else None)
    return StepVerdict(step_id=step.id, verdict="missed", evidence=reason, confidence=0.6)


def grade_session(
    rubric: Rubric,
    transcript: Transcript,
    context: TurnContext | None = None,
    grades: list[TurnGrade] | None = None,
) -> dict[str, StepVerdict]:
    """Verdicts for the graded session-level steps, from the whole transcript.

    ``grades`` are the per-turn grades if the session kept them; otherwise they are recomputed
    with the checks (the same verdicts, since checks are deterministic).
    """
    context = context or TurnContext()
    turns = _trainee_contexts(transcript, context)
    if grades is None or len(grades) != len(turns):
        grades = [grade_fast(rubric, reply, ctx) for reply, ctx in turns]
    out: dict[str, StepVerdict] = {}
    for step in rubric.session_steps():
        if not step.graded:
            continue
        if not turns:
            out[step.id] = StepVerdict(step_id=step.id, verdict="not_applicable", confidence=1.0)
        elif step.id == "let_vent":
            out[step.id] = _let_vent(step, turns, grades)
        elif step.id == "patience":
            out[step.id] = _patience(step, turns, grades)
        elif step.id == "simple_to_complex":
            out[step.id] = _simple_to_complex(step, transcript)
        elif step.id == "agreed_resolution":
            out[step.id] = _agreed_resolution(step, transcript, grades)
    return out
