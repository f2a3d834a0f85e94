"""The persona test bench: play scripted trainee turns against a persona and record the mood.

Why scripted trainees: a trainer who edits a persona needs to see, in seconds and without typing,
that a trainee who follows the documented steps calms this patient and one who argues drives them
to leave. The lines are data (``personas/scripts/trainee.yaml``, or a persona's own ``script``),
and the mood moves only through the real checks' verdicts on them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from agent.models import PatientModel
from agent.patient import patient_model
from agent.personas import Persona, PersonaError, personas_dir
from agent.session import Session, TurnEvent

SCRIPTED = ("good", "bad")


def scripts_file() -> Path:
    return personas_dir() / "scripts" / "trainee.yaml"


def trainee_lines(persona: Persona, trainee: str) -> list[str]:
    """The scripted lines for ``trainee`` (good | bad | a file: YAML list or one line per turn)."""
    if trainee in SCRIPTED:
        own = getattr(persona.script, trainee)
        if own:
            return [persona.fill(line) for line in own]
        if trainee == "good":
            # No generic good lines: they could not restate this patient's complaint or offer one
            # of its remedies, so "the good trainee resolves it" would only show a formula works.
            raise PersonaError(
                [
                    f"{persona.id}: script.good: missing; write this patient's own good trainee lines "
                    "(restate a complaint fact, offer a remedy from wants.resolves with when or who)"
                ]
            )
        path = scripts_file()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise PersonaError([f"{path}: cannot read the trainee scripts ({exc})"]) from exc
        lines = data.get(trainee) if isinstance(data, dict) else None
        if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines) or not lines:
            raise PersonaError([f"{path}: {trainee}: expected a list of lines"])
        return [persona.fill(line) for line in lines]
    path = Path(trainee)
    if not path.is_file():
        raise PersonaError([f"{trainee}: not 'good', 'bad' or a file of trainee lines"])
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text)
        if not isinstance(data, list) or not all(isinstance(line, str) for line in data):
            raise PersonaError([f"{path}: expected a YAML list of trainee lines"])
        lines = data
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        raise PersonaError([f"{path}: no trainee lines"])
    return [persona.fill(line) for line in lines]


def simulate(
    persona: Persona,
    trainee: str,
    turns: int,
    model: PatientModel | None = None,
    *,
    seed: int | None = 7,
    temperature: float = 0.0,
    on_event: Callable[[int, str, TurnEvent], None] | None = None,
) -> Session:
    """Play up to ``turns`` scripted trainee turns (fewer if the session ends) and return the session.

    The same pipeline as a practice session (verdicts from the checks and the classifier, mood,
    patient), without coaching. Defaults are deterministic (temperature 0, fixed seed), so runs
    replay from cassettes; ``model`` defaults to the configured server.
    """
    lines = trainee_lines(persona, trainee)
    session = Session(persona, model or patient_model(), seed=seed, temperature=temperature)
    for index in range(turns):
        if session.ending is not None:
            break
        line = lines[index % len(lines)]
        for event in session.stream_turn(line):  # graded, spoken..., answered
            if on_event:
                on_event(index, line, event)
    return session
