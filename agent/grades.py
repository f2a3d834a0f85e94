"""The contract between the grader, the session, the store and the page: one graded trainee turn.

Every stage of a turn passes these typed values on; the store keeps their JSON and reads them
back as the same types, so nothing downstream reads dicts standing in for grades.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from agent.checks import StepVerdict
from agent.rubrics import Verdict

PROBLEM_VERDICTS = ("missed", "violated")


class TipAdvice(BaseModel):
    """What the coach model writes: wording only, never verdicts."""

    tip: str = Field(description="one sentence of advice for next time")
    better_phrasing: str = Field(description="what the trainee could have said instead")


class JudgedAdvice(TipAdvice):
    """``calibrate --judge`` only: the model may also name steps it sees that the patterns did not."""

    also_demonstrated: list[str] = Field(default_factory=list)
    also_violated: list[str] = Field(default_factory=list)


class TurnGrade(BaseModel):
    """One graded trainee turn: per-step verdicts (with evidence), coaching, and how long it took."""

    verdicts: dict[str, StepVerdict]
    tip: str | None = None
    better_phrasing: str | None = None
    focus: str | None = Field(default=None, description="the step the tip is about")
    tip_source: Literal["model", "curated", "rubric"] | None = None
    phrasing_source: Literal["model", "curated", "rubric"] | None = None
    sources: dict[str, str] = Field(
        default_factory=dict,
        description='where the tip and the phrasing the trainee sees came from, e.g. {"better_phrasing": '
        '"curated phrasing from 004_54c74b88a13cd7e8.txt"}; "model" or "rubric advice" otherwise',
    )
    components: list[str] = Field(default_factory=lambda: ["checks"], description="what decided the verdicts")
    learned_abstained: bool = Field(
        default=False, description="the classifier left this reply to the checks: unlike any reply it learnt from"
    )
    verdicts_ms: float = 0.0
    tip_ms: float | None = Field(default=None, description="from the start of coaching until the tip was there")
    advice_ms: float | None = Field(default=None, description="from the start of coaching until tip and phrasing")
    error: str | None = Field(default=None, description="why the model part failed; verdicts still hold")

    @property
    def coached(self) -> bool:
        """Tip and better phrasing are final (from the model, or the rubric's fallback)."""
        return self.advice_ms is not None

    def labels(self) -> dict[str, Verdict]:
        """``{step_id: verdict}``, the bare labels (to compare or show verdicts); :func:`agent.mood.update`
        takes the typed :attr:`verdicts`, whose ``meets`` / ``remedy`` / ``evidence`` it needs."""
        return {step_id: v.verdict for step_id, v in self.verdicts.items()}

    def problems(self) -> list[str]:
        return [step_id for step_id, v in self.verdicts.items() if v.verdict in PROBLEM_VERDICTS]

    def strengths(self) -> list[str]:
        return [step_id for step_id, v in self.verdicts.items() if v.verdict == "demonstrated"]
