"""View helpers for the web app: turn stored records into what the page shows.

Why a separate module: ``app.py`` is wiring only (layout and events). Everything here is plain
Python over pydantic records and JSON dicts (no Gradio import), so it is testable on its own and
the same rendering serves the live turn, a resumed session and the History tab.

Moods, grades and scorecards arrive typed (:class:`~agent.mood.Mood`,
:class:`~agent.grades.TurnGrade`, :class:`~agent.report.Scorecard`), as the store reads them back.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # the app renders figures on worker threads, never on a display

from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from agent.grades import TurnGrade  # noqa: E402
from agent.mood import Mood  # noqa: E402
from agent.neutral import markdown_text as md  # noqa: E402
from agent.personas import Wants  # noqa: E402
from agent.report import Scorecard, to_markdown  # noqa: E402
from agent.simulate import FORMULA, ScriptRun  # noqa: E402
from agent.store import SessionRecord, TurnRecord  # noqa: E402

# Plain symbols (DejaVu has them): emoji need a colour-emoji font the page cannot count on.
VERDICT_ICON = {
    "demonstrated": "✓",
    "missed": "○",
    "violated": "✗",
    "ok": "✓",
    "not_applicable": "·",
}
POSITIVE = {"demonstrated", "ok"}

# ------------------------------------------------------------------------------------------
# Mood


MOOD_SCALE = 10.0  # agent.mood keeps anger and trust on 0-10


def mood_value(mood: Mood | None, key: str) -> float | None:
    """A mood dimension (0-10 in ``agent.mood``) as a 0..1 fraction for bars and plots."""
    if mood is None:
        return None
    return min(max(float(getattr(mood, key)) / MOOD_SCALE, 0.0), 1.0)


def _bar(label: str, value: float | None, before: float | None, colour: str, elem_class: str) -> str:
    if value is None:
        return ""
    percent = round(value * 100)
    delta = ""
    if before is not None and abs(value - before) >= 0.005:
        change = round((value - before) * 100)
        arrow = "▲" if change > 0 else "▼"
        delta = f' <span class="mood-delta">{arrow} {abs(change)}</span>'
    return (
        f'<div class="mood-row {elem_class}" data-value="{percent}">'
        f'<span class="mood-label">{label}</span>'
        f'<div style="background:#e5e7eb;border-radius:6px;height:14px;flex:1;margin:0 8px;">'
        f'<div style="width:{percent}%;background:{colour};height:14px;border-radius:6px;'
        f'transition:width .6s"></div></div>'
        f'<span class="mood-value">{percent}%</span>{delta}</div>'
    )


def mood_meter_html(mood: Mood | None, before: Mood | None = None) -> str:
    """Two bars (anger, trust) with the change since the previous turn; data-value for tests."""
    if not mood:
        return '<div class="mood-meter"><em>Pick a patient and start a session.</em></div>'
    rows = [
        _bar("Anger", mood_value(mood, "anger"), mood_value(before, "anger"), "#dc2626", "mood-anger"),
        _bar("Trust", mood_value(mood, "trust"), mood_value(before, "trust"), "#16a34a", "mood-trust"),
    ]
    style = "<style>.mood-row{display:flex;align-items:center;margin:4px 0}.mood-label{width:48px}</style>"
    return f'<div class="mood-meter">{style}{"".join(rows)}</div>'


# ------------------------------------------------------------------------------------------
# Chat


def chat_messages(
    opening: str | None, turns: Sequence[TurnRecord], *, streaming: str | None = None
) -> list[dict[str, str]]:
    """Gradio 6 chat messages: the patient is the ``assistant``, the trainee the ``user``.

    A failed or pending turn shows the trainee's words (they are saved) and no patient reply;
    ``streaming`` is the patient reply being typed for the last turn.
    """
    messages: list[dict[str, str]] = []
    if opening:
        messages.append({"role": "assistant", "content": md(opening)})
    for position, turn in enumerate(turns):
        messages.append({"role": "user", "content": md(turn.trainee_text)})
        last = position == len(turns) - 1
        if turn.status == "complete" and turn.patient_reply is not None:
            messages.append({"role": "assistant", "content": md(turn.patient_reply)})
        elif last and streaming:
            messages.append({"role": "assistant", "content": md(streaming)})
    return messages


# ------------------------------------------------------------------------------------------
# Feedback


def feedback_markdown(
    turn: TurnRecord | None, *, step_titles: Mapping[str, str] | None = None, coaching: bool = False
) -> str:
    """The feedback panel for one trainee turn: verdicts with quoted evidence, tip, better phrasing.

    ``coaching``: the tip or the better phrasing is still being written for this turn.
    """
    if turn is None:
        return "_Feedback on each of your replies appears here._"
    titles = step_titles or {}
    lines = [f"### Turn {turn.index + 1}", f"> {md(turn.trainee_text)}", ""]
    grade = turn.grade or TurnGrade(verdicts={})
    shown = {k: v for k, v in grade.verdicts.items() if v.verdict != "not_applicable"}
    if not shown:
        lines.append("_Grading…_" if turn.grade is None else "_Nothing to grade in this reply._")
    order = {"violated": 0, "demonstrated": 1, "missed": 2, "ok": 3}
    for step_id, item in sorted(shown.items(), key=lambda kv: (order.get(kv[1].verdict, 9), kv[0])):
        title = titles.get(step_id, step_id.replace("_", " "))
        line = f"- {VERDICT_ICON.get(item.verdict, '?')} **{title}**: {item.verdict.replace('_', ' ')}"
        if item.evidence:
            line += f' — "{md(item.evidence)}"'
        if item.source == "learned":
            # Found by the classifier, not by a phrase the rubric lists: say so, with its confidence.
            line += f" _(classifier, {item.confidence:.0%})_"
        lines.append(line)
    if grade.learned_abstained:
        # Honest about what judged this reply: only the rubric's phrases, so less than usual is seen.
        lines += ["", "_Judged by the rubric's phrases alone: this reply is unlike the replies the classifier "
                      "learnt from, so it stayed silent._"]  # fmt: skip
    if grade.tip:
        lines += ["", f"**Tip:** {md(grade.tip)}"]
    if grade.better_phrasing:
        lines += ["", f"**Try saying:** _{md(grade.better_phrasing)}_"]
        source = grade.sources.get("better_phrasing", "")
        if source.startswith("curated"):  # the model's line failed the coach's guard: say whose this is
            lines[-1] += f" ({md(source)})"
    elif coaching and grade.tip:
        lines += ["", "_Better phrasing on the way…_"]
    elif coaching:
        lines += ["", "_Tip and better phrasing on the way…_"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Statistics and plots


def mood_trajectory(session: SessionRecord, turns: Sequence[TurnRecord]) -> list[tuple[int, float, float]]:
    """(turn number, anger, trust) from the starting mood through each answered turn."""
    points: list[tuple[int, float, float]] = []
    start = session.initial_mood or (turns[0].mood_before if turns else None)
    if start is not None:
        points.append((0, mood_value(start, "anger") or 0.0, mood_value(start, "trust") or 0.0))
    for turn in turns:
        if turn.mood_after is not None and turn.status == "complete":
            points.append((turn.index + 1, mood_value(turn.mood_after, "anger") or 0.0,
                           mood_value(turn.mood_after, "trust") or 0.0))  # fmt: skip
    return points


# A formula trainee may calm a patient a little (an apology is worth something), not more than this.
FORMULA_MAX_CALM = 2.0


def test_run_markdown(runs: Mapping[str, ScriptRun], playing: str | None = None) -> str:
    """The Trainer's test run, one column per scripted trainee: outcome, turns, anger start -> end.

    Side by side because the point is the comparison: the good trainee should resolve the patient,
    the bad one should drive them off, and the formula one (the rubric's magic phrases with no fact
    and no real offer) should not resolve them nor calm them much; when it does, trainees can game
    this persona, and the note says so. ``playing``: the script still being played, if any.
    """
    if not runs:
        return f"_playing the scripted {playing} trainee…_" if playing else ""
    names = list(runs)

    def ending(run: ScriptRun) -> str:
        return (run.outcome or "no ending").replace("_", " ")

    lines = [
        "| | " + " | ".join(f"{md(name)} trainee" for name in names) + " |",
        "|---|" + "---|" * len(names),
        "| outcome | " + " | ".join(ending(run) for run in runs.values()) + " |",
        "| turns | " + " | ".join(str(run.turns) for run in runs.values()) + " |",
        "| anger | " + " | ".join(f"{run.anger_start:g} → {run.anger_end:g}" for run in runs.values()) + " |",
        "",
    ]
    for name, run in runs.items():
        why = f" ({md(run.reason)})" if run.reason else ""
        lines.append(f"- **{md(name)} trainee**: {ending(run)} after {run.turns} turns{why}")
    if playing:
        lines.append(f"- _playing the scripted {md(playing)} trainee…_")
    formula = runs.get(FORMULA)
    if formula is not None:
        calmed = formula.anger_start - formula.anger_end
        if formula.outcome == "resolved":
            lines += [
                "",
                "⚠ **The formula trainee resolved this patient**: magic phrases with no fact and no "
                "real offer are enough, so trainees can game this persona. Tie resolution to its `wants`.",
            ]
        elif calmed > FORMULA_MAX_CALM:
            lines += [
                "",
                f"⚠ **The formula trainee calmed this patient by {calmed:g}** (more than "
                f"{FORMULA_MAX_CALM:g}) without naming a fact or offering anything real.",
            ]
        else:
            lines += ["", "✓ The formula trainee (magic phrases, no substance) did not win this patient over."]
    return "\n".join(lines)


def mood_figure(trajectories: Mapping[str, Sequence[tuple[int, float, float]]], title: str = "Mood") -> Figure:
    """Anger (solid) and trust (dashed) per turn, one colour per trajectory."""
    figure, axes = plt.subplots(figsize=(6, 3.2), dpi=100)
    colours = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"]
    for number, (name, points) in enumerate(trajectories.items()):
        if not points:
            continue
        colour = colours[number % len(colours)]
        xs = [p[0] for p in points]
        prefix = f"{name}: " if len(trajectories) > 1 else ""
        axes.plot(xs, [p[1] for p in points], "-o", color=colour, label=f"{prefix}anger")
        axes.plot(xs, [p[2] for p in points], "--s", color=colour, alpha=0.7, label=f"{prefix}trust")
    axes.set_ylim(-0.02, 1.02)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # turns are whole numbers
    axes.set_xlabel("turn")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    plt.close(figure)
    return figure


def steps_figure(rates: Mapping[str, float], step_titles: Mapping[str, str] | None = None) -> Figure:
    """Horizontal bars: per step, the share of turns where the trainee did it right."""
    titles = step_titles or {}
    items = sorted(rates.items(), key=lambda kv: kv[1])
    figure, axes = plt.subplots(figsize=(6, max(2.0, 0.35 * len(items) + 0.8)), dpi=100)
    if items:
        labels = [titles.get(k, k.replace("_", " ")) for k, _ in items]
        values = [v for _, v in items]
        colours = ["#16a34a" if v >= 0.7 else "#f59e0b" if v >= 0.4 else "#dc2626" for v in values]
        axes.barh(labels, values, color=colours)
        axes.set_xlim(0, 1)
    else:
        axes.text(0.5, 0.5, "no graded turns yet", ha="center", va="center")
        axes.set_axis_off()
    axes.set_title("Share of turns each step was done right")
    figure.tight_layout()
    plt.close(figure)
    return figure


def progress_figure(points: Mapping[str, Sequence[tuple[int, float]]]) -> Figure:
    """Per step, the rate in each finished session, sessions numbered oldest first (History tab)."""
    figure, axes = plt.subplots(figsize=(7, 3.5), dpi=100)
    for step_id, series in sorted(points.items()):
        if series:
            axes.plot([p[0] for p in series], [p[1] for p in series], "-o", label=step_id.replace("_", " "))
    if not points:
        axes.text(0.5, 0.5, "no finished sessions yet", ha="center", va="center")
        axes.set_axis_off()
    else:
        axes.set_ylim(-0.02, 1.02)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("finished session (oldest first)")
        axes.set_ylabel("share done right")
        axes.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    axes.set_title("Progress per step")
    figure.tight_layout()
    plt.close(figure)
    return figure


# ------------------------------------------------------------------------------------------
# History


def history_rows(
    sessions: Sequence[SessionRecord], turn_counts: Mapping[str, int], checks_only: Mapping[str, int] | None = None,
) -> list[list[Any]]:  # fmt: skip
    """One row per session (the session id last: selecting a row reads it from there).

    ``checks_only``: per session, the turns the classifier left to the rubric's phrases
    (:func:`agent.report.checks_only_turns`). It stands beside the score because it qualifies it:
    a trainer reading a low score sees whether the grader was partly blind to that trainee's wording.
    """
    rows = []
    for session in sessions:
        score = session.scorecard.score if session.scorecard else None
        rows.append([
            session.started_at.strftime("%Y-%m-%d %H:%M"),
            session.trainee_name or "",
            session.persona_id,
            turn_counts.get(session.id, 0),
            session.outcome or ("in progress" if not session.ended else ""),
            f"{score:.0%}" if isinstance(score, int | float) else "",
            (checks_only or {}).get(session.id, 0),
            session.id,
        ])  # fmt: skip
    return rows


# The History column of turns the classifier left to the rubric's phrases (see history_rows).
CHECKS_ONLY_HEADER = "judged by phrases alone"
HISTORY_HEADERS = ["started", "trainee", "patient", "turns", "outcome", "score", CHECKS_ONLY_HEADER, "session id"]


# ------------------------------------------------------------------------------------------
# Exports


def transcript_markdown(session: SessionRecord, turns: Sequence[TurnRecord], patient_name: str = "Patient") -> str:
    lines = [
        f"# Practice session {session.id}",
        "",
        f"- patient: {session.persona_id}",
        f"- trainee: {session.trainee_name or '-'}",
        f"- started: {session.started_at.isoformat(timespec='seconds')}",
    ]
    if session.ended_at:
        lines.append(f"- ended: {session.ended_at.isoformat(timespec='seconds')} ({session.outcome or 'ended'})")
    if session.end_reason:
        lines.append(f"- why: {session.end_reason}")
    lines += ["", "## Transcript", ""]
    if session.opening:
        lines.append(f"**{patient_name}:** {md(session.opening)}\n")
    for turn in turns:
        lines.append(f"**You:** {md(turn.trainee_text)}\n")
        if turn.patient_reply is not None:
            lines.append(f"**{patient_name}:** {md(turn.patient_reply)}\n")
        elif turn.status == "failed":
            lines.append(f"_(no reply: {md(turn.error or '')})_\n")
    return "\n".join(lines)


def transcript_json(session: SessionRecord, turns: Sequence[TurnRecord]) -> str:
    data = {"session": session.model_dump(mode="json"), "turns": [t.model_dump(mode="json") for t in turns]}
    return json.dumps(data, indent=2, ensure_ascii=False)


# ------------------------------------------------------------------------------------------
# Trainer: file names

SAFE_NAME = re.compile(r"[^a-z0-9_-]+")


def safe_persona_id(name: str) -> str:
    """A file-system-safe persona id from whatever the trainer typed ("../../etc/x" -> "etc-x").

    Only ``[a-z0-9_-]`` survive, so the result can never name a path outside the personas folder.
    """
    slug = SAFE_NAME.sub("-", name.strip().lower()).strip("-_")
    slug = re.sub(r"-{2,}", "-", slug)[:60]
    if not slug:
        raise ValueError("the new persona needs a name made of letters or digits")
    return slug


# ------------------------------------------------------------------------------------------
# Trainer: the persona editor's validation and wants


def code_span(text: str) -> str:
    """``text`` as one Markdown code span that nothing in it can end early.

    Inside a code span Markdown reads no emphasis, links or HTML; only a run of backticks as long
    as the fence closes it, so the fence is one backtick longer than the longest run in ``text``
    (a persona problem quotes what the trainer typed, which may hold anything)."""
    text = text.replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


WANTS_KINDS = {
    "resolves": "resolves: meets the need",
    "partly": "partly: helps, does not settle it",
    "rejects": "rejects: turned down",
}


def wants_table_html(wants: Wants | None, *, note: str | None = None) -> str:
    """The persona's wants as an HTML table (kind, remedy, cues, source) under the Trainer's editor.

    Every value is trainer text, so every cell is HTML-escaped (an HTML component renders no
    Markdown, so escaping HTML is all it takes). ``note``: why there is no table (shown escaped).
    """
    if wants is None:
        message = note or "This persona has no wants: no offer can resolve it while thresholds.need_met is on."
        return f'<div class="wants-table"><em>{html.escape(message)}</em></div>'
    rows = []
    for kind, remedy in wants.all():
        cues = ", ".join(remedy.cues) or "—"
        rows.append(
            f'<tr class="wants-{kind}"><td>{html.escape(WANTS_KINDS[kind])}</td>'
            f"<td><code>{html.escape(remedy.id)}</code>: {html.escape(remedy.says)}</td>"
            f"<td>{html.escape(cues)}</td><td>{html.escape(remedy.source or '—')}</td></tr>"
        )
    head = "<tr><th>kind</th><th>remedy</th><th>cues</th><th>source</th></tr>"
    return (
        '<div class="wants-table"><strong>What the patient wants</strong>'
        f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


# ------------------------------------------------------------------------------------------
# Scorecard and report


def scorecard_markdown(session: SessionRecord, step_titles: Mapping[str, str] | None = None) -> str:
    """End-of-session summary: outcome and why, then the scorecard (:func:`agent.report.to_markdown`)."""
    outcome = (session.outcome or "in progress").replace("_", " ")
    lines = [f"## Scorecard — {outcome}"]
    if session.end_reason:
        lines.append(f"_{session.end_reason}_")
    card: Scorecard | None = session.scorecard
    if card is not None:
        body = to_markdown(card, titles=step_titles).split("\n", 1)[1]  # its own title repeats what the heading says
        lines += ["", body.replace("\n## ", "\n### ")]
    return "\n".join(lines)


def report_markdown(
    session: SessionRecord, turns: Sequence[TurnRecord], step_titles: Mapping[str, str] | None = None,
    patient_name: str = "Patient",
) -> str:  # fmt: skip
    """Scorecard followed by each turn with its feedback: the file a trainee takes to a debrief."""
    parts = [scorecard_markdown(session, step_titles), "", "## Turn by turn", ""]
    for turn in turns:
        parts.append(feedback_markdown(turn, step_titles=step_titles))
        if turn.patient_reply:
            parts.append(f"\n**{patient_name}:** {md(turn.patient_reply)}\n")
    return "\n".join(parts)
