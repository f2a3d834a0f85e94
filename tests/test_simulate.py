"""The persona test bench on recorded model traffic: every persona calms for a trainee who follows
the documented steps, boils over for one who argues, and the patient never leaves its role.

Record with ``.venv/bin/pytest tests/test_simulate.py --record-mode=rewrite`` (live default model).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent import checks
from agent import mood as mood_rules
from agent.cli import main
from agent.personas import load_persona, load_personas
from agent.session import Session
from agent.simulate import simulate, trainee_lines

PERSONAS = [p.id for p in load_personas()]
ROLE_PROBE = Path(__file__).parent / "data" / "role_probe.txt"

# Independent of agent/prompts/patient_out_of_role.txt on purpose: what a reviewer would call
# "the patient talking like staff, a coach or a chatbot".
NOT_A_PATIENT = [
    r"\bhow (can|may|could) (i|we) (help|assist)",
    r"\b(i'?m|i am) (here|happy|glad) to (help|assist)",
    r"\bwhat can i do for you\b",
    r"\bas an ai\b",
    r"\b(i'?m|i am) (an? )?(ai|artificial|language model|chatbot|bot|virtual assistant|assistant)\b",
    r"\blanguage model\b",
    r"^\s*(receptionist|staff|clinic|assistant|agent)\s*:",
    r"\bour (clinic|office|policy|staff|team)\b",
    r"\b(i'?ll|i will|let me) (transfer|connect|put) you\b",
    r"\byou should (empathi[sz]e|apologi[sz]e|stay calm)",
]


def assert_in_role(session: Session) -> None:
    replies = [turn.patient or "" for turn in session.turns]
    assert replies and all(reply.strip() for reply in replies), "every turn must get a patient reply"
    for reply in replies:
        for pattern in NOT_A_PATIENT:
            assert not re.search(pattern, reply.replace("\u2019", "'"), re.IGNORECASE), (
                f"{session.persona.id}: out of role ({pattern}): {reply!r}"
            )


def assert_mood_follows_checks(session: Session) -> None:
    """The trajectory is the mood rule applied to what the real checks say about each line."""
    replay = Session(session.persona, settings=session.settings)
    for turn in session.turns:
        context = replay.context(turn.mood_before)
        fresh = checks.run(replay.rubric, turn.trainee, context)
        assert {k: v.verdict for k, v in fresh.items()} == {k: v.verdict for k, v in turn.verdicts.items()}
        assert mood_rules.update(turn.mood_before, fresh, session.persona, turn.trainee) == turn.mood_after
        replay.transcript.add("trainee", turn.trainee)
        replay.transcript.add("patient", turn.patient or "")
    moved_by_steps = [e for t in session.turns for e in t.mood_after.effects if e.source.startswith("step:")]
    assert moved_by_steps, "the mood should move because of step verdicts"


@pytest.mark.vcr
@pytest.mark.block_network
@pytest.mark.parametrize("persona_id", PERSONAS)
def test_good_trainee_calms_the_patient(persona_id, llm_settings):
    persona = load_persona(persona_id)
    session = simulate(persona, "good", 6, llm_settings)
    print(json.dumps(session.summary()))  # figures for the report: pytest -s
    anger = session.summary()["anger"]
    assert anger[0] - anger[-1] >= 4, f"{persona_id}: {anger}"
    assert session.summary()["outcome"] in ("resolved", "ongoing")
    assert_mood_follows_checks(session)
    assert_in_role(session)


@pytest.mark.vcr
@pytest.mark.block_network
@pytest.mark.parametrize("persona_id", PERSONAS)
def test_bad_trainee_drives_the_patient_to_boil_over(persona_id, llm_settings):
    persona = load_persona(persona_id)
    session = simulate(persona, "bad", 6, llm_settings)
    summary = session.summary()
    print(json.dumps(summary))  # figures for the report: pytest -s
    assert max(summary["anger"]) >= 9, f"{persona_id}: {summary['anger']}"
    assert summary["outcome"] == mood_rules.leaving_outcome(persona.channel)
    assert_mood_follows_checks(session)
    assert_in_role(session)


@pytest.mark.vcr
@pytest.mark.block_network
@pytest.mark.parametrize("persona_id", PERSONAS)
def test_patient_stays_in_role_when_invited_out_of_it(persona_id, llm_settings):
    """Lines that invite the model to answer as the clinic, to coach, or to admit being an AI."""
    persona = load_persona(persona_id)
    session = simulate(persona, str(ROLE_PROBE), 3, llm_settings)
    assert len(session.turns) == 3
    assert_in_role(session)


@pytest.mark.vcr
@pytest.mark.block_network
def test_simulate_json_output(llm_settings, monkeypatch, capsys):
    monkeypatch.setenv("DEESCALATE_BACKEND", "embedded")
    monkeypatch.setenv("DEESCALATE_BASE_URL", llm_settings.base_url)
    monkeypatch.setenv("DEESCALATE_MODEL", llm_settings.model)
    assert main(["simulate", "abusive-caller", "--trainee", "bad", "--turns", "6", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["persona"] == "abusive-caller"
    assert len(result["anger"]) == len(result["trust"]) >= 2
    assert result["anger"][0] == 9 and max(result["anger"]) >= 9
    assert result["outcome"] == "hung_up"


def test_scripted_lines_come_from_data_files():
    carter = load_persona("carter-wrong-day")
    assert trainee_lines(carter, "good")[0].startswith("I'm so sorry, Mr. Carter")
    generic_bad = trainee_lines(carter, "bad")
    assert any("calm down" in line.lower() for line in generic_bad)
    assert any("i don't know" in line.lower() for line in generic_bad)
    assert trainee_lines(carter, str(ROLE_PROBE))[0] == "Hello, how can I help you today?"


def test_unknown_trainee_script_is_a_clear_error():
    with pytest.raises(ValueError, match="not 'good', 'bad' or a file"):
        trainee_lines(load_persona("carter-wrong-day"), "mediocre")
