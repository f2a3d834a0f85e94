"""The patient's mood: anger and trust (0-10) and their update rule, as pure functions.

Why pure: the session, the simulator, the UI replay and the tests all need to recompute a mood
trajectory from (persona, verdicts, reply) alone, so ``update`` never reads the clock, the model
or global state; it returns a new :class:`Mood`.

The rule, per trainee turn (every factor is a per-persona ``dynamics`` field a trainer tunes):

1. Step credits decay (``dynamics.credit_decay``); a step shown recently still counts for
   endings and words ("feels heard"), and shielding the patient from the "ignored" penalty.
2. Calm triggers fire on grader verdicts (default ``demonstrated``) or phrases. The nth time a
   step is demonstrated in a session it earns ``repeat_factor ** (n - 1)`` of its calm: saying
   "I understand" every turn wears thin, however many turns lie between.
3. Substance (design.md, "Substance"), for a persona with ``wants`` and ``thresholds.need_met``:
   an offer earns its full calm only when it meets a need (``meets == "met"``), ``partly_calm``
   when it partly does, ``miss_calm`` when it is concrete but misses; a rejected offer calms
   nothing and adds ``reject_anger``. Until the trainee has restated the complaint (summarize)
   or offered what meets a need, anger cannot fall more than ``unheard_calm`` below its start:
   kind words alone do not settle a complaint nobody has engaged with. Until an offer meets a need,
   anger does not fall below ``unmet_anger``: heard but not helped, the patient still wants something.
4. Vent first: during the first ``vent_turns`` turns calming works at ``vent_calm`` only (the
   seeds: let the patient say what is wrong), unless the trainee has already restated it.
5. Escalate triggers fire on verdicts (default ``violated``) or phrases.
6. Trust scales both: a trusting patient calms faster and forgives more.
7. A turn where nothing fires and no credit is fresh adds ``ignored_anger`` (patience wears thin).
8. The change is bounded per turn (``max_anger_step`` / ``max_trust_step``), then clamped to 0-10.

Without ``wants`` (or with ``need_met: false``) step 3 is off: any demonstrated offer calms fully
and can resolve, as before personas carried their needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.checks import Meets, StepVerdict
from agent.personas import Channel, Persona

Outcome = Literal["resolved", "walked_out", "hung_up", "escalated"]
OUTCOMES: tuple[Outcome, ...] = ("resolved", "walked_out", "hung_up", "escalated")

# Below this a credit is forgotten; at or above FRESH it still shields and counts as "recent".
FORGET = 0.05
FRESH = 0.25
# The step whose verdict carries ``meets`` / ``remedy`` / the offer's words (agent.grounding).
OFFER = "offer_solution"
# The step that shows the trainee restated the complaint (ends venting, lifts the unheard limit).
RESTATE = "summarize"


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
    offer_meets: Meets | None = Field(
        default=None,
        description="how this turn's offer stands against the persona's wants (None: no offer heard this turn, "
        "or one the grader could not match)",
    )


def initial(persona: Persona) -> Mood:
    return Mood(anger=persona.anger, trust=persona.trust)


def _normalise(text: str) -> str:
    return " ".join(text.casefold().replace("\u2019", "'").split())


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def needs_rule(persona: Persona) -> bool:
    """Whether this persona's mood is held to its wants (resolution needs an offer that meets one)."""
    return persona.wants is not None and persona.thresholds.need_met


def need_met(mood: Mood, persona: Persona) -> bool:
    """An offer in this session met one of the persona's ``wants.resolves`` (by remedy id)."""
    return _resolving(mood.met, persona)


def _resolving(remedies: list[str], persona: Persona) -> bool:
    wants = persona.wants
    return wants is not None and any(wants.kind_of(remedy) == "resolves" for remedy in remedies)


def _offer_share(verdict: StepVerdict | None, persona: Persona) -> float:
    """The share of the offer's calm it earns: 1 without the needs rule; else by ``meets``
    (``None``, an offer the grader did not match to the wants, counts as a miss)."""
    if not needs_rule(persona) or verdict is None or verdict.meets == "met":
        return 1.0
    dyn = persona.dynamics
    return {"partly": dyn.partly_calm, "rejected": 0.0}.get(verdict.meets or "none", dyn.miss_calm)


def update(
    mood: Mood,
    verdicts: Mapping[str, StepVerdict],
    persona: Persona,
    reply_text: str = "",
) -> Mood:
    """The mood after one trainee turn (``verdicts``: step id -> the grader's verdict)."""
    dyn = persona.dynamics
    names = {step: v.verdict for step, v in verdicts.items()}
    shown = {step for step, name in names.items() if name == "demonstrated"}
    counts = dict(mood.counts)
    for step in shown:
        counts[step] = counts.get(step, 0) + 1
    offer = verdicts.get(OFFER)
    held = needs_rule(persona)
    text = _normalise(reply_text)
    before = {step: credit * dyn.credit_decay for step, credit in mood.credits.items()}
    credits = {step: credit for step, credit in before.items() if credit >= FORGET}
    offers, met = list(mood.offers), list(mood.met)
    if offer is not None and offer.verdict == "demonstrated" and offer.evidence and offer.evidence not in offers:
        offers.append(offer.evidence)
    # Only what was offered counts (a demonstrated, concrete offer), and a refusal the patient heard.
    heard = offer is not None and (offer.verdict == "demonstrated" or offer.meets == "rejected")
    if heard and offer.remedy and offer.remedy not in met:
        met.append(offer.remedy)
    restated = counts.get(RESTATE, 0) > 0
    venting = mood.turn < dyn.vent_turns and not restated

    effects: list[Effect] = []
    calm_anger = calm_trust = esc_anger = esc_trust = 0.0
    for trigger in persona.triggers.calm:
        if trigger.step is not None:
            if names.get(trigger.step) not in (trigger.when or ["demonstrated"]):
                continue
            scale = dyn.repeat_factor ** max(counts.get(trigger.step, 1) - 1, 0)
            if trigger.step == OFFER:
                if held and offer is not None and offer.remedy and offer.remedy not in mood.met:
                    scale = 1.0  # a remedy not offered before is new substance, not the same step again
                scale *= _offer_share(offer, persona)
            if scale <= 0:
                continue
            credits[trigger.step] = 1.0
            source = f"step:{trigger.step}"
        else:
            if _normalise(trigger.phrase or "") not in text:
                continue
            scale, source = 1.0, f"phrase:{trigger.phrase}"
        if venting:
            scale *= dyn.vent_calm
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
    if held and offer is not None and offer.meets == "rejected":
        esc_anger += dyn.reject_anger
        esc_trust += dyn.reject_trust
        effects.append(Effect(source="offer:rejected", anger=dyn.reject_anger, trust=-dyn.reject_trust))

    # Trust 5 is neutral; at 0 calming works at 60% and provocations hit 130%, at 10 the reverse.
    calm_anger *= 0.6 + 0.08 * mood.trust
    esc_anger *= 1.3 - 0.06 * mood.trust
    ignored = 0.0
    if not effects and not any(c >= FRESH for c in credits.values()):
        ignored = dyn.ignored_anger
        effects.append(Effect(source="ignored", anger=ignored, trust=0.0))

    d_anger = _clamp(esc_anger + ignored - calm_anger, -dyn.max_anger_step, dyn.max_anger_step)
    d_trust = _clamp(calm_trust - esc_trust, -dyn.max_trust_step, dyn.max_trust_step)
    anger = _clamp(mood.anger + d_anger, 0, 10)
    if held and not restated and not _resolving(met, persona):
        # Nobody has engaged with the complaint yet: form alone calms at most unheard_calm.
        anger = max(anger, min(mood.anger, persona.anger - dyn.unheard_calm))
    if held and not _resolving(met, persona):
        # Heard but not helped: the patient wants something, and kind words do not stand in for it.
        anger = max(anger, min(mood.anger, dyn.unmet_anger))
    anger = round(anger, 2)
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
        counts=dict(sorted(counts.items())),
        offers=offers,
        met=met,
        offer_meets=offer.meets if heard and offer is not None else None,
    )


def leaving_outcome(channel: Channel) -> Outcome:
    """How an upset patient leaves on this channel: on the phone or in a chat they hang up."""
    return "hung_up" if channel in ("phone", "chat") else "walked_out"


def outcome(mood: Mood, persona: Persona) -> Outcome | None:
    """How the session ends after ``mood``, or None while it goes on.

    * escalated: the trainee brought in a manager (``involve_manager`` shown this turn) while the
      patient is still at or above ``escalate_anger``: the manager takes over.
    * resolved: calm enough, trusting enough, a solution step is recent (the offer accepted), and
      at least ``min_turns`` turns passed (the seeds: let the patient vent before resolving). For a
      persona held to its wants (:func:`needs_rule`), an offer in this session must also have met
      one of ``wants.resolves`` (:func:`need_met`): only a met offer, partly-remedies calm but never
      settle it, and a rejected or missing offer earns no fresh solution credit at all.
    * walked_out / hung_up: anger stayed at ``leave_anger`` for ``leave_after`` turns, or the
      patient ran out of patience (``max_turns``).
    """
    if mood.turn == 0:
        return None
    limits = persona.thresholds
    if mood.credits.get("involve_manager", 0.0) >= 1.0 and mood.anger >= limits.escalate_anger:
        return "escalated"
    solution = any(mood.credits.get(step, 0.0) >= FRESH for step in limits.resolution_steps)
    if needs_rule(persona):
        solution = solution and need_met(mood, persona)
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
