"""Curated coaching per persona: a tip and a better phrasing for each step, written from the seeds.

Why: the embedded 1.5B model's tips sometimes coach the patient instead of the receptionist, and
its "better" phrasing is sometimes a brush-off ("I can't help with that. Let's talk about something
else."). When the coach's guard (:mod:`agent.coach`) rejects what the model wrote, the trainee sees
a line a person wrote for this patient instead: it uses only what the persona's file says (no
invented times or names), it passes the same checks that grade the trainee (tested), and it cites
the seed document it follows, so the page can say "curated phrasing from <seed>".

The files live apart from the personas (``personas/phrasings/<persona-id>.yaml``), so a trainer can
edit a persona without touching its coaching, and a persona without a file falls back to the
rubric's own advice.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.personas import SEEDS_DIR, PersonaError, check_id, personas_dir

SEED_NAME = re.compile(r"^\d{3}_[0-9a-f]{16}\.txt$")


class Curated(BaseModel):
    """One curated piece of coaching: for ``steps``, what to tell the trainee and what to say."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: list[str] = Field(min_length=1, description="rubric step ids this coaching is for")
    tip: str = Field(min_length=1, description="one sentence to the trainee, naming the step")
    say: str = Field(min_length=1, description="what the trainee could say to this patient")
    seed: str = Field(description="the seed document (shared/seeds) this follows, by file name")

    @field_validator("seed")
    @classmethod
    def _seed_name(cls, value: str) -> str:
        if not SEED_NAME.match(value):
            raise ValueError(f"{value!r} is not a seed file name like 004_54c74b88a13cd7e8.txt")
        if SEEDS_DIR.is_dir() and not (SEEDS_DIR / value).is_file():  # where the seeds are at hand
            raise ValueError(f"{value!r} is not in {SEEDS_DIR}")
        return value

    @property
    def source(self) -> str:
        """What the page shows about where this came from."""
        return f"curated phrasing from {self.seed}"


class Phrasebook(BaseModel):
    """All curated coaching for one persona."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    persona: str
    coaching: list[Curated]

    def for_step(self, step_id: str) -> Curated | None:
        """The first entry written for ``step_id``, or None."""
        return next((entry for entry in self.coaching if step_id in entry.steps), None)

    def steps(self) -> set[str]:
        return {step for entry in self.coaching for step in entry.steps}


def phrasings_dir() -> Path:
    return personas_dir() / "phrasings"


def phrasebook_path(persona_id: str, directory: Path | None = None) -> Path:
    return (directory or phrasings_dir()) / f"{check_id(persona_id)}.yaml"


def parse_phrasebook(text: str, path: Path | str = "<string>") -> Phrasebook:
    try:
        data = yaml.safe_load(text)
        return Phrasebook.model_validate(data)
    except yaml.YAMLError as exc:
        raise PersonaError([f"{path}: not valid YAML ({exc})"]) from exc
    except ValidationError as exc:
        problems = [f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise PersonaError(problems) from exc


@cache
def _load(path: Path, mtime: float) -> Phrasebook:
    return parse_phrasebook(path.read_text(encoding="utf-8"), path)


def load_phrasebook(persona_id: str, directory: Path | None = None) -> Phrasebook | None:
    """The persona's curated coaching, or None if it has none. Re-read when the file changes."""
    path = phrasebook_path(persona_id, directory)
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    book = _load(path, mtime)
    if book.persona != persona_id:
        raise PersonaError([f"{path}: written for {book.persona!r}, not {persona_id!r}"])
    return book
