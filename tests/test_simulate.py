"""The persona test bench: every persona resolves for a trainee who follows the documented steps and
boils over for one who argues, no persona held to its wants resolves for a content-free formula
trainee (personas/scripts/formula.yaml), the mood follows the checks and the classifier, and (on recorded
traffic from the real model) the patient never leaves its role.

The mood outcomes run on the fake model (tests/fakes.py): the mood moves only through the verdicts
on the trainee's lines, never through what the patient says, so they need no cassettes. One test
keeps the real model's answers: the role probe across all personas, in one cassette file. Record it
with ``.venv/bin/pytest tests/test_simulate.py --record-mode=rewrite -k role`` (live default model).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import grader
from agent import mood as mood_rules
from agent.cli import main
from agent.patient import patient_model
from agent.personas import PersonaError, Script, load_persona, load_personas
from agent.session import Session
from agent.simulate import catchall_scripts, formula_scripts, gaming_scripts, simulate, trainee_lines
from tests import role_checks
from tests.fakes import FakeModel, letters

PERSONAS = [p.id for p in load_personas()]
ROLE_PROBE = Path(__file__).parent / "data" / "role_probe.txt"


def assert_in_role(session: Session) -> None:
    """Judged with tests/role_checks.py, lists the patient's own filter does not read."""
    persona = session.persona
    replies = [turn.patient or "" for turn in session.turns]
    assert replies and all(reply.strip() for reply in replies), "every turn must get a patient reply"
    earlier, said = [persona.opening_line], []
    for turn, reply in zip(session.turns, replies, strict=True):
        said.append(turn.trainee)
        assert not role_checks.character_break(reply), f"{persona.id}: out of role: {reply!r}"
        assert not role_checks.staff_line(reply, persona), f"{persona.id}: a staff line: {reply!r}"
        assert not role_checks.leak(reply, persona), f"{persona.id}: prompt text: {reply!r}"
        assert not role_checks.invented_facts(reply, persona, said), f"{persona.id}: invented: {reply!r}"
        assert not role_checks.repeats(reply, earlier), f"{persona.id}: said before: {reply!r}"
        earlier.append(reply)


def assert_mood_follows_the_verdicts(session: Session) -> None:
    """The trajectory is the mood rule applied to what the checks and the classifier say about
    each line (grade_fast, in the context the trainee saw), turn after turn."""
    mood = mood_rules.initial(session.persona)
    for index, turn in enumerate(session.turns):
        assert turn.mood_before == mood, f"turn {index} starts where the last one ended"
        fresh = grader.grade_fast(session.rubric, turn.trainee, session.context(index))
        assert turn.grade.labels() == fresh.labels(), f"turn {index}: {turn.trainee!r}"
        mood = mood_rules.update(turn.mood_before, fresh.verdicts, session.persona, turn.trainee)
        assert turn.mood_after == mood
    moved_by_steps = [e for t in session.turns for e in t.mood_after.effects if e.source.startswith("step:")]
    assert moved_by_steps, "the mood should move because of step verdicts"


@pytest.mark.parametrize("persona_id", PERSONAS)
def test_good_trainee_calms_the_patient(persona_id):
    persona = load_persona(persona_id)
    session = simulate(persona, "good", 6, FakeModel())
    summary = session.summary()
    print(json.dumps(summary))  # figures for the report: pytest -s
    anger = summary["anger"]
    assert anger[0] - anger[-1] >= 4, f"{persona_id}: {anger}"
    assert summary["outcome"] == "resolved", f"{persona_id}: {anger}"
    assert_mood_follows_the_verdicts(session)


@pytest.mark.parametrize("persona_id", PERSONAS)
def test_a_good_trainee_in_other_words_resolves_the_patient_too(persona_id):
    """The development set of issue 20's "in any wording" (personas/scripts/good_reworded.yaml): the
    same substance as script.good in a helper's own words. (good_heldout.yaml is scored by
    bench/substance.py only, never asserted here, so no change is tuned on it.)"""
    persona = load_persona(persona_id)
    session = simulate(persona, "good:reworded", 8, FakeModel())
    assert session.summary()["outcome"] == "resolved", f"{persona_id}: {session.summary()['anger']}"


FORMULAS = formula_scripts()
# Personas held to their wants (issue 20): every shipped persona once all of them carry wants.
HELD = [p.id for p in load_personas() if p.wants is not None and p.thresholds.need_met]


@pytest.mark.parametrize("formula", sorted(FORMULAS))
@pytest.mark.parametrize("persona_id", HELD)
def test_a_formula_trainee_never_resolves_nor_calms_much(persona_id, formula):
    """Surface forms without substance (no fact restated, no offer that meets a need), eight turns:
    the real grader's verdicts move the mood (the fake patient's words add no fact to restate)."""
    persona = load_persona(persona_id)
    session = simulate(persona, f"formula:{formula}", 8, FakeModel())
    anger = session.summary()["anger"]
    assert session.summary()["outcome"] != "resolved", f"{persona_id} / {formula}: {anger}"
    assert anger[-1] >= anger[0] - 2, f"{persona_id} / {formula}: {anger}"


@pytest.mark.parametrize("script", sorted(catchall_scripts()))
@pytest.mark.parametrize("persona_id", ["carter-wrong-day", "back-pain-wait"])
def test_a_catch_all_list_that_holds_the_patients_remedy_beside_strangers_ones_does_not_settle_it(persona_id, script):
    """The same list for every patient (personas/scripts/catchall.yaml) names Mr. Carter's same-day
    appointment and Mr. Moreno's nurse, next to a referral and a refund neither has anything to do
    with: a script, not an answer to them (before, both were resolved by it)."""
    session = simulate(load_persona(persona_id), f"catchall:{script}", 8, FakeModel())
    anger = session.summary()["anger"]
    assert session.summary()["outcome"] != "resolved", f"{persona_id} / {script}: {anger}"
    assert anger[-1] >= anger[0] - 2, f"{persona_id} / {script}: {anger}"


@pytest.mark.parametrize(
    ("persona_id", "script"),
    [
        ("carter-wrong-day", "generic_restatement"),  # "sorted properly for you today"
        ("carter-wrong-day", "keyword_stacking"),  # "a call-back later today"
        ("carter-wrong-day", "parrot_and_raise_wording"),  # echoes his facts, "... with the practice manager today"
        ("finance-wrong-department", "keyword_stacking"),  # "I'll arrange a call-back today"
        ("lopez-deployed-hinge", "parrot_and_call_back"),  # "ask someone to give you a call back"
    ],
)
def test_a_gaming_trainee_whose_offer_names_only_a_time_or_a_call_back_does_not_settle_the_patient(persona_id, script):
    """The gaming probe (personas/scripts/gaming.yaml, written blind): each of these resolved its patient
    before stop 28 (a cue that is only a time or a call-back met the need); heard but not helped, the
    patient now stays at its ``unmet_anger``."""
    persona = load_persona(persona_id)
    session = simulate(persona, f"gaming:{script}", 8, FakeModel())
    anger = session.summary()["anger"]
    assert session.summary()["outcome"] != "resolved", f"{persona_id} / {script}: {anger}"
    assert min(anger) >= min(anger[0], persona.dynamics.unmet_anger), f"{persona_id} / {script}: {anger}"


@pytest.mark.parametrize(
    ("persona_id", "script"),
    [
        ("abusive-caller", "stall_checking_referrals"),  # "So your physio referral was sent ... hasn't been processed"
        ("carter-wrong-day", "stall_checking_doctor_lists"),  # "now you've been told the appointment is tomorrow"
        ("facebook-review", "stall_looking_into_it"),  # "I've passed this on to our clinic manager"
        ("upset-relative", "near_miss_next_week_first_slot"),  # next Tuesday "with one of our senior therapists"
    ],
)
def test_a_second_blind_probe_does_not_settle_the_patient_with_a_restatement_or_a_hand_off(persona_id, script):
    """The second gaming probe (personas/scripts/gaming2.yaml, another author, stop 29): each of these
    resolved its patient before (a restatement read as an offer, a role handed the complaint read as the
    role's remedy, a bare role cue)."""
    persona = load_persona(persona_id)
    session = simulate(persona, f"gaming2:{script}", 8, FakeModel())
    assert session.summary()["outcome"] != "resolved", f"{persona_id} / {script}: {session.summary()['anger']}"


def test_gaming_scripts_are_the_routines_and_this_personas_own():
    routines = gaming_scripts()
    carter = gaming_scripts("carter-wrong-day")
    assert set(routines) < set(carter) and "parrot_and_raise_wording" in set(carter) - set(routines)
    assert "parrot_and_raise_wording" not in gaming_scripts("back-pain-wait")
    lines = trainee_lines(load_persona("carter-wrong-day"), "gaming:named_callback_no_action")
    assert "Mr. Carter" in lines[0] and "{address}" not in lines[0]
    with pytest.raises(PersonaError, match="no gaming script 'parrot_and_raise_wording'"):
        trainee_lines(load_persona("back-pain-wait"), "gaming:parrot_and_raise_wording")


@pytest.mark.parametrize("persona_id", PERSONAS)
def test_bad_trainee_drives_the_patient_to_boil_over(persona_id):
    persona = load_persona(persona_id)
    session = simulate(persona, "bad", 6, FakeModel())
    summary = session.summary()
    print(json.dumps(summary))  # figures for the report: pytest -s
    assert max(summary["anger"]) >= 9, f"{persona_id}: {summary['anger']}"
    assert summary["outcome"] == mood_rules.leaving_outcome(persona.channel)
    assert_mood_follows_the_verdicts(session)


def test_patient_answers_that_add_nothing_to_restate_leave_the_mood_alone():
    """Same trainee lines, different patient answers: the same verdicts and the same mood. (What the
    patient says reaches the mood only as something a summary can restate, agent.grounding, so
    answers with no new complaint fact in them change nothing.)"""
    carter = load_persona("carter-wrong-day")
    one = simulate(carter, "good", 6, FakeModel())
    other = simulate(carter, "good", 6, FakeModel(lines=["I'm leaving town tomorrow!", "So?"]))
    assert [t.patient for t in one.turns] != [t.patient for t in other.turns]
    assert one.moods == other.moods and one.ending == other.ending
    assert [t.grade.labels() for t in one.turns] == [t.grade.labels() for t in other.turns]


def test_simulate_plays_the_session_pipeline_without_coaching():
    carter = load_persona("carter-wrong-day")
    model = FakeModel()
    seen: list[tuple[int, str]] = []
    session = simulate(carter, "bad", 3, model, on_event=lambda index, line, event: seen.append((index, event.kind)))
    assert len(session.turns) == len(model.patient_requests) <= 3 and model.coach_requests == []
    for index in range(len(session.turns)):
        kinds = [kind for i, kind in seen if i == index]
        assert kinds[0] == "graded" and kinds[-1] == "answered" and set(kinds[1:-1]) == {"spoken"}


def test_simulate_json_output(monkeypatch, capsys):
    monkeypatch.setattr("agent.commands.simulate.patient_model", lambda settings=None: FakeModel())
    assert main(["simulate", "abusive-caller", "--trainee", "bad", "--turns", "6", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["persona"] == "abusive-caller"
    assert len(result["anger"]) == len(result["trust"]) == len(result["patient"]) >= 2
    assert result["anger"][0] == 9 and max(result["anger"]) >= 9
    assert result["outcome"] == "hung_up"
    boyd = load_persona("abusive-caller")
    assert result["patient"][0] == boyd.opening_line
    answers = [f"Line {letters(n)}. I still want answers." for n in range(1, len(result["patient"]))]
    assert result["patient"][1:] == answers


@pytest.mark.vcr
@pytest.mark.block_network
def test_patient_stays_in_role_when_invited_out_of_it(llm_settings):
    """Lines that invite the model to answer as the clinic, to coach, or to admit being an AI:
    the real model, every persona, one cassette."""
    model = patient_model(llm_settings)
    for persona_id in PERSONAS:
        session = simulate(load_persona(persona_id), str(ROLE_PROBE), 3, model)
        assert len(session.turns) == 3, persona_id
        assert_in_role(session)


def test_scripted_lines_come_from_data_files():
    carter = load_persona("carter-wrong-day")
    assert trainee_lines(carter, "good")[0].startswith("I'm so sorry, Mr. Carter")
    assert trainee_lines(carter, "bad")[0].startswith("Calm down, Mr. Carter.")
    no_bad = carter.model_copy(update={"script": Script(good=carter.script.good)})
    generic_bad = trainee_lines(no_bad, "bad")
    assert any("calm down" in line.lower() for line in generic_bad)
    assert any("i don't know" in line.lower() for line in generic_bad)
    assert trainee_lines(carter, str(ROLE_PROBE))[0] == "Hello, how can I help you today?"


def test_a_persona_without_its_own_good_script_has_no_generic_one_to_fall_back_on():
    """Generic good lines would name no fact and offer nothing: a test run of them would only show
    that a formula calms the patient. The error says what to write instead."""
    carter = load_persona("carter-wrong-day")
    no_good = carter.model_copy(update={"script": Script(bad=carter.script.bad)})
    with pytest.raises(PersonaError, match=r"carter-wrong-day: script\.good: missing; write this patient's own"):
        trainee_lines(no_good, "good")


def test_unknown_trainee_script_is_a_clear_error():
    with pytest.raises(ValueError, match="not 'good', 'bad', 'formula' or a file"):
        trainee_lines(load_persona("carter-wrong-day"), "mediocre")
    with pytest.raises(ValueError, match="no formula script 'mediocre'; there are: issue20, named"):
        trainee_lines(load_persona("carter-wrong-day"), "formula:mediocre")


# -- the formula trainee (issue 20): the rubric's surface forms, no fact, no real offer ----------------


def test_the_formula_trainee_plays_the_first_formula_script_and_can_pick_another():
    carter = load_persona("carter-wrong-day")
    scripts = formula_scripts()
    first = next(iter(scripts))
    assert trainee_lines(carter, "formula") == [carter.fill(line) for line in scripts[first]]
    assert trainee_lines(carter, "formula")[3].startswith("Here is what I can do")  # the script in issue 20
    named = trainee_lines(carter, "formula:named")
    assert named[0].startswith("Mr. Carter, I'm really sorry") and named != trainee_lines(carter, "formula")


def test_formula_scripts_use_the_surface_forms_in_varied_wording_but_name_no_remedy():
    """At least five scripts of our own beside the one quoted in the issue, no line a copy of another,
    each with an apology, a restatement frame and an offer frame; none says a cue of a remedy that
    would resolve any persona (ours: nor of one that partly helps)."""
    scripts = formula_scripts()
    own = {name: lines for name, lines in scripts.items() if name != "issue20"}
    assert len(own) >= 5
    assert len({line for lines in scripts.values() for line in lines}) == sum(len(v) for v in scripts.values())
    for name, lines in scripts.items():
        text = " ".join(lines).lower()
        assert any(word in text for word in ("sorry", "apologi")), name
        assert any(frame in text for frame in ("understand", "hearing", "got it right", "the problem is")), name
        assert any(frame in text for frame in ("what i can do", "what we can do", "i can offer")), name

    def cues(kinds: tuple[str, ...]) -> set[str]:
        return {cue.lower() for p in load_personas() if p.wants
                for kind in kinds for remedy in getattr(p.wants, kind) for cue in remedy.cues}  # fmt: skip

    resolving, helping = cues(("resolves",)), cues(("resolves", "partly"))
    assert resolving, "at least one persona states its wants"
    for persona in load_personas():
        for name in scripts:
            # The issue's own script ends on a call back, which partly helps Mr. Carter; ours offer nothing.
            banned = resolving if name == "issue20" else helping
            for line in trainee_lines(persona, f"formula:{name}"):
                assert not [cue for cue in banned if cue in line.lower()], (persona.id, name, line)


def test_simulate_plays_the_formula_trainee_through_the_pipeline(monkeypatch, capsys):
    monkeypatch.setattr("agent.commands.simulate.patient_model", lambda settings=None: FakeModel())
    assert main(["simulate", "carter-wrong-day", "--trainee", "formula", "--turns", "2"]) == 0
    out = capsys.readouterr().out
    assert "Trainee: I am so sorry about this, that sounds really frustrating." in out
    assert "Trainee: Can you tell me a bit more about what happened?" in out


def test_the_good_trainee_in_other_words_is_read_from_its_own_file(tmp_path, monkeypatch):
    carter = load_persona("carter-wrong-day")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "good_plain.yaml").write_text('carter-wrong-day:\n  - "Sorry, {address}."\n', encoding="utf-8")
    monkeypatch.setattr("agent.simulate.personas_dir", lambda: tmp_path)
    assert trainee_lines(carter, "good:plain") == ["Sorry, Mr. Carter."]
    with pytest.raises(PersonaError, match="back-pain-wait: expected a list of trainee lines"):
        trainee_lines(load_persona("back-pain-wait"), "good:plain")
    with pytest.raises(PersonaError, match="good_missing.yaml: cannot read"):
        trainee_lines(carter, "good:missing")
