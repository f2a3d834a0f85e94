"""`python -m agent learn FILE.jsonl ...`: train the grader's learned component on labelled replies."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent import embed, learned, training
from agent.rubrics import load_rubric_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "learn",
        help="train the learned grading component (one classifier per step) on labelled JSONL files",
        description=(
            "Fit one logistic classifier per rubric step over MiniLM sentence vectors, from hand-labelled "
            "replies (calibration JSONL) plus the rubric's good/bad examples, and save it beside the rubric "
            "(rubrics/<id>.learned.json). Never train on the file you will report a score on."
        ),
    )
    parser.add_argument("files", nargs="+", help="calibration JSONL files to learn from")
    parser.add_argument("--rubric", default="deescalation", help="rubric name or YAML path")
    parser.add_argument("--out", help="where to write the model (default: beside the rubric)")
    parser.add_argument("--l2", type=float, default=training.L2, help="L2 penalty (default %(default)s)")
    parser.add_argument(
        "--familiar-at",
        type=float,
        default=training.FAMILIAR_AT,
        metavar="COSINE",
        help=f"leave a reply of {learned.FAMILIAR_MIN_WORDS}+ words to the checks when no training reply is "
        "this similar (default %(default)s; 0: always score)",
    )
    parser.add_argument("--no-rubric-examples", action="store_true", help="learn from the files only")
    parser.add_argument(
        "--cv", action="store_true", help="first estimate agreement leaving each file out in turn (slower)"
    )
    parser.add_argument(
        "--vectors", type=Path, help="keep the sentence vectors in this .npz file and reuse them next time"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(handler=cmd_learn)


def cmd_learn(args: argparse.Namespace) -> int:
    rubric = load_rubric_argument(args.rubric)
    encoder: embed.TextEncoder = embed.shared_encoder()
    if args.vectors:
        encoder = training.VectorCache(encoder, args.vectors)
    extra = [] if args.no_rubric_examples else training.rubric_examples(rubric)
    if args.cv:
        if len(args.files) < 2:
            print("error: --cv needs at least two files (each is left out in turn)", file=sys.stderr)
            return 2
        print(f"{'left out':<28} {'checks kappa':>13} {'+learned kappa':>15} {'checks acc':>11} {'+learned acc':>13}")
        for fold in training.cross_validate(rubric, args.files, encoder, l2=args.l2, extra=extra):
            print(f"{Path(fold.held_out).name:<28} {fold.checks_kappa:>13.3f} {fold.learned_kappa:>15.3f} "
                  f"{fold.checks_accuracy:>11.3f} {fold.learned_accuracy:>13.3f}")  # fmt: skip
        print("(a file the patterns were tuned on flatters the checks column)\n")
    rows = training.rows_from(args.files, rubric) + extra
    model = training.fit(rubric, rows, encoder, trained_on=[Path(f).name for f in args.files], l2=args.l2,
                        familiar_at=args.familiar_at, progress=sys.stderr.isatty())  # fmt: skip
    if isinstance(encoder, training.VectorCache):
        encoder.save()
    out = Path(args.out) if args.out else learned.model_path(rubric)
    training.save(model, out)
    print(f"{'step':<20} {'shows':>6} {'lacks':>6}")
    for step_id, classifier in model.steps.items():
        print(f"{step_id:<20} {classifier.positives:>6} {classifier.negatives:>6}")
    off = [s.id for s in rubric.turn_steps() if not s.learned]
    skipped = [s.id for s in rubric.turn_steps() if s.learned and s.id not in model.steps]
    if off:
        print(f"decided by their checks alone (learned: false in the rubric): {', '.join(off)}")
    if skipped:
        print(f"no classifier (too few examples of each label): {', '.join(skipped)}")
    print(f"wrote {out} ({len(rows)} replies, {len(model.steps)} steps)")
    return 0
