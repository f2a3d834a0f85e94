"""The patient's mood: anger and trust (0-10) and their update rule, as pure functions.

Why pure: the session, the simulator, the UI replay and the tests all need to recompute a mood
trajectory from (persona, verdicts, reply) alone, so ``update`` never reads the clock, the model
or global state; it returns a new :class:`Mood`.

The rule, per trainee turn:

1. Step credits decay (``dynamics.credit_decay``); a step shown recently still counts for
   endings and words ("feels heard"), and shielding the patient from the "ignored" penalty.
2. Calm triggers fire on grader verdicts (default ``demonstrated``) or phrases; repeating a step
   whose credit is still fresh gives less (saying "I understand" every turn wears thin).
3. Escalate triggers fire on verdicts (default ``violated``) or phrases.
4. Trust scales both: a trusting patient calms faster and forgives more.
5. A turn where nothing fires and no credit is fresh adds ``ignored_anger`` (patience wears thin).
6. The change is bounded per turn (``max_anger_step`` / ``max_trust_step``), then clamped to 0-10.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.personas import Channel, Persona

Outcome = Literal["resolved", "walked_out", "hung_up", "escalated"]
OUTCOMES: tuple[Outcome, ...] = ("resolved", "walked_out", "hung_up", "escalated")

# Below this a credit is forgotten; at or above FRESH it still shields and counts as "recent".
FORGET = 0.05
FRESH = 0.25
# How much a fresh credit discounts repeating the same step (0.5: a step repeated next turn gives 75%).
REPEAT_DISCOUNT = 0.5


class Effect(BaseModel):
    """One trigger that fired this turn (for explanations in the UI and the simulator)."""

    model_config = ConfigDict(frozen=True)
    source: str  # "step:empathize" or "phrase:calm down" or "ignored"
    anger: float  # signed: negative calms
    trust: float  # signed


class Mood(BaseModel):
    """Where the patient stands after ``turn`` trainee turns."""

    model_config = ConfigDict(frozen=True)
    anger: float = Field(ge=0, le=10)
    trust: float = Field(ge=0, le=10)
    turn: int = 0
    credits: dict[str, float] = Field(default_factory=dict)
    hot_turns: int = 0  # consecutive turns at or above the persona's leave_anger
    previous_anger: float | None = None
    effects: list[Effect] = Field(default_factory=list)
    counts: dict[str, int] = Field(
        default_factory=dict, description="turns in which each step was demonstrated so far (repeats earn less)"
    )
    offers: list[str] = Field(
        default_factory=list,
        description="the concrete offers the trainee made so far, in their words (the patient's direction names them)",
    )
    met: list[str] = Field(default_factory=list, description="ids of the persona's remedies offered so far (any kind)")


def initial(persona: Persona) -> Mood:
    return Mood(anger=persona.anger, trust=persona.trust)


def _verdict_name(value: Any) -> str:
    return str(getattr(value, "verdict", value))


def _normalise(text: str) -> str:
    return " ".join(text.casefold().replace("\u2019", "'").split())


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def update(
    mood: Mood,
    verdicts: Mapping[str, Any],
    persona: Persona,
    reply_text: str = "",
) -> Mood:
    """The mood after one trainee turn. ``verdicts``: step id -> verdict string (or StepVerdict)."""
    dyn = persona.dynamics
    names = {step: _verdict_name(v) for step, v in verdicts.items()}
    text = _normalise(reply_text)
    before = {step: credit * dyn.credit_decay for step, credit in mood.credits.items()}
    credits = {step: credit for step, credit in before.items() if credit >= FORGET}

    effects: list[Effect] = []
    calm_anger = calm_trust = esc_anger = esc_trust = 0.0
    for trigger in persona.triggers.calm:
        if trigger.step is not None:
            if names.get(trigger.step) not in (trigger.when or ["demonstrated"]):
                continue
            scale = 1.0 - REPEAT_DISCOUNT * before.get(trigger.step, 0.0)
            credits[trigger.step] = 1.0
            source = f"step:{trigger.step}"
        else:
            if _normalise(trigger.phrase or "") not in text:
                continue
            scale, source = 1.0, f"phrase:{trigger.phrase}"
        calm_anger += trigger.anger * scale
        calm_trust += trigger.trust * scale
        effects.append(Effect(source=source, anger=-trigger.anger * scale, trust=trigger.trust * scale))
    for trigger in persona.triggers.escalate:
        if trigger.step is not None:
            if names.get(trigger.step) not in (trigger.when or ["violated"]):
                continue
            source = f"step:{trigger.step}"
        else:
            if _normalise(trigger.phrase or "") not in text:
                continue
            source = f"phrase:{trigger.phrase}"
        esc_anger += trigger.anger
        esc_trust += trigger.trust
        effects.append(Effect(source=source, anger=trigger.anger, trust=-trigger.trust))

    # Trust 5 is neutral; at 0 calming works at 60% and provocations hit 130%, at 10 the reverse.
    calm_anger *= 0.6 + 0.08 * mood.trust
    esc_anger *= 1.3 - 0.06 * mood.trust
    ignored = 0.0
    if not effects and not any(c >= FRESH for c in credits.values()):
        ignored = dyn.ignored_anger
        effects.append(Effect(source="ignored", anger=ignored, trust=0.0))

    d_anger = _clamp(esc_anger + ignored - calm_anger, -dyn.max_anger_step, dyn.max_anger_step)
    d_trust = _clamp(calm_trust - esc_trust, -dyn.max_trust_step, dyn.max_trust_step)
    anger = round(_clamp(mood.anger + d_anger, 0, 10), 2)
    trust = round(_clamp(mood.trust + d_trust, 0, 10), 2)
    hot = mood.hot_turns + 1 if anger >= persona.thresholds.leave_anger else 0
    return Mood(
        anger=anger,
        trust=trust,
        turn=mood.turn + 1,
        credits={step: round(c, 4) for step, c in sorted(credits.items())},
        hot_turns=hot,
        previous_anger=mood.anger,
        effects=effects,
    )


def leaving_outcome(channel: Channel) -> Outcome:
    """How an upset patient leaves on this channel: on the phone or in a chat they hang up."""
    return "hung_up" if channel in ("phone", "chat") else "walked_out"


def outcome(mood: Mood, persona: Persona) -> Outcome | None:
    """How the session ends after ``mood``, or None while it goes on.

    * escalated: the trainee brought in a manager (``involve_manager`` shown this turn) while the
      patient is still at or above ``escalate_anger``: the manager takes over.
    * resolved: calm enough, trusting enough, a solution step is recent (the offer accepted), and
      at least ``min_turns`` turns passed (the seeds: let the patient vent before resolving).
    * walked_out / hung_up: anger stayed at ``leave_anger`` for ``leave_after`` turns, or the
      patient ran out of patience (``max_turns``).
    """
    if mood.turn == 0:
        return None
    limits = persona.thresholds
    if mood.credits.get("involve_manager", 0.0) >= 1.0 and mood.anger >= limits.escalate_anger:
        return "escalated"
    solution = any(mood.credits.get(step, 0.0) >= FRESH for step in limits.resolution_steps)
    calm = mood.anger <= limits.resolve_anger and mood.trust >= limits.resolve_trust
    if calm and solution and mood.turn >= limits.min_turns:
        return "resolved"
    if mood.hot_turns >= limits.leave_after or mood.turn >= limits.max_turns:
        return leaving_outcome(persona.channel)
    return None


_ANGER_WORDS = [(9, "furious"), (7, "very angry"), (5, "still angry"), (3, "annoyed"), (1.5, "mostly calm")]
_TRUST_WORDS = [(8, "trusting"), (6, "starting to trust"), (4, "listening"), (2, "doubtful")]
_CREDIT_WORDS = {
    "empathize": "feels heard",
    "summarize": "feels understood",
    "apologize": "got an apology",
    "offer_solution": "weighing the offer",
    "find_out": "promised an answer",
    "explain_transfer": "knows why the transfer",
    "take_offline": "offered a private talk",
    "involve_manager": "promised a manager",
    "set_boundary": "asked to stay civil",
}


def describe(mood: Mood, persona: Persona | None = None) -> str:
    """The mood in a few words the patient model can act on, e.g. "still angry, cooling down,
    listening; feels heard".

    Short on purpose: it is the stage direction before each patient line, read anew every turn
    (about 20 tokens with the speaker tag). One cue at most: being provoked or ignored, else the
    strongest recent step; then a warning when the patient is about to leave.
    """
    anger = next((word for floor, word in _ANGER_WORDS if mood.anger >= floor), "calm")
    trust = next((word for floor, word in _TRUST_WORDS if mood.trust >= floor), "distrustful")
    parts = [anger]
    if mood.previous_anger is not None:
        if mood.anger < mood.previous_anger - 0.2:
            parts.append("cooling down")
        elif mood.anger > mood.previous_anger + 0.2:
            parts.append("getting angrier")
    parts.append(trust)
    text = ", ".join(parts)
    provoked = any(e.anger > 0 and e.source != "ignored" for e in mood.effects)
    recent = sorted((value, step) for step, value in mood.credits.items() if value >= FRESH and step in _CREDIT_WORDS)
    if provoked:
        text += "; just felt provoked"
    elif any(e.source == "ignored" for e in mood.effects):
        text += "; feels ignored"
    elif recent:
        text += "; " + _CREDIT_WORDS[recent[-1][1]]
    if persona is not None and mood.anger >= persona.thresholds.leave_anger - 1:
        text += "; about to " + ("hang up" if leaving_outcome(persona.channel) == "hung_up" else "walk out")
    return text


def trajectory(moods: list[Mood]) -> dict[str, list[float]]:
    return {"anger": [m.anger for m in moods], "trust": [m.trust for m in moods]}
