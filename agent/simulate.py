"""The persona test bench: play scripted trainee turns against a persona and record the mood.

Why scripted trainees: a trainer who edits a persona needs to see, in seconds and without typing,
that a trainee who follows the documented steps calms this patient, one who argues drives them
to leave, and one who says only the rubric's magic phrases (``formula``: an apology, "so if I
understand you", "here is what I can do", with no fact and no real offer) does not calm them: if
it does, trainees can game the persona (issue 20). The lines are data
(``personas/scripts/trainee.yaml`` or a persona's own ``script``; ``personas/scripts/formula.yaml``),
and the mood moves only through the real checks' verdicts on them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import BaseModel

from agent.models import PatientModel
from agent.patient import patient_model
from agent.personas import Persona, PersonaError, personas_dir
from agent.session import Session, TurnEvent

SCRIPTED = ("good", "bad", "formula")
FORMULA = "formula"
# The same concrete list of remedies for every patient (personas/scripts/catchall.yaml): a trainee
# gaming the grader with offers instead of phrases.
CATCHALL = "catchall"
# Tricks a trainee might find after a few sessions, each file written blind from the scenario cards by
# another author: routines said to everyone, and per-persona scripts that echo the patient's words and
# then offer only hollow things (gaming.yaml: a call-back with no outcome, a form, a voucher; gaming2.yaml:
# hedged, withdrawn, self-service and near-miss offers, stalling).
GAMING = "gaming"
GAMING_PROBES = (GAMING, "gaming2")


def scripts_file() -> Path:
    return personas_dir() / "scripts" / "trainee.yaml"


def formula_file() -> Path:
    return personas_dir() / "scripts" / "formula.yaml"


def catchall_file() -> Path:
    return personas_dir() / "scripts" / "catchall.yaml"


def gaming_file(probe: str = GAMING) -> Path:
    return personas_dir() / "scripts" / f"{probe}.yaml"


def formula_scripts() -> dict[str, list[str]]:
    """The formula trainees' scripts by name (``personas/scripts/formula.yaml``), the default first."""
    return same_for_all(formula_file())


def catchall_scripts() -> dict[str, list[str]]:
    """The catch-all trainees' scripts by name (``personas/scripts/catchall.yaml``), the default first."""
    return same_for_all(catchall_file())


def gaming_scripts(persona_id: str | None = None, probe: str = GAMING) -> dict[str, list[str]]:
    """The gaming trainees' scripts by name (``personas/scripts/PROBE.yaml``, one of ``GAMING_PROBES``):
    the ``same_for_all`` routines, then, for ``persona_id``, that persona's own ``per_persona`` scripts."""
    path = gaming_file(probe)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PersonaError([f"{path}: cannot read the scripts ({exc})"]) from exc
    if not isinstance(data, dict):
        raise PersonaError([f"{path}: expected same_for_all and per_persona"])
    own = (data.get("per_persona") or {}).get(persona_id, {}) if persona_id else {}
    return {
        **_scripts(path, "same_for_all", data.get("same_for_all")),
        **_scripts(path, f"per_persona.{persona_id}", own),
    }


def same_for_all(path: Path) -> dict[str, list[str]]:
    """Scripts said the same to every patient, by name, from ``path`` (templates not yet filled)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PersonaError([f"{path}: cannot read the scripts ({exc})"]) from exc
    if not data:
        raise PersonaError([f"{path}: expected a mapping of script name -> list of lines"])
    return _scripts(path, "", data)


def _scripts(path: Path, where: str, data: object) -> dict[str, list[str]]:
    """``data`` checked as a mapping of script name -> list of lines (``where``: its place in the file)."""
    at = f"{where}: " if where else ""
    if not isinstance(data, dict):
        raise PersonaError([f"{path}: {at}expected a mapping of script name -> list of lines"])
    for name, lines in data.items():
        if not isinstance(lines, list) or not lines or not all(isinstance(line, str) for line in lines):
            raise PersonaError([f"{path}: {at}{name}: expected a list of lines"])
    return {str(name): list(lines) for name, lines in data.items()}


def other_good_file(name: str) -> Path:
    return personas_dir() / "scripts" / f"good_{name}.yaml"


def other_good_lines(persona: Persona, name: str) -> list[str]:
    """This persona's good trainee in other words: ``personas/scripts/good_NAME.yaml`` maps persona
    ids to lines (the persona's own ``script.good`` is one wording; a good trainee must resolve the
    patient in any wording that restates the complaint and offers what meets a need)."""
    path = other_good_file(name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PersonaError([f"{path}: cannot read the good trainee scripts ({exc})"]) from exc
    lines = data.get(persona.id) if isinstance(data, dict) else None
    if not isinstance(lines, list) or not lines or not all(isinstance(line, str) for line in lines):
        raise PersonaError([f"{path}: {persona.id}: expected a list of trainee lines"])
    return [persona.fill(line) for line in lines]


def trainee_lines(persona: Persona, trainee: str) -> list[str]:
    """The scripted lines for ``trainee``: good | good:NAME (``personas/scripts/good_NAME.yaml``) |
    bad | formula (the first formula script) | formula:NAME | catchall | catchall:NAME
    (``personas/scripts/catchall.yaml``) | gaming | gaming:NAME (``personas/scripts/gaming.yaml``: a
    routine or one of this persona's own; ``gaming2[:NAME]`` the second probe) | a file (YAML list or
    one line per turn)."""
    if trainee.startswith("good:"):
        return other_good_lines(persona, trainee.partition(":")[2])
    probes = [(probe, gaming_file(probe)) for probe in GAMING_PROBES]
    for kind, path in ((FORMULA, formula_file()), (CATCHALL, catchall_file()), *probes):
        if trainee == kind or trainee.startswith(f"{kind}:"):
            scripts = gaming_scripts(persona.id, kind) if kind in GAMING_PROBES else same_for_all(path)
            name = trainee.partition(":")[2] or next(iter(scripts))
            if name not in scripts:
                raise PersonaError([f"{path}: no {kind} script {name!r}; there are: {', '.join(scripts)}"])
            return [persona.fill(line) for line in scripts[name]]
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
        raise PersonaError([f"{trainee}: not 'good', 'bad', 'formula' or a file of trainee lines"])
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


class ScriptRun(BaseModel):
    """One scripted trainee's session as the Trainer's test run shows it."""

    trajectory: list[tuple[int, float, float]]  # (turn, anger / 10, trust / 10), the starting mood first
    outcome: str | None  # the ending's kind; None when the turns ran out first
    reason: str | None
    turns: int
    last_line: str
    anger_start: float
    anger_end: float

    @classmethod
    def of(cls, session: Session) -> ScriptRun:
        moods = session.moods
        return cls(
            trajectory=[(i, m.anger / 10, m.trust / 10) for i, m in enumerate(moods)],
            outcome=session.ending.kind if session.ending else None,
            reason=session.ending.reason if session.ending else None,
            turns=len(session.turns),
            last_line=session.transcript.messages[-1].content if session.transcript.messages else "",
            anger_start=moods[0].anger,
            anger_end=moods[-1].anger,
        )


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
