"""One practice session: the turn loop over checks -> mood -> patient -> (optional) LLM grade.

Why a generator of events: the UI and the terminal both need the patient's words the moment they
arrive, and the feedback panel filled in later. :meth:`Session.stream_turn` yields
:class:`TurnEvent` s in order:

``checked`` (fast verdicts + new mood, milliseconds) -> ``delta`` (patient text, sentence by
sentence) -> ``answered`` (the whole line, mood, fast grade) -> ``tipped`` (the model's tip, while
it still writes the better phrasing) -> ``graded`` (tip and better phrasing; these two only with
``grade_with_llm``; may refine the mood) -> ``ended`` (when the mood reaches an ending).

The patient never waits for the LLM grade: it is asked for after the patient has answered.

If the model server dies mid-turn, the trainee's message stays in the transcript, the partial
patient text is dropped, :class:`~agent.patient.PatientUnavailable` propagates with a message the
UI can show, and :meth:`retry` (or the next :meth:`stream_turn`, which replaces the unanswered
message) plays the turn again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from agent import checks
from agent import mood as mood_rules
from agent.checks import StepVerdict, TurnContext
from agent.llm import LLMSettings
from agent.mood import Mood, Outcome
from agent.patient import stream_reply
from agent.personas import Persona
from agent.rubrics import Rubric, load_rubric
from agent.transcript import Transcript

EventKind = Literal["checked", "delta", "answered", "tipped", "graded", "ended"]


class SessionError(RuntimeError):
    """The session cannot take this turn (it has ended, or the text is empty)."""


class Ending(BaseModel):
    kind: Outcome
    reason: str


class TurnEvent(BaseModel):
    """One step of a turn, for streaming UIs. Fields beyond ``kind`` are set where they apply."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    kind: EventKind
    text: str = ""
    verdicts: dict[str, StepVerdict] | None = None
    mood: Mood | None = None
    grade: Any = None  # agent.grader.TurnGrade when the grader is installed
    ending: Ending | None = None


class Turn(BaseModel):
    """A finished (or pending) trainee turn."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    trainee: str
    patient: str | None = None
    verdicts: dict[str, StepVerdict]
    mood_before: Mood
    mood_after: Mood
    grade: Any = None
    ending: Ending | None = None
    filter_notes: list[str] = []  # what the role filter did to the patient's reply


def _grader() -> Any | None:
    """``agent.grader`` if present: the session runs without the LLM grader (checks only)."""
    try:
        from agent import grader
    except ImportError:
        return None
    return grader


def ending_reason(kind: Outcome, mood: Mood, persona: Persona) -> str:
    limits = persona.thresholds
    if kind == "resolved":
        accepted = [s for s in limits.resolution_steps if mood.credits.get(s, 0.0) >= mood_rules.FRESH]
        return (f"calm (anger {mood.anger:g} <= {limits.resolve_anger:g}), trusting (trust {mood.trust:g} >= "
                f"{limits.resolve_trust:g}) and accepted: {', '.join(accepted)}")  # fmt: skip
    if kind == "escalated":
        return f"a manager was brought in while anger was {mood.anger:g} (>= {limits.escalate_anger:g})"
    if mood.turn >= limits.max_turns:
        return f"ran out of patience after {mood.turn} turns"
    return f"anger stayed at {mood.anger:g} (>= {limits.leave_anger:g}) for {mood.hot_turns} turns"


class Session:
    """A practice conversation with one persona; usable from the terminal, the web UI and tests."""

    def __init__(
        self,
        persona: Persona,
        *,
        settings: LLMSettings | None = None,
        rubric: Rubric | None = None,
        seed: int | None = None,
        temperature: float = 0.7,
        grade_with_llm: bool = False,
    ) -> None:
        self.persona = persona
        self.settings = settings
        self.rubric = rubric or load_rubric(persona.rubric)
        self.seed = seed
        self.temperature = temperature
        self.grade_with_llm = grade_with_llm
        self.transcript = Transcript()
        self.transcript.add("patient", persona.opening_line)
        self.moods: list[Mood] = [mood_rules.initial(persona)]
        self.turns: list[Turn] = []
        self.ending: Ending | None = None

    # -- state -----------------------------------------------------------------------------

    @property
    def mood(self) -> Mood:
        return self.moods[-1]

    @property
    def grades(self) -> list[Any]:
        return [turn.grade for turn in self.turns]

    @property
    def pending(self) -> bool:
        """The last trainee message has no patient reply yet (the model failed mid-turn)."""
        return bool(self.turns) and self.turns[-1].patient is None

    def outcome(self) -> Ending | None:
        return self.ending

    def context(self, mood: Mood | None = None, *, before_last_reply: bool = False) -> TurnContext:
        """What the checks need: the persona's name and channel, and the conversation so far.

        ``before_last_reply``: the conversation as the trainee saw it when writing the last
        reply, i.e. without that reply and the patient's answer to it. The tip is graded
        after the patient answered, but must coach the reply against the line it answered.
        """
        mood = mood or self.mood
        history = self.transcript.messages
        if before_last_reply:
            last = max((i for i, m in enumerate(history) if m.role == "trainee"), default=len(history))
            history = history[:last]
        elif history and history[-1].role == "trainee":
            history = history[:-1]
        return TurnContext(
            persona_name=self.persona.name,
            channel=self.persona.channel,
            patient_abusive=self.persona.abusive and mood.anger >= 6,
            history=[m.model_copy() for m in history],
        )

    def stream_turn(self, trainee_text: str, settings: LLMSettings | None = None) -> Iterator[TurnEvent]:
        """Play one trainee turn, yielding events as they happen (see the module docstring)."""
        text = " ".join((trainee_text or "").split())
        if not text:
            raise SessionError("say something to the patient first")
        if self.ending is not None:
            raise SessionError(f"the session has ended ({self.ending.kind}); start a new one")
        if self.pending:  # the trainee rephrased instead of retrying: forget the unanswered turn
            self._drop_pending()
        before = self.mood
        context = self.context(before)
        verdicts = checks.run(self.rubric, text, context)
        after = mood_rules.update(before, verdicts, self.persona, text)
        self.transcript.add("trainee", text)
        self.moods.append(after)
        self.turns.append(Turn(trainee=text, verdicts=verdicts, mood_before=before, mood_after=after))
        yield TurnEvent(kind="checked", verdicts=verdicts, mood=after)
        yield from self._answer(settings)

    def retry(self, settings: LLMSettings | None = None) -> Iterator[TurnEvent]:
        """Ask the patient again for the unanswered last turn (after the model server failed)."""
        if not self.pending:
            raise SessionError("there is no unanswered turn to retry")
        yield from self._answer(settings)

    def turn(self, trainee_text: str, settings: LLMSettings | None = None) -> Turn:
        """:meth:`stream_turn` without streaming: the finished turn."""
        for _ in self.stream_turn(trainee_text, settings):
            pass
        return self.turns[-1]

    def _drop_pending(self) -> None:
        self.turns.pop()
        self.moods.pop()
        self.transcript.messages.pop()

    def _answer(self, settings: LLMSettings | None) -> Iterator[TurnEvent]:
        settings = settings or self.settings
        turn = self.turns[-1]
        ending_kind = mood_rules.outcome(turn.mood_after, self.persona)
        seed = None if self.seed is None else self.seed + len(self.turns)
        parts: list[str] = []
        notes: list[str] = []
        for piece in stream_reply(self.persona, self.transcript, turn.mood_after, settings, ending=ending_kind,
                                  temperature=self.temperature, seed=seed, notes=notes):  # fmt: skip
            parts.append(piece)
            yield TurnEvent(kind="delta", text=piece)
        reply = "".join(parts).strip()
        self.transcript.add("patient", reply)
        turn.patient, turn.filter_notes = reply, notes
        grader = _grader()
        if grader is not None:
            turn.grade = grader.TurnGrade(verdicts=turn.verdicts)
        yield TurnEvent(kind="answered", text=reply, mood=turn.mood_after, grade=turn.grade, verdicts=turn.verdicts)
        if self.grade_with_llm and grader is not None:
            yield from self._llm_grade(grader, settings)
        if ending_kind is not None:
            turn.ending = self.ending = Ending(
                kind=ending_kind, reason=ending_reason(ending_kind, self.mood, self.persona)
            )
            yield TurnEvent(kind="ended", ending=self.ending, mood=self.mood)

    def _llm_grade(self, grader: Any, settings: LLMSettings | None) -> Iterator[TurnEvent]:
        """The slow grade (tip, better phrasing, judged verdicts) after the patient answered.

        ``tipped`` as soon as the tip is written, ``graded`` when the better phrasing is too. If
        the grade's verdicts differ from the checks' (the classifier found more, or a large model
        judged), this turn's mood is recomputed from them (the rule is pure), so the refined mood
        is the one the next turn starts from.
        """
        turn = self.turns[-1]
        context = self.context(turn.mood_before, before_last_reply=True)
        stages = grader.stream_grade(self.rubric, turn.trainee, context, settings,
                                     situation=self.persona.situation, judge=True)  # fmt: skip
        for grade in stages:
            if grade.tip is None:
                continue  # verdicts only: already shown with the patient's answer
            turn.grade = grade
            labels = {k: v.verdict for k, v in grade.verdicts.items()}
            if labels != {k: v.verdict for k, v in turn.verdicts.items()}:
                turn.mood_after = mood_rules.update(turn.mood_before, labels, self.persona, turn.trainee)
                self.moods[-1] = turn.mood_after
            kind = "graded" if grade.advice_ms is not None else "tipped"
            yield TurnEvent(kind=kind, grade=grade, mood=turn.mood_after)

    def warm_grader(self, settings: LLMSettings | None = None) -> bool:
        """Let a local model read the next tip prompt's known front (situation, the patient's last
        line) while the trainee types; see :func:`agent.grader.warm_tip_prompt`."""
        grader = _grader()
        if not self.grade_with_llm or grader is None or self.ending is not None:
            return False
        settings = settings or self.settings or LLMSettings.from_env()
        return grader.warm_tip_prompt(self.context(self.mood), settings, situation=self.persona.situation)

    # -- persistence ------------------------------------------------------------------------

    @classmethod
    def restore(cls, persona: Persona, turns: Sequence[Any], **options: Any) -> Session:
        """Rebuild a session from stored turns (``agent.store.TurnRecord`` or :class:`Turn`).

        Verdicts and moods are recomputed from the words (checks and the mood rule are
        deterministic); a stored ``mood_after`` wins where present, since that is what the
        trainee saw. Turns without a patient reply are left out: the caller retries them.
        """
        session = cls(persona, **options)
        for record in turns:
            trainee = getattr(record, "trainee_text", None) or getattr(record, "trainee", "")
            patient = getattr(record, "patient_reply", None) or getattr(record, "patient", None)
            if not trainee or not patient:
                continue
            before = session.mood
            verdicts = checks.run(session.rubric, trainee, session.context(before))
            stored = getattr(record, "mood_after", None)
            after = (Mood.model_validate(stored) if isinstance(stored, dict) else stored) or mood_rules.update(
                before, verdicts, persona, trainee
            )
            session.transcript.add("trainee", trainee)
            session.transcript.add("patient", patient)
            session.moods.append(after)
            session.turns.append(Turn(trainee=trainee, patient=patient, verdicts=verdicts, mood_before=before,
                                      mood_after=after, grade=getattr(record, "grade", None)))  # fmt: skip
            kind = mood_rules.outcome(after, persona)
            if kind is not None:
                session.ending = Ending(kind=kind, reason=ending_reason(kind, after, persona))
        return session

    def summary(self) -> dict[str, Any]:
        """The figures ``simulate --json`` prints."""
        return {
            "persona": self.persona.id,
            "anger": [m.anger for m in self.moods],
            "trust": [m.trust for m in self.moods],
            "outcome": self.ending.kind if self.ending else "ongoing",
        }
