"""`python -m agent model status|prepare|serve`: the embedded model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent import embed, runtime, stance_reader
from agent.rubrics import load_rubric


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="prepare, check and serve the embedded model")
    commands = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    status = commands.add_parser("status", help="model name, path, size and whether its sha256 matches")
    status.add_argument("--model", default="default", choices=sorted(runtime.MODELS), help="which bundled model")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=cmd_status)

    prepare = commands.add_parser("prepare", help="assemble and verify the bundled GGUF (progress bar)")
    prepare.add_argument("--model", default="default", choices=sorted(runtime.MODELS))
    prepare.set_defaults(handler=cmd_prepare)

    serve = commands.add_parser("serve", help="run llama.cpp's OpenAI-compatible server in the foreground")
    serve.add_argument("--model", default=None, help="'default', 'small' or a path to any GGUF")
    serve.add_argument("--alias", default=None, help="model name the server reports")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--parallel", type=int, default=2, help="slots (patient + grader keep warm caches)")
    serve.add_argument("--ctx", type=int, default=8192, help="context tokens per slot")
    serve.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    serve.add_argument("--cache-ram", type=int, default=runtime.ServerOptions.cache_ram_mib, metavar="MIB",
                       help="memory for conversations' cached prompts, restored when they come back "
                            "(default %(default)s; 0: off)")  # fmt: skip
    serve.add_argument("--threads-batch", type=int, default=None, help="threads that read prompts (default: --threads)")
    serve.add_argument("--poll", type=int, default=runtime.POLL, metavar="0-100",
                       help="how hard idle worker threads busy-wait (llama.cpp's default is 50; 0 sleeps)")  # fmt: skip
    serve.add_argument("--priority", type=int, default=0, choices=(-1, 0, 1, 2, 3),
                       help="llama.cpp thread priority: -1 low, 0 normal, 1 medium, 2 high, 3 realtime")  # fmt: skip
    serve.add_argument("--parent-pid", type=int, default=None, help="stop when this process exits")
    serve.set_defaults(handler=cmd_serve)


def cmd_status(args: argparse.Namespace) -> int:
    report = runtime.status(runtime.MODELS[args.model], progress=sys.stderr.isatty() and not args.json)
    if args.json:
        print(report.model_dump_json())
    else:
        size = f"{report.size:,} bytes" if report.size is not None else "missing"
        print(f"model:     {report.name} ({report.alias})")
        print(f"path:      {report.path}")
        print(f"size:      {size} (expected {report.expected_size:,})")
        print(f"sha256_ok: {str(report.sha256_ok).lower()}")
        print(f"grader encoder: {embed.describe()}")
        print(f"stance reader:  {stance_reader.describe(load_rubric())}")
    return 0 if report.sha256_ok else 1


def cmd_prepare(args: argparse.Namespace) -> int:
    path = runtime.prepare(runtime.MODELS[args.model], progress=True)
    print(path)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.model and Path(args.model).is_file() and args.alias:
        path, alias = Path(args.model), args.alias
    else:
        path, alias = runtime.resolve_model(args.model)
        alias = args.alias or alias
    options = runtime.ServerOptions(n_parallel=args.parallel, n_ctx=args.ctx, host=args.host,
                                    cache_ram_mib=args.cache_ram, threads_batch=args.threads_batch,
                                    poll=args.poll, priority=args.priority)  # fmt: skip
    if args.threads:
        options.threads = args.threads
    runtime.serve_foreground(path, alias, args.port, options, parent_pid=args.parent_pid)
    return 0
