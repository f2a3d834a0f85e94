"""Voice practice on this machine: how fast the transcript and the patient's voice come, how well
the recogniser hears, and the memory it all takes (issue 12's goals).

* ``transcript_s``: time from "the trainee stopped" to the transcript (decode + Whisper tiny.en with
  the persona's hot words), on ``--replies`` trainee replies from ``tests/data/gold/dev.jsonl``
  spoken by espeak-ng (``en-us``, 150 words a minute): a voice other than the patient's Piper voice.
* ``wer``: word error rate over those replies (all errors / all reference words); ``--table``
  prints each reply's reference, transcript and WER as Markdown.
* ``first_audio_s``: time from the patient model finishing its first sentence to that sentence's
  audio being ready for the page, on ``--turns`` real turns against the embedded llama.cpp server
  (the default model) with the persona's scripted good trainee, while the model keeps writing.
* ``rss_mb``: peak RSS of this process (both speech models loaded) plus the llama.cpp server.

    .venv/bin/python bench/voice_latency.py --json
    .venv/bin/python bench/voice_latency.py --table --no-model    # WER and transcript times only

Needs the voice extra, espeak-ng (``apt-get install espeak-ng``) and, unless ``--no-model``,
the default model (``python -m agent model prepare``). Figures from a busy machine are inflated.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from turn_latency import RssSampler  # noqa: E402

from agent import speech, voice  # noqa: E402
from agent.llm import Backend, LLMSettings  # noqa: E402
from agent.personas import load_persona_argument  # noqa: E402
from agent.practice import Practice  # noqa: E402
from agent.runtime import EmbeddedServer  # noqa: E402
from agent.simulate import trainee_lines  # noqa: E402
from agent.store import Store  # noqa: E402

GOLD = ROOT / "tests" / "data" / "gold" / "dev.jsonl"
TRAINEE_VOICE = ["-v", "en-us", "-s", "150"]
GOALS = {"transcript_s": "<= 1.5 s (a ~4 s reply)", "first_audio_s": "<= 1.0 s", "wer": "<= 0.10", "rss_mb": "<= 3584"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered), 3), "p90": round(p90, 3)}


def gold_replies(count: int) -> list[dict[str, Any]]:
    """The first ``count`` dev replies of 8-40 words (a spoken reply of about 3-12 s)."""
    rows = [json.loads(line) for line in GOLD.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if 8 <= len(row["reply"].split()) <= 40][:count]


def espeak(text: str, path: Path) -> None:
    subprocess.run(["espeak-ng", *TRAINEE_VOICE, "-w", str(path), text], check=True)


def recognition(count: int) -> tuple[list[dict[str, Any]], float]:
    recogniser = speech.recogniser()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for number, gold in enumerate(gold_replies(count), start=1):
            path = Path(folder) / f"{number}.wav"
            espeak(gold["reply"], path)
            name = gold["context"].get("persona_name") or ""
            hot = [name, *name.split()[1:]] if name else []  # "Mr. Carter" and "Carter", as the app gives them
            started = time.perf_counter()
            heard = recogniser.transcribe(path, hot)
            took = time.perf_counter() - started
            errors = speech.word_error_rate(gold["reply"], heard.text)
            rows.append({"reference": gold["reply"], "heard": heard.text, "audio_s": round(heard.audio_s, 2),
                         "transcript_s": round(took, 3), "wer": round(errors, 3),
                         "words": len(speech.normalise(gold["reply"]))})  # fmt: skip
            log(f"reply {number}: {heard.audio_s:.1f} s audio, transcript in {took:.2f} s, WER {errors:.2f}")
    total = sum(row["words"] for row in rows)
    wer = sum(row["wer"] * row["words"] for row in rows) / total if total else 0.0
    return rows, wer


def patient_voice(persona_arg: str, turns: int, model: str, server: EmbeddedServer) -> list[dict[str, Any]]:
    persona = load_persona_argument(persona_arg)
    settings = LLMSettings(backend=Backend.EMBEDDED, model=model, timeout=600.0)
    with tempfile.TemporaryDirectory() as folder:
        practice = Practice(Store(f"sqlite:///{Path(folder) / 'bench.db'}"), settings, server=server, seed=7)
        started = practice.start(persona.id, "bench", owner="bench")
        voice.synthesiser()  # loaded before the first turn: the cold load is reported apart
        rows: list[dict[str, Any]] = []
        for number, line in enumerate(trainee_lines(persona, "good")[:turns], start=1):
            speaker = voice.Speaker(voice.persona_style(persona))
            sent = time.perf_counter()

            def followed(speaker: voice.Speaker = speaker, line: str = line):  # noqa: ANN202
                for update in practice.turn(started.session.id, line):
                    speaker.follow(update)
                    yield update

            chunks = [audio for _view, audio in voice.interleave(followed(), speaker) if audio]
            practice.wait_for_coaching(started.session.id)
            if not speaker.written_at or not speaker.spoken_at:
                log(f"turn {number}: no sentence spoken ({speaker.error or 'empty reply'})")
                continue
            row = {
                "turn": number,
                "first_sentence_written_s": round(speaker.written_at[0] - sent, 3),
                "first_audio_s": round(speaker.spoken_at[0] - speaker.written_at[0], 3),
                "sentences": len(speaker.sentences),
                "audio_s": round(sum(_seconds(chunk) for chunk in chunks), 2),
            }
            rows.append(row)
            log(f"turn {number}: first sentence after {row['first_sentence_written_s']:.2f} s, "
                f"its audio {row['first_audio_s']:.2f} s later; {row['sentences']} sentences")  # fmt: skip
            if practice.snapshot(started.session.id).session.ended:
                break
    return rows


def _seconds(chunk: bytes) -> float:
    import io

    with wave.open(io.BytesIO(chunk), "rb") as handle:
        return handle.getnframes() / handle.getframerate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.add_argument("--table", action="store_true", help="print the per-reply WER table (Markdown)")
    parser.add_argument("--replies", type=int, default=20, help="gold replies to speak and transcribe (20)")
    parser.add_argument("--turns", type=int, default=5, help="patient turns against the real model (5)")
    parser.add_argument("--persona", default="abusive-caller", help="persona id or YAML path (a phone call)")
    parser.add_argument("--model", default="default", help="embedded model (default)")
    parser.add_argument("--no-model", action="store_true", help="skip the patient turns (no llama.cpp server)")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:  # the trainee's voice; a clear line rather than FileNotFoundError
        print("voice_latency needs espeak-ng on the PATH to speak the trainee's replies: apt-get install espeak-ng",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        speech.recogniser()
        voice.synthesiser()
    except (voice.VoiceUnavailable, speech.SpeechUnavailable, ImportError) as exc:
        print(f"voice_latency needs the voice models: {exc}", file=sys.stderr)
        return 2

    server = None if args.no_model else EmbeddedServer(model=args.model)
    sampler = RssSampler(lambda: server.process.pid if server is not None and server.process is not None else None)
    sampler.start()
    loaded = time.perf_counter()
    speech.recogniser()
    stt_load = time.perf_counter() - loaded
    loaded = time.perf_counter()
    voice.synthesiser()
    tts_load = time.perf_counter() - loaded
    log(f"models loaded: recogniser {stt_load:.2f} s, voice {tts_load:.2f} s")
    replies, wer = recognition(args.replies)
    turns: list[dict[str, Any]] = []
    if server is not None:
        server.ensure()
        try:
            turns = patient_voice(args.persona, args.turns, args.model, server)
        finally:
            rss = sampler.stop()
            server.stop()
    else:
        rss = sampler.stop()
    summary = {
        "transcript_s": stats([row["transcript_s"] for row in replies]),
        "first_audio_s": stats([row["first_audio_s"] for row in turns]),
        "wer": round(wer, 3),
        "rss_mb": rss["app_server"],
        "detail": {
            "reply_audio_s": stats([row["audio_s"] for row in replies]),
            "first_sentence_written_s": stats([row["first_sentence_written_s"] for row in turns]),
            "load_s": {"recogniser": round(stt_load, 2), "voice": round(tts_load, 2)},
            "rss_mb": rss,
            "replies": len(replies),
            "turns": len(turns),
            "goals": GOALS,
        },
    }
    if args.table:
        print("| # | audio s | transcript s | WER | said | heard |\n|---|---|---|---|---|---|")
        for number, row in enumerate(replies, start=1):
            print(f"| {number} | {row['audio_s']} | {row['transcript_s']} | {row['wer']:.2f} | "
                  f"{row['reference']} | {row['heard']} |")  # fmt: skip
        print(f"| all | | | **{wer:.3f}** | {sum(r['words'] for r in replies)} words | |\n")
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not args.table:
        for key, goal in GOALS.items():
            print(f"{key:>14}: {summary[key]}  (goal {goal})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
