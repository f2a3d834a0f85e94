"""Scorecard: coverage counts, what to practise next, the debrief line, and the exports."""

import json
from functools import cache

import pytest

from agent import report
from agent.checks import StepVerdict, TurnContext
from agent.grader import grade_fast
from agent.grades import TurnGrade
from agent.rubrics import load_rubric
from agent.transcript import Transcript

RUBRIC = load_rubric()
CONTEXT = TurnContext(persona_name="Ms. Nguyen")


@cache  # grading runs the classifier; each scripted session is graded once per module
def session(*turns: tuple[str, str]) -> tuple[Transcript, tuple[TurnGrade, ...]]:
    transcript = Transcript()
    grades: list[TurnGrade] = []
    for role, content in turns:
        if role == "trainee":
            history = list(transcript.messages)
            grades.append(grade_fast(RUBRIC, content, CONTEXT.model_copy(update={"history": history})))
        transcript.add(role, content)
    return transcript, tuple(grades)


ROUGH = (
    ("patient", "I couldn't find parking, I waited an hour, and now a $240 bill?"),
    ("trainee", "Let me stop you there. The bill is the bill."),
    ("patient", "Unbelievable."),
    ("trainee", "You should have checked your coverage. CALM DOWN."),
    ("patient", "Forget it."),
)
GOOD = (
    ("patient", "I couldn't find parking, I waited an hour, and now a $240 bill?"),
    ("trainee", "I'm so sorry, Ms. Nguyen, that sounds exhausting. Let me validate your parking first."),
    ("patient", "Fine. And the bill?"),
    ("trainee", "I'm sorry about the wait too. So the bill is $240 - could you show me your insurance card?"),
    ("patient", "Okay, thank you."),
)


def test_coverage_counts_each_verdict_per_step():
    transcript, grades = session(*ROUGH)
    card = report.build_scorecard(RUBRIC, grades, transcript, CONTEXT)
    rows = {row.step_id: row for row in card.steps}
    assert card.turns == 2
    assert rows["argue_back"].violated == 2 and rows["argue_back"].rate == 0.0
    assert rows["argue_back"].evidence == ["The bill is the bill", "You should have"]
    assert rows["empathize"].missed == 2 and rows["empathize"].rate == 0.0
    assert rows["set_boundary"].not_applicable == 2 and rows["set_boundary"].rate is None


def test_practise_next_puts_violations_first_and_caps_at_three():
    transcript, grades = session(*ROUGH)
    card = report.build_scorecard(RUBRIC, grades, transcript, CONTEXT)
    assert 2 <= len(card.practise_next) <= 3
    assert card.practise_next[0].step_id == "argue_back"
    assert card.practise_next[0].why == "happened in 2 of 2 turns"
    assert card.practise_next[0].example == RUBRIC.step("argue_back").good[0]
    assert {f.step_id for f in card.practise_next} <= {"argue_back", "lose_cool", "dismiss_feelings"}


def test_a_good_session_has_strengths_session_steps_and_a_higher_score():
    rough = report.build_scorecard(RUBRIC, *reversed(session(*ROUGH)), CONTEXT)
    transcript, grades = session(*GOOD)
    good = report.build_scorecard(RUBRIC, grades, transcript, CONTEXT)
    assert any(s.startswith("Apologise for the experience") for s in good.strengths)
    assert good.session["agreed_resolution"].verdict == "demonstrated"
    assert rough.session["agreed_resolution"].verdict == "missed"
    assert good.score > rough.score


def test_the_debrief_comes_from_the_seeds_and_notices_a_heated_call():
    rough = report.build_scorecard(RUBRIC, *reversed(session(*ROUGH)), CONTEXT)
    good = report.build_scorecard(RUBRIC, *reversed(session(*GOOD)), CONTEXT)
    assert set(good.debrief_sources) == {"002_990c0a021fc758d5.txt", "003_b1a4d77d6ffdbf07.txt"}
    assert "fresh air" in good.debrief and "relaxes you" in good.debrief
    assert rough.debrief.startswith("It got heated") and not good.debrief.startswith("It got heated")


def test_markdown_and_json_exports_carry_the_same_card():
    transcript, grades = session(*ROUGH)
    card = report.build_scorecard(RUBRIC, grades, transcript, CONTEXT)
    markdown = report.to_markdown(card, RUBRIC)
    assert markdown.startswith("# Practice scorecard (2 turns)")
    assert "## Practise next" in markdown and "**Do not argue back or blame**" in markdown
    assert "| Do not argue back or blame | avoided 0 / 2 | 0% |" in markdown
    assert "Set a calm boundary" not in markdown  # never applied, so not in the table
    assert "Let the patient vent: missed (turn 1: Let me stop you)" in markdown
    assert "002_990c0a021fc758d5.txt" in markdown
    assert report.Scorecard.model_validate(json.loads(report.to_json(card))) == card


def test_step_chart_draws_one_bar_per_applicable_step():
    pytest.importorskip("matplotlib")
    transcript, grades = session(*GOOD)
    card = report.build_scorecard(RUBRIC, grades, transcript, CONTEXT)
    figure = report.step_chart(card)
    bars = figure.axes[0].patches
    assert len(bars) == sum(1 for row in card.steps if row.rate is not None)
    assert all(0.0 <= bar.get_width() <= 1.0 for bar in bars)


def test_the_card_carries_outcome_reason_and_mood_through_its_exports():
    """The one scorecard type: what the store saves and the page shows needs no second dict beside it."""
    transcript, grades = session(*ROUGH)
    mood = [report.MoodPoint(turn=0, anger=0.7, trust=0.3), report.MoodPoint(turn=1, anger=0.85, trust=0.2),
            report.MoodPoint(turn=2, anger=1.0, trust=0.1)]  # fmt: skip
    card = report.build_scorecard(
        RUBRIC, grades, transcript, CONTEXT, outcome="walked_out", reason="Anger stayed at 10.", mood=mood
    )
    assert card.outcome == "walked_out"
    assert card.reason == "Anger stayed at 10."
    assert card.mood == mood
    assert [point.turn for point in card.mood] == [0, 1, 2]
    assert card.turns == 2 and card.steps  # the rest of the card is still built from the grades
    data = json.loads(report.to_json(card))
    assert data["outcome"] == "walked_out" and data["reason"] == "Anger stayed at 10."
    assert data["mood"][2] == {"turn": 2, "anger": 1.0, "trust": 0.1}
    assert report.Scorecard.model_validate(data) == card


def test_a_card_built_without_an_ending_says_so():
    transcript, grades = session(*GOOD)
    card = report.build_scorecard(RUBRIC, grades, transcript, CONTEXT)
    assert card.outcome is None and card.reason is None and card.mood == []


def graded(*abstained: bool) -> list[TurnGrade]:
    """Turns as the grader leaves them, ``True`` where the classifier left the reply to the checks."""
    missed = {"empathize": StepVerdict(step_id="empathize", verdict="missed")}
    return [TurnGrade(verdicts=missed, learned_abstained=flag) for flag in abstained]


def test_the_card_counts_and_says_the_turns_judged_by_the_phrases_alone():
    """A trainee reading a low rate must know when the grader saw less than usual."""
    transcript = Transcript()
    card = report.build_scorecard(RUBRIC, graded(True, False, True, False, False, False), transcript, CONTEXT,
                                  session={})  # fmt: skip
    assert card.turns == 6 and card.checks_only_turns == 2
    markdown = report.to_markdown(card, RUBRIC)
    assert (
        "_2 of 6 turns were judged by the rubric's phrases alone: their wording was unlike every reply the "
        "classifier learnt from, so something you did in other words may have been missed._"
    ) in markdown
    assert markdown.index("**Overall:**") < markdown.index("phrases alone") < markdown.index("## Strengths")
    assert json.loads(report.to_json(card))["checks_only_turns"] == 2
    assert report.Scorecard.model_validate_json(report.to_json(card)) == card

    one = report.build_scorecard(RUBRIC, graded(False, True, False), transcript, CONTEXT, session={})
    assert one.checks_only_turns == 1
    assert "1 of 3 turns was judged by the rubric's phrases alone: its wording was" in report.to_markdown(one)


def test_the_card_says_nothing_about_phrases_when_the_classifier_judged_every_turn():
    card = report.build_scorecard(RUBRIC, graded(False, False), Transcript(), CONTEXT, session={})
    assert card.checks_only_turns == 0
    assert report.checks_only_note(card) is None
    assert "phrases alone" not in report.to_markdown(card, RUBRIC)


def test_a_card_saved_before_the_count_still_loads_with_none_counted():
    card = report.build_scorecard(RUBRIC, graded(True), Transcript(), CONTEXT, session={})
    stored = card.model_dump(mode="json")
    del stored["checks_only_turns"]
    old = report.Scorecard.model_validate(stored)
    assert old.checks_only_turns == 0 and "phrases alone" not in report.to_markdown(old)


def test_turns_not_graded_yet_are_not_counted():
    assert report.checks_only_turns([None, *graded(True, False), None]) == 1
