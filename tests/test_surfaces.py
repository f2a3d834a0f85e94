"""One pipeline for every surface: the same scripted trainee moves the mood the same way in
``simulate``, the Trainer's test run, the terminal ``practice`` and the page.

Each surface is driven as a user drives it, with the deterministic fake model behind the model
protocols (tests/fakes.py), so only the pipeline itself decides the mood.
"""

from __future__ import annotations

import re

import pytest
from fakes import FakeModel

from agent import web
from agent.cli import main
from agent.personas import load_persona
from agent.practice import Practice
from agent.simulate import simulate, trainee_lines
from agent.store import Store

# One persona per channel, so the channel-specific conditions (public post, phone) are covered too.
PERSONAS = ["carter-wrong-day", "facebook-review", "abusive-caller"]
ANGER = re.compile(r"anger \[[#.]+\] ([0-9.]+)")


def simulated(persona_id: str, script: str) -> list[float]:
    persona = load_persona(persona_id)
    return [m.anger for m in simulate(persona, script, persona.thresholds.max_turns, FakeModel()).moods]


def trainer_run(persona_id: str, script: str, store: Store) -> list[float]:
    fake = FakeModel()
    practice = Practice(store, patient=fake, coach=fake)
    *_, runs = practice.test_run(load_persona(persona_id))
    return [round(anger * 10, 6) for _, anger, _ in runs[script].trajectory]


def page(persona_id: str, script: str, store: Store) -> list[float]:
    fake = FakeModel()
    practice = Practice(store, patient=fake, coach=fake, seed=7)
    persona = load_persona(persona_id)
    key = web.browser_key(None)
    session_id = practice.start(persona_id, owner=key).session.id
    angers = [persona.anger]
    for line in trainee_lines(persona, script)[: persona.thresholds.max_turns]:
        list(web.send(practice, session_id, line, key))  # the page's own handler, tip included
        update = practice.snapshot(session_id)
        angers.append(update.last.mood_after.anger)
        if update.session.ended:
            break
    return angers


def terminal(persona_id: str, script: str, monkeypatch, capsys) -> list[float]:
    from agent.commands import practice as command

    persona = load_persona(persona_id)
    fake = FakeModel()
    monkeypatch.setattr(command, "patient_model", lambda settings: fake)
    monkeypatch.setattr(command, "coach_model", lambda settings: fake)
    lines = iter(trainee_lines(persona, script)[: persona.thresholds.max_turns])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines, "/quit"))
    assert main(["practice", persona_id, "--seed", "7"]) == 0
    return [persona.anger] + [float(value) for value in ANGER.findall(capsys.readouterr().out)]


@pytest.mark.parametrize("persona_id", PERSONAS)
@pytest.mark.parametrize("script", ["good", "bad"])
def test_every_surface_moves_the_mood_the_same_way(persona_id, script, tmp_path, monkeypatch, capsys):
    store = Store(f"sqlite:///{tmp_path / 'surfaces.db'}")
    expected = simulated(persona_id, script)
    assert len(expected) > 2 and len(set(expected)) > 1  # the script really moves this patient
    assert trainer_run(persona_id, script, store) == pytest.approx(expected)
    assert page(persona_id, script, store) == pytest.approx(expected)
    assert terminal(persona_id, script, monkeypatch, capsys) == pytest.approx(expected)
    store.close()
