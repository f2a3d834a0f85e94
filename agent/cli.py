"""`python -m agent ...`: the command line, a thin layer over the library.

Each command group lives in ``agent/commands/<group>.py`` and exposes
``register(subparsers)``; its handlers return an exit code. Adding a group means adding its
module name to ``COMMAND_GROUPS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from agent import __version__

COMMAND_GROUPS = ["model", "personas", "simulate", "practice", "calibrate", "learn"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agent",
        description="deescalate: practise de-escalating upset patients with a local language model.",
    )
    parser.add_argument("--version", action="version", version=f"deescalate {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        importlib.import_module(f"agent.commands.{group}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a CLI prints one clear line, not a traceback
        if getattr(args, "debug", False):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
