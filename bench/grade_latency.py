"""Per-turn grading latency on the embedded model: median time until all verdicts, until the tip.

Usage: ``.venv/bin/python bench/grade_latency.py [--n 8] [--model default] [--file tests/data/gold/dev.jsonl]``

Starts the embedded llama.cpp server (agent.runtime.EmbeddedServer), warms it with one call, then
grades ``--n`` replies from a calibration file with :func:`agent.grader.grade`. Prints the median
and max of: verdicts (the checks + the learned classifier, what the patient's mood update waits
for; also split into checks alone and the learned part, and the one-off encoder load) and tip (the one model
call for tip + better phrasing, what the feedback panel waits for). Figures depend on the CPU and
on whatever else runs on it: the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from agent import learned
from agent.calibrate import load_examples
from agent.grader import grade, grade_fast
from agent.llm import Backend, LLMSettings
from agent.rubrics import load_rubric
from agent.runtime import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="replies to grade")
    parser.add_argument("--model", default="default", help="embedded model: default, small or a GGUF path")
    parser.add_argument("--file", default=str(ROOT / "tests/data/gold/dev.jsonl"))
    args = parser.parse_args()

    rubric = load_rubric()
    examples = load_examples(args.file, rubric)[: args.n]
    started = time.perf_counter()
    component = learned.component_for(rubric)
    print(f"learned component loaded in {time.perf_counter() - started:.2f} s (ready: {component.ready})")
    everything = load_examples(args.file, rubric)
    for use in (False, True):
        times = [grade_fast(rubric, e.reply, e.turn_context(), use_learned=use).verdicts_ms for e in everything]
        label = "checks + learned" if use else "checks alone    "
        print(f"verdicts, {label}: median {statistics.median(times):6.1f} ms, max {max(times):6.1f} ms "
              f"({len(times)} replies)")  # fmt: skip
    started = time.perf_counter()
    with EmbeddedServer(model=args.model) as server:
        print(f"server up in {time.perf_counter() - started:.1f} s ({server.alias})")
        settings = LLMSettings(backend=Backend.EMBEDDED, base_url=server.openai_base_url, model=args.model,
                               timeout=900)  # fmt: skip
        warm = grade(rubric, examples[0].reply, examples[0].turn_context(), settings)
        print(f"warm-up call: {warm.tip_ms / 1000:.1f} s ({warm.tip_source})")
        verdicts_ms: list[float] = []
        tip_ms: list[float] = []
        failures = 0
        for example in examples:
            result = grade(rubric, example.reply, example.turn_context(), settings, situation=example.situation)
            verdicts_ms.append(result.verdicts_ms)
            tip_ms.append(result.verdicts_ms + (result.tip_ms or 0.0))
            failures += result.tip_source != "model"
            print(f"  {example.id:<26} verdicts {result.verdicts_ms:7.1f} ms   tip {tip_ms[-1] / 1000:6.1f} s   "
                  f"focus {result.focus}")  # fmt: skip
    print(f"replies: {len(examples)}   model failures: {failures}   load average: {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")  # fmt: skip
    print(f"until all verdicts: median {statistics.median(verdicts_ms):.1f} ms, max {max(verdicts_ms):.1f} ms")
    print(f"until the tip:      median {statistics.median(tip_ms) / 1000:.1f} s, max {max(tip_ms) / 1000:.1f} s")


if __name__ == "__main__":
    main()
