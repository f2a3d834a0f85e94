"""Personas: the upset patients a trainee practises with, one YAML file each under ``personas/``.

A persona is data a trainer edits, so loading is strict and all-or-nothing: a bad file raises
:class:`PersonaError` with one line per problem naming the file, the field and the YAML line
(``personas/x.yaml:12: triggers.calm[0].step: unknown step 'juggle' ...``), and nothing from a
bad file (or a directory holding one) half-loads into the app.

Trigger step ids are checked against the persona's rubric (``agent.rubrics``) at load time, so a
typo fails when the trainer saves the file instead of silently never firing during a session.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

if TYPE_CHECKING:  # grounding reads this module's models, so it is imported where it is used
    from agent.grounding import GroundingData, Match

Channel = Literal["front_desk", "phone", "chat", "public_post"]
Difficulty = Literal["easy", "medium", "hard"]
VerdictName = Literal["demonstrated", "missed", "not_applicable", "violated", "ok"]

SEED_FILE = re.compile(r"^\d{3}_[0-9a-f]{16}\.txt$")
ID_PATTERN = r"^[a-z][a-z0-9_-]*$"
ID_HINT = "lowercase letters, digits, - and _, starting with a letter, e.g. carter-wrong-day"

# Personas ship next to the package in a source checkout; DEESCALATE_PERSONAS_DIR points elsewhere.
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "personas"
SCHEMA_FILE = "persona.schema.json"
# The seed documents every persona cites live beside the repository (../shared/seeds/).
SEEDS_DIR = Path(
    os.environ.get("DEESCALATE_SEEDS_DIR", Path(__file__).resolve().parent.parent.parent / "shared" / "seeds")
)


class PersonaError(ValueError):
    """A persona file is missing or invalid. ``problems`` holds one line per error."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Trigger(_Strict):
    """Something the trainee does that moves the patient's mood.

    Exactly one of ``step`` (a rubric step id; fires when the step gets one of the ``when``
    verdicts from the grader) or ``phrase`` (fires when the trainee's reply contains it,
    case-insensitively). ``anger`` and ``trust`` are magnitudes: in ``calm`` they lower anger
    and raise trust, in ``escalate`` the reverse.
    """

    step: str | None = Field(default=None, description="rubric step id, e.g. empathize or argue_back")
    phrase: str | None = Field(default=None, min_length=2, description="text in the trainee reply, any case")
    when: list[VerdictName] | None = Field(
        default=None,
        description="verdicts that fire a step trigger; default: demonstrated (calm) / violated (escalate)",
    )
    anger: float = Field(default=1.0, ge=0, le=5, description="how much anger moves (0-5)")
    trust: float = Field(default=0.5, ge=0, le=5, description="how much trust moves (0-5)")

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        if (self.step is None) == (self.phrase is None):
            raise ValueError("a trigger needs exactly one of 'step' or 'phrase'")
        if self.phrase is not None and self.when is not None:
            raise ValueError("'when' only applies to step triggers")
        return self

    @field_validator("step")
    @classmethod
    def _known_step(cls, step: str | None, info: ValidationInfo) -> str | None:
        known = (info.context or {}).get("step_ids")
        if step is not None and known is not None and step not in known:
            raise ValueError(f"unknown step {step!r}; the rubric has: {', '.join(sorted(known))}")
        return step


class Triggers(_Strict):
    calm: list[Trigger] = Field(default_factory=list, description="what calms this patient")
    escalate: list[Trigger] = Field(default_factory=list, description="what makes this patient angrier")


class Thresholds(_Strict):
    """When a session ends (see ``agent.mood.outcome``)."""

    resolve_anger: float = Field(default=3, ge=0, le=10, description="resolved when anger <= this ...")
    resolve_trust: float = Field(default=6, ge=0, le=10, description="... and trust >= this ...")
    resolution_steps: list[str] = Field(
        default_factory=lambda: ["offer_solution"],
        min_length=1,
        description="... and one of these steps was credited recently (the solution they accept)",
    )
    leave_anger: float = Field(default=10, ge=0, le=10, description="walks out / hangs up when anger >= this ...")
    leave_after: int = Field(default=2, ge=1, le=20, description="... for this many turns in a row")
    escalate_anger: float = Field(
        default=7, ge=0, le=10, description="a manager takes over if involve_manager is shown at anger >= this"
    )
    min_turns: int = Field(
        default=3, ge=1, le=20, description="turns before it can be resolved (the patient needs to vent first)"
    )
    need_met: bool = Field(
        default=True,
        description="resolve only once an offer met one of the persona's wants.resolves (a partly-remedy calms "
        "but does not resolve); false, or no wants: any credited resolution step will do",
    )
    max_turns: int = Field(default=12, ge=1, le=50, description="the patient gives up after this many turns")

    @field_validator("resolution_steps")
    @classmethod
    def _known_steps(cls, steps: list[str], info: ValidationInfo) -> list[str]:
        known = (info.context or {}).get("step_ids")
        for index, step in enumerate(steps):
            if known is not None and step not in known:
                raise ValueError(f"[{index}] unknown step {step!r}; the rubric has: {', '.join(sorted(known))}")
        return steps


class Dynamics(_Strict):
    """How fast this patient's mood moves; defaults suit most personas."""

    max_anger_step: float = Field(default=2.5, gt=0, le=10, description="largest anger change in one turn")
    max_trust_step: float = Field(default=2.0, gt=0, le=10, description="largest trust change in one turn")
    credit_decay: float = Field(
        default=0.5, ge=0, le=1, description="share of a step's credit left after each turn (0 forgets at once)"
    )
    ignored_anger: float = Field(
        default=0.5, ge=0, le=5, description="anger added on a turn where nothing calming happened"
    )
    vent_turns: int = Field(
        default=1,
        ge=0,
        le=10,
        description="the first turns in which the patient is still venting: calming works at vent_calm only",
    )
    vent_calm: float = Field(
        default=0.4, ge=0, le=1, description="share of calming that works while the patient is still venting"
    )
    repeat_factor: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="each time a step is repeated in a session it earns this share of what it earned last time",
    )
    partly_calm: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="share of an offer's calm earned when it only partly meets the need (wants.partly)",
    )
    miss_calm: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="share of an offer's calm earned when it is concrete but meets none of the wants",
    )
    reject_anger: float = Field(
        default=1.0, ge=0, le=5, description="anger an offer the patient rejects (wants.rejects) adds"
    )
    reject_trust: float = Field(
        default=0.5, ge=0, le=5, description="trust an offer the patient rejects (wants.rejects) costs"
    )
    unheard_calm: float = Field(
        default=2.0,
        ge=0,
        le=10,
        description="how far below its start anger can fall before the trainee restated the complaint "
        "(summarize) or offered what meets a need: kind words alone calm only this much (10: no limit)",
    )
    unmet_anger: float = Field(
        default=4.0,
        ge=0,
        le=10,
        description="the lowest anger while no offer has met one of the needs (wants.resolves): heard but not "
        "helped, the patient stays this upset however kindly it is put (0: no floor)",
    )


REMEDY_ID = r"^[a-z][a-z0-9_]*$"


class Remedy(_Strict):
    """One thing staff could do for this patient, in plain words (``agent.grounding`` matches offers to it).

    ``says`` is what a trainer would write on a whiteboard ("a same-day appointment if a slot frees
    up"); ``cues`` are optional words or short phrases that point to it in a trainee's offer when the
    wording is far from ``says`` (any one of them is enough evidence together with a concrete offer).
    """

    id: str = Field(pattern=REMEDY_ID, description="short id, unique in this persona, e.g. same_day_slot")
    says: str = Field(min_length=3, description="the remedy in plain words, as a trainee might offer it")
    cues: list[str] = Field(
        default_factory=list, description="optional words or phrases in an offer that point to this remedy"
    )
    source: str | None = Field(default=None, description="the seed passage this remedy comes from (a few words)")

    @field_validator("says")
    @classmethod
    def _says_not_blank(cls, says: str) -> str:
        if len(says.strip()) < 3:
            raise ValueError("is blank; write the remedy in plain words (what staff do, and when or who)")
        return says

    @field_validator("cues")
    @classmethod
    def _cues_not_blank(cls, cues: list[str]) -> list[str]:
        # A blank cue would be "contained" in every offer, so one empty string would match them all.
        for index, cue in enumerate(cues):
            if not cue.strip():
                raise ValueError(f"[{index}] is empty; give a word or short phrase, or remove it")
        return cues


class Wants(_Strict):
    """What this patient wants, as data the grader and the mood are held to (design.md, Substance).

    ``resolves``: remedies any one of which, offered concretely, meets the patient's need (the session
    can resolve). ``partly``: remedies that help but do not settle it (they calm a little; the patient
    still asks for more). ``rejects``: offers the patient turns down (they count as an offer that
    misses the need, and the patient says why not).
    """

    resolves: list[Remedy] = Field(min_length=1, description="each one, offered concretely, meets the need")
    partly: list[Remedy] = Field(default_factory=list, description="helps but does not settle it")
    rejects: list[Remedy] = Field(default_factory=list, description="offers this patient turns down")

    @model_validator(mode="after")
    def _unique_ids(self) -> Wants:
        seen: set[str] = set()
        for kind in ("resolves", "partly", "rejects"):
            for index, remedy in enumerate(getattr(self, kind)):
                if remedy.id in seen:
                    raise ValueError(f"{kind}[{index}].id: {remedy.id!r} is used twice; remedy ids must be unique")
                seen.add(remedy.id)
        return self

    def all(self) -> list[tuple[str, Remedy]]:
        """Every remedy with its kind: ``("resolves" | "partly" | "rejects", remedy)``."""
        return [(kind, remedy) for kind in ("resolves", "partly", "rejects") for remedy in getattr(self, kind)]

    def kind_of(self, remedy_id: str) -> str | None:
        return next((kind for kind, remedy in self.all() if remedy.id == remedy_id), None)


class Script(_Strict):
    """Scripted trainee lines for ``python -m agent simulate`` (templates: {address}, {first_name}, ...)."""

    good: list[str] = Field(default_factory=list)
    bad: list[str] = Field(default_factory=list)


class Persona(_Strict):
    """One upset patient. Field descriptions double as editor hints via the JSON Schema."""

    id: str = Field(pattern=ID_PATTERN, description="unique id, also the file name")
    name: str = Field(min_length=1, description="display name, e.g. John Carter")
    address_as: str = Field(min_length=1, description="how staff address them, e.g. Mr. Carter")
    age: int = Field(ge=1, le=120)
    channel: Channel = Field(description="front_desk | phone | chat | public_post")
    setting: str = Field(min_length=1, description="where the conversation happens")
    situation: str = Field(min_length=1, description="what went wrong, in the patient's view")
    backstory: str = Field(min_length=1, description="who they are and why this matters to them")
    needs: str = Field(min_length=1, description="what they really need: the fair resolution that satisfies them")
    opening_line: str = Field(min_length=1, description="the patient's first message")
    style: str = Field(min_length=1, description="speaking style, e.g. short and heated")
    anger: float = Field(ge=0, le=10, description="starting anger 0-10")
    trust: float = Field(ge=0, le=10, description="starting trust 0-10")
    triggers: Triggers
    thresholds: Thresholds = Field(default_factory=Thresholds)
    dynamics: Dynamics = Field(default_factory=Dynamics)
    difficulty: Difficulty
    sources: list[str] = Field(min_length=1, description="seed file(s) in ../shared/seeds/ this comes from")
    rubric: str = Field(default="deescalation", description="rubric the trainee is graded against")
    abusive: bool = Field(default=False, description="the patient insults staff (set_boundary applies)")
    transferring: bool = Field(default=False, description="the right answer is a transfer (explain_transfer)")
    facts: list[str] = Field(
        default_factory=list,
        description="what the patient knows, one sentence each, from the seed scenario or this persona's own "
        "opening line, situation and backstory; every number, time, duration or named day the patient may "
        "state must be here (or said by the trainee): the role filter rejects a line with any other",
    )
    fallback_lines: list[str] = Field(
        default_factory=list,
        description="in-character lines used when the model cannot stay in role (each shown once a session "
        "while unused ones remain, so give several)",
    )
    wants: Wants | None = Field(
        default=None,
        validate_default=True,
        description="what would resolve this patient, partly help, or be turned down (remedies in plain words); "
        "the grader matches offers to it and the session resolves only on a remedy that meets the need; "
        "required unless thresholds.need_met is false",
    )
    script: Script = Field(default_factory=Script)

    @field_validator("wants")
    @classmethod
    def _wants_for_need_met(cls, wants: Wants | None, info: ValidationInfo) -> Wants | None:
        """Fail closed: with ``need_met`` on and no wants, no offer could ever resolve the session, and
        a silent fallback to "any offer resolves" is exactly the form-over-substance bug of issue 20."""
        thresholds = info.data.get("thresholds")  # absent when thresholds itself failed: reported there
        if wants is None and isinstance(thresholds, Thresholds) and thresholds.need_met:
            raise ValueError("missing; thresholds.need_met needs it (or set thresholds.need_met: false)")
        return wants

    @field_validator("sources")
    @classmethod
    def _seed_files(cls, sources: list[str]) -> list[str]:
        for index, source in enumerate(sources):
            if not SEED_FILE.match(source):
                raise ValueError(f"[{index}] {source!r} is not a seed file name like 004_54c74b88a13cd7e8.txt")
            if SEEDS_DIR.is_dir() and not (SEEDS_DIR / source).is_file():
                raise ValueError(f"[{index}] {source!r} is not in {SEEDS_DIR}")
        return sources

    @field_validator("rubric")
    @classmethod
    def _rubric_id(cls, rubric: str) -> str:
        from agent.rubrics import ID_HINT, is_id

        if not is_id(rubric):
            raise ValueError(f"{rubric!r} is not a rubric id ({ID_HINT})")
        return rubric

    @property
    def first_name(self) -> str:
        return self.name.split()[0]

    @property
    def staff_label(self) -> str:
        """Who the trainee is in the transcript the patient model continues."""
        return {"front_desk": "Receptionist", "phone": "Staff", "chat": "Clinic", "public_post": "Clinic"}[self.channel]

    def fill(self, template: str) -> str:
        """Fill a scripted line template with this persona's names."""
        return template.format(address=self.address_as, name=self.name, first_name=self.first_name)


# -- loading ------------------------------------------------------------------------------------


def _rubric_step_ids(rubric: str) -> set[str]:
    from agent.rubrics import RubricError, load_rubric

    try:
        return set(load_rubric(rubric).step_ids)
    except RubricError as exc:
        raise ValueError(str(exc)) from exc


def _node_line(root: yaml.Node | None, loc: Iterable[Any]) -> int | None:
    """1-based line of the YAML node at ``loc`` (the deepest existing ancestor if it is missing)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for item in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == item:
                    child = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int) and 0 <= item < len(node.value):
            child = node.value[item]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _field_path(loc: Iterable[Any]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _clean_msg(message: str) -> str:
    # pydantic prefixes validator errors with "Value error, "; the line reads better without it.
    return message.removeprefix("Value error, ").replace("\n", " ")


# Wants._unique_ids names the remedy it found twice ("partly[0].id: ..."); parse_persona moves that
# path into the location so the line number points at the duplicate, not at ``wants:``.
_REMEDY_PATH = re.compile(r"^(resolves|partly|rejects)\[(\d+)\]\.id: (.*)$")


def _error_location(loc: tuple[Any, ...], message: str) -> tuple[tuple[Any, ...], str]:
    found = _REMEDY_PATH.match(message)
    if found and loc and loc[-1] == "wants":
        return (*loc, found[1], int(found[2]), "id"), found[3]
    return loc, message


def _load_yaml(text: str, path: Path | str) -> tuple[yaml.Node | None, Any]:
    """Node tree and data of persona YAML; errors (duplicate keys too) as one PersonaError line."""
    from agent.rubrics import DuplicateKeyError, load_yaml, yaml_problem

    try:
        return load_yaml(text)
    except DuplicateKeyError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise PersonaError(
            [f"{path}:{line}: {exc.key}: duplicate key (first at line {exc.first_line}); give each field once"]
        ) from exc
    except yaml.YAMLError as exc:
        line, problem = yaml_problem(exc)
        where = f"{path}:{line}" if line else str(path)
        raise PersonaError([f"{where}: (yaml): not valid YAML: {problem}"]) from exc


def parse_persona(text: str, path: Path | str = "<string>") -> Persona:
    """Validate persona YAML ``text``; errors name ``path``, the field and the line.

    The persona's ``rubric`` is an id resolved in the rubrics folder only; anything else (a path
    such as ``/dev/zero``) fails here without touching the file system.
    """
    root, data = _load_yaml(text, path)
    if not isinstance(data, dict):
        raise PersonaError([f"{path}:1: (top level): expected a mapping of persona fields"])
    rubric = data.get("rubric", "deescalation")
    try:
        step_ids = _rubric_step_ids(rubric) if isinstance(rubric, str) else None
    except ValueError as exc:
        line = _node_line(root, ["rubric"])
        raise PersonaError([f"{path}:{line}: rubric: {_clean_msg(str(exc))}"]) from exc
    try:
        return Persona.model_validate(data, context={"step_ids": step_ids})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc, message = _error_location(tuple(error["loc"]), _clean_msg(error["msg"]))
            problems.append(f"{path}:{_node_line(root, loc)}: {_field_path(loc)}: {message}")
        raise PersonaError(problems) from exc


def with_id(text: str, persona_id: str, file_name: str = "persona.yaml") -> str:
    """``text`` with its top-level ``id`` set to ``persona_id``, everything else (comments too) kept.

    Edits the YAML where the parser found the ``id`` value, so any legal spelling is replaced
    (``id : x``, ``"id": x``, ``id:`` with no value); adds ``id:`` when there is none. Raises
    :class:`PersonaError` naming ``file_name`` when ``persona_id`` is not an id, the YAML is not
    valid (a key given twice included) or not a mapping, or the id could not be set cleanly;
    the result always parses to the same fields with exactly ``persona_id`` as the id.
    """
    from agent.rubrics import is_id

    if not is_id(persona_id):
        raise PersonaError([f"{file_name}: id: {persona_id!r} is not a persona id ({ID_HINT})"])
    root, data = _load_yaml(text, file_name)
    if root is None:  # empty, or comments only
        return text + ("" if not text or text.endswith("\n") else "\n") + f"id: {persona_id}\n"
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        raise PersonaError([f"{file_name}:1: (top level): expected a mapping of persona fields"])
    value = next(
        (
            v
            for k, v in root.value
            if isinstance(k, yaml.ScalarNode)
            and k.tag == yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG
            and k.value == "id"
        ),
        None,
    )
    if value is not None:
        start, end = value.start_mark.index, value.end_mark.index
        end = start + len(text[start:end].rstrip())  # a block scalar's span ends with its line break
        space = " " if start > 0 and text[start - 1] == ":" else ""
        result = text[:start] + space + persona_id + text[end:]
    elif root.flow_style:
        at = root.start_mark.index + 1  # just after "{"
        result = text[:at] + f"id: {persona_id}, " + text[at:]
    else:
        first = root.value[0][0].start_mark if root.value else root.start_mark
        at = first.index - first.column  # start of the first key's line, indented like it
        result = text[:at] + " " * first.column + f"id: {persona_id}\n" + text[at:]
    try:
        _, again = _load_yaml(result, file_name)
    except PersonaError:
        again = None
    expected = {**data, "id": persona_id}
    if not isinstance(again, dict) or again.get("id") != persona_id or again != expected:
        raise PersonaError(
            [f"{file_name}: id: could not set the id here; write it as a top-level line 'id: {persona_id}'"]
        )
    return result


# -- lookup: ids inside the personas folder; explicit files for the command line ----------------------


def check_id(persona_id: object) -> str:
    """``persona_id`` if it is a bare persona id, else :class:`PersonaError` (before any file access)."""
    from agent.rubrics import is_id

    if not is_id(persona_id):
        raise PersonaError([f"{persona_id!r} is not a persona id ({ID_HINT})"])
    assert isinstance(persona_id, str)
    return persona_id


def persona_path(persona_id: str, directory: Path | str | None = None) -> Path:
    """``<personas dir>/<persona_id>.yaml`` (or ``.yml``); ids only: a path raises :class:`PersonaError`."""
    base = Path(directory) if directory else personas_dir()
    path = base / f"{check_id(persona_id)}.yaml"
    other = path.with_suffix(".yml")
    return other if not path.exists() and other.exists() else path


def personas_dir() -> Path:
    return Path(os.environ.get("DEESCALATE_PERSONAS_DIR", DEFAULT_DIR))


def load_persona(persona_id: str, directory: Path | str | None = None) -> Persona:
    """One persona by id (``carter-wrong-day``), from the personas folder (or ``directory``) only.

    What the page, the API and persona files name is an id; a path (``../x``, ``/etc/x``,
    ``x.yaml``) raises :class:`PersonaError` without reading anything. The command line loads a
    file it was given explicitly with :func:`load_persona_file` (or :func:`load_persona_argument`).
    """
    path = persona_path(persona_id, directory)
    if not path.is_file():
        known = ", ".join(p.stem for p in persona_files(path.parent)) if path.parent.is_dir() else ""
        hint = f" (known: {known})" if known else ""
        raise PersonaError([f"{path}: cannot read persona (no persona {persona_id!r}){hint}"])
    return load_persona_file(path)


def load_persona_file(path: str | os.PathLike[str]) -> Persona:
    """A persona from an explicit file path (command line, lint, tests); its id must match the file name."""
    path = Path(path)
    try:
        if not path.is_file():
            raise OSError(0, "not a regular file" if path.exists() else "no such file")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PersonaError([f"{path}: cannot read persona ({getattr(exc, 'strerror', None) or exc})"]) from exc
    persona = parse_persona(text, path)
    if path.stem != persona.id:
        line = _node_line(yaml.compose(text), ["id"])
        raise PersonaError([f"{path}:{line}: id: {persona.id!r} must match the file name {path.stem!r}"])
    return persona


def load_persona_argument(argument: str, directory: Path | str | None = None) -> Persona:
    """A command-line persona argument: a YAML file path (a .yaml/.yml suffix or a separator), else an id."""
    if Path(argument).suffix in (".yaml", ".yml") or "/" in argument or os.sep in argument:
        return load_persona_file(argument)
    return load_persona(argument, directory)


def persona_files(directory: Path | str | None = None) -> list[Path]:
    base = Path(directory) if directory else personas_dir()
    return sorted(p for p in base.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def load_personas(directory: Path | str | None = None) -> list[Persona]:
    """Every persona in ``directory``; if any file is bad, raise with all problems (nothing half-loads)."""
    base = Path(directory) if directory else personas_dir()
    if not base.is_dir():
        raise PersonaError([f"{base}: not a directory of persona files"])
    personas: list[Persona] = []
    problems: list[str] = []
    for path in persona_files(base):
        try:
            personas.append(load_persona_file(path))
        except PersonaError as exc:
            problems.extend(exc.problems)
    seen: dict[str, Persona] = {}
    for persona in personas:
        if persona.id in seen:
            problems.append(f"{base / (persona.id + '.yaml')}: id: duplicate persona id {persona.id!r}")
        seen[persona.id] = persona
    if problems:
        raise PersonaError(problems)
    return personas


# -- lint: what loads but would make a poor persona ------------------------------------------------

# Words that name no action or object on their own: a remedy made of these ("sort it out", "help him",
# "make things right") gives the grader nothing to match an offer against.
_VAGUE_WORDS = frozenset(
    re.findall(
        r"\w+",
        """
        a about all an and any anything are as at be being best better can care deal do done for get
        good got handle he help her him his into is issue issues it its kind look make matter of on or
        our out problem problems resolve right she so solution some something sort sorted stuff take
        that the their them they thing things this to up us way we whatever will with you your
        """,
    )
)


class LintNote(BaseModel):
    """One finding of :func:`lint`: ``error`` fails ``personas lint``; ``warning`` is advice."""

    level: Literal["error", "warning"]
    field: str = Field(description="field path, e.g. wants.partly[0].says")
    message: str

    def line(self, path: Path | str, root: yaml.Node | None) -> str:
        loc = [int(part) if part.isdigit() else part for part in re.findall(r"[a-z_]+|\d+", self.field)]
        warning = "warning: " if self.level == "warning" else ""
        return f"{path}:{_node_line(root, loc)}: {warning}{self.field}: {self.message}"


def vague(says: str) -> bool:
    """True when ``says`` has fewer than two words that name something (an action, a thing, a time)."""
    words = re.findall(r"[a-z0-9]+", says.lower())
    return sum(word not in _VAGUE_WORDS for word in words) < 2


def lint(persona: Persona) -> list[LintNote]:
    """Findings beyond validation, for ``personas lint`` and the Trainer tab.

    Error: no own ``script.good``. The test run plays that script to show the persona can be
    resolved; generic good lines cannot restate this patient's complaint or offer one of its
    remedies, so they would only prove that a content-free formula works (issue 20). Warnings: no
    own ``script.bad`` (the generic hostile lines are used), a vague remedy, a good script in which
    no line offers a ``wants.resolves`` remedy as the grader matches offers.
    """
    notes: list[LintNote] = []
    if not persona.script.good:
        notes.append(
            LintNote(
                level="error",
                field="script.good",
                message="missing; write this patient's own good trainee lines (restate a complaint fact, offer "
                "a remedy from wants.resolves with when or who): the test run plays them",
            )
        )
    if not persona.script.bad:
        notes.append(
            LintNote(
                level="warning",
                field="script.bad",
                message="missing; the test run plays the generic hostile lines (personas/scripts/trainee.yaml)",
            )
        )
    if persona.wants is not None:
        for kind in ("resolves", "partly", "rejects"):
            for index, remedy in enumerate(getattr(persona.wants, kind)):
                if vague(remedy.says):
                    notes.append(
                        LintNote(
                            level="warning",
                            field=f"wants.{kind}[{index}].says",
                            message=f"vague ({remedy.says!r}): say what staff do and when or who, e.g. "
                            "'a same-day slot this afternoon'",
                        )
                    )
        data = _grounding_data(persona)  # read once: every check below matches offers with it
        good = [persona.fill(line) for line in persona.script.good]
        if good and not any(_meets(persona, line, data) for line in good):
            notes.append(
                LintNote(
                    level="warning",
                    field="script.good",
                    message="no line offers a wants.resolves remedy as the grader matches offers (a cue, or the "
                    "words of its says, beside what the remedy is); the good trainee may never meet this "
                    "patient's need",
                )
            )
        notes += _generic_cues(persona, data)
        notes += _foreign_offers(persona, data)
        notes += _dangling_cues(persona, data)
    return notes


def _dangling_cues(persona: Persona, data: GroundingData | None) -> list[LintNote]:
    """A cue that ends in a determiner ("physio this"): the grader reads a determiner as any determiner
    or none, so the cue is only the words before it ("physio", which names the physio team as well)."""
    if data is None or persona.wants is None:
        return []
    notes = []
    for kind in ("resolves", "partly", "rejects"):
        for index, remedy in enumerate(getattr(persona.wants, kind)):
            for cue in remedy.cues:
                words = cue.lower().split()
                if len(words) > 1 and words[-1] in data.cue_determiners:
                    notes.append(LintNote(
                        level="warning", field=f"wants.{kind}[{index}].cues",
                        message=f"{cue!r} ends in {words[-1]!r}, which offers read as any determiner or none: "
                        f"the cue is {' '.join(words[:-1])!r}; finish the phrase or drop the word"))  # fmt: skip
    return notes


def _foreign_offers(persona: Persona, data: GroundingData | None) -> list[LintNote]:
    """A good-script line whose offer names a remedy that nothing in this persona is about (its facts,
    wants or opening line): the grader reads it as a remedy for another patient's problem and the
    offer meets nothing (``agent.grounding.foreign_remedies``), so the good trainee may not resolve it."""
    from agent import grounding
    from agent.checks import TurnContext
    from agent.transcript import Message

    if data is None:
        return []
    context = TurnContext.of_persona(persona, [Message(role="patient", content=persona.opening_line)])
    notes = []
    for index, line in enumerate(persona.script.good):
        foreign = grounding.foreign_remedies(grounding.offer_sentences(persona.fill(line), data), context, data)
        if foreign:
            words = ", ".join(repr(word) for word in foreign)
            notes.append(LintNote(
                level="warning", field=f"script.good[{index}]",
                message=f"offers {words}, which nothing in this persona's facts, wants or opening line is about: "
                "the grader reads it as a remedy for another patient's problem and it meets nothing; name it "
                "in facts or in a remedy's says (remedy_objects in the rubric's grounding file)"))  # fmt: skip
    return notes


def _met(persona: Persona, line: str, data: GroundingData | None) -> Match | None:
    """The remedy a trainee ``line`` offers, as the grader matches offers (``agent.grounding``: its
    concrete offer sentences against the persona's wants, by cue or by the words of a remedy's says;
    without the sentence encoder), or None. (Imported here: grounding reads this module's models.)"""
    from agent import grounding

    if data is None or persona.wants is None:
        return None
    return grounding.match_wants(grounding.offer_sentences(line, data), persona.wants, data, None)


def _meets(persona: Persona, line: str, data: GroundingData | None) -> bool:
    """Whether ``line`` offers one of ``wants.resolves`` (:func:`_met`); without the rubric's grounding
    data, whether it names one of their cues as plain words."""
    if data is None:
        assert persona.wants is not None
        return any(cue.lower() in line.lower() for remedy in persona.wants.resolves for cue in remedy.cues)
    match = _met(persona, line, data)
    return match is not None and match.meets == "met"


def _grounding_data(persona: Persona) -> GroundingData | None:
    """The grounding data of the persona's rubric, or None (no such rubric, or it has none)."""
    from agent import grounding
    from agent.rubrics import RubricError, load_rubric

    try:
        return grounding.data_for(load_rubric(persona.rubric))
    except RubricError:
        return None


def _generic_cues(persona: Persona, data: GroundingData | None) -> list[LintNote]:
    """A ``wants.resolves`` remedy that a formula trainee's line meets (``personas/scripts/formula.yaml``:
    no fact, no real offer), as the grader matches offers (``agent.grounding.match_wants``, without the
    sentence encoder). Any trainee who says it meets the need, so a content-free script could resolve
    this patient: a cue should name what is particular to the remedy ("make-up session"), not what a
    call-back to anyone says ("call you back", "today", beside no word of what it is)."""
    from agent.simulate import formula_scripts

    if data is None:
        return []
    try:
        said = [(f"the formula trainee {name!r}", line) for name, lines in formula_scripts().items() for line in lines]
    except PersonaError:
        return []
    assert persona.wants is not None
    notes, seen = [], set()
    for who, line in said:
        filled = persona.fill(line)
        match = _met(persona, filled, data)
        if match is None or match.meets != "met" or (match.remedy.id, match.by) in seen:
            continue
        seen.add((match.remedy.id, match.by))
        index = persona.wants.resolves.index(match.remedy)
        field = f"wants.resolves[{index}]." + ("cues" if match.by.startswith("cue") else "says")
        notes.append(LintNote(
            level="warning", field=field,
            message=f"{who} meets this need by {match.by} ({filled!r}): any trainee who says it would; "
            "name what is particular to this remedy"))  # fmt: skip
    return notes


def _lint_lines(persona: Persona, text: str, path: Path | str) -> tuple[list[str], list[str]]:
    root = yaml.compose(text)
    notes = lint(persona)
    errors = [note.line(path, root) for note in notes if note.level == "error"]
    return errors, [note.line(path, root) for note in notes if note.level == "warning"]


def lint_text(text: str, path: Path | str = "<string>") -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` for persona YAML (the Trainer tab's editor), each a
    ``file:line: field: message`` line: validation problems if it does not load, else lint findings."""
    try:
        persona = parse_persona(text, path)
    except PersonaError as exc:
        return exc.problems, []
    return _lint_lines(persona, text, path)


def lint_file(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Like :func:`lint_text` for a file, with the file checks of :func:`load_persona_file` (id = name)."""
    try:
        persona = load_persona_file(path)
    except PersonaError as exc:
        return exc.problems, []
    return _lint_lines(persona, Path(path).read_text(encoding="utf-8"), path)


def json_schema() -> dict[str, Any]:
    """JSON Schema for persona YAML (editor autocompletion via yaml-language-server)."""
    schema = Persona.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "deescalate persona"
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
