"""Rubrics: the de-escalation steps a trainee is graded against, loaded from ``rubrics/*.yaml``.

A rubric is data a trainer edits, so loading is strict: a bad file raises :class:`RubricError`
naming the file and the field (``rubrics/x.yaml: steps[3] (apologize).check.match[2]: ...``) and
nothing half-loads. Regular expressions are compiled at load time for the same reason: a typo
in a pattern should fail when the trainer saves the file, not in the middle of a session.
"""

from __future__ import annotations

import os
import re
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Verdict = Literal["demonstrated", "missed", "not_applicable", "violated", "ok"]
Kind = Literal["do", "dont"]
Scope = Literal["turn", "session"]
Condition = Literal[
    "always",
    "never",
    "has_name",
    "public_channel",
    "patient_abusive",
    "patient_demands_manager_or_rude",
    "transferring",
    "trainee_uncertain",
    "multiple_complaints",
]
CheckType = Literal["patterns", "name", "question", "shouting"]

DO_VERDICTS: tuple[Verdict, ...] = ("demonstrated", "missed", "not_applicable")
DONT_VERDICTS: tuple[Verdict, ...] = ("violated", "ok")
SEED_FILE = re.compile(r"^\d{3}_[0-9a-f]{16}\.txt$")

# Rubrics ship next to the package in a source checkout; DEESCALATE_RUBRICS_DIR points elsewhere.
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "rubrics"


class RubricError(ValueError):
    """A rubric file is missing or invalid; the message names the file and the field."""


def _compile_all(patterns: list[str]) -> list[str]:
    for index, pattern in enumerate(patterns):
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"[{index}] is not a valid regular expression ({exc}): {pattern!r}") from exc
    return patterns


def compile_patterns(patterns: list[str]) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


class Topic(BaseModel):
    """One kind of complaint (parking, wait, bill) with how hard it is to fix (simple_to_complex)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    difficulty: int = Field(ge=1)
    patterns: list[str] = Field(min_length=1)

    _check_patterns = field_validator("patterns")(_compile_all)

    @cached_property
    def compiled(self) -> list[re.Pattern[str]]:
        return compile_patterns(self.patterns)


class CheckSpec(BaseModel):
    """How ``agent.checks`` decides a step: which detector and its phrase patterns.

    ``match``: any hit is evidence; ``unless``: a hit that overlaps an ``unless`` hit does not
    count (``sorry you feel that way`` is not an apology). For ``question`` the ``unless`` list
    names rhetorical questions; for ``shouting`` the capitals rule is added to ``match``.
    """

    model_config = ConfigDict(extra="forbid")
    type: CheckType = "patterns"
    match: list[str] = Field(default_factory=list)
    unless: list[str] = Field(default_factory=list)
    caps_min_words: int = Field(default=1, ge=1)
    caps_min_letters: int = Field(default=3, ge=2)
    allowed_caps: list[str] = Field(default_factory=list)

    _check_patterns = field_validator("match", "unless")(_compile_all)

    @cached_property
    def compiled_match(self) -> list[re.Pattern[str]]:
        return compile_patterns(self.match)

    @cached_property
    def compiled_unless(self) -> list[re.Pattern[str]]:
        return compile_patterns(self.unless)


class Step(BaseModel):
    """One documented de-escalation behaviour, with the seed file(s) that document it."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Kind
    scope: Scope
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    applies_when: list[Condition] = Field(default_factory=lambda: ["always"], min_length=1)
    good: list[str] = Field(default_factory=list)
    bad: list[str] = Field(default_factory=list)
    sources: list[str] = Field(min_length=1)
    advice: str | None = None
    graded: bool = True
    # Evidence counts only where the step applies: "I'll call you back" on the phone is not
    # taking a public complaint offline.
    only_when_applicable: bool = False
    # A violation of one of these don't-steps also makes this step apply: a guess or an "I don't
    # know" is exactly the moment the seeds say "let me find out" (find_out).
    applies_after: list[str] = Field(default_factory=list)
    # Whether the learned component (agent.learned) may add verdicts the patterns did not find.
    # Off for steps the text shows literally (the name, a question, capitals, "I don't know").
    learned: bool = True
    # Whether the learned component may also find the behaviour where the step's conditions did not
    # detect its situation (find_out: "I'll check with the physio lead and ring you back" counts even
    # when no "I'm not sure" was said).
    learned_outside: bool = False
    # Probability the classifier needs to add a finding for this step; None: the component's default
    # (0.6 for do-steps, 0.7 for don't-steps). make_things_up uses 0.5: a missed guess also hides
    # that find_out applied (cross-validated on test4-test9); empathy, apology, offers, reassurance
    # and moving a post private need 0.7-0.8: below that the classifier over-called them (per-step
    # search on out-of-fold probabilities, test4-test10: mean macro kappa 0.855 -> 0.865).
    learned_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    # Don't-step: a classifier finding is dropped when a pattern quoted good behaviour (empathy,
    # an apology, ...) in the same sentence ("I understand how frustrating that must be").
    yields_to_quotes: bool = False
    # Don't-steps whose violation voids a demonstration of this step: a question asked while arguing
    # or snapping ("Did you even read the reminder?") is rhetorical, not asking to understand.
    void_if: list[str] = Field(default_factory=list)
    check: CheckSpec | None = None
    topics: list[Topic] = Field(default_factory=list)

    @field_validator("sources")
    @classmethod
    def _seed_names(cls, sources: list[str]) -> list[str]:
        for index, source in enumerate(sources):
            if not SEED_FILE.match(source):
                raise ValueError(f"[{index}] {source!r} is not a seed file name like 004_54c74b88a13cd7e8.txt")
        return sources

    @model_validator(mode="after")
    def _turn_steps_are_checkable(self) -> Step:
        if self.scope == "turn" and self.graded and self.check is None:
            raise ValueError("a graded per-turn step needs a 'check'")
        if "multiple_complaints" in self.applies_when and not self.topics:
            raise ValueError("applies_when 'multiple_complaints' needs 'topics'")
        return self

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        return DO_VERDICTS if self.kind == "do" else DONT_VERDICTS


class Conditions(BaseModel):
    """Patterns that decide when a step applies (see ``applies_when``)."""

    model_config = ConfigDict(extra="forbid")
    public_channels: list[str] = Field(default_factory=list)
    patient_abusive: list[str] = Field(default_factory=list)
    patient_demands_manager_or_rude: list[str] = Field(default_factory=list)
    transferring: list[str] = Field(default_factory=list)
    trainee_uncertain: list[str] = Field(default_factory=list)

    _check_patterns = field_validator(
        "patient_abusive", "patient_demands_manager_or_rude", "transferring", "trainee_uncertain"
    )(_compile_all)

    @cached_property
    def compiled(self) -> dict[str, list[re.Pattern[str]]]:
        return {
            name: compile_patterns(getattr(self, name))
            for name in ("patient_abusive", "patient_demands_manager_or_rude", "transferring", "trainee_uncertain")
        }


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    title: str
    version: int = 1
    conditions: Conditions = Field(default_factory=Conditions)
    steps: list[Step] = Field(min_length=1)
    # The file it was loaded from (set by load_rubric): the learned model lives beside it.
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_ids(self) -> Rubric:
        seen: set[str] = set()
        for step in self.steps:
            if step.id in seen:
                raise ValueError(f"duplicate step id {step.id!r}")
            seen.add(step.id)
        return self

    @model_validator(mode="after")
    def _applies_after_dont_steps(self) -> Rubric:
        kinds = {step.id: step.kind for step in self.steps}
        for step in self.steps:
            for field in ("applies_after", "void_if"):
                for other in getattr(step, field):
                    if kinds.get(other) != "dont":
                        raise ValueError(f"step {step.id!r}: {field} names {other!r}, which is not a don't-step")
        return self

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(f"rubric {self.id!r} has no step {step_id!r}")

    @property
    def step_ids(self) -> list[str]:
        return [s.id for s in self.steps]

    def turn_steps(self) -> list[Step]:
        return [s for s in self.steps if s.scope == "turn" and s.graded]

    def session_steps(self) -> list[Step]:
        return [s for s in self.steps if s.scope == "session"]


def _field_path(loc: tuple[Any, ...], data: Any) -> str:
    """``('steps', 3, 'check', 'match')`` -> ``steps[3] (apologize).check.match`` (ids help trainers)."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("id"), str):
                    label += f" ({node['id']})"
            else:
                node = None
            parts.append(label)
        else:
            node = node.get(item) if isinstance(node, dict) else None
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


# -- references: ids only ---------------------------------------------------------------------

ID_RE = re.compile(r"[a-z][a-z0-9_-]*")
ID_HINT = "lowercase letters, digits, - and _, starting with a letter, e.g. deescalation"


def is_id(value: object) -> bool:
    """Whether ``value`` is a bare rubric or persona id: no separators, dots, spaces or paths."""
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def rubrics_dir() -> Path:
    return Path(os.environ.get("DEESCALATE_RUBRICS_DIR", DEFAULT_DIR))


def rubric_path(rubric_id: str) -> Path:
    """``<rubrics dir>/<rubric_id>.yaml``; a rubric is referenced by id only, never by a path.

    Raises :class:`RubricError` for anything that is not an id (``/dev/zero``, ``../x``, ``x.yaml``)
    before touching the file system. A trusted file elsewhere loads with :func:`load_rubric_file`.
    """
    if not is_id(rubric_id):
        raise RubricError(f"{rubric_id!r} is not a rubric id ({ID_HINT})")
    return rubrics_dir() / f"{rubric_id}.yaml"


def rubric_ids() -> list[str]:
    base = rubrics_dir()
    return sorted(p.stem for p in base.glob("*.yaml") if is_id(p.stem)) if base.is_dir() else []


def load_rubric(rubric_id: str = "deescalation") -> Rubric:
    """Load and validate the rubric ``rubric_id`` from the rubrics folder (ids only: see :func:`rubric_path`).

    :class:`RubricError` names file and field on bad input. Parsed rubrics are cached by file path,
    size and modification time: every persona validates its trigger steps against the rubric, so
    listing the personas used to parse the same 750-line file once per persona (about 90 ms each).
    A trainer's edit changes the mtime and is picked up. Callers must treat the result as read-only.
    """
    path = rubric_path(rubric_id)
    if not path.is_file():
        known = ", ".join(rubric_ids()) or "none"
        raise RubricError(f"no rubric {rubric_id!r} in the rubrics folder (known: {known})")
    return load_rubric_file(path)


def load_rubric_file(path: str | os.PathLike[str]) -> Rubric:
    """A rubric from an explicit file path: for the command line and tests, never for ids from a page."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise RubricError(f"{path}: cannot read rubric ({exc.strerror or exc})") from exc
    if not path.is_file():
        raise RubricError(f"{path}: cannot read rubric (not a regular file)")
    return _load_rubric_file(path, stat.st_size, stat.st_mtime_ns)


def load_rubric_argument(argument: str) -> Rubric:
    """A command-line ``--rubric``: a YAML file path (has a .yaml/.yml suffix or a separator), else an id."""
    if Path(argument).suffix in (".yaml", ".yml") or "/" in argument or os.sep in argument:
        return load_rubric_file(argument)
    return load_rubric(argument)


# -- YAML -----------------------------------------------------------------------------------------


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names the same key twice; PyYAML would silently keep only the last value."""

    def __init__(self, key: Any, first: yaml.Node, again: yaml.Node) -> None:
        self.key = key
        self.first_line = first.start_mark.line + 1
        super().__init__(
            problem=f"duplicate key {key!r} (first at line {self.first_line}); YAML would keep only the last one",
            problem_mark=again.start_mark,
        )


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping (merge keys ``<<`` aside)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base constructor reports it
                    continue
                if first is not None:
                    raise DuplicateKeyError(key, first, key_node)
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data of one YAML document, duplicate keys rejected."""
    loader = UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    finally:
        loader.dispose()


def yaml_problem(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """(1-based line, one-line description) of a YAML error, without quoting the file's lines."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        problem += f" ({context} at line {context_mark.line + 1})"
    return (mark.line + 1 if mark is not None else None), problem.replace("\n", " ")


@lru_cache(maxsize=32)
def _load_rubric_file(path: Path, size: int, mtime_ns: int) -> Rubric:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RubricError(f"{path}: cannot read rubric ({getattr(exc, 'strerror', None) or exc})") from exc
    try:
        _, data = load_yaml(text)
    except yaml.YAMLError as exc:
        line, problem = yaml_problem(exc)
        where = f" at line {line}" if line else ""
        raise RubricError(f"{path}: not valid YAML{where}: {problem}") from exc
    if not isinstance(data, dict):
        raise RubricError(f"{path}: (top level): expected a mapping with id, title, steps")
    try:
        rubric = Rubric.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_field_path(tuple(e['loc']), data)}: {e['msg']}" for e in exc.errors())
        raise RubricError(f"{path}: {problems}") from exc
    rubric.source = path.resolve()
    return rubric
