"""`python -m agent calibrate FILE.jsonl`: how well the grader agrees with hand labels."""

from __future__ import annotations

import argparse
import json
import sys

from agent import calibrate as calibration
from agent.llm import LLMSettings
from agent.rubrics import load_rubric_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="per-step accuracy, Cohen's kappa and confusion matrix of the grader on a labelled JSONL",
    )
    parser.add_argument("file", help="calibration JSONL (one labelled trainee reply a line)")
    parser.add_argument("--rubric", default="deescalation", help="rubric name or YAML path")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--llm", action="store_true", help="grade through the model too (tip + phrasing per line)")
    parser.add_argument("--judge", action="store_true", help="with --llm: let the model overrule absence verdicts")
    parser.add_argument("--checks-only", action="store_true", help="score the phrase checks without the learned part")
    parser.add_argument("--mistakes", action="store_true", help="list every disagreement with its reply")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(handler=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    settings = LLMSettings.from_env() if args.llm else None
    report = calibration.calibrate(
        args.file,
        load_rubric_argument(args.rubric),
        use_llm=args.llm,
        judge=args.judge,
        use_learned=not args.checks_only,
        settings=settings,
        progress=sys.stderr.isatty() or not args.json,
    )
    if args.json:
        print(json.dumps(calibration.as_json(report, include_mistakes=args.mistakes)))
    else:
        print(calibration.format_report(report, show_mistakes=args.mistakes))
    return 0
