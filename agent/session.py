"""One practice session in memory: the turn pipeline every surface shares.

For each trainee reply, in this order and each exactly once (design.md, "One trainee turn"):

1. verdicts: the checks and the learned classifier (:func:`agent.grader.grade_fast`), milliseconds;
2. mood: :func:`agent.mood.update` on those verdicts (pure), which also decides an ending;
3. the patient's answer, streamed, written from that mood (:func:`agent.patient.stream_reply`);
4. coaching (tip, better phrasing) from the coach model, *after* the answer and off the critical
   path: :meth:`Session.coach`, which the caller runs when the model is free. It never changes a
   verdict or the mood the patient answered from.

:meth:`Session.stream_turn` yields typed events: :class:`Graded` (verdicts, new mood, ending if
one was reached) -> :class:`Spoken` (patient text, sentence by sentence) -> :class:`Answered`.
The page, the terminal ``practice``, ``simulate`` and the trainer's test run all play turns
through here, so the same words move the mood the same way everywhere.

What the patient model reads is kept within its context: when the conversation would outgrow it,
the oldest exchanges after the opening line are left out of the patient's prompt (``trimmed``
says how many), once, with room to spare, so the cached prompt stays stable afterwards.

If the model server dies mid-turn, the trainee's message and its verdicts stay, the partial
patient text is dropped, :class:`~agent.patient.PatientUnavailable` propagates, and :meth:`retry`
(or the next :meth:`stream_turn`, which replaces the unanswered message) plays the answer again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from langchain_core.messages import BaseMessage
from pydantic import BaseModel, Field

from agent import coach as coach_chain
from agent import grader
from agent import mood as mood_rules
from agent.checks import TITLE_WORDS, StepVerdict, TurnContext
from agent.grades import TurnGrade
from agent.models import CoachModel, PatientModel
from agent.mood import Mood, Outcome
from agent.patient import MAX_TOKENS as PATIENT_MAX_TOKENS
from agent.patient import (
    build_messages,
    direction,
    prefix_messages,
    prompt_tokens,
    stream_reply,
    substance,
    typing_messages,
)
from agent.personas import Persona
from agent.rubrics import Rubric, load_rubric
from agent.transcript import Message, Transcript

# A reply that ends with one of these may be finished: it is read ahead whole (Session._read_ahead),
# unless its last word is a title that goes on ("I'm sorry, Mr." is the trainee still typing).
SENTENCE_ENDS = ".!?"


def _needed(messages: list[BaseMessage]) -> int:
    """The context a patient prompt needs: its tokens with headroom, and the answer's."""
    return int(prompt_tokens(messages) * TOKEN_SAFETY) + PATIENT_MAX_TOKENS


def ends_sentence(text: str) -> bool:
    """Whether the reply typed so far may be finished (ends a sentence, not with a title)."""
    words = text.split()
    return bool(words) and words[-1][-1] in SENTENCE_ENDS and words[-1].lower() not in TITLE_WORDS


# tiktoken counts a little under the served model's tokenizer: leave this much headroom.
TOKEN_SAFETY = 1.2
# After a trim the patient's prompt fills at most this share of the context, so trims are rare.
TRIM_TO = 0.6


class SessionError(RuntimeError):
    """The session cannot take this turn (it has ended, or the text is empty)."""


class Ending(BaseModel):
    kind: Outcome
    reason: str


class Turn(BaseModel):
    """One trainee turn; ``patient`` is None while the answer is pending (or failed)."""

    trainee: str
    grade: TurnGrade
    mood_before: Mood
    mood_after: Mood
    ending: Ending | None = Field(default=None, description="decided with the mood, before the patient answers")
    patient: str | None = None
    notes: list[str] = Field(default_factory=list, description="what the role filter did to the answer")

    @property
    def verdicts(self) -> dict[str, StepVerdict]:
        return self.grade.verdicts


class Graded(BaseModel):
    """Stage 1-2: the verdicts and the mood they moved to (shown before the patient speaks)."""

    kind: Literal["graded"] = "graded"
    index: int
    turn: Turn


class Spoken(BaseModel):
    """Stage 3, streaming: the next piece of the patient's answer."""

    kind: Literal["spoken"] = "spoken"
    text: str


class Answered(BaseModel):
    """Stage 3 done: the whole answer; ``turn.ending`` says whether the session ended with it."""

    kind: Literal["answered"] = "answered"
    index: int
    turn: Turn
    trimmed: int = Field(default=0, description="exchanges left out of the patient's prompt so far")


TurnEvent = Graded | Spoken | Answered


def ending_reason(kind: Outcome, mood: Mood, persona: Persona) -> str:
    limits = persona.thresholds
    if kind == "resolved":
        accepted = [s for s in limits.resolution_steps if mood.credits.get(s, 0.0) >= mood_rules.FRESH]
        wants = persona.wants
        met = [r for r in mood.met if wants is not None and wants.kind_of(r) == "resolves"]
        need = f" (meets the need: {', '.join(met)})" if mood_rules.needs_rule(persona) and met else ""
        return (f"calm (anger {mood.anger:g} <= {limits.resolve_anger:g}), trusting (trust {mood.trust:g} >= "
                f"{limits.resolve_trust:g}) and accepted: {', '.join(accepted)}{need}")  # fmt: skip
    if kind == "escalated":
        return f"a manager was brought in while anger was {mood.anger:g} (>= {limits.escalate_anger:g})"
    if mood.turn >= limits.max_turns:
        return f"ran out of patience after {mood.turn} turns"
    return f"anger stayed at {mood.anger:g} (>= {limits.leave_anger:g}) for {mood.hot_turns} turns"


def decide_ending(mood: Mood, persona: Persona) -> Ending | None:
    kind = mood_rules.outcome(mood, persona)
    return None if kind is None else Ending(kind=kind, reason=ending_reason(kind, mood, persona))


class Session:
    """A practice conversation with one persona, held in memory while it is active."""

    def __init__(
        self,
        persona: Persona,
        patient: PatientModel,
        *,
        rubric: Rubric | None = None,
        seed: int | None = None,
        temperature: float = 0.7,
        use_learned: bool = True,
    ) -> None:
        self.persona = persona
        self.patient = patient
        self.rubric = rubric or load_rubric(persona.rubric)
        self.seed = seed
        self.temperature = temperature
        self.use_learned = use_learned
        self.initial_mood = mood_rules.initial(persona)
        self.transcript = Transcript()
        opening_mood = self.initial_mood
        self.transcript.add(
            "patient", persona.opening_line, direction(persona, opening_mood), substance(persona, opening_mood)
        )
        self.turns: list[Turn] = []
        self.ending: Ending | None = None
        self.trimmed = 0  # trainee/patient exchanges left out of the patient's prompt
        # A reply graded while it was typed (:meth:`prefill_reply`), with the context and mood it
        # was graded in: Send reuses it if nothing changed since.
        self._ahead: tuple[str, TurnContext, Mood, Turn] | None = None

    # -- state -----------------------------------------------------------------------------

    @property
    def moods(self) -> list[Mood]:
        """The starting mood and the mood after each turn."""
        return [self.initial_mood, *(turn.mood_after for turn in self.turns)]

    @property
    def mood(self) -> Mood:
        return self.turns[-1].mood_after if self.turns else self.initial_mood

    @property
    def pending(self) -> bool:
        """The last trainee message has no patient reply yet (the model failed mid-turn)."""
        return bool(self.turns) and self.turns[-1].patient is None

    def context(self, index: int | None = None) -> TurnContext:
        """What the grader and the coach need for trainee turn ``index`` (default: the next one): the
        persona's name, channel, conditions, facts and wants, the conversation as the trainee saw it
        then, and what earlier turns showed, offered and were coached on."""
        index = len(self.turns) if index is None else index
        coached: list[str] = []
        for earlier in range(index):  # each turn's focus follows from the ones before it
            step = coach_chain.focus_step(self.rubric, self.turns[earlier].grade.verdicts,
                                          self._context(earlier, coached))  # fmt: skip
            if step is not None:
                coached.append(step.id)
        return self._context(index, coached)

    def _context(self, index: int, coached: list[str]) -> TurnContext:
        mood = self.turns[index].mood_before if index < len(self.turns) else self.mood
        history = self.transcript.messages[: 1 + 2 * index]
        return TurnContext.of_persona(self.persona, [m.model_copy() for m in history],
                                      abusive=self.persona.abusive and mood.anger >= 6, earlier=mood.counts,
                                      coached=coached, met=mood.met)  # fmt: skip

    # -- the turn ----------------------------------------------------------------------------

    def stream_turn(self, trainee_text: str) -> Iterator[TurnEvent]:
        """Play one trainee turn, yielding its stages as they happen (see the module docstring)."""
        text = " ".join((trainee_text or "").split())
        if not text:
            raise SessionError("say something to the patient first")
        if self.ending is not None:
            raise SessionError(f"the session has ended ({self.ending.kind}); start a new one")
        if self.pending:  # the trainee rephrased instead of retrying: forget the unanswered turn
            self.discard_unanswered()
        turn = self._graded(text)
        self.turns.append(turn)
        self.transcript.add("trainee", text)
        yield Graded(index=len(self.turns) - 1, turn=turn)
        yield from self._answer()

    def _graded(self, text: str, context: TurnContext | None = None) -> Turn:
        """The turn ``text`` makes now (verdicts, the mood after them, whether the session ends),
        not yet played. Deterministic in the text, the context and the mood, so a reply graded
        while it was typed (:meth:`prefill_reply`) is reused on Send if those are unchanged."""
        context, before = context or self.context(), self.mood
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[:3] == (text, context, before):
            return ahead[3]
        grade = grader.grade_fast(self.rubric, text, context, use_learned=self.use_learned)
        after = mood_rules.update(before, grade.verdicts, self.persona, text)
        return Turn(trainee=text, grade=grade, mood_before=before, mood_after=after,
                    ending=decide_ending(after, self.persona))  # fmt: skip

    def retry(self) -> Iterator[TurnEvent]:
        """Ask the patient again for the unanswered last turn (after the model server failed)."""
        if not self.pending:
            raise SessionError("there is no unanswered turn to retry")
        yield from self._answer()

    def discard_unanswered(self) -> None:
        """Forget the last turn, which has no answer (its reply could not be saved, or is replaced)."""
        if not self.pending:
            raise SessionError("the last turn has an answer; it cannot be discarded")
        self.turns.pop()
        self.transcript.messages.pop()

    def unanswer(self) -> None:
        """Take back the last turn's answer (it could not be saved): the turn is pending again, so
        :meth:`retry` asks for the answer anew, and the session is not over yet."""
        if not self.turns or self.pending:
            raise SessionError("the last turn has no answer to take back")
        turn = self.turns[-1]
        turn.patient, turn.notes = None, []
        self.transcript.messages.pop()
        self.ending = None

    def turn(self, trainee_text: str) -> Turn:
        """:meth:`stream_turn` without streaming: the answered turn."""
        for _ in self.stream_turn(trainee_text):
            pass
        return self.turns[-1]

    def _answer(self) -> Iterator[TurnEvent]:
        turn = self.turns[-1]
        kind = turn.ending.kind if turn.ending else None
        seed = None if self.seed is None else self.seed + len(self.turns)
        self._fit_memory(turn.mood_after, kind)
        parts: list[str] = []
        notes: list[str] = []
        for piece in stream_reply(self.persona, self.memory(), turn.mood_after, self.patient, ending=kind,
                                  temperature=self.temperature, seed=seed, notes=notes):  # fmt: skip
            parts.append(piece)
            yield Spoken(text=piece)
        turn.patient, turn.notes = "".join(parts).strip(), notes
        self._add_answer(turn.patient, turn.mood_after, kind)
        self.ending = turn.ending
        yield Answered(index=len(self.turns) - 1, turn=turn, trimmed=self.trimmed)

    # -- what the patient model reads ----------------------------------------------------------

    def _add_answer(self, text: str, mood: Mood, ending: Outcome | None) -> None:
        """The patient's line with the direction it was written under and, unless the session ends
        on it, the note the trainee's next line is read after (what was offered, what is open)."""
        note = substance(self.persona, mood) if ending is None else None
        self.transcript.add("patient", text, direction(self.persona, mood, ending), note)

    def memory(self) -> Transcript:
        """The conversation as the patient model reads it: the opening line and the exchanges
        after the trimmed ones."""
        opening, rest = self.transcript.messages[:1], self.transcript.messages[1:]
        return Transcript(messages=[*opening, *rest[2 * self.trimmed :]])

    def _estimate(self, mood: Mood, ending: Outcome | None) -> int:
        return _needed(build_messages(self.persona, self.memory(), mood, self.patient.prompt_style, ending))

    def _fit_memory(self, mood: Mood, ending: Outcome | None) -> None:
        """Leave the oldest exchanges out of the patient's prompt before it could overflow."""
        budget = self.patient.context_tokens
        if self._estimate(mood, ending) <= budget:
            return
        exchanges = (len(self.transcript.messages) - 1) // 2
        while self.trimmed < exchanges - 1 and self._estimate(mood, ending) > budget * TRIM_TO:
            self.trimmed += 1

    def prefill(self) -> bool:
        """Have the patient model read what is known of the next prompt (while the trainee reads
        and types), so the turn only reads the trainee's new line."""
        messages = self.front_prefill()
        return messages is not None and self.patient.prefill(messages)

    def front_prefill(self) -> list[BaseMessage] | None:
        """What :meth:`prefill` has the model read: the next prompt up to the end of the patient's
        last line and its note (None: a chat model, or the session is over)."""
        if self.ending is not None or self.patient.prompt_style != "transcript":
            return None
        return prefix_messages(self.persona, self.memory(), self.mood)

    def prefill_reply(self, partial: str) -> bool:
        """Have the patient model read the reply being typed (its whole words so far) on top of the
        conversation, so Send only reads the last words and the stage direction. Nothing to read
        (False) once the session ended, while a turn waits for its answer, or before a whole word."""
        messages = self.reply_prefill(partial)
        return messages is not None and self.patient.prefill(messages)

    def reply_prefill(self, partial: str) -> list[BaseMessage] | None:
        """What :meth:`prefill_reply` has the model read (the caller may read it outside its lock):
        the whole prompt if the reply ends a sentence (:meth:`_read_ahead`), else the conversation
        and the reply's whole words so far; None: nothing to read."""
        if self.ending is not None or self.pending or self.patient.prompt_style != "transcript":
            return None
        return self._read_ahead(partial) or typing_messages(self.persona, self.memory(), self.mood, partial)

    def _read_ahead(self, partial: str) -> list[BaseMessage] | None:
        """The whole prompt Send would make of ``partial`` if it is sent as it stands: a reply that
        ends a sentence may be finished (the trainee paused before Send). It is graded now, the
        stage direction written from that grade, and the patient model reads all of it, so on Send
        only the speaker tag's last token is left to read. None (read only the typed words): it
        does not end a sentence, or the prompt would need trimming first.

        The grade is kept (:meth:`_graded`), so Send does not grade the same words twice; if the
        trainee types on, the server's cache keeps the common front and the turn reads the rest."""
        text = " ".join(partial.split())
        if not ends_sentence(text):
            return None
        context = self.context()
        turn = self._graded(text, context)
        self._ahead = (text, context, self.mood, turn)
        memory = self.memory()
        memory.messages.append(Message(role="trainee", content=text))
        kind = turn.ending.kind if turn.ending else None
        messages = build_messages(self.persona, memory, turn.mood_after, self.patient.prompt_style, kind)
        if _needed(messages) > self.patient.context_tokens:
            return None  # the turn will leave old exchanges out first (_fit_memory): another prompt
        return messages

    # -- coaching ------------------------------------------------------------------------------

    def coach(self, index: int, model: CoachModel, *, curated_coaching_first: bool = False) -> Iterator[TurnGrade]:
        """Tip, then better phrasing, for answered turn ``index``; each stage is kept on the turn.

        Coaches the reply against the patient line it answered (not the answer it got);
        ``curated_coaching_first``: the backend's capability (:func:`agent.coach.coach`).
        """
        turn = self.turns[index]
        for stage in coach_chain.coach(self.rubric, turn.trainee, self.context(index), turn.grade, model,
                                       situation=self.persona.situation, persona=self.persona,
                                       curated_coaching_first=curated_coaching_first):  # fmt: skip
            turn.grade = stage
            yield stage

    def coach_prefill(self, model: CoachModel) -> bool:
        """Have the coach model read the next tip prompt's known front (situation, patient line)."""
        if self.ending is not None:
            return False
        return model.prefill(coach_chain.tip_prefix_messages(self.context(), situation=self.persona.situation))

    # -- persistence ------------------------------------------------------------------------

    def add_played(self, turn: Turn) -> None:
        """Append a turn played earlier (resuming a stored session): verdicts and mood as they were
        then, since that is what the trainee saw. A turn without an answer is left for :meth:`retry`."""
        if self.pending:
            raise SessionError("the last turn has no answer yet: retry it before adding more")
        self.turns.append(turn)
        self.transcript.add("trainee", turn.trainee)
        if turn.patient is not None:
            kind = turn.ending.kind if turn.ending else None
            # Trim where the live session trimmed: before the answer was written, under its mood.
            self._fit_memory(turn.mood_after, kind)
            self._add_answer(turn.patient, turn.mood_after, kind)
            self.ending = turn.ending

    def summary(self) -> dict[str, object]:
        """The figures ``simulate --json`` prints, with the patient's lines."""
        return {
            "persona": self.persona.id,
            "anger": [m.anger for m in self.moods],
            "trust": [m.trust for m in self.moods],
            "outcome": self.ending.kind if self.ending else "ongoing",
            "patient": [self.persona.opening_line, *(t.patient or "" for t in self.turns)],
        }
