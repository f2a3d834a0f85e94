"""`python -m agent simulate PERSONA --trainee good|bad|formula[:NAME]|catchall[:NAME]|gaming[:NAME]|gaming2[:NAME]|FILE
--turns N [--json]`: test a persona."""

from __future__ import annotations

import argparse
import json
import sys

from agent.llm import LLMSettings
from agent.patient import patient_model
from agent.personas import load_persona_argument
from agent.session import Answered, Graded, Spoken, TurnEvent
from agent.simulate import simulate


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("simulate", help="play scripted trainee turns against a persona; print the mood")
    parser.add_argument("persona", help="persona id or YAML path")
    parser.add_argument(
        "--trainee",
        default="good",
        help="good | good:NAME (the persona's good trainee in other words, personas/scripts/good_NAME.yaml) | "
        "bad | formula (magic phrases, no substance; formula:NAME for another script in "
        "personas/scripts/formula.yaml) | catchall (the same list of remedies for every patient; catchall:NAME, "
        "personas/scripts/catchall.yaml) | gaming[:NAME] (tricks written blind: routines for everyone and this "
        "persona's echo-then-hollow-offer scripts, personas/scripts/gaming.yaml) | gaming2[:NAME] (a second blind "
        "probe by another author: hedged, withdrawn, self-service and near-miss offers, personas/scripts/gaming2.yaml) "
        "| a file of trainee lines "
        "(one a line, or YAML)",
    )
    parser.add_argument("--turns", type=int, default=6, help="trainee turns (fewer if the session ends)")
    parser.add_argument("--seed", type=int, default=7, help="model seed (deterministic runs)")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--json", action="store_true", help='print {"persona", "anger", "trust", "outcome", "patient"}')
    parser.set_defaults(handler=cmd_simulate)


def _printer(json_mode: bool):
    def show(index: int, line: str, event: TurnEvent) -> None:
        if json_mode:
            return
        if isinstance(event, Graded):
            print(f"\nTrainee: {line}")
            mood = event.turn.mood_after
            moved = ", ".join(f"{e.source} {e.anger:+.2g}" for e in mood.effects) or "nothing"
            print(f"  [anger {mood.previous_anger:g} -> {mood.anger:g}, trust {mood.trust:g}; {moved}]")
            print("Patient: ", end="", flush=True)
        elif isinstance(event, Spoken):
            print(event.text, end="", flush=True)
        elif isinstance(event, Answered):
            print()
            if event.turn.ending is not None:
                print(f"\n== {event.turn.ending.kind}: {event.turn.ending.reason}")

    return show


def cmd_simulate(args: argparse.Namespace) -> int:
    persona = load_persona_argument(args.persona)
    if not args.json:
        print(f"{persona.name} ({persona.id}), anger {persona.anger:g}, trust {persona.trust:g}")
        print(f"Patient: {persona.opening_line}")
    session = simulate(persona, args.trainee, args.turns, patient_model(LLMSettings.from_env()), seed=args.seed,
                       temperature=args.temperature, on_event=_printer(args.json))  # fmt: skip
    summary = session.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"\nanger: {summary['anger']}\ntrust: {summary['trust']}\noutcome: {summary['outcome']}")
    sys.stdout.flush()
    return 0
