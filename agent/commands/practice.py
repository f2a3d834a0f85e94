"""`python -m agent practice PERSONA`: a full practice session in the terminal, no browser.

The same pipeline as the page (:class:`agent.session.Session`): verdicts and mood, the patient's
answer streamed, then the coach's tip, printed when it is written while the trainee reads the
answer; the next reply never waits for it (a reply sent sooner stops the tip, which is finished
after the patient's answer, or replaced by the rubric's advice).
"""

from __future__ import annotations

import argparse

from agent.coach import coach_model, rubric_coaching
from agent.coaching import Coaching, CoachJob, Lane, YieldingCoach
from agent.grades import TurnGrade
from agent.llm import LLMSettings
from agent.patient import PatientUnavailable, patient_model
from agent.personas import load_persona_argument
from agent.session import Answered, Graded, Session, SessionError, Spoken, Turn

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


def show_verdicts(turn: Turn) -> None:
    mood = turn.mood_after
    print(f"   anger [{bar(mood.anger)}] {mood.anger:g}   trust [{bar(mood.trust)}] {mood.trust:g}")
    if turn.grade.strengths():
        print(f"   + {', '.join(turn.grade.strengths())}")
    violated = [k for k, v in turn.verdicts.items() if v.verdict == "violated"]
    if violated:
        print(f"   - {', '.join(violated)}")


def show_tip(grade: TurnGrade) -> None:
    if grade.tip:
        print(f"   tip: {grade.tip}")
    if grade.better_phrasing:
        print(f"   try: {grade.better_phrasing}")


def cmd_practice(args: argparse.Namespace) -> int:
    persona = load_persona_argument(args.persona)
    settings = LLMSettings.from_env()
    session = Session(persona, patient_model(settings), seed=args.seed)
    lane = Lane()
    coaching = Coaching(lane)
    coach = YieldingCoach(coach_model(settings), lane)
    print(f"{persona.name}, {persona.age} ({persona.channel.replace('_', ' ')}): {persona.setting}")
    print(HELP)
    print(f"\n{persona.address_as}: {persona.opening_line}")
    coaching.warm(session.prefill)
    while session.ending is None:
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
            with lane.patient():
                for event in events:
                    if isinstance(event, Graded):
                        show_verdicts(event.turn)
                    elif isinstance(event, Spoken):
                        if not event.text.startswith(" "):
                            print(f"{persona.address_as}: ", end="")
                        print(event.text, end="", flush=True)
                    elif isinstance(event, Answered):
                        print()
                        if event.turn.ending is not None:
                            print(f"\n== {event.turn.ending.kind}: {event.turn.ending.reason}")
                        elif not args.no_feedback:
                            coaching.submit(_job(session, event.index, coach))
        except PatientUnavailable as exc:
            print(f"\n[the patient could not answer: {exc}]  (/retry to try again)")
        except SessionError as exc:
            print(f"[{exc}]")
    summary = session.summary()
    print(f"\nanger {summary['anger']}\noutcome: {summary['outcome']}")
    return 0


def _job(session: Session, index: int, coach: YieldingCoach) -> CoachJob:
    def drop(why: str) -> TurnGrade:
        return rubric_coaching(session.rubric, session.turns[index].grade, why, session.persona, session.context(index))

    def publish(stage: TurnGrade) -> None:
        if stage.coached:
            print(f"\n   (turn {index + 1})")
            show_tip(stage)

    return CoachJob(key=("terminal", index), run=lambda: session.coach(index, coach), publish=publish, drop=drop)
