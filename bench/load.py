"""Load: N concurrent API sessions x M turns against the real app on loopback (prints figures).

Usage: python bench/load.py [--sessions 20] [--turns 10] [--persona ID] [--model default|small]
       [--base-url URL --remote-model NAME [--api-key KEY]] [--concurrency K] [--with-tip]
       [--timeout S] [--json]

Starts ``app.py`` as its own process (as ``make run`` does: its own model supervisor, queue and
database, here a fresh SQLite file in a temporary data folder) on a free loopback port, with the
embedded model (``--model``), or with ``--base-url`` pointing it at an OpenAI-compatible server
(``DEESCALATE_BACKEND=compatible``: vLLM, Ollama, a llama.cpp server with ``--parallel``).
``--concurrency`` sets ``DEESCALATE_TURN_CONCURRENCY``, the app's turn queue limit.

One warm-up session (one turn, not counted) waits for the model to be ready. Then ``--sessions``
client threads each start a session through the API (``gradio_client``, ``/start_session``,
trainee name ``load-NN``) and play ``--turns`` replies with ``/practice_turn`` one after the
other; before each one, unless ``--typing 0``, the reply so far is sent to ``/prefill_reply`` three
times, ``--typing`` seconds apart, as a client would while its trainee types (the patient's slot
reads it when no answer or tip needs the model). Every reply names its session and turn
("Caller 7, question 3: ..."), and is a question
that neither resolves nor enrages the patient, so a session lasts the whole run. Timed per turn:
from the call to the returned state (the patient's whole answer; with ``--with-tip`` also the tip).

Checked afterwards, in the app's database: every session has exactly its own replies, in order,
each ``complete``, with the patient answer its client was given (``lost``: a reply missing or not
complete; ``crossed``: another session's reply, a wrong order, or an answer that differs from
what the client saw). ``errors``: calls that raised or returned a failed turn. Exit status 0 only
with all turns played, 0 errors, 0 lost, 0 crossed.

It stops by itself: after ``--timeout`` seconds (default 3600, counted from the start, warm-up
included) the app is stopped; calls then in flight are reported as cut off (not as errors), the
turns not played as not played, and the exit status is 1. Figures depend on the CPU and on
whatever else runs on it; the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.runtime import free_port  # noqa: E402
from agent.store import Store  # noqa: E402

QUESTIONS = (
    "could you tell me a bit more about what happened with your appointment today?",
    "can you walk me through what the letter said, so I understand it correctly?",
    "what matters most to you about getting this sorted out?",
)


def reply_text(session: int, turn: int) -> str:
    return f"Caller {session}, question {turn + 1}: {QUESTIONS[turn % len(QUESTIONS)]}"


@dataclass
class Played:
    """What one client saw: per turn, the latency and the patient's answer (None: the call failed)."""

    session: int
    session_id: str | None = None
    latencies: list[float] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cut_off: int = 0  # turns in flight when the global timeout stopped the app: not errors, not played
    prefill_errors: list[str] = field(default_factory=list)
    ended_early: bool = False


class Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.errors = 0
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def add(self, latency: float | None) -> None:
        with self._lock:
            self.done += 1
            if latency is None:
                self.errors += 1
            else:
                self.latencies.append(latency)
            median = statistics.median(self.latencies) if self.latencies else 0.0
            elapsed = time.monotonic() - self.started
            print(f"\r[{self.done:>4}/{self.total} turns] errors {self.errors}  p50 {median:5.1f} s  "
                  f"elapsed {elapsed:6.0f} s", end="", file=sys.stderr, flush=True)  # fmt: skip


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def start_app(args: argparse.Namespace, data_dir: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DEESCALATE_DATA_DIR": str(data_dir), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}  # fmt: skip
    env.pop("DATABASE_URL", None)
    if args.concurrency is not None:
        env["DEESCALATE_TURN_CONCURRENCY"] = str(args.concurrency)
    if args.base_url:
        env.update({"DEESCALATE_BACKEND": "compatible", "DEESCALATE_BASE_URL": args.base_url,
                    "DEESCALATE_MODEL": args.remote_model,
                    "DEESCALATE_API_KEY": args.api_key or "not-needed"})  # fmt: skip
    else:
        env.update({"DEESCALATE_BACKEND": "embedded", "DEESCALATE_MODEL": args.model})
        env.pop("DEESCALATE_BASE_URL", None)
    log = open(log_path, "wb")  # noqa: SIM115 (the app's whole life)
    return subprocess.Popen([sys.executable, str(REPO / "app.py")], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def wait_for_page(url: str, app: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise RuntimeError(f"the app exited with status {app.returncode} before serving")
        try:
            if httpx.get(url + "gradio_api/info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the app did not serve its page in time")


def play(url: str, args: argparse.Namespace, played: Played, progress: Progress, deadline: float) -> None:
    from gradio_client import Client

    try:
        client = Client(url, verbose=False)
        state = client.predict(args.persona, f"load-{played.session:02d}", api_name="/start_session")
        played.session_id = state["session_id"]
    except Exception as exc:  # counted and reported, never raised: the other sessions go on
        played.errors.append(f"start: {type(exc).__name__}: {exc}"[:300])
        return
    for turn in range(args.turns):
        if time.monotonic() > deadline:
            return
        text = reply_text(played.session, turn)
        if args.typing:  # the reply typed in three bursts, each handed to /prefill_reply as a client would
            words = text.split(" ")
            for cut in (len(words) // 3, 2 * len(words) // 3, len(words) - 1):
                time.sleep(args.typing)
                try:
                    client.predict(played.session_id, " ".join(words[:cut]) + " ", api_name="/prefill_reply")
                except Exception as exc:  # the prefill only saves time: count it, play the turn anyway
                    played.prefill_errors.append(f"turn {turn}: {type(exc).__name__}: {exc}"[:300])
        started = time.monotonic()
        try:
            state = client.predict(played.session_id, text, args.with_tip, api_name="/practice_turn")
        except Exception as exc:
            if time.monotonic() > deadline:  # the bench stopped the app under this call
                played.cut_off += 1
                return
            played.errors.append(f"turn {turn}: {type(exc).__name__}: {exc}"[:300])
            played.answers.append(None)
            progress.add(None)
            return  # the session cannot go on before a retry; the bench does not retry
        latency = time.monotonic() - started
        if state.get("turn_status") != "complete" or not state.get("patient_reply"):
            played.errors.append(f"turn {turn}: {state.get('turn_status')}: {state.get('error')}")
            played.answers.append(None)
            progress.add(None)
            return
        played.latencies.append(latency)
        played.answers.append(state["patient_reply"])
        progress.add(latency)
        if state.get("ended") and turn < args.turns - 1:
            played.ended_early = True
            played.errors.append(f"turn {turn}: the session ended ({state.get('outcome')})")
            return


def verify(store: Store, runs: list[Played], turns: int) -> tuple[int, int, list[str]]:
    """(lost, crossed, problems) from what the app's database holds for each session."""
    lost = crossed = 0
    problems: list[str] = []
    for run in runs:
        if run.session_id is None:
            continue
        record = store.get_session(run.session_id)
        if record.trainee_name != f"load-{run.session:02d}":
            crossed += 1
            problems.append(f"session {run.session}: stored under trainee {record.trainee_name!r}")
        stored = store.all_turns(run.session_id)
        # A turn cut off by the timeout was sent, so the app may have saved it (pending).
        expected = [reply_text(run.session, t) for t in range(len(run.answers) + run.cut_off)]
        texts = [t.trainee_text for t in stored]
        if texts != expected[: len(texts)]:
            crossed += 1
            problems.append(f"session {run.session}: stored replies {texts!r} are not its own, in order")
        for position, answer in enumerate(run.answers):
            if answer is None:
                continue  # counted as an error already
            if position >= len(stored) or stored[position].status != "complete":
                lost += 1
                problems.append(f"session {run.session}, turn {position}: not stored complete")
            elif (stored[position].patient_reply or "").strip() != answer.strip():
                crossed += 1
                problems.append(f"session {run.session}, turn {position}: the stored answer differs from the client's")
    return lost, crossed, problems


def tips(store: Store, runs: list[Played]) -> dict[str, object]:
    """What the trainees were shown as coaching: how many answered turns were coached, where the
    tip came from (the persona's curated coaching, the model, the rubric) and how many tips the
    app dropped because newer turns were waiting for the model (issue 11: tips under load)."""
    grades = [t.grade for r in runs if r.session_id for t in store.all_turns(r.session_id) if t.grade is not None]
    coached = [g for g in grades if g.coached]
    return {
        "coached": len(coached),
        "not_coached": len(grades) - len(coached),
        "source": dict(sorted(Counter(str(g.tip_source) for g in coached).items())),
        "dropped": sum(1 for g in coached if (g.error or "").startswith("dropped")),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    deadline = time.monotonic() + args.timeout
    data_dir = Path(tempfile.mkdtemp(prefix="deescalate-load-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = data_dir / "app.log"
    app = start_app(args, data_dir, port, log_path)
    print(f"app on {url} (log {log_path})", file=sys.stderr)
    try:
        wait_for_page(url, app, deadline)
        warm = Played(session=99)
        warm_started = time.monotonic()
        play(url, argparse.Namespace(**{**vars(args), "turns": 1}), warm, Progress(1), deadline)
        print(f"\nwarm-up turn: {time.monotonic() - warm_started:.1f} s", file=sys.stderr)
        if warm.errors:
            raise RuntimeError(f"the warm-up session failed: {warm.errors}")
        runs = [Played(session=number) for number in range(1, args.sessions + 1)]
        progress = Progress(args.sessions * args.turns)
        started = time.monotonic()
        threads = [threading.Thread(target=play, args=(url, args, r, progress, deadline), daemon=True) for r in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
        wall = time.monotonic() - started
        timed_out = any(thread.is_alive() for thread in threads)
        print(file=sys.stderr)
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait()
    store = Store(f"sqlite:///{data_dir / 'deescalate.db'}")
    lost, crossed, problems = verify(store, runs, args.turns)
    coaching = tips(store, runs)
    store.close()
    latencies = [value for r in runs for value in r.latencies]
    errors = [f"session {r.session}: {e}" for r in runs for e in r.errors]
    return {
        "config": {
            "sessions": args.sessions,
            "turns": args.turns,
            "persona": args.persona,
            "with_tip": args.with_tip,
            "backend": "compatible" if args.base_url else "embedded",
            "model": args.remote_model if args.base_url else args.model,
            "base_url": args.base_url,
            "turn_concurrency": args.concurrency or 16,
            "coaching": os.environ.get("DEESCALATE_COACHING") or "backend default",
            "timeout_s": args.timeout,
        },  # fmt: skip
        "turns_planned": args.sessions * args.turns,
        "turns_answered": len(latencies),
        "turns_cut_off_by_timeout": sum(r.cut_off for r in runs),
        "turns_not_played": args.sessions * args.turns - sum(len(r.answers) for r in runs),
        "timed_out": timed_out,
        "errors": len(errors),
        "lost": lost,
        "crossed": crossed,
        "latency_s": {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "mean": statistics.fmean(latencies) if latencies else None,
            "max": max(latencies, default=None),
        },  # fmt: skip
        "first_turn_s": {  # the API's first turn after /start_session, beside the later ones
            "p50": percentile([r.latencies[0] for r in runs if r.latencies], 50),
            "later_p50": percentile([value for r in runs for value in r.latencies[1:]], 50),
        },
        "typing": args.typing,
        "prefill_errors": sum(len(r.prefill_errors) for r in runs),
        "tips": coaching,
        "wall_s": round(wall, 1),
        "turns_per_min": round(len(latencies) / wall * 60, 2) if wall else None,
        "load_average": os.getloadavg(),
        "error_samples": errors[:10],
        "problems": problems[:10],
        "data_dir": str(data_dir),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions (default %(default)s)")
    parser.add_argument("--turns", type=int, default=10, help="replies per session (default %(default)s)")
    parser.add_argument("--persona", default="carter-wrong-day", help="persona id (default %(default)s)")
    parser.add_argument("--model", default="default", help="embedded model: default, small or a GGUF path")
    parser.add_argument("--base-url", help="an OpenAI-compatible server (.../v1) instead of the embedded model")
    parser.add_argument("--remote-model", default="local", help="the model name that server serves")
    parser.add_argument("--api-key", help="key for that server (default: none)")
    parser.add_argument("--concurrency", type=int, help="the app's turn queue limit (DEESCALATE_TURN_CONCURRENCY)")
    parser.add_argument("--with-tip", action="store_true", help="each call also waits for the tip")
    parser.add_argument("--timeout", type=float, default=3600.0, help="stop after this many seconds (default 3600)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--typing", type=float, default=1.0, metavar="S",
                        help="before each reply, hand the reply so far to /prefill_reply three times, S seconds "
                             "apart, as a client would while the trainee types (0: do not)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.turns < 1:
        parser.error("--sessions and --turns must be at least 1")
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        config = result["config"]
        lat = result["latency_s"]

        def fmt(value: object) -> str:
            return "-" if value is None else f"{value:.1f} s"

        print(f"{config['sessions']} sessions x {config['turns']} turns, {config['backend']} model "
              f"{config['model']}, turn concurrency {config['turn_concurrency']}, "
              f"tip {config['with_tip']}")  # fmt: skip
        print(f"answered {result['turns_answered']}/{result['turns_planned']} in {result['wall_s']} s "
              f"({result['turns_per_min']} turns/min); timed out: {result['timed_out']}")  # fmt: skip
        print(f"errors {result['errors']}, lost {result['lost']}, crossed {result['crossed']}; "
              f"cut off by the timeout {result['turns_cut_off_by_timeout']}")  # fmt: skip
        print(f"time to answer: p50 {fmt(lat['p50'])}, p90 {fmt(lat['p90'])}, p99 {fmt(lat['p99'])}, "
              f"mean {fmt(lat['mean'])}, max {fmt(lat['max'])}")  # fmt: skip
        shown = result["tips"]
        print(f"tips: {shown['coached']} coached ({shown['source']}), {shown['dropped']} dropped for newer turns, "
              f"{shown['not_coached']} not coached yet; coaching {config['coaching']}")  # fmt: skip
        print("load average: " + ", ".join(f"{x:.2f}" for x in result["load_average"]))
        for line in [*result["error_samples"], *result["problems"]]:
            print("  " + line)
    ok = (not result["timed_out"] and result["errors"] == 0 and result["lost"] == 0 and result["crossed"] == 0
          and result["turns_answered"] == result["turns_planned"])  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
