"""Per-turn grading latency on the embedded model: median time until all verdicts, until the tip.

Usage: ``.venv/bin/python bench/grade_latency.py [--n 14] [--model default] [--app-turns 4] [--show]``

Three parts, each printing medians and maxima:

1. **Verdicts** (the checks + the learned classifier: what the patient's mood update waits for),
   over every reply of ``--file``; also the checks alone, and the one-off encoder load.
2. **Tip, one reply at a time**: replies from the held-out gold files, one per distinct patient
   line, so no prompt is in the server's cache by accident. Timed with
   :func:`agent.coach.stream_grade`: "tip" is when the tip is on screen (its JSON string has
   closed), "phrasing" when the better phrasing is too. Each reply is graded *cold* (the whole
   prompt is read after "send") and *warm* (first the coach's slot reads
   :func:`agent.coach.tip_prefix_messages`, untimed, which is what the app does while the trainee
   types), on two servers used in turn.
3. **In the app** (``--app-turns``): a real :class:`agent.practice.Practice` session on a fresh
   server and a throwaway SQLite database, scripted trainee lines, a pause between turns for
   "typing"; per turn the time from the patient's last word to the tip and to the phrasing.

Figures depend on the CPU and whatever else runs on it: the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from agent import learned
from agent.calibrate import Example, load_examples
from agent.checks import TurnContext
from agent.coach import coach_model, stream_grade, tip_prefix_messages
from agent.grader import grade_fast
from agent.grades import TurnGrade
from agent.llm import Backend, LLMSettings
from agent.practice import Practice
from agent.rubrics import Rubric, load_rubric
from agent.runtime import EmbeddedServer
from agent.simulate import trainee_lines
from agent.store import Store

ROOT = Path(__file__).resolve().parent.parent
GOLD = ROOT / "tests/data/gold"


def summary(label: str, values_ms: list[float]) -> str:
    return (f"{label}: median {statistics.median(values_ms) / 1000:4.2f} s, max {max(values_ms) / 1000:4.2f} s "
            f"({len(values_ms)} replies)")  # fmt: skip


def distinct_patient_lines(rubric: Rubric, n: int) -> list[Example]:
    """One reply per distinct last patient line, from the held-out files (test*.jsonl)."""
    seen: set[str] = set()
    picked: list[Example] = []
    for path in sorted(GOLD.glob("test*.jsonl")):
        for example in load_examples(path, rubric):
            line = example.turn_context().last_patient()
            if line and line not in seen:
                seen.add(line)
                picked.append(example)
    return picked[:n]


def bench_verdicts(rubric: Rubric, path: str) -> None:
    started = time.perf_counter()
    component = learned.component_for(rubric)
    print(f"learned component loaded in {time.perf_counter() - started:.2f} s (ready: {component.ready})")
    examples = load_examples(path, rubric)
    for use in (False, True):
        times = [grade_fast(rubric, e.reply, e.turn_context(), use_learned=use).verdicts_ms for e in examples]
        label = "checks + learned" if use else "checks alone    "
        print(f"verdicts, {label}: median {statistics.median(times):6.1f} ms, max {max(times):6.1f} ms "
              f"({len(times)} replies)")  # fmt: skip


def _record(out: dict[str, list[float]], result: TurnGrade) -> tuple[float, float]:
    tip = result.verdicts_ms + (result.tip_ms or 0.0)
    phrasing = result.verdicts_ms + (result.advice_ms or 0.0)
    out["verdicts"].append(result.verdicts_ms)
    out["tip"].append(tip)
    out["phrasing"].append(phrasing)
    out["tip_rubric"].append(float(result.tip_source != "model"))
    out["phrasing_rubric"].append(float(result.phrasing_source != "model"))
    return tip, phrasing


def bench_tips(
    rubric: Rubric, examples: list[Example], model: str, show: bool = False
) -> dict[str, dict[str, list[float]]]:
    """Tip and phrasing times from "send" (verdicts + model), cold and warm, reply by reply.

    Two fresh servers, one per mode, used in turn for each reply, so a change in the machine's
    speed during the run (other load, throttling) hits both modes alike. Distinct patient lines
    mean the cold server never holds a reply's prompt front from an earlier request.
    """
    keys = ("verdicts", "tip", "phrasing", "tip_rubric", "phrasing_rubric")
    out: dict[str, dict[str, list[float]]] = {mode: {key: [] for key in keys} for mode in ("cold", "warm")}
    with EmbeddedServer(model=model) as cold_server, EmbeddedServer(model=model) as warm_server:
        servers = {"cold": cold_server, "warm": warm_server}
        settings = {mode: LLMSettings(backend=Backend.EMBEDDED, base_url=server.openai_base_url, model=model,
                                      timeout=900) for mode, server in servers.items()}  # fmt: skip
        for mode in servers:  # one untimed call each, so no timed call pays for first use
            warm(examples[0].turn_context().model_copy(update={"history": []}), settings[mode])
        for example in examples:
            context = example.turn_context()
            line = f"  {example.id:<30}"
            for mode in ("cold", "warm"):
                if mode == "warm":  # what the app does while the trainee types (untimed)
                    warm(context, settings[mode], situation=example.situation)
                *_, result = stream_grade(rubric, example.reply, context, settings[mode], situation=example.situation)
                tip, phrasing = _record(out[mode], result)
                line += f"   {mode}: tip {tip / 1000:4.2f} s, phrasing {phrasing / 1000:4.2f} s"
            print(f"{line}   focus {result.focus}")
            if show:
                print(f"      tip: {result.tip}\n      try: {result.better_phrasing}")
    return out


def warm(context: TurnContext, settings: LLMSettings, situation: str | None = None) -> None:
    """What the app does while the trainee types: the coach's slot reads the tip prompt's known front."""
    coach_model(settings).prefill(tip_prefix_messages(context, situation))


def bench_app(model: str, turns: int, pause: float) -> dict[str, list[float]]:
    """A Practice session: time from the patient's answer to the tip and to the phrasing."""
    out: dict[str, list[float]] = {"tip": [], "phrasing": []}
    persona_id = "carter-wrong-day"
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(model=model) as server:
        store = Store(f"sqlite:///{tmp}/bench.db")
        settings = LLMSettings(backend=Backend.EMBEDDED, base_url=server.openai_base_url, model=model, timeout=900)
        practice = Practice(store, settings, seed=7)
        session_id = practice.start(persona_id).session.id
        good, bad = (trainee_lines(practice.persona(persona_id), name) for name in ("good", "bad"))
        lines = [line for pair in zip(good, bad, strict=False) for line in pair][:turns]
        for index, line in enumerate(lines):
            time.sleep(pause)  # the trainee reads the answer and types; the warm-up runs meanwhile
            tipped = None
            *_, last = practice.turn(session_id, line)
            answered = time.perf_counter()
            ended = last.session.ended
            for update in practice.coaching(session_id):  # the tip follows the answer, off the critical path
                now = time.perf_counter()
                if update.stage == "tipped":
                    tipped = now
                elif update.stage == "coached":
                    out["tip"].append(((tipped or now) - answered) * 1000)
                    out["phrasing"].append((now - answered) * 1000)
                    print(f"  turn {index + 1}: tip {out['tip'][-1] / 1000:5.2f} s   phrasing "
                          f"{out['phrasing'][-1] / 1000:5.2f} s after the patient's answer")  # fmt: skip
                ended = update.session.ended
            if ended:
                print(f"  session ended after turn {index + 1}")
                break
        store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=14, help="replies to grade, one per patient line (0: skip)")
    parser.add_argument("--model", default="default", help="embedded model: default, small or a GGUF path")
    parser.add_argument("--file", default=str(GOLD / "dev.jsonl"), help="replies for the verdict timing")
    parser.add_argument("--app-turns", type=int, default=4, help="turns of the in-app session (0: skip it)")
    parser.add_argument("--show", action="store_true", help="print each tip and better phrasing")
    parser.add_argument("--pause", type=float, default=6.0, help="seconds of 'typing' between app turns")
    args = parser.parse_args()

    rubric = load_rubric()
    bench_verdicts(rubric, args.file)
    examples = distinct_patient_lines(rubric, args.n)
    results: dict[str, dict[str, list[float]]] = {}
    if examples:
        print("\ntip, one reply at a time; warm = the app's warm-up ran first, as while the trainee types:")
        results = bench_tips(rubric, examples, args.model, show=args.show)
    app = bench_app(args.model, args.app_turns, args.pause) if args.app_turns else None

    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; model {args.model}")
    for name in results:
        verdicts = results[name]["verdicts"]
        print(f"until all verdicts ({name}):  median {statistics.median(verdicts):.0f} ms, max {max(verdicts):.0f} ms")
        print(summary(f"until the tip ({name}):      ", results[name]["tip"]))
        print(summary(f"until the phrasing ({name}): ", results[name]["phrasing"]))
        tips, phrasings = (int(sum(results[name][key])) for key in ("tip_rubric", "phrasing_rubric"))
        print(f"shown from the rubric, the guards having turned the model's down ({name}): "
              f"tips {tips}, phrasings {phrasings}")  # fmt: skip
    if app and app["tip"]:
        print(summary("in the app, answer -> tip:     ", app["tip"]))
        print(summary("in the app, answer -> phrasing:", app["phrasing"]))


if __name__ == "__main__":
    main()
