"""llama.cpp's own CPU settings, quiet and beside busy cores, on a prompt shaped like the patient's (prints figures).

Usage: python bench/server_settings.py [--json] [--reps N] [--busy 0,1,2] [--config NAME=ARGS ...]

For each configuration, the embedded server is started the way the app starts it
(:class:`agent.runtime.EmbeddedServer`, two slots, 8192 tokens each, 1 GiB prompt cache) with that
configuration's :class:`~agent.runtime.ServerOptions`; then, with 0, 1 and 2 of :mod:`bench.busy`'s
CPU hogs running, ``--reps`` times: slot 0 is primed (untimed) with a patient-shaped prompt of about
600 tokens, then the same prompt plus about 32 new tokens (a trainee line and a stage direction) is
sent, streamed, for exactly 40 generated tokens (``ignore_eos``). Timed: first token and the whole
answer, from the request; beside them the server's own ``timings`` (prompt and generation ms).

A configuration is ``name=key:value,key:value`` over ``threads``, ``threads_batch``, ``poll``,
``priority``, ``spin_count`` (GOMP_SPINCOUNT; ``default``: libgomp's own) (see ``ServerOptions``)
and ``cpus`` (confine the server to that many CPUs after loading: one thread per core or not).
The load average is printed beside each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from busy import hogs, load  # noqa: E402

from agent.runtime import EmbeddedServer, ServerOptions  # noqa: E402

DEFAULT_CONFIGS = [
    "before=threads:2,poll:50,spin_count:default",
    "spin10k=threads:2,poll:0,spin_count:10000",
    "spin0=threads:2,poll:0,spin_count:0",
    "t1=threads:1,poll:0,spin_count:10000",
]

FRONT = (
    "Below is a transcript of a conversation at the front desk of Riverside Family Clinic. Mr. Carter, 58, "
    "has waited ninety minutes past his appointment time for a follow-up about his blood pressure "
    "medication, and he is missing work for it. He is angry, speaks in short sentences, and does not "
    "trust the clinic's excuses. He wants to be seen, or to know exactly when, and he wants someone to "
    "admit the wait is unacceptable.\n\n"
)
LINES = [
    "Receptionist: Good afternoon, how can I help you?",
    "[Mr. Carter is furious.]\nMr. Carter: I've been sitting here for an hour and a half. Nobody has told me anything.",
    "Receptionist: I'm sorry, let me check what is happening with the schedule today.",
    "[Mr. Carter is angry.]\nMr. Carter: You said that forty minutes ago. I took the afternoon off work for this.",
    "Receptionist: I understand that is frustrating. Dr. Lee is running behind because of an emergency.",
    "[Mr. Carter is angry and suspicious.]\nMr. Carter: There's always an emergency. Why didn't anyone call me?",
    "Receptionist: You're right that we should have called you before you came in.",
    "[Mr. Carter is still angry.]\nMr. Carter: So what now? Do I just keep sitting here like an idiot?",
]


def prompt(turn: int, repeats: int = 3) -> tuple[str, str]:
    """(the cached front, the front plus a new trainee line and stage direction)."""
    front = FRONT + "\n".join(LINES * repeats) + "\n"
    new = (f"Receptionist: I can see you are next, Mr. Carter; Dr. Lee will see you in about {turn + 5} minutes, "
           "and I will come and tell you myself if that changes.\n[Mr. Carter is annoyed.]\nMr. Carter:")  # fmt: skip
    return front, front + new


def request(base: str, text: str, max_tokens: int, *, stream: bool) -> tuple[float | None, float, dict]:
    messages = [{"role": "user", "content": "Continue the transcript."}, {"role": "assistant", "content": text}]
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "id_slot": 0, "ignore_eos": True,
            "stream": stream, "cache_prompt": True}  # fmt: skip
    started = time.monotonic()
    first = None
    timings: dict = {}
    if not stream:
        response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=300)
        response.raise_for_status()
        return None, time.monotonic() - started, response.json().get("timings", {})
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if first is None and any((c.get("delta") or {}).get("content") for c in data.get("choices", [])):
                first = time.monotonic() - started
            timings = data.get("timings", timings)
    return first, time.monotonic() - started, timings


def parse(config: str) -> tuple[str, ServerOptions, int | None]:
    name, _, spec = config.partition("=")
    options = ServerOptions()
    cpus = None
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition(":")
        if key == "cpus":
            cpus = int(value)
        elif key == "spin_count":
            options.spin_count = None if value == "default" else int(value)
        else:
            setattr(options, key, int(value))
    return name, options, cpus


def pin(pid: int, cpus: int) -> None:
    """Every thread of ``pid`` on its first ``cpus`` CPUs (the scheduler moves the hogs away)."""
    allowed = set(sorted(os.sched_getaffinity(0))[:cpus])
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), allowed)


def run(name: str, options: ServerOptions, busy: list[int], reps: int, cpus: int | None = None, *,
        tokens: int = 40, repeats: int = 3) -> dict:  # fmt: skip
    server = EmbeddedServer(options=options, log_path=Path("/tmp") / f"server-settings-{name}.log")
    rows: dict[str, dict] = {}
    with server:
        base = server.base_url
        front, _ = prompt(0, repeats)
        request(base, front, 1, stream=False)  # load the weights and the front once
        if cpus:
            assert server.process is not None
            pin(server.process.pid, cpus)
        for count in busy:
            firsts, wholes, prompt_ms, gen_ms = [], [], [], []
            with hogs(count, seconds=60 + 30 * reps):
                for rep in range(reps):
                    front, full = prompt(rep, repeats)
                    request(base, front, 1, stream=False)
                    first, whole, timings = request(base, full, tokens, stream=True)
                    firsts.append(first)
                    wholes.append(whole)
                    prompt_ms.append(timings.get("prompt_ms"))
                    gen_ms.append(timings.get("predicted_ms"))
                avg = load()
            row = {
                "first_token_s": round(statistics.median(firsts), 3),
                "answer_s": round(statistics.median(wholes), 3),
                "first_token_all": [round(v, 3) for v in firsts],
                "answer_all": [round(v, 3) for v in wholes],
                "prompt_ms": round(statistics.median(p for p in prompt_ms if p is not None), 1),
                "predicted_ms": round(statistics.median(g for g in gen_ms if g is not None), 1),
                "load": avg,
            }
            rows[f"busy{count}"] = row
            print(f"{name:>14} busy {count}: first token {row['first_token_s']:.2f} s, answer {row['answer_s']:.2f} s "
                  f"(prompt {row['prompt_ms']:.0f} ms, {tokens} tokens {row['predicted_ms']:.0f} ms)  load {avg}",
                  file=sys.stderr, flush=True)  # fmt: skip
    quiet = rows.get("busy0")
    for key, row in rows.items():
        if quiet and key != "busy0":
            row["ratio_first"] = round(row["first_token_s"] / quiet["first_token_s"], 2)
            row["ratio_answer"] = round(row["answer_s"] / quiet["answer_s"], 2)
    keys = ("threads", "threads_batch", "poll", "priority", "spin_count")
    return {"options": {k: getattr(options, k) for k in keys}, "cpus": cpus, **rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--busy", default="0,1,2", help="numbers of CPU hogs, comma-separated")
    parser.add_argument("--config", action="append", help="name=key:value,... (default: the built-in matrix)")
    parser.add_argument("--tokens", type=int, default=40, help="tokens generated per answer (40)")
    parser.add_argument("--front", type=int, default=3, help="times the 8-line exchange is repeated in the front "
                        "(3: about 600 tokens)")  # fmt: skip
    args = parser.parse_args()
    busy = [int(v) for v in args.busy.split(",")]
    results = {"load_before": load(), "tokens": args.tokens, "front": args.front, "configs": {}}
    for config in args.config or DEFAULT_CONFIGS:
        name, options, cpus = parse(config)
        results["configs"][name] = run(name, options, busy, args.reps, cpus, tokens=args.tokens, repeats=args.front)
    results["load_after"] = load()
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
