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


def rubric_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A file path as given, or ``<rubrics dir>/<name>.yaml`` for a bare name."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    base = Path(os.environ.get("DEESCALATE_RUBRICS_DIR", DEFAULT_DIR))
    for directory in (base, Path.cwd() / "rubrics"):
        path = directory / f"{name_or_path}.yaml"
        if path.exists():
            return path
    return base / f"{name_or_path}.yaml"


def load_rubric(name_or_path: str | os.PathLike[str] = "deescalation") -> Rubric:
    """Load and validate one rubric; :class:`RubricError` names file and field on bad input.

    Parsed rubrics are cached by file path, size and modification time: every persona validates
    its trigger steps against the rubric, so listing the personas used to parse the same 750-line
    file once per persona (about 90 ms each). A trainer's edit changes the mtime and is picked up.
    Callers must treat the returned rubric as read-only.
    """
    path = rubric_path(name_or_path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise RubricError(f"{path}: cannot read rubric ({exc.strerror or exc})") from exc
    return _load_rubric_file(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _load_rubric_file(path: Path, size: int, mtime_ns: int) -> Rubric:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RubricError(f"{path}: cannot read rubric ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RubricError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RubricError(f"{path}: (top level): expected a mapping with id, title, steps")
    try:
        rubric = Rubric.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_field_path(tuple(e['loc']), data)}: {e['msg']}" for e in exc.errors())
        raise RubricError(f"{path}: {problems}") from exc
    rubric.source = path.resolve()
    return rubric
