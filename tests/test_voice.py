"""The patient's voice: sentences cut from the stream, spoken on a worker, merged into the page's updates.

Logic (splitting, ordering, the merge, failures) runs against a fake engine; the real Piper voice
speaks once at the end, and its speech goes back through the real recogniser.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeModel

from agent import speech, voice
from agent.llm import LLMSettings
from agent.personas import load_persona
from agent.practice import Practice
from agent.store import Store

needs_voice = pytest.mark.skipif(
    importlib.util.find_spec("piper") is None or importlib.util.find_spec(voice.MODULE) is None,
    reason="the voice extra is not installed (make test installs it)",
)


# -- sentences -----------------------------------------------------------------------------------


def test_a_sentence_is_given_out_once_the_next_word_has_started():
    splitter = voice.SentenceSplitter()
    assert splitter.feed("Two weeks.") == []  # could still be "Two weeks.5" or a title: wait
    assert splitter.feed("Two weeks. Two") == ["Two weeks."]
    assert splitter.feed("Two weeks. Two weeks! Are you") == ["Two weeks!"]
    assert splitter.feed("Two weeks. Two weeks! Are you listening?", final=True) == ["Are you listening?"]


def test_titles_do_not_end_a_sentence_and_quotes_stay_with_it():
    splitter = voice.SentenceSplitter()
    assert splitter.feed('Mr. Carter said "no." Dr. Okafor agreed. Then') == ['Mr. Carter said "no."',
                                                                              "Dr. Okafor agreed."]  # fmt: skip
    assert splitter.feed('Mr. Carter said "no." Dr. Okafor agreed. Then...', final=True) == ["Then..."]


def test_a_reply_replaced_under_the_stream_is_spoken_from_its_start():
    splitter = voice.SentenceSplitter()
    assert splitter.feed("I am the receptionist. You") == ["I am the receptionist."]
    assert splitter.feed("Just fix it.", final=True) == ["Just fix it."]


def test_nothing_unspeakable_is_given_out():
    assert voice.SentenceSplitter().feed("... ! ", final=True) == []


# -- persona pace --------------------------------------------------------------------------------


def patient(style: str, anger: float, age: int = 50):
    return load_persona("abusive-caller").model_copy(update={"style": style, "anger": anger, "age": age})


def test_an_angry_clipped_caller_speaks_faster_than_a_tired_patient_in_pain():
    caller = voice.persona_style(patient("loud, insulting, interrupts; short jabs", anger=9))
    tired = voice.persona_style(patient("strained, tired, short of patience", anger=7))
    plain = voice.persona_style(patient("polite but firm", anger=5))
    old = voice.persona_style(patient("polite but firm", anger=5, age=80))
    assert caller.length_scale < plain.length_scale == 1.0 < tired.length_scale
    assert old.length_scale > plain.length_scale
    assert caller.noise_scale > plain.noise_scale


# -- the speaker and the merge, on a fake engine --------------------------------------------------


class FakeEngine:
    """Says each sentence as a WAV holding its text; ``gate`` holds a sentence until released."""

    def __init__(self, fail: bool = False) -> None:
        self.spoken: list[str] = []
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()

    def speak(self, text: str, style: voice.VoiceStyle | None = None) -> voice.Speech:
        if self.fail:
            raise voice.VoiceUnavailable("the voice is not installed")
        assert self.gate.wait(10)
        self.spoken.append(text)
        data = text.encode()
        return voice.Speech(sample_rate=8_000, samples=np.frombuffer(data.ljust(len(data) + len(data) % 2), np.int16))


def text_of(chunk: bytes) -> str:
    with wave.open(io.BytesIO(chunk), "rb") as handle:
        return handle.readframes(handle.getnframes()).decode().strip()


def test_audio_comes_out_in_sentence_order():
    engine = FakeEngine()
    speaker = voice.Speaker(engine=lambda: engine)
    speaker.hear("One. Two! Three", final=True)
    deadline = time.monotonic() + 10
    chunks: list[bytes] = []
    while not speaker.idle() and time.monotonic() < deadline:
        chunks += speaker.ready()
        time.sleep(0.01)
    assert [text_of(c) for c in chunks] == ["One.", "Two!", "Three"]


def test_the_first_sentence_is_heard_while_the_rest_is_still_being_written():
    """``interleave`` hands out the first sentence's audio before the reply's stream goes on: the
    fake turn below writes its second sentence only once the page has the first one's audio."""
    engine = FakeEngine()
    speaker = voice.Speaker(engine=lambda: engine)
    first_audio = threading.Event()

    def turn() -> Iterator[str]:
        speaker.hear("I want a doctor. Now")
        yield "typing 1"
        if not first_audio.wait(10):
            raise AssertionError("no audio reached the page while the reply was still streaming")
        speaker.hear("I want a doctor. Now, please.", final=True)
        yield "answered"

    out = []
    for view, audio in voice.interleave(turn(), speaker):
        if audio is not None:
            first_audio.set()
        out.append((view, None if audio is None else text_of(audio)))
    views = [v for v, _ in out if v is not None]
    spoken = [a for _, a in out if a is not None]
    assert views == ["typing 1", "answered"]
    assert spoken == ["I want a doctor.", "Now, please."]
    assert out.index(next(o for o in out if o[1] == "I want a doctor.")) < out.index(
        next(o for o in out if o[0] == "answered")
    )


def test_a_failing_voice_leaves_the_text_turn_whole():
    speaker = voice.Speaker(engine=lambda: FakeEngine(fail=True))

    def turn() -> Iterator[str]:
        speaker.hear("Fix it. Today.", final=True)
        yield "answered"

    out = list(voice.interleave(turn(), speaker))
    assert [v for v, _ in out if v is not None] == ["answered"]
    assert all(a is None for _, a in out)
    assert "not installed" in (speaker.error or "")


def test_an_error_in_the_turn_reaches_the_page_handler():
    speaker = voice.Speaker(engine=FakeEngine)

    def turn() -> Iterator[str]:
        yield "graded"
        raise RuntimeError("store is gone")

    with pytest.raises(RuntimeError, match="store is gone"):
        list(voice.interleave(turn(), speaker))


def test_the_speaker_follows_a_real_turn_and_speaks_what_the_page_shows(tmp_path):
    """Through the controller and the fake patient model: the spoken sentences are the reply saved."""
    fake = FakeModel(lines=["I waited forty minutes. Mr. Carter is my name. I want a doctor. Fix it today"])
    practice = Practice(Store(f"sqlite:///{tmp_path / 'v.db'}"), LLMSettings(), seed=1, patient=fake, coach=fake)
    started = practice.start("carter-wrong-day", "Sam", owner="k")
    engine = FakeEngine()
    speaker = voice.Speaker(engine=lambda: engine)

    def followed() -> Iterator[object]:
        for update in practice.turn(started.session.id, "I'm sorry about the wait, Mr. Carter."):
            speaker.follow(update)
            yield update

    chunks = [audio for _view, audio in voice.interleave(followed(), speaker) if audio]
    saved = practice.store.turns(started.session.id)[0].patient_reply
    assert [text_of(c) for c in chunks] == ["I waited forty minutes.", "Mr. Carter is my name.", "I want a doctor."]
    assert " ".join(text_of(c) for c in chunks) == saved  # past three sentences, "Fix it today" was cut from both


# -- the real voice -------------------------------------------------------------------------------


@needs_voice
def test_the_installed_voice_verifies_and_a_changed_file_is_refused(tmp_path):
    directory = voice.model_dir()
    (tmp_path / voice.MODEL).symlink_to(directory / voice.MODEL)
    (tmp_path / f"{voice.MODEL}.json").write_text("{}", encoding="utf-8")
    with pytest.raises(voice.VoiceUnavailable, match="sha256"):
        voice.Synthesiser.load(tmp_path)


@needs_voice
def test_the_patient_speaks_words_the_recogniser_reads_back():
    # Piper draws each take's voice and timing at random (noise_scale, noise_w); without that noise
    # the take is the same every run, so the test says whether the words are clear, not how lucky
    # the draw was (with the default noise a fresh-clone run once heard two of the eight words wrong).
    steady = voice.VoiceStyle(noise_scale=0.0, noise_w=0.0)
    spoken = voice.synthesiser().speak("I have waited forty minutes for a doctor.", steady)
    assert spoken.sample_rate == 22_050 and 1.5 < spoken.seconds < 5.0
    with wave.open(io.BytesIO(spoken.wav()), "rb") as handle:
        assert handle.getnchannels() == 1 and handle.getframerate() == 22_050
    if importlib.util.find_spec("faster_whisper") is None:
        pytest.skip("no recogniser to read it back")
    samples = speech.resample(spoken.samples.astype(np.float32) / 32768, spoken.sample_rate, speech.SAMPLE_RATE)
    heard = speech.Recogniser.load().transcribe(samples)
    assert speech.word_error_rate("I have waited forty minutes for a doctor.", heard.text) <= 1 / 8


@needs_voice
def test_a_faster_persona_says_the_same_words_in_less_time():
    engine = voice.synthesiser()
    line = "Two weeks I have waited on this referral, and nobody calls me back."
    fast = voice.persona_style(patient("loud, insulting, interrupts; short jabs", anger=9))
    slow = voice.persona_style(patient("strained, tired, short of patience", anger=7))
    # Piper varies each phoneme's length at random, so compare three takes of each (measured ratio 0.82-0.89).
    fast_s = sum(engine.speak(line, fast).seconds for _ in range(3))
    slow_s = sum(engine.speak(line, slow).seconds for _ in range(3))
    assert fast_s < slow_s * 0.95


# -- the page handlers ----------------------------------------------------------------------------


def spoken_chunks(outputs: list[tuple]) -> list[bytes]:
    return [values[-1] for values in outputs if isinstance(values[-1], bytes)]


@needs_voice
def test_send_and_retry_speak_the_answer_only_in_voice_mode(tmp_path):
    from agent import web

    fake = FakeModel(lines=["I waited forty minutes. Fix it today."])
    practice = Practice(Store(f"sqlite:///{tmp_path / 'w.db'}"), LLMSettings(), seed=1, patient=fake, coach=fake)
    session_id = practice.start("carter-wrong-day", "Sam", owner="k").session.id

    typed = list(web.send_spoken(practice, session_id, "I'm sorry, Mr. Carter.", "k", False))
    assert typed and spoken_chunks(typed) == []
    assert all(len(values) == len(web.PRACTICE_OUTPUTS) + 1 for values in typed)

    spoken = list(web.send_spoken(practice, session_id, "Let me find you a slot today.", "k", True))
    chunks = spoken_chunks(spoken)
    answer = practice.store.turns(session_id)[1]
    sentences = voice.SentenceSplitter().feed(answer.patient_reply or "", final=True)
    assert answer.status == "complete" and sentences
    assert len(chunks) == len(sentences) and all(chunk[:4] == b"RIFF" for chunk in chunks)  # a WAV a sentence

    fake.fail_patient = 1
    failed = list(web.send_spoken(practice, session_id, "I will call you back.", "k", True))
    assert spoken_chunks(failed) == [] and practice.store.turns(session_id)[2].status == "failed"
    retried = list(web.retry_spoken(practice, session_id, "k", True))
    assert spoken_chunks(retried) and practice.store.turns(session_id)[2].status == "complete"


@needs_voice
def test_turning_voice_on_loads_both_models_in_the_background():
    """Off: nothing loads (text practice pays nothing); on: both load without holding the page."""
    code = """
import sys, time
sys.path.insert(0, '.')
from agent import speech, voice, web
web.voice_toggle(False)
time.sleep(0.5)
off = (speech._loaded, voice._loaded)
began = time.perf_counter()
update = web.voice_toggle(True)
returned_s = time.perf_counter() - began
deadline = time.monotonic() + 120
while (speech._loaded is None or voice._loaded is None) and time.monotonic() < deadline:
    time.sleep(0.1)
print(off == (None, None), returned_s < 0.5, update['visible'], speech._loaded is not None, voice._loaded is not None)
"""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.split() == ["True"] * 5
