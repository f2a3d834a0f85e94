"""`python -m agent personas list|lint|schema`: the persona files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent import personas as P


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("personas", help="list, lint and describe the persona files")
    commands = parser.add_subparsers(dest="personas_command", metavar="ACTION", required=True)

    listing = commands.add_parser("list", help="the personas, one a line")
    listing.add_argument("--dir", default=None, help="persona directory (default: personas/)")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(handler=cmd_list)

    lint = commands.add_parser(
        "lint", help="validate persona files and check their wants and scripts; one line per problem or warning"
    )
    lint.add_argument("path", nargs="?", default=None, help="a persona file or a directory (default: personas/)")
    lint.set_defaults(handler=cmd_lint)

    schema = commands.add_parser("schema", help="print the JSON Schema of a persona file")
    schema.add_argument("--write", action="store_true", help=f"write it to personas/{P.SCHEMA_FILE}")
    schema.set_defaults(handler=cmd_schema)


def cmd_list(args: argparse.Namespace) -> int:
    found = P.load_personas(args.dir)
    if args.json:
        rows = [
            {
                "id": p.id,
                "name": p.name,
                "channel": p.channel,
                "difficulty": p.difficulty,
                "anger": p.anger,
                "trust": p.trust,
                "situation": p.situation,
                "sources": p.sources,
            }  # fmt: skip
            for p in found
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for p in found:
        print(f"{p.id:28s} {p.channel:12s} {p.difficulty:7s} anger {p.anger:g} trust {p.trust:g}  {p.name}")
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    target = Path(args.path) if args.path else P.personas_dir()
    files = P.persona_files(target) if target.is_dir() else [target]
    problems: list[str] = []
    warnings: list[str] = []
    for path in files:
        errors, advice = P.lint_file(path)
        problems.extend(errors)
        warnings.extend(advice)
    if target.is_dir() and not problems:
        try:
            P.load_personas(target)  # cross-file checks (duplicate ids)
        except P.PersonaError as exc:
            problems.extend(exc.problems)
    for line in problems + warnings:
        print(line)
    if not problems:
        print(f"ok: {len(files)} persona file(s)" + (f", {len(warnings)} warning(s)" if warnings else ""))
    return 1 if problems else 0


def cmd_schema(args: argparse.Namespace) -> int:
    text = P.schema_text()
    if args.write:
        path = P.personas_dir() / P.SCHEMA_FILE
        path.write_text(text, encoding="utf-8")
        print(path)
    else:
        print(text, end="")
    return 0
