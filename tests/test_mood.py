"""The mood rule as pure functions: triggers, bounds, decay, trust scaling, endings, words."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent import calibrate
from agent import mood as M
from agent.checks import StepVerdict
from agent.grader import grade_fast
from agent.personas import load_persona, load_personas, parse_persona
from agent.rubrics import load_rubric

BASE = """
id: tester
name: Test Patient
address_as: Mr. Patient
age: 50
channel: {channel}
setting: a clinic
situation: He waited.
backstory: Busy.
needs: A time estimate.
opening_line: How long?
style: short
anger: {anger}
trust: {trust}
difficulty: easy
sources: [004_54c74b88a13cd7e8.txt]
triggers:
  calm:
    - {{step: empathize, anger: 1.5, trust: 1}}
    - {{step: offer_solution, anger: 2, trust: 1.5}}
    - {{step: involve_manager, anger: 1, trust: 0.5}}
    - {{phrase: "I'll fix it", anger: 1, trust: 0.5}}
  escalate:
    - {{step: argue_back, anger: 2, trust: 1}}
    - {{step: find_out, when: [missed], anger: 1, trust: 0.5}}
    - {{phrase: calm down, anger: 2, trust: 1}}
thresholds:
  resolve_anger: 3
  resolve_trust: 6
  resolution_steps: [offer_solution]
  leave_anger: 9
  leave_after: 2
  escalate_anger: 7
  min_turns: 2
  max_turns: 8
dynamics:
  max_anger_step: 2.5
  max_trust_step: 2
  credit_decay: 0.5
  ignored_anger: 0.5
"""


def persona(channel="front_desk", anger=6, trust=5):
    return parse_persona(BASE.format(channel=channel, anger=anger, trust=trust))


def mood(anger=6.0, trust=5.0, **extra):
    return M.Mood(anger=anger, trust=trust, **extra)


P = persona()


def test_initial_mood_is_the_persona_start():
    start = M.initial(persona(anger=8, trust=2))
    assert (start.anger, start.trust, start.turn, start.credits) == (8, 2, 0, {})


def test_demonstrated_step_calms_by_its_weight_at_neutral_trust():
    after = M.update(mood(), {"empathize": "demonstrated"}, P, "I can see how frustrating this is.")
    assert after.anger == 4.5 and after.trust == 6.0 and after.turn == 1
    assert after.credits == {"empathize": 1.0}
    assert [e.source for e in after.effects] == ["step:empathize"]


@pytest.mark.parametrize("verdict", ["missed", "not_applicable", "ok"])
def test_calm_step_does_not_fire_without_demonstrated(verdict):
    after = M.update(mood(), {"empathize": verdict}, P)
    assert after.anger == 6.5  # only the "ignored" penalty
    assert after.trust == 5.0 and after.credits == {}


def test_violated_dont_step_escalates():
    after = M.update(mood(), {"argue_back": "violated"}, P)
    assert after.anger == 8.0 and after.trust == 4.0


def test_when_fires_an_escalate_trigger_on_a_missed_step():
    assert M.update(mood(), {"find_out": "missed"}, P).anger == 7.0
    assert M.update(mood(), {"find_out": "not_applicable"}, P).anger == 6.5


def test_phrase_triggers_ignore_case_spacing_and_curly_apostrophes():
    assert M.update(mood(), {}, P, "Please   CALM  down.").anger == 8.0
    calmer = M.update(mood(), {}, P, "Don't worry, I\u2019ll fix it.")
    assert calmer.anger == 5.0 and calmer.effects[0].source == "phrase:I'll fix it"


def test_step_verdict_objects_are_accepted():
    verdicts = {"empathize": StepVerdict(step_id="empathize", verdict="demonstrated", evidence="I see")}
    assert M.update(mood(), verdicts, P).anger == 4.5


def test_change_per_turn_is_bounded():
    calm_all = {"empathize": "demonstrated", "offer_solution": "demonstrated", "involve_manager": "demonstrated"}
    after = M.update(mood(anger=8), calm_all, P, "I'll fix it")
    assert after.anger == 5.5  # 5.5 of calming, capped at max_anger_step 2.5
    assert after.trust == 7.0  # 3.5 of trust, capped at max_trust_step 2
    worse = M.update(mood(anger=3), {"argue_back": "violated", "find_out": "missed"}, P, "calm down")
    assert worse.anger == 5.5 and worse.trust == 3.0


def test_values_stay_within_0_and_10():
    assert M.update(mood(anger=9.5, trust=0.5), {"argue_back": "violated"}, P, "calm down").anger == 10
    assert M.update(mood(anger=9.5, trust=0.5), {"argue_back": "violated"}, P, "calm down").trust == 0
    low = M.update(mood(anger=0.5, trust=9.5), {"offer_solution": "demonstrated"}, P)
    assert low.anger == 0 and low.trust == 10


def test_credit_decays_over_turns_and_is_forgotten():
    current = M.update(mood(), {"offer_solution": "demonstrated"}, P)
    seen = [current.credits.get("offer_solution")]
    for _ in range(5):
        current = M.update(current, {}, P)
        seen.append(current.credits.get("offer_solution"))
    assert seen == [1.0, 0.5, 0.25, 0.125, 0.0625, None]


def test_zero_decay_forgets_at_once():
    quick = P.model_copy(update={"dynamics": P.dynamics.model_copy(update={"credit_decay": 0.0})})
    current = M.update(mood(), {"empathize": "demonstrated"}, quick)
    assert M.update(current, {}, quick).credits == {}


def test_repeating_a_fresh_step_gives_less():
    first = M.update(mood(anger=8), {"empathize": "demonstrated"}, P)
    second = M.update(first.model_copy(update={"trust": 5.0}), {"empathize": "demonstrated"}, P)
    assert first.anger == 6.5
    assert second.anger == pytest.approx(6.5 - 1.5 * 0.75, abs=0.01)  # credit 0.5 left -> 25% off (2 decimals)
    assert second.credits["empathize"] == 1.0


def test_fresh_credit_shields_from_the_ignored_penalty():
    calmed = M.update(mood(), {"empathize": "demonstrated"}, P)
    next_turn = M.update(calmed, {}, P)  # credit 0.5: still fresh
    assert next_turn.anger == calmed.anger
    later = M.update(M.update(next_turn, {}, P), {}, P)  # 0.25 then 0.125: stale
    assert later.anger == calmed.anger + 0.5
    assert later.effects[0].source == "ignored"


def test_no_ignored_penalty_on_top_of_a_provocation():
    after = M.update(mood(), {"argue_back": "violated"}, P)
    assert [e.source for e in after.effects] == ["step:argue_back"]


def test_trust_scales_calming_and_provocation():
    distrustful = M.update(mood(trust=0), {"empathize": "demonstrated"}, P).anger
    trusting = M.update(mood(trust=10), {"empathize": "demonstrated"}, P).anger
    assert 6 - distrustful == pytest.approx(1.5 * 0.6) and 6 - trusting == pytest.approx(1.5 * 1.4)
    hurt_low = M.update(mood(trust=0), {"argue_back": "violated"}, P).anger
    hurt_high = M.update(mood(trust=10), {"argue_back": "violated"}, P).anger
    assert hurt_low - 6 == pytest.approx(2.5) and hurt_high - 6 == pytest.approx(1.4)


def test_update_is_pure():
    before = mood()
    snapshot = before.model_dump()
    one = M.update(before, {"empathize": "demonstrated"}, P, "x")
    two = M.update(before, {"empathize": "demonstrated"}, P, "x")
    assert one == two and before.model_dump() == snapshot
    with pytest.raises(ValidationError):
        before.anger = 1  # frozen


# -- endings ------------------------------------------------------------------------------------


def test_no_outcome_before_the_first_turn():
    assert M.outcome(mood(anger=0, trust=10), P) is None


def test_resolved_needs_calm_trust_a_fresh_solution_and_min_turns():
    ok = mood(anger=2, trust=7, turn=2, credits={"offer_solution": 0.5})
    assert M.outcome(ok, P) == "resolved"
    assert M.outcome(ok.model_copy(update={"anger": 3.5}), P) is None
    assert M.outcome(ok.model_copy(update={"trust": 5.5}), P) is None
    assert M.outcome(ok.model_copy(update={"credits": {"offer_solution": 0.125}}), P) is None
    assert M.outcome(ok.model_copy(update={"credits": {"empathize": 1.0}}), P) is None
    assert M.outcome(ok.model_copy(update={"turn": 1}), P) is None


@pytest.mark.parametrize(
    ("channel", "expected"),
    [("front_desk", "walked_out"), ("public_post", "walked_out"), ("phone", "hung_up"), ("chat", "hung_up")],
)
def test_leaving_depends_on_the_channel(channel, expected):
    who = persona(channel=channel)
    current = mood(anger=8.5, trust=2)
    current = M.update(current, {"argue_back": "violated"}, who)
    assert current.anger >= 9 and current.hot_turns == 1 and M.outcome(current, who) is None
    current = M.update(current, {"argue_back": "violated"}, who)
    assert current.hot_turns == 2 and M.outcome(current, who) == expected


def test_cooling_down_resets_the_hot_streak():
    hot = M.update(mood(anger=8.5, trust=2), {"argue_back": "violated"}, P)
    cooler = M.update(hot, {"empathize": "demonstrated", "offer_solution": "demonstrated"}, P)
    assert cooler.anger < 9 and cooler.hot_turns == 0


def test_manager_at_high_anger_escalates():
    hot = M.update(mood(anger=9), {"involve_manager": "demonstrated"}, P)
    assert hot.anger >= 7 and M.outcome(hot, P) == "escalated"
    calm = M.update(mood(anger=5), {"involve_manager": "demonstrated"}, P)
    assert M.outcome(calm, P) is None


def test_patience_runs_out_after_max_turns():
    assert M.outcome(mood(anger=5, turn=8), P) == "walked_out"
    assert M.outcome(mood(anger=5, turn=7), P) is None


# -- words ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("anger", "trust", "words"),
    [
        (9.5, 0.5, "furious, distrustful"),
        (7.5, 2.5, "very angry, doubtful"),
        (5.5, 4.5, "still angry, listening"),
        (3.5, 6.5, "annoyed, starting to trust"),
        (2, 8.5, "mostly calm, trusting"),
        (0.5, 9, "calm, trusting"),
    ],
)
def test_describe_bands(anger, trust, words):
    assert M.describe(mood(anger=anger, trust=trust)) == words


def test_describe_says_what_changed_and_what_is_on_the_table():
    after = M.update(mood(anger=8, trust=3), {"offer_solution": "demonstrated"}, P)
    text = M.describe(after)
    assert text.startswith("still angry, cooling down") and text.endswith("; weighing the offer")
    worse = M.update(mood(anger=7, trust=3), {}, P, "calm down")
    assert "getting angrier" in M.describe(worse) and M.describe(worse).endswith("; just felt provoked")
    assert "feels ignored" in M.describe(M.update(mood(), {}, P))


def test_describe_stays_short_for_the_stage_direction():
    """One cue at most, so the direction read every turn stays about 20 tokens with the speaker tag."""
    from agent.tokens import count

    credits = {step: 1.0 for step in ("empathize", "summarize", "apologize", "offer_solution")}
    busy = M.Mood(anger=5.5, trust=6.5, turn=3, previous_anger=7, credits=credits)
    text = M.describe(busy, persona())
    assert text.count(";") == 1
    assert count(f"[Mr. Carter is {text}.]\nMr. Carter:") <= 24  # it was 37 with every recent step listed


def test_describe_warns_when_about_to_leave():
    assert M.describe(mood(anger=8.5), persona(channel="phone")).endswith("about to hang up")
    assert M.describe(mood(anger=8.5), persona()).endswith("about to walk out")
    assert "about to" not in M.describe(mood(anger=6), persona())


# -- hostility moves the mood (issue 20): every persona, every hostility step, every held-out hostile reply --

HOSTILITY = ("argue_back", "dismiss_feelings", "lose_cool")
HOSTILITY_GOLD = Path(__file__).resolve().parent / "data" / "gold" / "hostility" / "heldout.jsonl"
PERSONA_IDS = [p.id for p in load_personas()]


@pytest.mark.parametrize("persona_id", PERSONA_IDS)
def test_every_persona_escalates_on_each_hostility_step(persona_id):
    persona = load_persona(persona_id)
    steps = {t.step for t in persona.triggers.escalate if t.step and (t.when or ["violated"]) == ["violated"]}
    assert set(HOSTILITY) <= steps
    for step in HOSTILITY:
        start = M.initial(persona)
        assert M.update(start, {step: "violated"}, persona).anger > start.anger, step


@pytest.fixture(scope="module")
def graded_held_out_hostile() -> list[tuple[calibrate.Example, dict[str, str]]]:
    """Each held-out hostile reply with the grader's verdicts, its hostility steps set to the gold labels."""
    rubric = load_rubric()
    graded = []
    for example in calibrate.load_examples(HOSTILITY_GOLD, rubric):
        if any(example.labels[s] == "violated" for s in HOSTILITY):
            verdicts = grade_fast(rubric, example.reply, example.turn_context()).labels()
            graded.append((example, {**verdicts, **{s: example.labels[s] for s in HOSTILITY}}))
    return graded


@pytest.mark.parametrize("persona_id", PERSONA_IDS)
def test_each_held_out_hostile_reply_angers_every_persona(persona_id, graded_held_out_hostile):
    """Played as the first turn, every held-out hostile reply raises the persona's anger, even where the
    same reply also earns a calming step (the name, a question): the escalation outweighs it."""
    persona = load_persona(persona_id)
    start = M.initial(persona)
    for example, verdicts in graded_held_out_hostile:
        assert M.update(start, verdicts, persona, example.reply).anger > start.anger, example.reply
