"""Coaching off the critical path: the patient always goes first on the one model server.

Why: on a laptop one llama.cpp server on two cores serves both the patient and the coach, and
running both at once halves the speed of each. The trainee waits for the patient, not for the
tip. So the controller plays the patient's answer under :meth:`Lane.patient`, and a single
background worker (:class:`Coaching`) writes tips only while no patient answer is being written.
A coach request that is running when the patient needs the model is stopped between two chunks
(the HTTP stream is closed, so the server stops generating) and queued again to be finished
later; a turn whose tip waited too long behind newer turns gets the rubric's own advice instead,
so a tip is finished later or dropped, and never blocks a reply.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from langchain_core.messages import BaseMessage
from pydantic import BaseModel

from agent.grades import TurnGrade
from agent.models import CoachModel, Preempted

log = logging.getLogger(__name__)
# Turns whose tips may wait; an older one is dropped (the rubric's advice) when more queue up.
MAX_WAITING = 6
# A tip stopped this many times for the patient is dropped rather than started again.
MAX_PREEMPTIONS = 2


class Lane:
    """Who may use the model server now: patient answers first, coaching when none is running."""

    def __init__(self, patient_slots: int | None = None) -> None:
        self._changed = threading.Condition()
        self._patients = 0
        self._tips = 0
        # The server's slots for patient answers (the embedded server pins them all to one). Answers
        # beyond that wait here, where no request timeout runs, and not in the server's queue, where
        # the HTTP client's timeout counts the wait: 8 trainees at once on the embedded model timed
        # out there (bench/load.py). None: the server queues (a remote one with its own slots).
        self._slots = threading.BoundedSemaphore(patient_slots) if patient_slots else None

    @contextmanager
    def patient(self) -> Iterator[None]:
        """Hold while the patient's answer is being written; a running tip stops at its next chunk.
        Waits for a free patient slot first, if the server has few."""
        with self._changed:
            self._patients += 1
        try:
            if self._slots is None:
                yield
            else:
                with self._slots:
                    yield
        finally:
            with self._changed:
                self._patients -= 1
                self._changed.notify_all()

    @property
    def patient_busy(self) -> bool:
        return self._patients > 0

    def wait_until_free(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._patients == 0)

    @contextmanager
    def tip(self) -> Iterator[None]:
        """Hold while a tip is being written (a reply prefill does not start meanwhile)."""
        with self._changed:
            self._tips += 1
        try:
            yield
        finally:
            with self._changed:
                self._tips -= 1
                self._changed.notify_all()

    @contextmanager
    def spare(self) -> Iterator[bool]:
        """Hold the patient's slot for a prefill only if nobody needs the model now: no patient
        answer running or waiting, no tip being written. Yields False (holding nothing) otherwise,
        so a prefill never delays an answer or a tip by queueing in front of it; while it runs, a
        tip waits for it as for a patient (an answer that arrives meanwhile waits for the few
        tokens it reads, which are the answer's own when it is the same trainee's)."""
        with self._changed:
            free = self._patients == 0 and self._tips == 0
            if free:
                self._patients += 1
        if not free:
            yield False
            return
        acquired = self._slots is None or self._slots.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired and self._slots is not None:
                self._slots.release()
            with self._changed:
                self._patients -= 1
                self._changed.notify_all()


class YieldingCoach:
    """A :class:`CoachModel` that stops (raises :class:`Preempted`) when the patient needs the model."""

    def __init__(self, model: CoachModel, lane: Lane) -> None:
        self.model = model
        self.lane = lane

    def stream_json(
        self, schema: type[BaseModel], messages: Sequence[BaseMessage], *, max_tokens: int
    ) -> Iterator[str]:
        stream = self.model.stream_json(schema, messages, max_tokens=max_tokens)
        try:
            for text in stream:
                if self.lane.patient_busy:
                    raise Preempted("the patient needs the model")
                yield text
        finally:
            stream.close()  # closes the HTTP stream: the server stops writing this tip

    def prefill(self, messages: Sequence[BaseMessage]) -> bool:
        return False if self.lane.patient_busy else self.model.prefill(messages)


@dataclass(eq=False)
class CoachJob:
    """Coaching for one answered turn; pages wait on :meth:`stages` for what it writes."""

    key: tuple[str, int]  # (session id, turn index)
    run: Callable[[], Iterator[TurnGrade]]
    publish: Callable[[TurnGrade], None]
    drop: Callable[[str], TurnGrade]
    # False: the coaching shown needs no model (the persona's curated coaching), so it is written at
    # once rather than queued behind other trainees' patient answers.
    needs_model: bool = True
    preemptions: int = 0
    done: bool = False
    latest: TurnGrade | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def _post(self, stage: TurnGrade, *, final: bool = False) -> None:
        with self._changed:
            self.latest = stage
            self.done = self.done or final or stage.coached
            self._changed.notify_all()

    def stages(self, timeout: float = 300.0) -> Iterator[TurnGrade]:
        """Each new stage (tip, then the finished grade) as it is published; ends when done."""
        seen: TurnGrade | None = None
        while True:
            with self._changed:
                self._changed.wait_for(lambda seen=seen: self.latest is not seen or self.done, timeout=timeout)
                latest, done = self.latest, self.done
            if latest is seen and not done:
                return  # timed out: the page keeps what it has
            if latest is not seen and latest is not None:
                seen = latest
                yield latest
            if done:
                return


class Coaching:
    """One background worker that coaches answered turns when the patient does not need the model."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self._queue: deque[CoachJob] = deque()
        self._warmups: deque[Callable[[], object]] = deque(maxlen=1)
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False  # the worker is running a tip or a warm-up now

    def submit(self, job: CoachJob) -> CoachJob:
        """Queue ``job`` for the worker; one that needs no model is done now, in the caller's thread
        (under load the worker waits for the patients, and such a tip would wait, or be dropped,
        for nothing)."""
        if not job.needs_model:
            self._coach(job)
            return job
        with self._wake:
            self._queue.append(job)
            while len(self._queue) > MAX_WAITING:
                self._drop(self._queue.popleft(), "dropped: newer turns were waiting for their tips")
            self._wake.notify_all()
        self._ensure_thread()
        return job

    def warm(self, task: Callable[[], object]) -> None:
        """Run ``task`` (a prompt prefill) when no tip is waiting; a newer warm-up replaces it."""
        with self._wake:
            self._warmups.append(task)
            self._wake.notify_all()
        self._ensure_thread()

    def idle(self) -> bool:
        """Nothing queued and nothing running (the bench waits for this between turns)."""
        with self._wake:
            return not self._queue and not self._warmups and not self._busy

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="coaching", daemon=True)
            self._thread.start()

    def _drop(self, job: CoachJob, why: str) -> None:
        try:
            stage = job.drop(why)
            job.publish(stage)
            job._post(stage, final=True)
        except Exception as exc:  # a dropped tip must not take the worker down
            log.warning("could not drop coaching for %s: %s", job.key, exc)
            job._post(job.latest or TurnGrade(verdicts={}), final=True)

    def _next(self) -> CoachJob | Callable[[], object]:
        with self._wake:
            self._wake.wait_for(lambda: self._queue or self._warmups)
            self._busy = True
            return self._queue.popleft() if self._queue else self._warmups.popleft()

    def _work(self) -> None:
        """The worker thread (a daemon: it lives as long as the app)."""
        while True:
            item = self._next()
            try:
                self.lane.wait_until_free()
                if isinstance(item, CoachJob):
                    with self.lane.tip():
                        self._coach(item)
                else:
                    try:
                        item()
                    except Exception as exc:  # a warm-up only saves time; its failure costs none
                        log.info("warm-up skipped: %s", exc)
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()

    def _coach(self, job: CoachJob) -> None:
        try:
            for stage in job.run():
                job.publish(stage)
                job._post(stage)
        except Preempted:
            job.preemptions += 1
            if job.preemptions >= MAX_PREEMPTIONS:
                self._drop(job, "dropped: the patient needed the model")
                return
            with self._wake:
                self._queue.appendleft(job)  # finished later, before newer turns' tips
            return
        except Exception as exc:  # coach() already turns model failures into rubric advice
            log.warning("coaching %s failed: %s", job.key, exc)
            self._drop(job, f"{type(exc).__name__}: {exc}"[:300])
            return
        if not job.done:
            job._post(job.latest or job.drop("the coach wrote nothing"), final=True)


class Prefills:
    """Reads what trainees are typing into the patient's slot, one at a time, when the model is free.

    Each keystroke (the page's input event, or an API client's call) offers (:meth:`offer`) the reply
    so far for its session; the newest offer per session replaces the older one. A single worker
    thread runs an offer once it has not changed for ``debounce`` seconds (the trainee paused), or
    once the session has been typing for ``every`` seconds without a pause (a steady typist never
    pauses that long: measured in Chromium at 15 characters a second, the reply was then only read
    after the last key), or at once when it ends a sentence (``at_once``: the trainee may be about
    to press Send, and the read-ahead of the whole prompt needs the head start), when the lane is
    :meth:`Lane.spare`; an offer that finds the model busy
    waits for the next quiet moment, and one older than ``expire`` seconds is forgotten (the
    trainee sent it meanwhile, or left).
    """

    def __init__(self, lane: Lane, *, debounce: float = 0.35, every: float = 1.5, expire: float = 30.0) -> None:
        self.lane = lane
        self.debounce = debounce
        self.every = every
        self.expire = expire
        self._offers: dict[str, tuple[float, Callable[[], object], bool]] = {}
        self._since: dict[str, float] = {}  # when each session's unread typing began
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.ran = 0  # prefills sent to the model (the bench and the tests read it)

    def offer(self, key: str, task: Callable[[], object], *, at_once: bool = False) -> None:
        with self._wake:
            now = time.monotonic()
            self._offers[key] = (now, task, at_once)
            self._since.setdefault(key, now)
            self._wake.notify_all()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="reply-prefill", daemon=True)
            self._thread.start()

    def cancel(self, key: str) -> None:
        """Forget ``key``'s offer (its reply was sent: the turn reads it now)."""
        with self._wake:
            self._offers.pop(key, None)
            self._since.pop(key, None)

    def pending(self) -> bool:
        with self._wake:
            return bool(self._offers)

    def _ready(self) -> tuple[str, Callable[[], object]] | None:
        now = time.monotonic()
        for key, (when, task, at_once) in list(self._offers.items()):
            if now - when > self.expire:
                del self._offers[key]
                self._since.pop(key, None)
            elif at_once or now - when >= self.debounce or now - self._since.get(key, now) >= self.every:
                return key, task
        return None

    def _work(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._offers)
                ready = self._ready()
                if ready is None:
                    self._wake.wait(self.debounce / 2)
                    continue
            key, task = ready
            with self.lane.spare() as free:
                if not free:
                    time.sleep(0.1)
                    continue
                with self._wake:
                    if self._offers.get(key, (0, None, False))[1] is not task:
                        continue  # replaced (or sent) meanwhile: the newer one is read instead
                    del self._offers[key]
                    self._since.pop(key, None)
                try:
                    task()
                    self.ran += 1
                except Exception as exc:  # only an optimisation: Send reads the whole reply then
                    log.info("reply prefill skipped: %s", exc)
