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
* ``patient_done_s``: time from Send to the patient model's last sentence, with the voice speaking
  each sentence as it comes (the voice shares the cores with the model) and, as ``silent``, the same
  script with the voice off: what speaking costs the patient's answer.
* ``rss_mb``: peak RSS of this process (both speech models loaded) plus the llama.cpp server.

``--busy N`` plays it all again beside N CPU hogs of the bench's own (``bench/busy.py``, issue 21) and
prints the quiet and busy figures of one run with their ratio; ``--stt-threads`` sets the recogniser's
threads (the app's default is 2), so the two settings can be compared quiet and busy.

    .venv/bin/python bench/voice_latency.py --json
    .venv/bin/python bench/voice_latency.py --busy 1 --json       # quiet, then beside one busy core
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

from busy import hogs  # noqa: E402
from busy import load as load_average  # noqa: E402
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


def recognition(recogniser: speech.Recogniser, count: int) -> tuple[list[dict[str, Any]], float]:
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


class SilentSpeaker(voice.Speaker):
    """Follows the reply sentence by sentence like the voice, and speaks none of it (the voice off)."""

    def _render(self, sentence: str) -> bytes | None:
        return None


def patient_voice(
    persona_arg: str, turns: int, model: str, server: EmbeddedServer, *, spoken: bool = True
) -> list[dict[str, Any]]:
    persona = load_persona_argument(persona_arg)
    settings = LLMSettings(backend=Backend.EMBEDDED, model=model, timeout=600.0)
    with tempfile.TemporaryDirectory() as folder:
        practice = Practice(Store(f"sqlite:///{Path(folder) / 'bench.db'}"), settings, server=server, seed=7)
        started = practice.start(persona.id, "bench", owner="bench")
        voice.synthesiser()  # loaded before the first turn: the cold load is reported apart
        rows: list[dict[str, Any]] = []
        for number, line in enumerate(trainee_lines(persona, "good")[:turns], start=1):
            speaker = (voice.Speaker if spoken else SilentSpeaker)(voice.persona_style(persona))
            sent = time.perf_counter()

            def followed(speaker: voice.Speaker = speaker, line: str = line):  # noqa: ANN202
                for update in practice.turn(started.session.id, line):
                    speaker.follow(update)
                    yield update

            chunks = [audio for _view, audio in voice.interleave(followed(), speaker) if audio]
            practice.wait_for_coaching(started.session.id)
            if not speaker.written_at or (spoken and not speaker.spoken_at):
                log(f"turn {number}: no sentence spoken ({speaker.error or 'empty reply'})")
                continue
            row: dict[str, Any] = {
                "turn": number,
                "first_sentence_written_s": round(speaker.written_at[0] - sent, 3),
                "patient_done_s": round(speaker.written_at[-1] - sent, 3),
                "sentences": len(speaker.sentences),
            }
            if spoken:
                row["first_audio_s"] = round(speaker.spoken_at[0] - speaker.written_at[0], 3)
                row["audio_done_s"] = round(speaker.spoken_at[-1] - sent, 3)
                row["audio_s"] = round(sum(_seconds(chunk) for chunk in chunks), 2)
            rows.append(row)
            heard = f", its audio {row['first_audio_s']:.2f} s later" if spoken else " (voice off)"
            log(f"turn {number}: first sentence after {row['first_sentence_written_s']:.2f} s{heard}, "
                f"last after {row['patient_done_s']:.2f} s; {row['sentences']} sentences")  # fmt: skip
            if practice.snapshot(started.session.id).session.ended:
                break
    return rows


def _seconds(chunk: bytes) -> float:
    import io

    with wave.open(io.BytesIO(chunk), "rb") as handle:
        return handle.getnframes() / handle.getframerate()


def phase(args: argparse.Namespace, recogniser: speech.Recogniser, server: EmbeddedServer | None) -> dict[str, Any]:
    """One pass: the replies transcribed, then the script played with the voice on and with it off."""
    replies, wer = recognition(recogniser, args.replies)
    voiced: list[dict[str, Any]] = []
    silent: list[dict[str, Any]] = []
    if server is not None:
        voiced = patient_voice(args.persona, args.turns, args.model, server)
        silent = patient_voice(args.persona, args.turns, args.model, server, spoken=False)
    done_voiced = stats([row["patient_done_s"] for row in voiced])
    done_silent = stats([row["patient_done_s"] for row in silent])
    return {
        "transcript_s": stats([row["transcript_s"] for row in replies]),
        "first_audio_s": stats([row["first_audio_s"] for row in voiced]),
        "wer": round(wer, 3),
        "patient_done_s": {
            "voice": done_voiced,
            "silent": done_silent,
            "voice_over_silent": ratio(done_voiced["median"], done_silent["median"]),
        },  # fmt: skip
        "first_sentence_written_s": {
            "voice": stats([row["first_sentence_written_s"] for row in voiced]),
            "silent": stats([row["first_sentence_written_s"] for row in silent]),
        },  # fmt: skip
        "audio_done_s": stats([row["audio_done_s"] for row in voiced]),
        "reply_audio_s": stats([row["audio_s"] for row in replies]),
        "replies": replies,
        "turns": {"voice": voiced, "silent": silent},
        "load": load_average(),
    }


def ratio(busy: float | None, quiet: float | None) -> float | None:
    return round(busy / quiet, 2) if busy is not None and quiet else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.add_argument("--table", action="store_true", help="print the per-reply WER table (Markdown)")
    parser.add_argument("--replies", type=int, default=20, help="gold replies to speak and transcribe (20)")
    parser.add_argument("--turns", type=int, default=5, help="patient turns against the real model (5)")
    parser.add_argument("--persona", default="abusive-caller", help="persona id or YAML path (a phone call)")
    parser.add_argument("--model", default="default", help="embedded model (default)")
    parser.add_argument("--no-model", action="store_true", help="skip the patient turns (no llama.cpp server)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="play it all again beside N CPU hogs (bench/busy.py) and print the ratios")  # fmt: skip
    parser.add_argument("--stt-threads", type=int, default=speech.THREADS, metavar="N",
                        help=f"the recogniser's CPU threads (the app's default: {speech.THREADS})")  # fmt: skip
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:  # the trainee's voice; a clear line rather than FileNotFoundError
        print("voice_latency needs espeak-ng on the PATH to speak the trainee's replies: apt-get install espeak-ng",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        loaded = time.perf_counter()
        recogniser = speech.Recogniser.load(threads=args.stt_threads)
        stt_load = time.perf_counter() - loaded
        loaded = time.perf_counter()
        voice.synthesiser()
        tts_load = time.perf_counter() - loaded
    except (voice.VoiceUnavailable, speech.SpeechUnavailable, ImportError) as exc:
        print(f"voice_latency needs the voice models: {exc}", file=sys.stderr)
        return 2
    log(f"models loaded: recogniser {stt_load:.2f} s ({args.stt_threads} threads), voice {tts_load:.2f} s")

    server = None if args.no_model else EmbeddedServer(model=args.model)
    sampler = RssSampler(lambda: server.process.pid if server is not None and server.process is not None else None)
    sampler.start()
    busy: dict[str, Any] | None = None
    try:
        if server is not None:
            server.ensure()
            log("warm-up: two turns, not counted (the server's first requests page the weights in)")
            patient_voice(args.persona, 2, args.model, server)
        log(f"quiet (load {load_average()})")
        quiet = phase(args, recogniser, server)
        if args.busy:
            log(f"beside {args.busy} busy process(es)")
            with hogs(args.busy):
                busy = phase(args, recogniser, server)
    finally:
        rss = sampler.stop()
        if server is not None:
            server.stop()
    summary: dict[str, Any] = {
        "transcript_s": quiet["transcript_s"],
        "first_audio_s": quiet["first_audio_s"],
        "wer": quiet["wer"],
        "rss_mb": rss["app_server"],
        "patient_done_s": quiet["patient_done_s"],
        "detail": {
            "reply_audio_s": quiet["reply_audio_s"],
            "first_sentence_written_s": quiet["first_sentence_written_s"],
            "audio_done_s": quiet["audio_done_s"],
            "load_s": {"recogniser": round(stt_load, 2), "voice": round(tts_load, 2)},
            "stt_threads": args.stt_threads,
            "rss_mb": rss,
            "replies": len(quiet["replies"]),
            "turns": {kind: len(rows) for kind, rows in quiet["turns"].items()},
            "load_before": quiet["load"],
            "per_turn": quiet["turns"],
            "goals": GOALS,
        },
    }
    if busy is not None:
        summary["busy"] = {
            "processes": args.busy,
            "transcript_s": busy["transcript_s"],
            "first_audio_s": busy["first_audio_s"],
            "patient_done_s": busy["patient_done_s"],
            "audio_done_s": busy["audio_done_s"],
            "wer": busy["wer"],
            "per_turn": busy["turns"],
            "ratio_to_quiet": {
                "transcript_s": ratio(busy["transcript_s"]["median"], quiet["transcript_s"]["median"]),
                "first_audio_s": ratio(busy["first_audio_s"]["median"], quiet["first_audio_s"]["median"]),
                "patient_done_voice": ratio(
                    busy["patient_done_s"]["voice"]["median"], quiet["patient_done_s"]["voice"]["median"]
                ),  # fmt: skip
                "patient_done_silent": ratio(
                    busy["patient_done_s"]["silent"]["median"], quiet["patient_done_s"]["silent"]["median"]
                ),  # fmt: skip
                "audio_done_s": ratio(busy["audio_done_s"]["median"], quiet["audio_done_s"]["median"]),
            },
        }
    replies = quiet["replies"]
    if args.table:
        print("| # | audio s | transcript s | WER | said | heard |\n|---|---|---|---|---|---|")
        for number, row in enumerate(replies, start=1):
            print(f"| {number} | {row['audio_s']} | {row['transcript_s']} | {row['wer']:.2f} | "
                  f"{row['reference']} | {row['heard']} |")  # fmt: skip
        print(f"| all | | | **{quiet['wer']:.3f}** | {sum(r['words'] for r in replies)} words | |\n")
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not args.table:
        for key, goal in GOALS.items():
            print(f"{key:>14}: {summary[key]}  (goal {goal})")
        print(f"{'patient done':>14}: voice {quiet['patient_done_s']['voice']}, "
              f"silent {quiet['patient_done_s']['silent']}")  # fmt: skip
        if busy is not None:
            for key, value in summary["busy"]["ratio_to_quiet"].items():
                print(f"{'busy/quiet':>14}: {key} {value}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
