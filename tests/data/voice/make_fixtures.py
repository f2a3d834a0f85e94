"""Make the committed voice fixtures: trainee replies spoken by espeak-ng, 16 kHz mono 16-bit WAV.

Why espeak-ng and not the patient's Piper voice: the trainee must not sound like the patient (the
recogniser would be tested on the one voice it hears back), and espeak-ng's output carries no
model licence question (the Piper voice is fine-tuned from a voice whose data is not openly
licensed; README "Voice"). Run once, by hand, after changing ``FIXTURES``:

    apt-get install espeak-ng && .venv/bin/python tests/data/voice/make_fixtures.py

espeak-ng is deterministic, so the files come out the same on every run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from agent.speech import SAMPLE_RATE, resample  # noqa: E402

HERE = Path(__file__).resolve().parent
VOICE = ["-v", "en-us", "-s", "150"]  # espeak-ng's US English voice at 150 words a minute
# file name -> what the trainee says (and what the tests expect to read back)
FIXTURES = {
    "apology.wav": "I'm so sorry you've been waiting, Mr. Carter. I understand how frustrating that must be.",
    "moreno.wav": "Mr. Moreno, I can see you're in pain. Let me find you a chair while we wait.",
    "nolan.wav": "Ms. Nolan, let's go through the bill from March together.",
}
TAIL_SECONDS = 0.5  # silence after the words, as a trainee leaves before pressing stop


def speak(text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "out.wav"
        subprocess.run(["espeak-ng", *VOICE, "-w", str(path), text], check=True)
        with wave.open(str(path), "rb") as handle:
            rate = handle.getframerate()
            samples = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    audio = resample(samples.astype(np.float32) / 32768.0, rate, SAMPLE_RATE)
    audio = np.concatenate([audio, np.zeros(int(TAIL_SECONDS * SAMPLE_RATE), dtype=np.float32)])
    return (np.clip(audio, -1, 1) * 32767).astype("<i2")


def write(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(samples.tobytes())


def main() -> None:
    for name, text in FIXTURES.items():
        samples = speak(text)
        write(HERE / name, samples)
        print(f"{name}: {len(samples) / SAMPLE_RATE:.1f} s, {len(samples) * 2 // 1024} KiB  {text}")


if __name__ == "__main__":
    main()
