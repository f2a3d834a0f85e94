"""Bounded CPU hogs for the benches: what a trainee's laptop does beside the app.

Why bounded processes and not ``yes > /dev/null``: a bench that is stopped (Ctrl-C, a crash, a
killed session) must not leave a core spinning, so each hog is a child process that ends by itself
after ``seconds`` (and with its parent). A hog is a pure spin loop in its own process, as a busy
browser tab or a compile would be: it takes one core whenever the scheduler lets it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

SPIN = (
    "import os, sys, time\n"
    "end = time.monotonic() + float(sys.argv[1]); parent = int(sys.argv[2])\n"
    "while time.monotonic() < end and os.getppid() == parent:\n"
    "    for _ in range(200000): pass\n"
)


def load() -> str:
    """The 1, 5 and 15 minute load averages, to print beside every figure."""
    try:
        return " ".join(open("/proc/loadavg", encoding="ascii").read().split()[:3])
    except OSError:
        return "?"


@contextmanager
def hogs(count: int, seconds: float = 600.0) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` spinning processes for at most ``seconds`` (they stop by themselves, and when this
    process exits); stopped on leaving the block."""
    started = [
        subprocess.Popen([sys.executable, "-c", SPIN, str(seconds), str(os.getpid())], stdin=subprocess.DEVNULL)
        for _ in range(max(count, 0))
    ]
    try:
        if started:
            time.sleep(0.5)  # let the scheduler place them before anything is timed
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
        for process in started:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
