"""Patient latency per turn through the session (prints figures; not a test).

    DEESCALATE_BACKEND=embedded DEESCALATE_BASE_URL=http://127.0.0.1:8089/v1 .venv/bin/python bench/patient_latency.py

For one persona and its scripted good lines, measures per turn: the fast verdicts + mood
(``checked`` event), the first patient sentence (``delta``; the role filter releases whole
sentences) and the full reply (``answered``). The LLM grade is not waited for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.llm import LLMSettings  # noqa: E402
from agent.personas import load_persona_argument as load_persona  # noqa: E402
from agent.session import Session  # noqa: E402
from agent.simulate import trainee_lines  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--persona", default="carter-wrong-day")
    parser.add_argument("--turns", type=int, default=4)
    args = parser.parse_args()
    persona = load_persona(args.persona)
    session = Session(persona, settings=LLMSettings.from_env(), seed=7, temperature=0)
    rows = []
    for line in trainee_lines(persona, "good")[: args.turns]:
        if session.ending:
            break
        start = time.perf_counter()
        marks: dict[str, float] = {}
        for event in session.stream_turn(line):
            marks.setdefault(event.kind, (time.perf_counter() - start) * 1000)
        rows.append(marks)
        print(f"checked {marks['checked']:7.1f} ms  first sentence {marks['delta']:7.0f} ms  "
              f"full reply {marks['answered']:7.0f} ms  | {session.turns[-1].patient!r}")  # fmt: skip
    summary = {key: round(statistics.median(r[key] for r in rows), 1) for key in ("checked", "delta", "answered")}
    print(json.dumps({"persona": persona.id, "turns": len(rows), "median_ms": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
