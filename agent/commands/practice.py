"""`python -m agent practice PERSONA`: a full practice session in the terminal, no browser."""

from __future__ import annotations

import argparse
import threading

from agent.llm import LLMSettings
from agent.patient import PatientUnavailable
from agent.personas import load_persona
from agent.session import Session, SessionError

HELP = "Type your reply and press Enter. /retry re-asks the patient after an error, /quit ends."


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("practice", help="practise with a persona in the terminal")
    parser.add_argument("persona", help="persona id or YAML path")
    parser.add_argument("--no-feedback", action="store_true", help="skip the model's tip after each turn")
    parser.add_argument("--seed", type=int, default=None, help="model seed (default: random)")
    parser.set_defaults(handler=cmd_practice)


def bar(value: float) -> str:
    filled = round(value)
    return "#" * filled + "." * (10 - filled)


def show_feedback(session: Session) -> None:
    turn = session.turns[-1]
    mood = turn.mood_after
    print(f"   anger [{bar(mood.anger)}] {mood.anger:g}   trust [{bar(mood.trust)}] {mood.trust:g}")
    good = [k for k, v in turn.verdicts.items() if v.verdict == "demonstrated"]
    bad = [k for k, v in turn.verdicts.items() if v.verdict == "violated"]
    if good:
        print(f"   + {', '.join(good)}")
    if bad:
        print(f"   - {', '.join(bad)}")
    grade = turn.grade
    if getattr(grade, "tip", None):
        print(f"   tip: {grade.tip}")
    if getattr(grade, "better_phrasing", None):
        print(f"   try: {grade.better_phrasing}")


def cmd_practice(args: argparse.Namespace) -> int:
    persona = load_persona(args.persona)
    session = Session(persona, settings=LLMSettings.from_env(), seed=args.seed, grade_with_llm=not args.no_feedback)
    print(f"{persona.name}, {persona.age} ({persona.channel.replace('_', ' ')}): {persona.setting}")
    print(HELP)
    print(f"\n{persona.address_as}: {persona.opening_line}")
    warmed_at = -1
    while session.ending is None:
        if warmed_at != len(session.transcript.messages):  # once per new patient line, not per empty input
            # While the trainee types, the local model reads the known front of the next tip prompt.
            warmed_at = len(session.transcript.messages)
            threading.Thread(target=session.warm_grader, daemon=True).start()
        try:
            text = input(f"\n{persona.staff_label}> ").strip()
        except EOFError:
            break
        if not text:
            continue
        if text == "/quit":
            break
        try:
            events = session.retry() if text == "/retry" else session.stream_turn(text)
            tip_shown = False
            for event in events:
                if event.kind == "delta":
                    if not event.text.startswith(" "):
                        print(f"{persona.address_as}: ", end="")
                    print(event.text, end="", flush=True)
                elif event.kind == "answered":
                    print()
                    show_feedback(session)
                elif event.kind == "tipped":
                    print(f"   tip: {event.grade.tip}")
                    tip_shown = True
                elif event.kind == "graded":
                    grade = event.grade
                    if getattr(grade, "tip", None) and not tip_shown:
                        print(f"   tip: {grade.tip}")
                    if getattr(grade, "better_phrasing", None):
                        print(f"   try: {grade.better_phrasing}")
                elif event.kind == "ended":
                    print(f"\n== {event.ending.kind}: {event.ending.reason}")
        except PatientUnavailable as exc:
            print(f"\n[the patient could not answer: {exc}]  (/retry to try again)")
        except SessionError as exc:
            print(f"[{exc}]")
    summary = session.summary()
    print(f"\nanger {summary['anger']}\noutcome: {summary['outcome']}")
    return 0
