"""Where the CPU goes, thread by thread, while something else runs (prints figures).

Usage: python bench/thread_trace.py [--seconds S] [--every S] [--json] [--out FILE] [-- COMMAND ...]

Samples every thread of every process on the machine (``/proc/<pid>/task/<tid>/stat``: user +
system ticks) every ``--every`` seconds for ``--seconds``, or for as long as COMMAND runs when one
is given (``-- python bench/turn_latency.py --busy 1``), and prints, per process and per thread,
the CPU it used (seconds and share of one core) over the whole window and in the window's busiest
second. ``--out FILE`` keeps the raw samples (one JSON line per sample: time, then
``[pid, tid, process name, thread name, ticks]`` for the threads that ran), for a timeline.

Why: on a busy laptop a turn is slow when something runs beside the patient's answer on the two
cores the llama.cpp server's threads need. This shows what that is (the server's own threads, the
app's Python, an encoder's thread pool, the browser, the CPU hogs of ``bench/busy.py``) without a
profiler that needs privileges. Linux only; the sampler itself costs a few percent of one core.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _name(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "?"


def sample() -> dict[tuple[int, int], tuple[str, str, int]]:
    """Every thread's (process name, thread name, CPU ticks so far)."""
    seen: dict[tuple[int, int], tuple[str, str, int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            process = _name(f"/proc/{pid}/comm")
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if process.startswith("python") and len(command) > 1:  # name python runs by what it runs
                process = " ".join(part.decode(errors="replace") for part in command[1:3])[:60]
            for tid in os.listdir(f"/proc/{pid}/task"):
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                thread = stat[stat.index("(") + 1 : stat.rindex(")")]
                seen[(int(pid), int(tid))] = (process, thread, int(fields[11]) + int(fields[12]))
        except (OSError, ValueError):
            continue  # the process ended while being read
    return seen


def trace(seconds: float | None, every: float, command: list[str] | None, out: Path | None) -> dict:
    runner = subprocess.Popen(command) if command else None
    began = time.monotonic()
    previous = sample()
    totals: collections.Counter[tuple[int, int]] = collections.Counter()
    names: dict[tuple[int, int], tuple[str, str]] = {}
    per_second: dict[int, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    raw = out.open("w") if out else None
    try:
        while True:
            time.sleep(every)
            now = sample()
            stamp = time.monotonic() - began
            ran = []
            for key, (process, thread, ticks) in now.items():
                used = ticks - previous.get(key, (process, thread, ticks))[2]
                if used > 0:
                    totals[key] += used
                    names[key] = (process, thread)
                    per_second[int(stamp)][key[0]] += used
                    ran.append([key[0], key[1], process, thread, used])
            if raw is not None and ran:
                raw.write(json.dumps([round(stamp, 3), ran]) + "\n")
            previous = now
            if runner is not None and runner.poll() is not None:
                break
            if runner is None and seconds is not None and stamp >= seconds:
                break
    finally:
        if raw is not None:
            raw.close()
    wall = time.monotonic() - began
    processes: collections.Counter[int] = collections.Counter()
    for (pid, _), ticks in totals.items():
        processes[pid] += ticks
    busiest = max(per_second.items(), key=lambda item: sum(item[1].values()), default=(0, collections.Counter()))
    process_names = {pid: names[key][0] for key in names for pid in [key[0]]}
    return {
        "wall_s": round(wall, 1),
        "cores": os.cpu_count(),
        "exit_code": runner.returncode if runner is not None else None,
        "processes": [
            {
                "pid": pid,
                "name": process_names[pid],
                "cpu_s": round(ticks / TICK, 2),
                "share_of_one_core": round(ticks / TICK / wall, 3),
            }
            for pid, ticks in processes.most_common(12)
        ],
        "threads": [
            {
                "pid": key[0],
                "tid": key[1],
                "process": names[key][0],
                "thread": names[key][1],
                "cpu_s": round(ticks / TICK, 2),
                "share_of_one_core": round(ticks / TICK / wall, 3),
            }
            for key, ticks in totals.most_common(20)
        ],
        "busiest_second": {
            "at_s": busiest[0],
            "cpu_s_by_process": {
                process_names.get(pid, str(pid)): round(t / TICK, 2) for pid, t in busiest[1].most_common(6)
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = None
    if "--" in argv:
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="sample this long (without a COMMAND: 30)")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=None, help="keep the raw samples here (JSON lines)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not Path("/proc/self/task").exists():
        print("thread_trace needs Linux's /proc (per-thread CPU times); not available here.", file=sys.stderr)
        return 2
    result = trace(args.seconds if command or args.seconds else 30.0, args.every, command, args.out)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['wall_s']} s on {result['cores']} cores")
    print(f"{'process':<62}{'CPU s':>8}{'cores':>7}")
    for row in result["processes"]:
        print(f"{row['name']:<62}{row['cpu_s']:>8}{row['share_of_one_core']:>7}")
    print(f"\n{'thread':<62}{'CPU s':>8}{'cores':>7}")
    for row in result["threads"]:
        label = f"{row['process'][:40]} / {row['thread']} ({row['tid']})"
        print(f"{label:<62}{row['cpu_s']:>8}{row['share_of_one_core']:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
