"""The app's controller: practice sessions on top of the turn loop, the store and the model server.

Why this layer exists between ``app.py`` and ``agent.session``: the web page needs more than the
turn loop. Every turn must be saved *before* the model is called (so a dead model server loses
nothing), a failed turn must be retryable after the server restarts, a session must be resumable
from the database after an app restart, and a trainee may branch from an earlier turn. None of
that involves Gradio, so it lives here and is tested without a browser.

A turn yields :class:`TurnUpdate` snapshots as it goes (saved -> patient typing -> answered ->
graded -> maybe ended) so the page can stream the patient's reply and fill the feedback panel in
when the grade arrives.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from agent import grader, personas, ui
from agent import mood as moods
from agent.llm import Backend, LLMSettings
from agent.session import Session
from agent.simulate import SCRIPTED, simulate
from agent.store import NewSession, SessionRecord, Store, StoreError, TurnRecord

log = logging.getLogger(__name__)
Stage = Literal["ready", "saved", "typing", "answered", "tipped", "graded", "ended", "failed"]


class TurnUpdate(BaseModel):
    """A snapshot of the session for the page after each stage of a turn."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stage: Stage
    session: SessionRecord
    turns: list[TurnRecord]
    streaming: str | None = None
    error: str | None = None

    @property
    def last(self) -> TurnRecord | None:
        return self.turns[-1] if self.turns else None

    def _moods(self) -> list[dict[str, Any]]:
        """Moods the trainee has seen: answered turns, plus the turn in progress (not a failed one)."""
        seen = []
        for turn in self.turns:
            in_progress = turn is self.last and turn.status == "pending" and self.stage != "failed"
            if turn.mood_after and (turn.status == "complete" or in_progress):
                seen.append(turn.mood_after)
        return seen

    @property
    def mood(self) -> dict[str, Any] | None:
        seen = self._moods()
        return seen[-1] if seen else self.session.initial_mood

    @property
    def mood_before(self) -> dict[str, Any] | None:
        seen = self._moods()
        if len(seen) >= 2:
            return seen[-2]
        return self.session.initial_mood if seen else None


class ModelState(BaseModel):
    """What the page says about the model: preparing (with a fraction), ready, down, or failed."""

    state: Literal["idle", "preparing", "starting", "ready", "down", "error", "remote"]
    message: str
    progress: float | None = None


def check_persona_id(persona_id: str | None) -> str:
    """``persona_id`` if it is a bare id (what the page and the API may send), else PersonaError."""
    if not re.fullmatch(personas.ID_PATTERN.strip("^$"), persona_id or ""):
        raise personas.PersonaError([f"{persona_id!r}: not a persona id (lowercase letters, digits, - and _)"])
    return persona_id


def describe_error(exc: BaseException) -> str:
    """One line a trainee can act on, for a model failure mid-turn."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if any(word in lowered for word in ("connect", "refused", "reset", "closed", "incomplete", "remote")):
        return "The model server stopped answering. Your words are saved; press Retry to restart it and try again."
    if "timeout" in lowered or "timed out" in lowered:
        return "The model took too long to answer. Your words are saved; press Retry."
    return f"The model failed ({text[:200]}). Your words are saved; press Retry."


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
        from agent import learned, runtime
        from agent.rubrics import load_rubric

        try:
            # Load the grader's sentence encoder now (~0.5 s, verified by sha256), not on the first turn.
            learned.component_for(load_rubric())
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

    def settings(self) -> LLMSettings:
        """Settings for the next model call; restarts a dead embedded server first."""
        if not self.supervised:
            return self.base
        if self.server is None:
            if self._thread is not None:
                self._thread.join()
            if self.server is None:
                self._prepare()
        if self.server is None:
            raise RuntimeError(self._state.message)
        self.server.ensure()
        self._state = ModelState(state="ready", message=f"Model ready ({self.server.alias}).")
        return self.base.model_copy(update={"base_url": self.server.openai_base_url})


ENDINGS = {
    "resolved": "{name} accepted what you offered and calmed down.",
    "walked_out": "{name} walked out: the anger stayed too high for too long.",
    "hung_up": "{name} hung up: the anger stayed too high for too long.",
    "escalated": "A manager took over the conversation with {name}.",
}


class Practice:
    """Start, play, retry, branch, resume and end practice sessions; everything goes to the store.

    The turn loop follows design.md: checks (milliseconds) -> mood update -> the patient's reply
    streamed -> the model-written tip, then the better phrasing. State between turns is *only*
    what the store holds (transcript, last mood), so a session continues the same way after an
    app restart, after a failed turn, or from an earlier turn on a new branch.
    """

    def __init__(
        self,
        store: Store,
        settings: LLMSettings | None = None,
        *,
        server: Any | None = None,
        personas_dir: Path | None = None,
        seed: int | None = None,
    ) -> None:
        self.store = store
        self.model = ModelSupervisor(settings or LLMSettings.from_env(), server=server)
        self.personas_dir = personas_dir
        self.seed = seed
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._warming: threading.Thread | None = None

    # -- personas and rubric ------------------------------------------------------------------

    def personas(self) -> list[personas.Persona]:
        return personas.load_personas(self.personas_dir)

    def persona(self, persona_id: str) -> personas.Persona:
        """A persona by id only. ``load_persona`` also takes file paths (handy on the command line);
        ids from the page or the API must never name a file outside the personas folder."""
        return personas.load_persona(check_persona_id(persona_id), self.personas_dir)

    # -- sessions -----------------------------------------------------------------------------

    @contextmanager
    def _exclusive(self, session_id: str) -> Iterator[None]:
        """One turn at a time per session; a second request gets a clear error instead of a hang."""
        with self._guard:
            lock = self._locks.setdefault(session_id, threading.Lock())
        if not lock.acquire(timeout=5):
            raise StoreError("this session is still answering the previous reply")
        try:
            yield
        finally:
            lock.release()

    def _warm_grader(self, live: Session) -> None:
        """While the trainee reads and types, let the local model read the next tip prompt's
        known front (:meth:`Session.warm_grader`), so the tip comes sooner after "send".

        In the background and at most one at a time; it never delays or fails a turn.
        """
        if not self.model.base.capabilities.warm_prompt_cache or live.ending is not None:
            return
        if self.model.supervised and self.model.server is None:
            return  # still being prepared: only a turn may wait for (or start) it
        if self._warming is not None and self._warming.is_alive():
            return

        def warm() -> None:
            try:
                live.warm_grader(self.model.settings())
            except Exception as exc:  # the model is not ready: the tip will read the whole prompt
                log.info("grader warm-up skipped: %s", exc)

        self._warming = threading.Thread(target=warm, name="grader-warm-up", daemon=True)
        self._warming.start()

    def snapshot(self, session_id: str, stage: Stage = "ready", **extra: Any) -> TurnUpdate:
        return TurnUpdate(
            stage=stage, session=self.store.get_session(session_id), turns=self.store.turns(session_id), **extra
        )

    def start(self, persona_id: str, trainee_name: str | None = None) -> TurnUpdate:
        persona = self.persona(persona_id)
        record = self.store.create_session(
            NewSession(
                persona_id=persona.id,
                rubric_id=persona.rubric,
                trainee_name=trainee_name,
                backend=self.model.base.backend.value,
                model=self.model.base.model,
                opening=persona.opening_line,
                initial_mood=moods.initial(persona),
            )
        )
        # A new session is the persona's opening line alone: no need to rebuild it from the store.
        self._warm_grader(Session(persona, seed=self.seed, grade_with_llm=True))
        return self.snapshot(record.id)

    def _current_mood(self, session_id: str) -> moods.Mood:
        """The mood the next turn starts from: the last answered turn's, else the persona's start."""
        answered = [t for t in self.store.turns(session_id) if t.status == "complete" and t.mood_after]
        data = answered[-1].mood_after if answered else self.store.get_session(session_id).initial_mood
        return moods.Mood.model_validate(data)

    def turn(self, session_id: str, text: str) -> Iterator[TurnUpdate]:
        text = (text or "").strip()
        if not text:
            raise StoreError("say something to the patient first")
        with self._exclusive(session_id):
            turn = self.store.begin_turn(session_id, text, mood_before=self._current_mood(session_id))
            yield self.snapshot(session_id, "saved")
            yield from self._play(session_id, turn)

    def retry(self, session_id: str) -> Iterator[TurnUpdate]:
        """Replay the last turn that failed (or was cut off by a restart) with the same words."""
        with self._exclusive(session_id):
            pending = self.store.open_turn(session_id)
            if pending is None:
                raise StoreError("there is no failed turn to retry")
            turn = self.store.retry_turn(pending.id)
            yield self.snapshot(session_id, "saved")
            yield from self._play(session_id, turn)

    def branch(self, session_id: str, index: int) -> TurnUpdate:
        """Retry from trainee turn ``index``: the conversation continues from just before it."""
        with self._exclusive(session_id):
            self.store.branch_from(session_id, index)
            return self.snapshot(session_id)

    def _session(self, session_id: str) -> Session:
        """The turn loop rebuilt from the store's answered turns on the active branch.

        Rebuilding every turn (milliseconds: checks are pattern matches) means the store is the
        only state: an app restart, a failed turn or a branch all continue the same way.
        """
        record = self.store.get_session(session_id)
        answered = [t for t in self.store.turns(session_id) if t.status == "complete"]
        return Session.restore(self.persona(record.persona_id), answered, seed=self.seed, grade_with_llm=True)

    def _play(self, session_id: str, turn: TurnRecord) -> Iterator[TurnUpdate]:
        live = self._session(session_id)
        reply = ""
        graded = False
        try:
            settings = self.model.settings()
            for event in live.stream_turn(turn.trainee_text, settings):
                if event.kind == "checked":
                    # The mood moves as soon as the checks have read the reply, before the patient speaks.
                    self.store.set_mood_after(turn.id, event.mood)
                    yield self.snapshot(session_id, "saved")
                elif event.kind == "delta":
                    reply += event.text
                    yield self.snapshot(session_id, "typing", streaming=reply)
                elif event.kind == "answered":
                    self.store.complete_turn(turn.id, patient_reply=event.text, mood_after=event.mood,
                                             grade=event.grade)  # fmt: skip
                    yield self.snapshot(session_id, "answered")
                elif event.kind == "tipped":
                    self.store.set_grade(turn.id, event.grade)
                    self.store.set_mood_after(turn.id, event.mood)
                    yield self.snapshot(session_id, "tipped")
                elif event.kind == "graded":
                    self.store.set_grade(turn.id, event.grade)
                    self.store.set_mood_after(turn.id, event.mood)
                    graded = True  # shown below, together with the ending if one follows at once
                elif event.kind == "ended" and event.ending is not None:
                    reason = ENDINGS[event.ending.kind].format(name=live.persona.address_as)
                    yield self.end(session_id, outcome=event.ending.kind, reason=f"{reason} ({event.ending.reason})")
                    return
            if graded:
                yield self.snapshot(session_id, "graded")
            self._warm_grader(live)
        except Exception as exc:  # the model failed: the words are saved, the page offers a retry
            message = describe_error(exc)
            if self.store.get_turn(turn.id).status != "complete":
                self.store.fail_turn(turn.id, message)
                yield self.snapshot(session_id, "failed", error=message)
            else:  # the patient answered; only the tip failed
                yield self.snapshot(session_id, "graded", error=message)

    def end(
        self, session_id: str, *, outcome: str | None = "ended_by_trainee", reason: str | None = None
    ) -> TurnUpdate:
        record = self.store.get_session(session_id)
        if record.ended:
            return self.snapshot(session_id, "ended")
        scorecard = self.scorecard(session_id, outcome=outcome, reason=reason)
        self.store.end_session(session_id, outcome=outcome, reason=reason, scorecard=scorecard)
        return self.snapshot(session_id, "ended")

    def scorecard(self, session_id: str, *, outcome: str | None, reason: str | None) -> dict[str, Any]:
        """Per-step rates over the answered turns, the session-level steps, and the mood path."""
        record = self.store.get_session(session_id)
        turns = [t for t in self.store.turns(session_id) if t.status == "complete"]
        rates = ui.step_rates(turns)
        score = sum(rates.values()) / len(rates) if rates else None
        try:
            live = self._session(session_id)
            grades = [grader.TurnGrade.model_validate(t.grade) for t in turns if t.grade]
            complete = grades if len(grades) == len(turns) else None
            verdicts = grader.grade_session(live.rubric, live.transcript, live.context(), complete)
            session_steps: dict[str, Any] = {k: v.model_dump(mode="json") for k, v in verdicts.items()}
        except Exception as exc:  # a scorecard without session steps beats no scorecard
            session_steps = {"error": f"{type(exc).__name__}: {exc}"}
        return {
            "score": score,
            "steps": rates,
            "session_steps": session_steps,
            "turns": len(turns),
            "outcome": outcome,
            "reason": reason,
            "mood": [[n, a, t] for n, a, t in ui.mood_trajectory(record, turns)],
        }

    # -- trainer --------------------------------------------------------------------------------

    def test_run(self, persona: personas.Persona) -> Iterator[dict[str, dict[str, Any]]]:
        """Play the scripted good and bad trainee (:func:`agent.simulate.simulate`) with the model.

        Yields the runs so far after each script, so the page can plot the first one while the
        second plays.
        """
        settings = self.model.settings()
        runs: dict[str, dict[str, Any]] = {}
        for name in SCRIPTED:
            session = simulate(persona, name, persona.thresholds.max_turns, settings)
            runs[name] = {
                "trajectory": [(i, m.anger / 10, m.trust / 10) for i, m in enumerate(session.moods)],
                "outcome": session.ending.kind if session.ending else None,
                "reason": session.ending.reason if session.ending else None,
                "turns": len(session.turns),
                "last_line": session.transcript.messages[-1].content if session.transcript.messages else "",
            }
            yield dict(runs)
