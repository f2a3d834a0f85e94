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
  need_met: false
dynamics:
  max_anger_step: 2.5
  max_trust_step: 2
  credit_decay: 0.5
  ignored_anger: 0.5
  vent_turns: 0
  repeat_factor: 0.5
"""


def persona(channel="front_desk", anger=6, trust=5):
    return parse_persona(BASE.format(channel=channel, anger=anger, trust=trust))


def mood(anger=6.0, trust=5.0, **extra):
    return M.Mood(anger=anger, trust=trust, **extra)


def v(**labels: str) -> dict[str, StepVerdict]:
    """Typed verdicts, as the grader hands them to the mood: ``v(empathize="demonstrated")``."""
    return {step: StepVerdict(step_id=step, verdict=label) for step, label in labels.items()}


P = persona()


def test_initial_mood_is_the_persona_start():
    start = M.initial(persona(anger=8, trust=2))
    assert (start.anger, start.trust, start.turn, start.credits) == (8, 2, 0, {})


def test_demonstrated_step_calms_by_its_weight_at_neutral_trust():
    after = M.update(mood(), v(empathize="demonstrated"), P, "I can see how frustrating this is.")
    assert after.anger == 4.5 and after.trust == 6.0 and after.turn == 1
    assert after.credits == {"empathize": 1.0}
    assert [e.source for e in after.effects] == ["step:empathize"]


@pytest.mark.parametrize("verdict", ["missed", "not_applicable", "ok"])
def test_calm_step_does_not_fire_without_demonstrated(verdict):
    after = M.update(mood(), v(empathize=verdict), P)
    assert after.anger == 6.5  # only the "ignored" penalty
    assert after.trust == 5.0 and after.credits == {}


def test_violated_dont_step_escalates():
    after = M.update(mood(), v(argue_back="violated"), P)
    assert after.anger == 8.0 and after.trust == 4.0


def test_when_fires_an_escalate_trigger_on_a_missed_step():
    assert M.update(mood(), v(find_out="missed"), P).anger == 7.0
    assert M.update(mood(), v(find_out="not_applicable"), P).anger == 6.5


def test_phrase_triggers_ignore_case_spacing_and_curly_apostrophes():
    assert M.update(mood(), v(), P, "Please   CALM  down.").anger == 8.0
    calmer = M.update(mood(), v(), P, "Don't worry, I\u2019ll fix it.")
    assert calmer.anger == 5.0 and calmer.effects[0].source == "phrase:I'll fix it"


def test_change_per_turn_is_bounded():
    calm_all = v(empathize="demonstrated", offer_solution="demonstrated", involve_manager="demonstrated")
    after = M.update(mood(anger=8), calm_all, P, "I'll fix it")
    assert after.anger == 5.5  # 5.5 of calming, capped at max_anger_step 2.5
    assert after.trust == 7.0  # 3.5 of trust, capped at max_trust_step 2
    worse = M.update(mood(anger=3), v(argue_back="violated", find_out="missed"), P, "calm down")
    assert worse.anger == 5.5 and worse.trust == 3.0


def test_values_stay_within_0_and_10():
    assert M.update(mood(anger=9.5, trust=0.5), v(argue_back="violated"), P, "calm down").anger == 10
    assert M.update(mood(anger=9.5, trust=0.5), v(argue_back="violated"), P, "calm down").trust == 0
    low = M.update(mood(anger=0.5, trust=9.5), v(offer_solution="demonstrated"), P)
    assert low.anger == 0 and low.trust == 10


def test_credit_decays_over_turns_and_is_forgotten():
    current = M.update(mood(), v(offer_solution="demonstrated"), P)
    seen = [current.credits.get("offer_solution")]
    for _ in range(5):
        current = M.update(current, v(), P)
        seen.append(current.credits.get("offer_solution"))
    assert seen == [1.0, 0.5, 0.25, 0.125, 0.0625, None]


def test_zero_decay_forgets_at_once():
    quick = P.model_copy(update={"dynamics": P.dynamics.model_copy(update={"credit_decay": 0.0})})
    current = M.update(mood(), v(empathize="demonstrated"), quick)
    assert M.update(current, v(), quick).credits == {}


def test_each_repeat_of_a_step_in_a_session_earns_repeat_factor_of_the_last():
    current = mood(anger=9)
    gains = []
    for _ in range(3):
        before = current.model_copy(update={"trust": 5.0})
        current = M.update(before, v(empathize="demonstrated"), P)
        gains.append(before.anger - current.anger)
    assert gains == pytest.approx([1.5, 0.75, 0.375], abs=0.01)
    assert current.counts == {"empathize": 3} and current.credits["empathize"] == 1.0


def test_a_repeat_earns_less_even_after_its_credit_was_forgotten():
    """The count is per session, not per fresh credit: waiting a few turns does not reset it."""
    current = M.update(mood(anger=9), v(empathize="demonstrated"), P)
    for _ in range(5):
        current = M.update(current, v(), P)
    assert "empathize" not in current.credits
    again = M.update(current.model_copy(update={"trust": 5.0}), v(empathize="demonstrated"), P)
    assert current.anger - again.anger == pytest.approx(0.75)


def test_counts_every_demonstrated_step_once_per_turn():
    after = M.update(mood(), v(empathize="demonstrated", ask_questions="demonstrated", argue_back="ok"), P)
    after = M.update(after, v(ask_questions="demonstrated", find_out="missed"), P)
    assert after.counts == {"ask_questions": 2, "empathize": 1}


def test_fresh_credit_shields_from_the_ignored_penalty():
    calmed = M.update(mood(), v(empathize="demonstrated"), P)
    next_turn = M.update(calmed, v(), P)  # credit 0.5: still fresh
    assert next_turn.anger == calmed.anger
    later = M.update(M.update(next_turn, v(), P), v(), P)  # 0.25 then 0.125: stale
    assert later.anger == calmed.anger + 0.5
    assert later.effects[0].source == "ignored"


def test_no_ignored_penalty_on_top_of_a_provocation():
    after = M.update(mood(), v(argue_back="violated"), P)
    assert [e.source for e in after.effects] == ["step:argue_back"]


def test_trust_scales_calming_and_provocation():
    distrustful = M.update(mood(trust=0), v(empathize="demonstrated"), P).anger
    trusting = M.update(mood(trust=10), v(empathize="demonstrated"), P).anger
    assert 6 - distrustful == pytest.approx(1.5 * 0.6) and 6 - trusting == pytest.approx(1.5 * 1.4)
    hurt_low = M.update(mood(trust=0), v(argue_back="violated"), P).anger
    hurt_high = M.update(mood(trust=10), v(argue_back="violated"), P).anger
    assert hurt_low - 6 == pytest.approx(2.5) and hurt_high - 6 == pytest.approx(1.4)


def test_update_is_pure():
    before = mood()
    snapshot = before.model_dump()
    one = M.update(before, v(empathize="demonstrated"), P, "x")
    two = M.update(before, v(empathize="demonstrated"), P, "x")
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
    current = M.update(current, v(argue_back="violated"), who)
    assert current.anger >= 9 and current.hot_turns == 1 and M.outcome(current, who) is None
    current = M.update(current, v(argue_back="violated"), who)
    assert current.hot_turns == 2 and M.outcome(current, who) == expected


def test_cooling_down_resets_the_hot_streak():
    hot = M.update(mood(anger=8.5, trust=2), v(argue_back="violated"), P)
    cooler = M.update(hot, v(empathize="demonstrated", offer_solution="demonstrated"), P)
    assert cooler.anger < 9 and cooler.hot_turns == 0


def test_manager_at_high_anger_escalates():
    hot = M.update(mood(anger=9), v(involve_manager="demonstrated"), P)
    assert hot.anger >= 7 and M.outcome(hot, P) == "escalated"
    calm = M.update(mood(anger=5), v(involve_manager="demonstrated"), P)
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
    after = M.update(mood(anger=8, trust=3), v(offer_solution="demonstrated"), P)
    text = M.describe(after)
    assert text.startswith("still angry, cooling down") and text.endswith("; weighing the offer")
    worse = M.update(mood(anger=7, trust=3), v(), P, "calm down")
    assert "getting angrier" in M.describe(worse) and M.describe(worse).endswith("; just felt provoked")
    assert "feels ignored" in M.describe(M.update(mood(), v(), P))


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


# -- substance: vent first, needs met, offers recorded ---------------------------------------------

WANTS = """
wants:
  resolves:
    - {id: same_day, says: a doctor sees him today}
  partly:
    - {id: call_back, says: a call back at a stated time}
  rejects:
    - {id: keep_tomorrow, says: keep tomorrow's appointment}
"""


def held(**dynamics: float) -> M.Persona:
    """The test persona with wants (held to them), optionally with other dynamics."""
    base = BASE.format(channel="front_desk", anger=6, trust=5).replace("need_met: false", "need_met: true")
    who = parse_persona(base + WANTS)
    return who.model_copy(update={"dynamics": who.dynamics.model_copy(update=dynamics)})


def offer(meets: str | None, remedy: str | None = None, verdict: str = "demonstrated", words: str = "an offer"):
    return StepVerdict(step_id="offer_solution", verdict=verdict, evidence=words, meets=meets, remedy=remedy)


H = held()


@pytest.mark.parametrize(("meets", "share"), [("met", 1.0), ("partly", 0.3), ("none", 0.1), (None, 0.1)])
def test_an_offer_calms_by_how_well_it_meets_the_need(meets, share):
    remedy = {"met": "same_day", "partly": "call_back"}.get(meets or "")
    after = M.update(mood(anger=8), {"offer_solution": offer(meets, remedy)}, H)
    assert 8 - after.anger == pytest.approx(2 * share, abs=0.01)
    assert after.credits.get("offer_solution") == 1.0


def test_the_offer_shares_are_per_persona():
    generous = held(partly_calm=1.0, miss_calm=0.5)
    assert 8 - M.update(mood(anger=8), {"offer_solution": offer("partly", "call_back")}, generous).anger == 2.0
    assert 8 - M.update(mood(anger=8), {"offer_solution": offer("none")}, generous).anger == 1.0


def test_a_rejected_offer_escalates_and_earns_no_credit():
    after = M.update(mood(anger=6), {"offer_solution": offer("rejected", "keep_tomorrow")}, H)
    assert after.anger == 7.0 and after.trust == 4.5  # reject_anger 1, reject_trust 0.5 at neutral trust
    assert "offer_solution" not in after.credits and after.met == ["keep_tomorrow"]
    assert [e.source for e in after.effects] == ["offer:rejected"]
    harsher = held(reject_anger=2.0)
    assert M.update(mood(anger=6), {"offer_solution": offer("rejected")}, harsher).anger == 8.0


def test_without_wants_or_with_need_met_off_any_offer_calms_fully_and_resolves():
    off = H.model_copy(update={"thresholds": H.thresholds.model_copy(update={"need_met": False})})
    for who in (P, off):
        after = M.update(mood(anger=4, trust=7, turn=2), {"offer_solution": offer("none")}, who)
        assert after.anger == pytest.approx(4 - 2 * 1.16, abs=0.01) and M.outcome(after, who) == "resolved"


def calm_ready(**extra) -> M.Mood:
    return mood(anger=2, trust=7, turn=2, counts={"summarize": 1}, **extra)


def test_resolution_needs_an_offer_that_met_a_need():
    partly = M.update(calm_ready(), {"offer_solution": offer("partly", "call_back")}, H)
    assert partly.anger <= 3 and partly.credits["offer_solution"] == 1.0
    assert M.outcome(partly, H) is None  # calm, trusting, an offer fresh: but it only partly helps
    met = M.update(partly, {"offer_solution": offer("met", "same_day")}, H)
    assert met.met == ["call_back", "same_day"] and M.outcome(met, H) == "resolved"


def test_a_met_offer_still_needs_a_fresh_solution_credit():
    stale = calm_ready(met=["same_day"], credits={"offer_solution": 0.125})
    assert M.outcome(stale, H) is None
    assert M.outcome(stale.model_copy(update={"credits": {"offer_solution": 0.5}}), H) == "resolved"


def test_a_remedy_is_recorded_only_when_offered():
    vague = M.update(mood(), {"offer_solution": offer("met", "same_day", verdict="missed")}, H)
    assert vague.met == [] and vague.offers == []


def test_offers_record_the_concrete_words_once():
    words = "I'll check for a cancellation this afternoon"
    first = M.update(mood(), {"offer_solution": offer("met", "same_day", words=words)}, H)
    again = M.update(first, {"offer_solution": offer("met", "same_day", words=words)}, H)
    later = M.update(again, {"offer_solution": offer("partly", "call_back", words="I'll call you at four")}, H)
    assert later.offers == [words, "I'll call you at four"] and later.met == ["same_day", "call_back"]
    assert later.counts == {"offer_solution": 3}


def test_vent_first_calming_works_at_vent_calm_in_the_first_turns():
    venting = held(vent_turns=2, vent_calm=0.4)
    first = M.update(mood(anger=8), v(empathize="demonstrated"), venting)
    assert 8 - first.anger == pytest.approx(1.5 * 0.4)
    second = M.update(first.model_copy(update={"trust": 5.0}), v(apologize="demonstrated"), venting)
    assert second.anger == first.anger  # apologize has no trigger here; the empathize credit shields
    third = M.update(second.model_copy(update={"trust": 5.0}), v(involve_manager="demonstrated"), venting)
    assert second.anger - third.anger == pytest.approx(1.0)  # turn 3: venting is over


def test_venting_does_not_soften_a_provocation():
    venting = held(vent_turns=3, vent_calm=0.0)
    assert M.update(mood(anger=5), v(argue_back="violated"), venting).anger == 7.0


def test_venting_ends_once_the_trainee_restated_the_complaint():
    venting = held(vent_turns=3, vent_calm=0.0)
    unheard = M.update(mood(anger=8), v(empathize="demonstrated"), venting)
    heard = M.update(mood(anger=8), v(empathize="demonstrated", summarize="demonstrated"), venting)
    assert unheard.anger == 8 and heard.anger == 6.5


def test_kind_words_alone_calm_at_most_unheard_calm_below_the_start():
    form = v(empathize="demonstrated", apologize="demonstrated", ask_questions="demonstrated")
    current = M.initial(H)
    for _ in range(3):  # six turns (the test persona's patience ends at eight)
        current = M.update(current, form, H)
        current = M.update(current, {**form, "offer_solution": offer("partly", "call_back")}, H)
    assert current.anger == H.anger - H.dynamics.unheard_calm == 4
    assert M.outcome(current, H) is None


@pytest.mark.parametrize(
    "substance",
    [v(summarize="demonstrated"), {"offer_solution": offer("met", "same_day")}],
    ids=["restated", "met offer"],
)
def test_restating_the_complaint_or_meeting_the_need_lifts_the_limit(substance):
    no_floor = held(unmet_anger=0)  # the unheard limit alone (the unmet floor is the next test's)
    start = M.Mood(anger=6, trust=5, turn=4, previous_anger=6, counts={"empathize": 1})
    form = v(empathize="demonstrated")
    limited = M.update(start.model_copy(update={"anger": 4.2}), form, no_floor)
    assert limited.anger == 4.0
    lifted = M.update(start.model_copy(update={"anger": 4.2}), {**form, **substance}, no_floor)
    assert lifted.anger < 4.0


def test_heard_but_not_helped_anger_stays_at_unmet_anger_until_an_offer_meets_a_need():
    """The gaming probe's echo-then-hollow-offer trainees: restating the facts lifts the unheard limit,
    but empathy, apologies and offers that only partly help or meet nothing never take the patient
    below ``unmet_anger``; an offer that meets a need does."""
    patient = held(unmet_anger=3, unheard_calm=10)
    kind = v(empathize="demonstrated", apologize="demonstrated", summarize="demonstrated")
    current = M.initial(patient)
    for hollow in (offer("none"), offer("partly", "call_back"), offer("none"), offer("partly", "call_back")):
        current = M.update(current, {**kind, "offer_solution": hollow}, patient)
        current = current.model_copy(update={"trust": 8.0})  # however trusting, not below the floor
    assert current.anger == 3.0 and M.outcome(current, patient) is None
    helped = M.update(current, {**kind, "offer_solution": offer("met", "same_day")}, patient)
    assert helped.anger < 3.0 and helped.met == ["call_back", "same_day"]
    after = M.update(helped, kind, patient)
    assert after.anger < helped.anger  # the floor stays lifted once a need was met


def test_unmet_anger_is_per_persona_and_zero_turns_it_off():
    kind = v(empathize="demonstrated", summarize="demonstrated")
    start = M.Mood(anger=4.2, trust=5, turn=4, previous_anger=4.5, counts={"summarize": 1})
    assert M.update(start, kind, held(unmet_anger=4)).anger == 4.0
    assert M.update(start, kind, held(unmet_anger=0)).anger < 4.0
    below = start.model_copy(update={"anger": 2.0})  # already below the floor: it never pulls anger up
    assert M.update(below, kind, held(unmet_anger=4)).anger == 2.0


def test_unheard_calm_is_per_persona():
    loose = held(unheard_calm=10)
    assert M.update(mood(anger=6), v(empathize="demonstrated"), loose).anger == 4.5
    assert M.update(mood(anger=6), v(empathize="demonstrated"), H).anger == 4.5
    assert M.update(mood(anger=4.5), v(empathize="demonstrated"), H).anger == 4.0


# -- hostility moves the mood (issue 20): every persona, every hostility step, every held-out hostile reply --

HOSTILITY = ("argue_back", "dismiss_feelings", "lose_cool")
HOSTILITY_GOLD = [Path(__file__).resolve().parent / "data" / "gold" / "hostility" / name
                  for name in ("heldout.jsonl", "heldout2.jsonl", "heldout3.jsonl")]  # fmt: skip
PERSONA_IDS = [p.id for p in load_personas()]


@pytest.mark.parametrize("persona_id", PERSONA_IDS)
def test_every_persona_escalates_on_each_hostility_step(persona_id):
    persona = load_persona(persona_id)
    steps = {t.step for t in persona.triggers.escalate if t.step and (t.when or ["violated"]) == ["violated"]}
    assert set(HOSTILITY) <= steps
    for step in HOSTILITY:
        start = M.initial(persona)
        assert M.update(start, v(**{step: "violated"}), persona).anger > start.anger, step


@pytest.fixture(scope="module")
def graded_held_out_hostile() -> list[tuple[calibrate.Example, dict[str, StepVerdict]]]:
    """Each held-out hostile reply with the grader's verdicts, its hostility steps set to the gold labels."""
    rubric = load_rubric()
    graded = []
    for example in (e for path in HOSTILITY_GOLD for e in calibrate.load_examples(path, rubric)):
        if any(example.labels[s] == "violated" for s in HOSTILITY):
            verdicts = grade_fast(rubric, example.reply, example.turn_context()).verdicts
            graded.append((example, {**verdicts, **v(**{s: example.labels[s] for s in HOSTILITY})}))
    return graded


@pytest.mark.parametrize("persona_id", PERSONA_IDS)
def test_each_held_out_hostile_reply_angers_every_persona(persona_id, graded_held_out_hostile):
    """Played as the first turn, every held-out hostile reply raises the persona's anger, even where the
    same reply also earns a calming step (the name, a question): the escalation outweighs it."""
    persona = load_persona(persona_id)
    start = M.initial(persona)
    for example, verdicts in graded_held_out_hostile:
        assert M.update(start, verdicts, persona, example.reply).anger > start.anger, example.reply


def test_a_remedy_offered_for_the_first_time_is_not_a_repeat():
    # Two offers that met nothing, then the one the patient needs: it earns its full calm, not
    # repeat_factor squared; the same remedy offered again is a repeat and earns less.
    vague = mood(anger=8, counts={"offer_solution": 2})
    first = M.update(vague, {"offer_solution": offer("met", "same_day")}, H)
    assert 8 - first.anger == pytest.approx(2.0, abs=0.01)
    again = M.update(first.model_copy(update={"anger": 8.0}), {"offer_solution": offer("met", "same_day")}, H)
    assert 8 - again.anger < 0.5
    unmatched = M.update(vague, {"offer_solution": offer("none")}, H)
    assert 8 - unmatched.anger < 0.1  # an offer that meets nothing keeps decaying with the count
