"""View helpers: what the page shows for stored sessions and turns (no browser, no model)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent import ui
from agent.store import SessionRecord, TurnRecord

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def session(**values) -> SessionRecord:
    base = {"id": "s1", "persona_id": "carter-wrong-day", "rubric_id": "deescalation", "started_at": NOW,
            "opening": "Why hasn't a doctor called me?", "initial_mood": {"anger": 8, "trust": 3}}  # fmt: skip
    base.update(values)
    return SessionRecord(**base)


def turn(index: int, text: str, *, reply: str | None = "Hm.", status: str = "complete", **values) -> TurnRecord:
    return TurnRecord(id=index + 1, session_id="s1", index=index, branch=0, trainee_text=text, patient_reply=reply,
                      status=status, created_at=NOW, updated_at=NOW, **values)  # fmt: skip


GRADE = {
    "verdicts": {
        "empathize": {"step_id": "empathize", "verdict": "demonstrated", "evidence": "I understand"},
        "apologize": {"step_id": "apologize", "verdict": "missed", "evidence": None},
        "argue_back": {"step_id": "argue_back", "verdict": "ok"},
        "transfer": {"step_id": "transfer", "verdict": "not_applicable"},
    },
    "tip": "Apologise for the wait.",
    "better_phrasing": "I'm sorry you waited, Mr. Carter.",
}


def test_mood_meter_shows_both_bars_and_the_change():
    html = ui.mood_meter_html({"anger": 6.5, "trust": 4}, before={"anger": 8, "trust": 3})
    assert 'class="mood-row mood-anger" data-value="65"' in html
    assert 'class="mood-row mood-trust" data-value="40"' in html
    assert "▼ 15" in html and "▲ 10" in html


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
    assert "transfer" not in text  # not applicable steps are noise in the panel
    assert "**Tip:** Apologise for the wait." in text
    assert "I'm sorry you waited, Mr. Carter." in text


def test_feedback_marks_what_the_classifier_found_with_its_confidence():
    grade = {"verdicts": {"reassure": {"verdict": "demonstrated", "evidence": "You won't be forgotten.",
                                       "source": "learned", "confidence": 0.83}}}  # fmt: skip
    text = ui.feedback_markdown(turn(0, "You won't be forgotten.", grade=grade))
    assert '**reassure**: demonstrated — "You won\'t be forgotten." _(classifier, 83%)_' in text


def test_feedback_says_grading_until_the_grade_arrives():
    assert "Grading" in ui.feedback_markdown(turn(0, "Hi."), grading=True)


def test_step_rates_count_only_turns_where_the_step_applied():
    second = {"verdicts": {"empathize": "missed", "argue_back": "violated"}}
    turns = [turn(0, "a", grade=GRADE), turn(1, "b", grade=second)]
    assert ui.step_rates(turns) == {"empathize": 0.5, "apologize": 0.0, "argue_back": 0.5}


def test_mood_trajectory_starts_from_the_initial_mood():
    turns = [turn(0, "a", mood_after={"anger": 7, "trust": 4}), turn(1, "b", mood_after={"anger": 5, "trust": 6})]
    assert ui.mood_trajectory(session(), turns) == [(0, 0.8, 0.3), (1, 0.7, 0.4), (2, 0.5, 0.6)]


def test_figures_render():
    figure = ui.mood_figure({"good": [(0, 0.8, 0.3), (1, 0.5, 0.5)], "bad": [(0, 0.8, 0.3), (1, 1.0, 0.1)]})
    assert len(figure.axes[0].lines) == 4
    assert len(ui.steps_figure({"empathize": 0.5}).axes[0].patches) == 1


def test_scorecard_and_exports_name_outcome_and_reason():
    ended = session(ended_at=NOW, outcome="walked_out", end_reason="Anger stayed at 10.", scorecard={"score": 0.25})
    turns = [turn(0, "Calm down.", grade=GRADE)]
    card = ui.scorecard_markdown(ended, turns)
    assert "walked out" in card and "Anger stayed at 10." in card and "25%" in card
    transcript = ui.transcript_markdown(ended, turns, "Mr. Carter")
    assert "**Mr. Carter:** Why hasn't a doctor called me?" in transcript and "**You:** Calm down." in transcript
    assert '"trainee_text": "Calm down."' in ui.transcript_json(ended, turns)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("Angry Dad #2", "angry-dad-2"), ("../../etc/passwd", "etc-passwd"), ("a/b\\c", "a-b-c"), ("  Zoë  ", "zo")],
)
def test_persona_ids_are_sanitised(typed, expected):
    assert ui.safe_persona_id(typed) == expected


def test_a_name_without_letters_is_refused():
    with pytest.raises(ValueError, match="letters or digits"):
        ui.safe_persona_id("../..")
