"""View helpers: what the page shows for stored sessions and turns (no browser, no model)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from agent import ui
from agent.checks import StepVerdict
from agent.grades import TurnGrade
from agent.mood import Mood
from agent.report import MoodPoint, Scorecard, StepCoverage
from agent.simulate import ScriptRun
from agent.store import SessionRecord, TurnRecord

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def session(**values) -> SessionRecord:
    base = {"id": "s1", "persona_id": "carter-wrong-day", "rubric_id": "deescalation", "started_at": NOW,
            "opening": "Why hasn't a doctor called me?", "initial_mood": Mood(anger=8, trust=3)}  # fmt: skip
    base.update(values)
    return SessionRecord(**base)


def turn(index: int, text: str, *, reply: str | None = "Hm.", status: str = "complete", **values) -> TurnRecord:
    return TurnRecord(id=index + 1, session_id="s1", index=index, branch=0, trainee_text=text, patient_reply=reply,
                      status=status, created_at=NOW, updated_at=NOW, **values)  # fmt: skip


def verdict(step_id: str, name: str, evidence: str | None = None, **values) -> StepVerdict:
    return StepVerdict(step_id=step_id, verdict=name, evidence=evidence, **values)


VERDICTS = TurnGrade(
    verdicts={
        "empathize": verdict("empathize", "demonstrated", "I understand"),
        "apologize": verdict("apologize", "missed"),
        "argue_back": verdict("argue_back", "ok"),
        "transfer": verdict("transfer", "not_applicable"),
    }
)
TIPPED = VERDICTS.model_copy(update={"tip": "Apologise for the wait.", "tip_ms": 800.0})
GRADE = TIPPED.model_copy(update={"better_phrasing": "I'm sorry you waited, Mr. Carter.", "advice_ms": 1500.0})


def test_mood_meter_shows_both_bars_and_the_change():
    html = ui.mood_meter_html(Mood(anger=6.5, trust=4), before=Mood(anger=8, trust=3))
    assert 'class="mood-row mood-anger" data-value="65"' in html
    assert 'class="mood-row mood-trust" data-value="40"' in html
    assert "▼ 15" in html and "▲ 10" in html


def test_mood_meter_without_a_previous_mood_shows_no_change_and_without_a_mood_asks_to_start():
    html = ui.mood_meter_html(Mood(anger=8, trust=3))
    assert 'data-value="80"' in html and 'data-value="30"' in html
    assert "mood-delta" not in html
    assert "start a session" in ui.mood_meter_html(None)


def test_chat_shows_saved_words_of_a_failed_turn_without_a_reply():
    turns = [turn(0, "Sorry for the wait."), turn(1, "Let me check.", reply=None, status="failed", error="down")]
    messages = ui.chat_messages("Why?", turns)
    assert messages == [
        {"role": "assistant", "content": "Why?"},
        {"role": "user", "content": "Sorry for the wait."},
        {"role": "assistant", "content": "Hm."},
        {"role": "user", "content": "Let me check."},
    ]


def test_chat_streams_the_reply_being_typed():
    messages = ui.chat_messages(None, [turn(0, "Hello.", reply=None, status="pending")], streaming="I wa")
    assert messages[-1] == {"role": "assistant", "content": "I wa"}


def test_feedback_lists_verdicts_with_evidence_tip_and_phrasing():
    text = ui.feedback_markdown(turn(0, "I understand.", grade=GRADE), step_titles={"empathize": "Acknowledge"})
    assert '✓ **Acknowledge**: demonstrated — "I understand"' in text
    assert "○ **apologize**: missed" in text
    assert "✓ **argue back**: ok" in text
    assert "transfer" not in text  # not applicable steps are noise in the panel
    assert "**Tip:** Apologise for the wait." in text
    assert "**Try saying:** _I'm sorry you waited, Mr. Carter._" in text
    assert "on the way" not in text


def test_feedback_names_the_seed_of_a_curated_phrasing_and_not_the_models():
    source = {"better_phrasing": "curated phrasing from 004_54c74b88a13cd7e8.txt"}
    curated = GRADE.model_copy(update={"phrasing_source": "curated", "sources": source})
    text = ui.feedback_markdown(turn(0, "I understand.", grade=curated))
    assert "_I'm sorry you waited, Mr. Carter._ (curated phrasing from 004\\_54c74b88a13cd7e8.txt)" in text
    model = GRADE.model_copy(update={"sources": {"better_phrasing": "model"}})
    assert "curated" not in ui.feedback_markdown(turn(0, "I understand.", grade=model))


def test_feedback_puts_violations_first():
    grade = TurnGrade(
        verdicts={"apologize": verdict("apologize", "missed"), "argue_back": verdict("argue_back", "violated", "But")}
    )
    text = ui.feedback_markdown(turn(0, "But you were late.", grade=grade))
    assert text.index("✗ **argue back**: violated") < text.index("○ **apologize**: missed")


def test_feedback_marks_what_the_classifier_found_with_its_confidence():
    grade = TurnGrade(verdicts={"reassure": verdict("reassure", "demonstrated", "You won't be forgotten.",
                                                    source="learned", confidence=0.83)})  # fmt: skip
    text = ui.feedback_markdown(turn(0, "You won't be forgotten.", grade=grade))
    assert '**reassure**: demonstrated — "You won\'t be forgotten." _(classifier, 83%)_' in text
    checked = TurnGrade(verdicts={"reassure": verdict("reassure", "demonstrated", "You won't be forgotten.")})
    assert "classifier" not in ui.feedback_markdown(turn(0, "You won't be forgotten.", grade=checked))


def test_feedback_says_when_only_the_phrases_judged_the_reply():
    grade = TurnGrade(verdicts={"apologize": verdict("apologize", "missed")}, learned_abstained=True)
    assert "phrases alone" in ui.feedback_markdown(turn(0, "A long reply in another register.", grade=grade))
    usual = TurnGrade(verdicts={"apologize": verdict("apologize", "missed")})
    assert "phrases alone" not in ui.feedback_markdown(turn(0, "I understand.", grade=usual))


def test_feedback_says_grading_until_the_verdicts_arrive():
    assert "_Grading…_" in ui.feedback_markdown(turn(0, "Hi.", reply=None, status="pending"))
    nothing = ui.feedback_markdown(turn(0, "Hi.", grade=TurnGrade(verdicts={"t": verdict("t", "not_applicable")})))
    assert "Grading" not in nothing and "Nothing to grade" in nothing
    assert "Feedback on each of your replies" in ui.feedback_markdown(None)


def test_feedback_says_coaching_is_on_the_way_only_while_it_is():
    verdicts_only = turn(0, "I understand.", grade=VERDICTS)
    waiting = ui.feedback_markdown(verdicts_only, coaching=True)
    assert "○ **apologize**: missed" in waiting  # the verdicts show while the coach still writes
    assert "_Tip and better phrasing on the way…_" in waiting
    # Not coaching (dropped, failed, or an old turn shown in a report): no promise of a tip.
    assert "on the way" not in ui.feedback_markdown(verdicts_only)

    tipped = turn(0, "I understand.", grade=TIPPED)
    text = ui.feedback_markdown(tipped, coaching=True)
    assert "**Tip:** Apologise for the wait." in text
    assert "_Better phrasing on the way…_" in text and "Tip and better phrasing" not in text
    assert "on the way" not in ui.feedback_markdown(tipped)

    assert "on the way" not in ui.feedback_markdown(turn(0, "I understand.", grade=GRADE), coaching=True)


def test_mood_trajectory_starts_from_the_initial_mood_and_counts_answered_turns_only():
    turns = [
        turn(0, "a", mood_before=Mood(anger=8, trust=3), mood_after=Mood(anger=7, trust=4, turn=1)),
        turn(1, "b", mood_after=Mood(anger=5, trust=6, turn=2)),
        # Verdicts moved the mood, but the patient has not answered yet: not a point on the plot.
        turn(2, "c", reply=None, status="pending", mood_after=Mood(anger=3, trust=7, turn=3)),
    ]
    assert ui.mood_trajectory(session(), turns) == [(0, 0.8, 0.3), (1, 0.7, 0.4), (2, 0.5, 0.6)]
    # A session without a stored starting mood starts from the first turn's mood before.
    assert ui.mood_trajectory(session(initial_mood=None), turns)[0] == (0, 0.8, 0.3)


def test_figures_render():
    figure = ui.mood_figure({"good": [(0, 0.8, 0.3), (1, 0.5, 0.5)], "bad": [(0, 0.8, 0.3), (1, 1.0, 0.1)]})
    assert len(figure.axes[0].lines) == 4
    assert len(ui.steps_figure({"empathize": 0.5}).axes[0].patches) == 1


CARD = Scorecard(
    rubric="deescalation",
    turns=1,
    outcome="walked_out",
    reason="Anger stayed at 10.",
    mood=[MoodPoint(turn=0, anger=0.8, trust=0.3), MoodPoint(turn=1, anger=1.0, trust=0.1)],
    score=0.25,
    steps=[StepCoverage(step_id="apologize", title="Apologise for the experience", kind="do", missed=1, rate=0.0)],
    strengths=["Acknowledge (1 of 1 turns)"],
    debrief="Take a minute before your next patient.",
)


def test_scorecard_names_outcome_and_reason_and_shows_the_card():
    ended = session(ended_at=NOW, outcome="walked_out", end_reason="Anger stayed at 10.", scorecard=CARD)
    card = ui.scorecard_markdown(ended, {"apologize": "Apologise"})
    assert card.startswith("## Scorecard — walked out")
    assert "_Anger stayed at 10._" in card
    assert "**Overall:** 25% of applicable steps went well." in card
    assert "### Strengths" in card and "- Acknowledge (1 of 1 turns)" in card
    assert "| Apologise for the experience | 0 / 1 | 0% |" in card
    assert "Take a minute before your next patient." in card
    assert "# Practice scorecard" not in card  # the heading above says it already


def test_scorecard_of_an_unfinished_or_old_session_shows_the_outcome_only():
    assert ui.scorecard_markdown(session(), {}) == "## Scorecard — in progress"
    old = session(ended_at=NOW, outcome="resolved", scorecard={"score": 0.5, "steps": {"empathize": 0.5}})
    assert old.scorecard is None
    assert ui.scorecard_markdown(old, {}) == "## Scorecard — resolved"


def test_report_puts_the_scorecard_before_each_turn_with_its_feedback():
    ended = session(ended_at=NOW, outcome="walked_out", end_reason="Anger stayed at 10.", scorecard=CARD)
    turns = [turn(0, "I understand.", reply="Do you?", grade=GRADE)]
    text = ui.report_markdown(ended, turns, {"empathize": "Acknowledge"}, "Mr. Carter")
    assert text.index("## Scorecard — walked out") < text.index("## Turn by turn") < text.index("### Turn 1")
    assert "**Overall:** 25%" in text
    assert '✓ **Acknowledge**: demonstrated — "I understand"' in text
    assert "**Tip:** Apologise for the wait." in text
    assert "**Mr. Carter:** Do you?" in text


def test_history_rows_show_the_score_of_a_current_scorecard_only():
    ended = session(ended_at=NOW, outcome="walked_out", scorecard=CARD)
    old = session(id="s2", ended_at=NOW, outcome="resolved", scorecard={"score": 0.9})
    running = session(id="s3")
    rows = ui.history_rows([ended, old, running], {"s1": 3})
    assert rows[0] == ["2026-01-01 12:00", "", "carter-wrong-day", 3, "walked_out", "25%", 0, "s1"]
    assert rows[1][4:6] == ["resolved", ""]
    assert rows[2][3:6] == [0, "in progress", ""]


def test_history_rows_count_the_turns_judged_by_the_phrases_alone_beside_the_score():
    rows = ui.history_rows([session(), session(id="s2")], {"s1": 4, "s2": 2}, {"s1": 3})
    column = ui.HISTORY_HEADERS.index(ui.CHECKS_ONLY_HEADER)
    assert column == ui.HISTORY_HEADERS.index("score") + 1 and len(ui.HISTORY_HEADERS) == len(rows[0])
    assert [row[column] for row in rows] == [3, 0]
    assert [row[-1] for row in rows] == ["s1", "s2"]  # the session id stays last: selecting a row reads it


def test_scorecard_says_how_many_turns_the_phrases_alone_judged():
    """The History detail and the end-of-session box show it; a card with none says nothing."""
    alone = session(ended_at=NOW, outcome="walked_out", scorecard=CARD.model_copy(update={"checks_only_turns": 1}))
    assert "_1 of 1 turns was judged by the rubric's phrases alone:" in ui.scorecard_markdown(alone, {})
    assert "phrases alone" not in ui.scorecard_markdown(session(ended_at=NOW, outcome="walked_out", scorecard=CARD))


def test_exports_name_the_outcome_and_keep_typed_records():
    ended = session(ended_at=NOW, outcome="walked_out", end_reason="Anger stayed at 10.", scorecard=CARD)
    turns = [turn(0, "Calm down.", grade=GRADE, mood_after=Mood(anger=10, trust=1, turn=1))]
    transcript = ui.transcript_markdown(ended, turns, "Mr. Carter")
    assert "(walked_out)" in transcript and "- why: Anger stayed at 10." in transcript
    assert "**Mr. Carter:** Why hasn't a doctor called me?" in transcript and "**You:** Calm down." in transcript
    data = json.loads(ui.transcript_json(ended, turns))
    assert data["turns"][0]["trainee_text"] == "Calm down."
    assert SessionRecord.model_validate(data["session"]) == ended
    assert TurnRecord.model_validate(data["turns"][0]) == turns[0]


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("Angry Dad #2", "angry-dad-2"), ("../../etc/passwd", "etc-passwd"), ("a/b\\c", "a-b-c"), ("  Zoë  ", "zo")],
)
def test_persona_ids_are_sanitised(typed, expected):
    assert ui.safe_persona_id(typed) == expected


def test_a_name_without_letters_is_refused():
    with pytest.raises(ValueError, match="letters or digits"):
        ui.safe_persona_id("../..")


# -- Trainer: wants table and problem lines ---------------------------------------------------------


def test_wants_table_lists_every_remedy_with_kind_cues_and_source():
    from agent.personas import load_persona

    carter = load_persona("carter-wrong-day")
    table = ui.wants_table_html(carter.wants)
    rows = re.findall(r'<tr class="wants-(\w+)">(.*?)</tr>', table)
    assert [kind for kind, _ in rows] == [kind for kind, _ in carter.wants.all()]
    first = rows[0][1]
    assert "<code>same_day_slot</code>: a doctor sees him today" in first
    assert "this afternoon, cancellation" in first
    assert "he &quot;requests to be seen by a doctor today&quot; (seed 004)" in first
    assert "resolves: meets the need" in first and "rejects: turned down" in rows[-1][1]


def test_wants_table_escapes_trainer_text():
    from agent.personas import Remedy, Wants

    hostile = "<img src=x onerror=alert(1)>**bold** [x](javascript:alert(1))"
    wants = Wants(resolves=[Remedy(id="x", says=hostile, cues=["<script>alert(1)</script>"], source="a & b")])
    table = ui.wants_table_html(wants)
    assert "<img" not in table and "<script" not in table
    assert "&lt;img src=x onerror=alert(1)&gt;" in table and "&lt;script&gt;" in table and "a &amp; b" in table
    assert "<em>" in ui.wants_table_html(None, note="<b>no</b>") and "<b>" not in ui.wants_table_html(None, note="<b>")


@pytest.mark.parametrize("text", ["plain", "a `tick`", "``double`` and `one`", "`edge`", "x\ny"])
def test_code_span_keeps_any_text_inside_one_span(text):
    span = ui.code_span(text)
    fence = re.match(r"`+", span).group()
    inner = span[len(fence) : -len(fence)]
    assert span.endswith(fence) and "\n" not in span
    assert inner.strip() == text.replace("\n", " ")
    assert all(len(run) < len(fence) for run in re.findall(r"`+", inner))


# -- the Trainer's test run (issue 20): good, bad and formula trainee side by side ------------------


def script_run(outcome: str | None, turns: int, start: float, end: float) -> ScriptRun:
    return ScriptRun(trajectory=[(0, start / 10, 0.3), (turns, end / 10, 0.5)], outcome=outcome,
                     reason="why" if outcome else None, turns=turns, last_line="", anger_start=start,
                     anger_end=end)  # fmt: skip


def test_the_test_run_shows_the_three_scripts_side_by_side():
    runs = {"good": script_run("resolved", 5, 8, 2.5), "bad": script_run("walked_out", 3, 8, 10),
            "formula": script_run(None, 12, 8, 7)}  # fmt: skip
    text = ui.test_run_markdown(runs)
    header, _, outcome, turns, anger = text.splitlines()[:5]
    assert header == "| | good trainee | bad trainee | formula trainee |"
    assert outcome == "| outcome | resolved | walked out | no ending |"
    assert turns == "| turns | 5 | 3 | 12 |" and anger == "| anger | 8 → 2.5 | 8 → 10 | 8 → 7 |"
    assert "- **good trainee**: resolved after 5 turns (why)" in text
    assert "✓ The formula trainee" in text and "⚠" not in text


@pytest.mark.parametrize(("outcome", "end", "warning"), [
    ("resolved", 2.0, "⚠ **The formula trainee resolved this patient**"),
    (None, 5.5, "⚠ **The formula trainee calmed this patient by 2.5**"),
])  # fmt: skip
def test_the_test_run_warns_when_the_formula_trainee_wins_the_patient_over(outcome, end, warning):
    text = ui.test_run_markdown({"good": script_run("resolved", 5, 8, 2.5), "formula": script_run(outcome, 6, 8, end)})
    assert warning in text and "✓" not in text


def test_the_test_run_says_which_script_is_still_playing():
    text = ui.test_run_markdown({"good": script_run("resolved", 5, 8, 2.5)}, playing="bad")
    assert text.endswith("- _playing the scripted bad trainee…_")
    assert "formula" not in text  # nothing said about a script not played yet
    assert ui.test_run_markdown({}, playing="good") == "_playing the scripted good trainee…_"
