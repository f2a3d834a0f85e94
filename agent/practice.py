"""The app's controller: live practice sessions, written through to the store, coached in the background.

Why this layer exists between ``app.py`` and :mod:`agent.session`: the page needs more than the
turn pipeline. Every turn is saved *before* the model is called (so a dead model server loses
nothing) and completed after; a failed turn can be retried after the server restarts; a session
can be resumed from the database after an app restart, or branched from an earlier turn; and the
coach writes its tip after the patient answered, on the same model server, without ever delaying
the patient (:mod:`agent.coaching`). None of that involves Gradio, so it lives here and is tested
without a browser, through a fake model behind the model protocols.

A session lives in memory while it is active; the store is written through and read back only to
resume. :meth:`Practice.turn` yields :class:`TurnUpdate` snapshots (graded -> typing ... ->
answered, or ended), then :meth:`Practice.coaching` follows that turn's tip (tipped -> coached).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from pydantic import BaseModel

from agent import grader, personas, report
from agent import mood as moods
from agent.coach import curated_coaching, rubric_coaching
from agent.coaching import Coaching, CoachJob, Lane, Prefills, YieldingCoach
from agent.grades import TurnGrade
from agent.llm import Backend, LLMSettings
from agent.models import COACH_SLOT, PATIENT_SLOT, CoachModel, ModelUnavailable, PatientModel, ServedModel
from agent.mood import Mood
from agent.phrasings import load_phrasebook
from agent.session import Answered, Graded, Session, Spoken, Turn, TurnEvent, decide_ending, ends_sentence
from agent.simulate import SCRIPTED, ScriptRun, simulate
from agent.store import NewSession, SessionRecord, Store, StoreError, StoreUnavailable, TurnRecord

log = logging.getLogger(__name__)
Stage = Literal["ready", "graded", "typing", "answered", "tipped", "coached", "ended", "failed"]
# Sessions kept in memory; the least recently used idle one is let go (it resumes from the store).
MAX_LIVE = 64
# A reply longer than this is refused with a clear message (a spoken reply is rarely over 500).
MAX_REPLY_CHARS = 2_000


class TurnUpdate(BaseModel):
    """What the page shows after one stage of a turn: the session, its turns, the text streaming."""

    stage: Stage
    session: SessionRecord
    turns: list[TurnRecord]
    streaming: str | None = None
    error: str | None = None
    note: str | None = None
    coaching: bool = False

    @property
    def last(self) -> TurnRecord | None:
        return self.turns[-1] if self.turns else None

    def _moods(self) -> list[Mood]:
        """Moods the trainee has seen: answered turns, plus the turn in progress (not a failed one)."""
        seen = []
        for turn in self.turns:
            in_progress = turn is self.last and turn.status == "pending" and self.stage != "failed"
            if turn.mood_after and (turn.status == "complete" or in_progress):
                seen.append(turn.mood_after)
        return seen

    @property
    def mood(self) -> Mood | None:
        seen = self._moods()
        return seen[-1] if seen else self.session.initial_mood

    @property
    def mood_before(self) -> Mood | None:
        seen = self._moods()
        if len(seen) >= 2:
            return seen[-2]
        return self.session.initial_mood if seen else None


class ModelState(BaseModel):
    """What the page says about the model: preparing (with a fraction), ready, down, or failed."""

    state: Literal["idle", "preparing", "starting", "ready", "down", "error", "remote"]
    message: str
    progress: float | None = None


def describe_error(exc: BaseException) -> str:
    """One line a trainee can act on, for a model failure mid-turn."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if any(word in lowered for word in ("connect", "refused", "reset", "closed", "incomplete", "remote")):
        return "The model server stopped answering. Your words are saved; press Retry to restart it and try again."
    if "timeout" in lowered or "timed out" in lowered:
        return "The model took too long to answer. Your words are saved; press Retry."
    return f"The model failed ({text[:200]}). Your words are saved; press Retry."


def timed_out(exc: BaseException) -> bool:
    """Whether a model failure was a request the server took and never answered in time."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ModelUnavailable) and seen.timed_out:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class ModelSupervisor:
    """Prepares and supervises the embedded model server for the app, and reports progress.

    With a remote backend (OpenAI, Ollama, ...) or an explicit base URL there is nothing to
    supervise: :meth:`settings` returns them unchanged. With the embedded backend the server is
    started in the background at app start (assembling the 1 GB model the first time takes a
    while; the page shows how far it is) and :meth:`settings` calls ``ensure()`` before each turn,
    so a server that died is restarted by the next turn or retry.
    """

    def __init__(self, settings: LLMSettings, server: Any | None = None) -> None:
        self.base = settings
        self.server = server
        self._state = ModelState(state="idle", message="Model not started yet.")
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._hung = False
        # Turns and tips ask for settings from several threads: one of them restarts a hung or dead
        # server while the others wait, so none sends a request to a server between stop and start.
        self._restart_lock = threading.Lock()

    @property
    def supervised(self) -> bool:
        return self.server is not None or (self.base.backend is Backend.EMBEDDED and not self.base.base_url)

    def state(self) -> ModelState:
        if not self.supervised:
            where = self.base.base_url or self.base.backend.value
            return ModelState(state="remote", message=f"Model: {self.base.model or 'default'} at {where}.")
        if self._state.state == "preparing":
            fraction = self._assembly_fraction()
            if fraction is not None:
                return ModelState(state="preparing", message=f"Preparing the model: {fraction:.0%}", progress=fraction)
        process = self.server.process if self.server is not None else None
        if self._state.state == "ready" and process is not None and process.poll() is not None:
            return ModelState(state="down", message="The model server stopped; the next turn restarts it.")
        return self._state

    def _assembly_fraction(self) -> float | None:
        from agent import runtime

        spec = runtime.MODELS.get(self.base.model or "default")
        if spec is None or not spec.is_split:
            return None
        partial = runtime.cache_dir() / "models" / f"{spec.alias}.gguf.partial"
        try:
            return min(partial.stat().st_size / spec.size, 1.0)
        except OSError:
            return None

    def start_background(self) -> None:
        """Prepare and start the embedded server off the request path (idempotent)."""
        if not self.supervised:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._prepare, name="model-prepare", daemon=True)
            self._thread.start()

    def _prepare(self) -> None:
        from agent import learned, runtime, tokens
        from agent.rubrics import load_rubric

        try:
            # Load the grader's sentence encoder (~0.5 s, verified by sha256) and the token counter the
            # session trims the patient's history with now, not on the first turn.
            learned.component_for(load_rubric())
            tokens.encoding()
            if self.server is None:
                spec = runtime.MODELS.get(self.base.model or "default")
                if spec is not None:
                    self._state = ModelState(state="preparing", message="Preparing the model…", progress=0.0)
                    runtime.prepare(spec, progress=False)
                self._state = ModelState(state="starting", message="Starting the model server…")
                self.server = runtime.EmbeddedServer(model=self.base.model)
            else:
                self._state = ModelState(state="starting", message="Starting the model server…")
            started = time.monotonic()
            self.server.ensure()
            self._state = ModelState(
                state="ready", message=f"Model ready ({self.server.alias}, {time.monotonic() - started:.1f} s)."
            )
        except Exception as exc:  # the page must say why, not hang on "preparing"
            self._state = ModelState(state="error", message=f"The model could not start: {exc}")

    def hung(self) -> None:
        """A request to the running server timed out: the process lives (and may still answer
        /health) but does not answer; the next :meth:`settings` restarts it (embedded only)."""
        if self.supervised:
            self._hung = True

    def settings(self) -> LLMSettings:
        """Settings for the next model call; restarts a dead (or hung) embedded server first.

        A running server process is trusted without an HTTP health check (this is on the patient's
        critical path); one that died is restarted; one that hangs fails the request by its timeout.
        """
        if not self.supervised:
            return self.base
        thread = self._thread
        if thread is not None and thread.is_alive():
            # Still preparing or starting: the server's process exists before it listens, so a
            # request now would be refused (a turn sent during start-up failed at once).
            thread.join()
        if self.server is None:
            self._prepare()
        if self.server is None:
            raise RuntimeError(self._state.message)
        with self._restart_lock:
            if self._hung:  # it answered /health but not the last request: start a fresh one
                self._hung = False
                self.server.stop()
            process = self.server.process
            if process is None or process.poll() is not None:
                self.server.ensure()
        self._state = ModelState(state="ready", message=f"Model ready ({self.server.alias}).")
        return self.base.model_copy(update={"base_url": self.server.openai_base_url})


ENDINGS = {
    "resolved": "{name} accepted what you offered and calmed down.",
    "walked_out": "{name} walked out: the anger stayed too high for too long.",
    "hung_up": "{name} hung up: the anger stayed too high for too long.",
    "escalated": "A manager took over the conversation with {name}.",
}


@dataclass(eq=False)
class Live:
    """An active session: the pipeline's state, and the stored records it was written to."""

    session: Session
    record: SessionRecord
    turns: list[TurnRecord]
    lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: dict[int, CoachJob] = field(default_factory=dict)

    def replace(self, record: TurnRecord) -> None:
        for position, turn in enumerate(self.turns):
            if turn.id == record.id:
                self.turns[position] = record
                return


def turn_from_record(record: TurnRecord, persona: personas.Persona, session: Session) -> Turn:
    """A stored turn as the pipeline's :class:`Turn` (only on resume)."""
    grade = record.grade or grader.grade_fast(session.rubric, record.trainee_text, session.context())
    before = record.mood_before or session.mood
    after = record.mood_after or moods.update(before, grade.verdicts, persona, record.trainee_text)
    answered = record.status == "complete" and record.patient_reply is not None
    return Turn(trainee=record.trainee_text, grade=grade, mood_before=before, mood_after=after,
                ending=decide_ending(after, persona), patient=record.patient_reply if answered else None)  # fmt: skip


class Practice:
    """Start, play, coach, retry, branch, resume and end practice sessions; everything is stored.

    ``patient`` and ``coach`` are the models (protocols of :mod:`agent.models`); by default both
    are the configured server, each on its own slot of the embedded one. Tests pass a fake.
    """

    def __init__(
        self,
        store: Store,
        settings: LLMSettings | None = None,
        *,
        server: Any | None = None,
        personas_dir: Path | None = None,
        seed: int | None = None,
        patient: PatientModel | None = None,
        coach: CoachModel | None = None,
    ) -> None:
        self.store = store
        self.model = ModelSupervisor(settings or LLMSettings.from_env(), server=server)
        self.patient = patient or ServedModel(self.model.base, resolve=self.model.settings, slot=PATIENT_SLOT)
        self.coach = coach or ServedModel(self.model.base, resolve=self.model.settings, slot=COACH_SLOT)
        self.personas_dir = personas_dir
        self.seed = seed
        pinned = isinstance(self.patient, ServedModel) and self.patient.embedded and self.patient.slot is not None
        self.lane = Lane(patient_slots=1 if pinned else None)  # the embedded server: one patient slot
        self.coaching_worker = Coaching(self.lane)
        self.prefills = Prefills(self.lane)
        self._live: OrderedDict[str, Live] = OrderedDict()
        self._guard = threading.Lock()

    # -- personas -----------------------------------------------------------------------------

    def personas(self) -> list[personas.Persona]:
        return personas.load_personas(self.personas_dir)

    def persona(self, persona_id: str) -> personas.Persona:
        """A persona by id only: ids from the page or the API never name a file."""
        return personas.load_persona(persona_id, self.personas_dir)

    # -- live sessions --------------------------------------------------------------------------

    def _model_ready(self) -> bool:
        """False while the embedded server is still being prepared: only a turn waits for it."""
        served = isinstance(self.patient, ServedModel) or isinstance(self.coach, ServedModel)
        return not (served and self.model.supervised and self.model.server is None)

    def _new_session(self, persona: personas.Persona) -> Session:
        return Session(persona, self.patient, seed=self.seed)

    def _remember(self, session_id: str, live: Live) -> Live:
        with self._guard:
            self._live[session_id] = live
            self._live.move_to_end(session_id)
            for old_id in list(self._live)[:-MAX_LIVE]:
                if not self._live[old_id].lock.locked():
                    del self._live[old_id]
        return live

    def live(self, session_id: str) -> Live:
        """The session in memory; rebuilt from the store only when it is not (resume, restart)."""
        with self._guard:
            found = self._live.get(session_id)
            if found is not None:
                self._live.move_to_end(session_id)
                return found
        record = self.store.get_session(session_id)
        stored = self.store.turns(session_id)
        persona = self.persona(record.persona_id)
        session = self._new_session(persona)
        for turn in stored:
            session.add_played(turn_from_record(turn, persona, session))
        return self._remember(session_id, Live(session=session, record=record, turns=stored))

    def check_owner(self, session_id: str, owner: str | None) -> None:
        """Refuse a session that is not ``owner``'s as if it did not exist (a guessed id confirms
        nothing). ``owner`` None is a trainer, who may open every session."""
        with self._guard:
            live = self._live.get(session_id)
        record = live.record if live is not None else self.store.get_session(session_id)
        if owner is not None and record.owner != owner:
            raise StoreError(f"no session {session_id!r}")

    @contextmanager
    def _exclusive(self, live: Live) -> Iterator[None]:
        """One turn at a time per session; a second request gets a clear error instead of a hang."""
        if not live.lock.acquire(timeout=5):
            raise StoreError("this session is still answering the previous reply")
        try:
            yield
        finally:
            live.lock.release()

    def update(self, live: Live, stage: Stage, **extra: Any) -> TurnUpdate:
        return TurnUpdate(stage=stage, session=live.record, turns=list(live.turns), **extra)

    def snapshot(self, session_id: str, stage: Stage = "ready") -> TurnUpdate:
        live = self.live(session_id)
        return self.update(live, stage, coaching=self._coaching_pending(live))

    # -- warm-ups ------------------------------------------------------------------------------

    def _prefill_patient(self, live: Live, *, wait: bool = False) -> None:
        """While the trainee reads the opening line, the patient model reads the persona's prompt:
        queued like every other read of the patient's slot (:meth:`_queue_read`).

        ``wait``: read it before returning (an API client sends its first reply at once, which
        would otherwise wait for this read and then read its own line: a cold first turn)."""
        if not wait:
            if self._model_ready():
                self._queue_read(live, live.session.front_prefill, at_once=True)
            return
        try:
            with self.lane.patient():
                live.session.prefill()
        except Exception as exc:  # only an optimisation: the turn reads the whole prompt then
            log.info("patient prefill skipped: %s", exc)

    def prefill_reply(self, session_id: str, text: str) -> bool:
        """The trainee is typing ``text``: have the patient's slot read it when the model is free
        (debounced, :class:`agent.coaching.Prefills`), so Send reads only the last words. False:
        nothing will be read (the session is over, a turn is being played, or no model yet)."""
        text = (text or "")[:MAX_REPLY_CHARS]
        live = self.live(session_id)
        if not self._model_ready() or live.record.ended or live.session.ending is not None or not text.strip():
            return False

        # Not while a turn is being played (lock_wait 0): that turn reads the reply itself.
        self._queue_read(live, lambda: live.session.reply_prefill(text), at_once=ends_sentence(text))
        return True

    def _queue_read(
        self, live: Live, prompt: Callable[[], list[BaseMessage] | None], *, lock_wait: float = 0.0,
        at_once: bool = False,
    ) -> None:  # fmt: skip
        """Queue a read into the patient's slot (:class:`agent.coaching.Prefills`, one per session,
        never beside an answer or a tip). ``prompt`` is built under the session's lock (given up
        after ``lock_wait`` seconds); the model reads it after the lock is released, so a Send
        meanwhile grades at once (or reuses the grade made here) and its request waits in the
        server behind this read of its own front."""

        def read() -> None:
            if not live.lock.acquire(timeout=lock_wait):
                return
            try:
                messages = prompt()
            finally:
                live.lock.release()
            if messages is not None:
                live.session.patient.prefill(messages)

        self.prefills.offer(live.record.id, read, at_once=at_once)

    def _warm_coach(self, live: Live) -> None:
        """Have the coach's slot read the next tip prompt's known front while the trainee types;
        not when the persona's curated coaching is shown first, as most tips then need no model
        (the few that do read their whole prompt, about a second more)."""
        curated = self.model.base.capabilities.curated_coaching_first and load_phrasebook(live.session.persona.id)
        if self._model_ready() and live.session.ending is None and not curated:
            coach = YieldingCoach(self.coach, self.lane)
            self.coaching_worker.warm(lambda: live.session.coach_prefill(coach))

    # -- sessions -----------------------------------------------------------------------------

    def start(
        self, persona_id: str, trainee_name: str | None = None, owner: str | None = None, *, read: bool = False
    ) -> TurnUpdate:
        """A new session; ``owner`` (a browser's key, or "api") is who may see and continue it.

        The patient model reads the persona's prompt now, in the background while a trainee reads
        the opening line; with ``read`` before returning (the API: its first turn is then as quick
        as the others, rather than waiting for that read and then reading its own line)."""
        persona = self.persona(persona_id)
        session = self._new_session(persona)
        record = self.store.create_session(
            NewSession(
                persona_id=persona.id,
                rubric_id=persona.rubric,
                trainee_name=trainee_name,
                backend=self.model.base.backend.value,
                model=self.model.base.model,
                opening=persona.opening_line,
                initial_mood=session.initial_mood,
                owner=owner,
            )
        )
        live = self._remember(record.id, Live(session=session, record=record, turns=[]))
        self._prefill_patient(live, wait=read)
        self._warm_coach(live)
        return self.update(live, "ready")

    def turn(self, session_id: str, text: str) -> Iterator[TurnUpdate]:
        """Play one reply: verdicts and mood first, then the patient's answer as it streams."""
        text = (text or "").strip()
        if not text:
            raise StoreError("say something to the patient first")
        if len(text) > MAX_REPLY_CHARS:
            raise StoreError(
                f"your reply is too long ({len(text):,} characters; the limit is {MAX_REPLY_CHARS:,}): say it shorter"
            )
        live = self.live(session_id)
        self.prefills.cancel(session_id)  # the turn reads the whole reply now
        with self._exclusive(live):
            if live.record.ended:
                raise StoreError(f"session {session_id} has ended")
            if live.session.ending is not None:  # over, but the database refused the end: store it now
                self._end(live, **self._ending_of(live))
                yield self.update(live, "ended", note="The conversation had already ended; your reply was not sent.")
                return
            if live.session.pending:
                raise StoreError("your last reply never got an answer: press Retry first")
            events = live.session.stream_turn(text)
            graded = next(events)
            assert isinstance(graded, Graded)
            turn = graded.turn
            try:
                record = self.store.begin_turn(session_id, turn.trainee, mood_before=turn.mood_before,
                                               mood_after=turn.mood_after, grade=turn.grade)  # fmt: skip
            except BaseException as exc:
                # Not saved, so not played: the session in memory forgets it too, and Send works again.
                events.close()
                live.session.discard_unanswered()
                if isinstance(exc, StoreUnavailable):
                    raise StoreUnavailable(f"{exc.why}; your reply was not saved and the patient did not "
                                           "hear it: send it again in a moment") from exc  # fmt: skip
                raise
            live.turns.append(record)
            yield self.update(live, "graded")
            yield from self._play(live, events, record)

    def retry(self, session_id: str) -> Iterator[TurnUpdate]:
        """Replay the last turn that failed (or was cut off by a restart) with the same words."""
        live = self.live(session_id)
        with self._exclusive(live):
            if live.record.ended:
                raise StoreError(f"session {session_id} has ended")
            pending = self.store.open_turn(session_id)
            if pending is None or not live.session.pending:
                raise StoreError("there is no failed turn to retry")
            record = self.store.retry_turn(pending.id)
            live.replace(record)
            yield self.update(live, "graded", note="Retrying…")
            yield from self._play(live, live.session.retry(), record)

    def _play(self, live: Live, events: Iterator[TurnEvent], record: TurnRecord) -> Iterator[TurnUpdate]:
        reply = ""
        answered: Answered | None = None
        try:
            with self.lane.patient():
                for event in events:
                    if isinstance(event, Spoken):
                        reply += event.text
                        yield self.update(live, "typing", streaming=reply)
                    elif isinstance(event, Answered):
                        answered = event
        except GeneratorExit:  # the page went away mid-turn: say so, so Retry is offered on return
            events.close()
            self._fail(live, record, "The page closed before the patient answered; press Retry.")
            raise
        except Exception as exc:  # the model failed: the words are saved, the page offers a retry
            message = describe_error(exc)
            if timed_out(exc):
                self.model.hung()
            self._fail(live, record, message)
            yield self.update(live, "failed", error=message)
            return
        assert answered is not None
        turn = answered.turn
        try:
            live.replace(self.store.complete_turn(record.id, patient_reply=turn.patient or "",
                                                  mood_after=turn.mood_after, grade=turn.grade))  # fmt: skip
        except StoreUnavailable as exc:  # the answer is not kept: Retry asks the patient again
            live.session.unanswer()
            message = f"The patient's answer could not be saved: {exc.why}. Your words are saved; press Retry."
            self._fail(live, record, message)
            yield self.update(live, "failed", error=message)
            return
        note = None
        if answered.trimmed:
            note = (f"The patient now remembers the opening and the last exchanges: {answered.trimmed} earlier "
                    "ones no longer fit the model's memory.")  # fmt: skip
        live.jobs[answered.index] = self.coaching_worker.submit(self._coach_job(live, answered.index, record.id))
        if turn.ending is not None:
            try:
                self._end(live, **self._ending_of(live))
            except StoreUnavailable as exc:  # the answer is kept; End session (or Send) stores the end later
                note = (f"The conversation is over and the patient's answer is saved, but the scorecard could not "
                        f"be: {exc.why}. Press End session to save it.")  # fmt: skip
                yield self.update(live, "answered", note=note, coaching=True)
                return
            yield self.update(live, "ended", note=note, coaching=True)
            return
        answered_view = self.update(live, "answered", note=note, coaching=True)
        self._read_front(live)  # after the view is taken: it shows the turn as answered, tip to come
        yield answered_view

    def _read_front(self, live: Live) -> None:
        """After an answer, have the patient's slot read the next prompt's front while the trainee
        reads: the answer is cached already, but its note (what was offered, what is still wanted)
        is not, and a pasted reply would read it after Send. Queued like a typed reply
        (:class:`agent.coaching.Prefills`, never beside an answer or a tip); a reply typed
        meanwhile replaces it and reads the same front anyway."""
        if self._model_ready():  # lock_wait: the turn that answered may still be closing
            self._queue_read(live, live.session.front_prefill, lock_wait=1.0)

    def _fail(self, live: Live, record: TurnRecord, message: str) -> None:
        """Mark the turn failed with ``message``; if the database cannot take even that, the turn
        stays pending there (a restart offers Retry for it too) and failed in memory."""
        try:
            live.replace(self.store.fail_turn(record.id, message))
        except StoreError as exc:
            log.warning("turn %s could not be marked failed: %s", record.id, exc)
            live.replace(record.model_copy(update={"status": "failed", "error": message}))

    # -- coaching ------------------------------------------------------------------------------

    def _coach_job(self, live: Live, index: int, record_id: int) -> CoachJob:
        session = live.session

        def publish(stage: TurnGrade) -> None:
            live.replace(self.store.set_grade(record_id, stage))

        def drop(why: str) -> TurnGrade:
            turn = session.turns[index]
            turn.grade = rubric_coaching(session.rubric, turn.grade, why, session.persona, session.context(index))
            return turn.grade

        curated_first = self.model.base.capabilities.curated_coaching_first
        grade = session.turns[index].grade
        needs_model = not (
            curated_first and curated_coaching(session.rubric, grade, session.persona, session.context(index))
        )

        def run() -> Iterator[TurnGrade]:
            yield from session.coach(index, YieldingCoach(self.coach, self.lane), curated_coaching_first=curated_first)
            self._warm_coach(live)

        return CoachJob(key=(live.record.id, index), run=run, publish=publish, drop=drop, needs_model=needs_model)

    def _coaching_pending(self, live: Live) -> bool:
        return any(not job.done for job in live.jobs.values())

    def coaching(self, session_id: str, index: int | None = None) -> Iterator[TurnUpdate]:
        """Follow the tip for turn ``index`` (default: the last): ``tipped``, then ``coached``."""
        live = self.live(session_id)
        index = len(live.session.turns) - 1 if index is None else index
        job = live.jobs.get(index)
        if job is None:
            return
        for stage in job.stages():
            final = stage.coached
            yield self.update(
                live, "coached" if final else "tipped", coaching=not final or self._coaching_pending(live)
            )

    def wait_for_coaching(self, session_id: str, timeout: float = 120.0) -> None:
        """Block until every queued tip of this session is written (the API and the terminal)."""
        live = self.live(session_id)
        deadline = time.monotonic() + timeout
        for job in list(live.jobs.values()):
            for _ in job.stages(timeout=max(deadline - time.monotonic(), 0.1)):
                pass

    # -- branches and endings --------------------------------------------------------------------

    def branch(self, session_id: str, index: int) -> TurnUpdate:
        """Retry from trainee turn ``index``: the conversation continues from just before it."""
        live = self.live(session_id)
        with self._exclusive(live):
            self.store.branch_from(session_id, index)
            with self._guard:
                self._live.pop(session_id, None)  # the new path is read back from the store
        return self.snapshot(session_id)

    def end(
        self, session_id: str, *, outcome: str | None = "ended_by_trainee", reason: str | None = None
    ) -> TurnUpdate:
        live = self.live(session_id)
        with self._exclusive(live):
            if not live.record.ended:
                over = live.session.ending is not None  # the patient ended it first: that is the outcome
                self._end(live, **(self._ending_of(live) if over else {"outcome": outcome, "reason": reason}))
        return self.update(live, "ended")

    @staticmethod
    def _ending_of(live: Live) -> dict[str, str | None]:
        """The outcome and reason of a conversation the patient ended (resolved, walked out, ...)."""
        ending = live.session.ending
        assert ending is not None
        reason = ENDINGS[ending.kind].format(name=live.session.persona.address_as)
        return {"outcome": ending.kind, "reason": f"{reason} ({ending.reason})"}

    def _end(self, live: Live, *, outcome: str | None, reason: str | None) -> None:
        card = self.scorecard(live, outcome=outcome, reason=reason)
        live.record = self.store.end_session(live.record.id, outcome=outcome, reason=reason, scorecard=card)

    def scorecard(self, live: Live, *, outcome: str | None, reason: str | None) -> report.Scorecard:
        """Per-step coverage over the answered turns, the session-level steps, and the mood path."""
        session = live.session
        answered = [t for t in session.turns if t.patient is not None]
        points = [report.MoodPoint(turn=number, anger=mood.anger / 10, trust=mood.trust / 10)
                  for number, mood in enumerate([session.initial_mood, *(t.mood_after for t in answered)])]  # fmt: skip
        return report.build_scorecard(session.rubric, [t.grade for t in answered], session.transcript,
                                      session.context(), outcome=outcome, reason=reason, mood=points)  # fmt: skip

    # -- trainer --------------------------------------------------------------------------------

    def test_run(self, persona: personas.Persona) -> Iterator[dict[str, ScriptRun]]:
        """Play the scripted good, bad and formula trainee (:func:`agent.simulate.simulate`) through
        the same pipeline as a practice session, so a trainer sees at once whether the persona calms
        for the documented steps, boils over for arguing, and can be gamed with magic phrases. Yields
        the runs so far after each script, so the page can plot the first while the next plays."""
        runs: dict[str, ScriptRun] = {}
        for name in SCRIPTED:
            with self.lane.patient():
                session = simulate(persona, name, persona.thresholds.max_turns, self.patient)
            runs[name] = ScriptRun.of(session)
            yield dict(runs)
