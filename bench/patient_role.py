"""Does the patient stay believable? Scripted sessions on the real model, counted mechanically (issue 13, item 5).

Usage: python bench/patient_role.py [--turns 6] [--temperature 0.7] [--personas a,b] [--trainees good,bad,probe]
       [--model default|small] [--base-url URL] [--json]

Plays every persona against three scripted trainees (``good`` and ``bad`` from the persona's script
or personas/scripts/trainee.yaml, ``probe``: tests/data/role_probe.txt, lines that invite the
model out of role) through the same pipeline as the app (``agent.simulate.simulate``: a
``Session`` on ``patient_model``, the role filter included), on its own embedded llama.cpp server
unless ``--base-url`` names one. Sampling is the app's by default (temperature 0.7) with a fixed
seed so a run can be repeated; ``--temperature 0`` is ``simulate``'s default.

Counted per patient line (the opening line is the persona's own and not counted), with the
measures in tests/role_checks.py:

* ``verbatim_repeats``: the line is, word for word, a line the patient already said this session;
* ``staff_lines``: the line speaks for the clinic (``role_checks.staff_line``);
* ``invented_facts``: a number, time, duration or named day in the line that is neither in the
  persona's ``facts`` (nor its age or opening line) nor said earlier in the conversation;
* ``unearned_acceptance``: the line thanks for or accepts an offer the trainee did not make
  (``role_checks.unearned_acceptance`` against the offers the mood recorded up to that turn);
* also reported: ``character_breaks`` (``role_checks.NOT_A_PATIENT``), ``leaks`` (prompt text), and
  ``fallback`` (the filter gave up and the persona's fallback line was shown: not a failure).

Prints a row per persona and trainee, the totals and every offending line (``--json``: one object).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.llm import Backend, LLMSettings  # noqa: E402
from agent.patient import patient_model  # noqa: E402
from agent.personas import Persona, load_personas  # noqa: E402
from agent.runtime import EmbeddedServer  # noqa: E402
from agent.simulate import simulate  # noqa: E402
from tests import role_checks  # noqa: E402

PROBES = Path(__file__).resolve().parent.parent / "tests" / "data" / "role_probe.txt"
TRAINEES = {"good": "good", "bad": "bad", "probe": str(PROBES)}
COUNTS = (
    "verbatim_repeats",
    "staff_lines",
    "invented_facts",
    "unearned_acceptance",
    "character_breaks",
    "leaks",
    "fallback",
)


def judge(
    persona: Persona, said: list[str], earlier: list[str], reply: str, notes: list[str], offers: list[str]
) -> dict[str, str]:
    """What is wrong with one patient line: count name -> why (empty when nothing); ``offers``: what
    the trainee concretely offered up to this line."""
    found: dict[str, str] = {}
    if role_checks.repeats(reply, earlier):
        found["verbatim_repeats"] = "said before"
    checks = (
        ("staff_lines", role_checks.staff_line(reply, persona)),
        ("invented_facts", ", ".join(role_checks.invented_facts(reply, persona, said))),
        ("unearned_acceptance", role_checks.unearned_acceptance(reply, offers)),
        ("character_breaks", role_checks.character_break(reply)),
        ("leaks", role_checks.leak(reply, persona)),
    )
    found.update({key: why for key, why in checks if why})
    if "fallback line" in notes:
        found["fallback"] = "fallback line shown"
    return found


def play(persona: Persona, trainee: str, args: argparse.Namespace, settings: LLMSettings) -> list[dict[str, Any]]:
    session = simulate(persona, TRAINEES[trainee], args.turns, patient_model(settings), seed=args.seed,
                       temperature=args.temperature)  # fmt: skip
    lines: list[dict[str, Any]] = []
    earlier, said = [persona.opening_line], []
    for index, turn in enumerate(session.turns):
        said.append(turn.trainee)
        reply = turn.patient or ""
        found = judge(persona, said, earlier, reply, turn.notes, turn.mood_after.offers)
        lines.append({"turn": index + 1, "trainee": turn.trainee, "patient": reply, "notes": turn.notes,
                      "offers": turn.mood_after.offers, "found": found})  # fmt: skip
        earlier.append(reply)
    return lines


@contextlib.contextmanager
def server_settings(args: argparse.Namespace) -> Iterator[LLMSettings]:
    if args.base_url:
        yield LLMSettings(backend=Backend.EMBEDDED, model=args.model, base_url=args.base_url, timeout=args.timeout)
        return
    workdir = Path(tempfile.mkdtemp(prefix="patient-role-"))
    with EmbeddedServer(model=args.model, log_path=workdir / "llama-server.log") as server:
        server.ensure()
        yield LLMSettings(backend=Backend.EMBEDDED, model=args.model, base_url=server.openai_base_url,
                          timeout=args.timeout)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=6, help="trainee turns per session (fewer if it ends)")
    parser.add_argument("--temperature", type=float, default=0.7, help="patient sampling temperature (app: 0.7)")
    parser.add_argument("--seed", type=int, default=7, help="model seed (each turn adds its index)")
    parser.add_argument("--personas", default="", help="comma-separated persona ids (default: all)")
    parser.add_argument("--trainees", default="good,bad,probe", help="comma-separated: good, bad, probe")
    parser.add_argument("--model", default="default", help="embedded model: default or small (or a GGUF path)")
    parser.add_argument("--base-url", default="", help="use this OpenAI-compatible llama.cpp server instead")
    parser.add_argument("--timeout", type=float, default=120.0, help="model request timeout, seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    trainees = [t for t in args.trainees.split(",") if t]
    if unknown := set(trainees) - set(TRAINEES):
        parser.error(f"unknown trainee(s) {sorted(unknown)}; choose from {', '.join(TRAINEES)}")
    wanted = {p for p in args.personas.split(",") if p}
    personas = [p for p in load_personas() if not wanted or p.id in wanted]
    began = time.perf_counter()
    sessions: list[dict[str, Any]] = []
    with server_settings(args) as settings:
        for persona in personas:
            for trainee in trainees:
                started = time.perf_counter()
                lines = play(persona, trainee, args, settings)
                row = {"persona": persona.id, "trainee": trainee, "lines": lines,
                       "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
                row.update({key: sum(1 for line in lines if key in line["found"]) for key in COUNTS})
                sessions.append(row)
                counts = " ".join(f"{key}={row[key]}" for key in COUNTS)
                print(f"{persona.id:26s} {trainee:5s} {len(lines)} lines {row['seconds']:5.1f} s  {counts}",
                      file=sys.stderr, flush=True)  # fmt: skip
    summary: dict[str, Any] = {
        "model": args.model,
        "temperature": args.temperature,
        "seed": args.seed,
        "turns": args.turns,
        "sessions": len(sessions),
        "lines": sum(len(s["lines"]) for s in sessions),
        **{key: sum(s[key] for s in sessions) for key in COUNTS},
        "seconds": round(time.perf_counter() - began, 1),
    }
    if args.json:
        print(json.dumps({**summary, "per_session": sessions}, indent=2))
        return 0
    print(f"{summary['lines']} patient lines in {summary['sessions']} sessions ({len(personas)} personas x "
          f"{', '.join(trainees)}; up to {args.turns} turns; temperature {args.temperature:g}, seed {args.seed}) "
          f"on the {args.model} model in {summary['seconds']} s")  # fmt: skip
    for key in COUNTS:
        print(f"  {key:17s} {summary[key]}")
    offending = [(s, line) for s in sessions for line in s["lines"] if set(line["found"]) - {"fallback"}]
    if offending:
        print("offending lines:")
    for session, line in offending:
        print(f"- {session['persona']} / {session['trainee']} turn {line['turn']}: {line['found']}")
        print(f"    trainee: {line['trainee'][:120]!r}")
        print(f"    patient: {line['patient']!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
