"""`python -m agent learn FILE.jsonl ...` and `learn-stance`: train the grader's learned parts on labelled replies."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agent import embed, learned, training
from agent.rubrics import load_rubric_argument

if TYPE_CHECKING:  # stance_training (and what it imports) is loaded only when learn-stance runs
    from agent.stance_training import Labelled


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
    _files_rubric_out(parser, "calibration JSONL files to learn from",
                      "where to write the model (default: beside the rubric)")  # fmt: skip
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
    register_stance(subparsers)


def _files_rubric_out(parser: argparse.ArgumentParser, files_help: str, out_help: str) -> None:
    """The arguments both learning commands share: the labelled files, the rubric, where to write."""
    parser.add_argument("files", nargs="+", help=files_help)
    parser.add_argument("--rubric", default="deescalation", help="rubric name or YAML path")
    parser.add_argument("--out", help=out_help)


def trained_on(files: list[str]) -> list[str]:
    """Folder and name of each training file, as a model records them: two gold folders hold a
    ``train.jsonl`` (the team's and the questions set's)."""
    return [f"{Path(f).parent.name}/{Path(f).name}" for f in files]


def cmd_learn(args: argparse.Namespace) -> int:
    rubric = load_rubric_argument(args.rubric)
    # Every core: learning embeds thousands of texts in batches (embed.batch_encoder).
    encoder: embed.TextEncoder = embed.batch_encoder()
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
    model = training.fit(rubric, rows, encoder, trained_on=trained_on(args.files), l2=args.l2,
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


# -- learn-stance ------------------------------------------------------------------------------------

STANCE_STEPS = ("argue_back", "dismiss_feelings", "lose_cool")
DECIDED_STEPS = ("argue_back", "dismiss_feelings")
KIND_STEPS = ("apologize", "empathize", "offer_solution", "reassure", "find_out", "ask_questions")


def register_stance(subparsers: argparse._SubParsersAction) -> None:
    from agent.stance_reader import DEFAULT_TARGETS, TARGETS

    parser = subparsers.add_parser(
        "learn-stance",
        help="train the stance reader (MiniLM with a LoRA adapter) for the hostility don't-steps; needs PyTorch",
        description=(
            "Fine-tune a low-rank adapter of the grader's sentence encoder and a head per don't-step on labelled "
            "replies, choose each step's thresholds on cross-validation folds that leave whole authors (or files) "
            "out, and save the adapter beside the rubric (rubrics/<id>.stance_reader.json + .npz). PyTorch is "
            "needed for training only: pip install torch --index-url https://download.pytorch.org/whl/cpu. "
            "Never train on the file you will report a score on."
        ),
    )
    _files_rubric_out(parser, "calibration JSONL files to learn from (rows may name an author)",
                      "where to write the reader: OUT.json and OUT.npz (default: beside the rubric)")  # fmt: skip
    parser.add_argument("--folds", type=int, default=4, help="cross-validation folds (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the replies (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        metavar="NAME,...",
        help=f"the projections of each layer the adapter changes, among {', '.join(TARGETS)} (default %(default)s)",
    )
    parser.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="share of attention weights and sub-layer outputs dropped while training (default %(default)s)",
    )
    parser.add_argument(
        "--rule",
        choices=("steps", "gate"),
        default="steps",
        help="how the reader decides: steps (each step at its own threshold, as the shipped reader) or gate "
        "(is the reply hostile at all, then which steps; measured at stop 32, not shipped: tests/data/gold/"
        "README.md) (default %(default)s)",
    )
    parser.add_argument(
        "--decide",
        default=",".join(DECIDED_STEPS),
        metavar="STEP,...",
        help="the steps whose verdicts the reader may change (all three are learned; default %(default)s: "
        "lose_cool cost the plain replies most out of fold)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="also write the cross-validation figures and each reply's out-of-fold probabilities to this JSON file",
    )
    parser.add_argument(
        "--cv-from",
        type=Path,
        metavar="JSON",
        help="take the out-of-fold probabilities from an "
        "earlier run's --json instead of training the folds again (the same files)",
    )
    parser.set_defaults(handler=cmd_learn_stance)


def cmd_learn_stance(args: argparse.Namespace) -> int:
    from agent import stance_reader, stance_training

    try:
        stance_training.require_torch()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rubric = load_rubric_argument(args.rubric)
    decides = [s.strip() for s in args.decide.split(",") if s.strip()]
    if not decides or set(decides) - set(STANCE_STEPS):
        print(f"error: --decide takes steps among {', '.join(STANCE_STEPS)}", file=sys.stderr)
        return 2
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets or set(targets) - set(stance_reader.TARGETS):
        print(f"error: --targets takes names among {', '.join(stance_reader.TARGETS)}", file=sys.stderr)
        return 2
    if not 0.0 <= args.dropout < 1.0:
        print("error: --dropout takes a share from 0 up to (not including) 1", file=sys.stderr)
        return 2
    options = {"epochs": args.epochs, "targets": targets, "dropout": args.dropout}
    json_path, npz_path = stance_reader.paths(rubric)
    if args.out:
        json_path, npz_path = Path(f"{args.out}.json"), Path(f"{args.out}.npz")
    if args.json and args.json.resolve() == json_path.resolve():
        print(f"error: --json {args.json} is where the reader's own JSON goes; name another file", file=sys.stderr)
        return 2
    log = stance_training.stderr_progress
    log(f"reading {len(args.files)} files and grading each reply without the reader ...")
    labelled = stance_training.rows_from(args.files, rubric, STANCE_STEPS, KIND_STEPS)
    steps = len(STANCE_STEPS)
    if args.cv_from:
        probabilities = _out_of_fold_from(args.cv_from, labelled)
    else:
        probabilities = stance_training.out_of_fold(labelled, steps, args.folds, seed=args.seed, progress=log,
                                                    **options)  # fmt: skip
    threshold: dict[str, float] = {}
    kind_threshold: dict[str, float] = {}
    for j, step in enumerate(STANCE_STEPS):
        # A step the reader does not decide keeps its verdicts: a threshold above every probability.
        chosen = stance_training.choose_thresholds(labelled, probabilities, j) if step in decides else (1.01, 1.01)
        threshold[step], kind_threshold[step] = chosen
    columns = [STANCE_STEPS.index(s) for s in decides]
    gate = stance_training.choose_gate(labelled, probabilities, columns) if args.rule == "gate" else None
    if gate is None:
        after = np.stack([stance_training.decide(labelled, probabilities, j, threshold[s], kind_threshold[s])
                          for j, s in enumerate(STANCE_STEPS)], axis=1)  # fmt: skip
    else:
        after = stance_training.decide_gate(labelled, probabilities, columns, gate)
    steps_shown = list(decides) if gate else list(STANCE_STEPS)
    rule = stance_reader.thresholds_text(steps_shown, threshold, kind_threshold, gate)
    figures = _cross_validation_table(labelled, after, rule)
    if args.json:
        rows = [{"group": item.row.group, "text_sha1": _digest(item.row.text), "labels": item.row.labels,
                 "grader": item.violated,
                 "kind": item.kind, "unfamiliar": item.unfamiliar,
                 "out_of_fold": [round(float(p), 4) for p in probabilities[i]]}
                for i, item in enumerate(labelled)]  # fmt: skip
        report = {"thresholds": [threshold, kind_threshold], "gate": gate.model_dump() if gate else None,
                  "figures": figures, "rows": rows}  # fmt: skip
        lines = ",\n".join(json.dumps(row) for row in rows)  # one reply per line
        head = json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1)[:-2]
        args.json.write_text(f'{head},\n "rows": [\n{lines}\n]}}\n'.replace("NaN", "null"), encoding="utf-8")
    log(f"training on all {len(labelled)} replies ...")
    trained = stance_training.train([item.row for item in labelled], steps, seed=args.seed, progress=log,
                                    **options)  # fmt: skip
    info = stance_reader.ReaderInfo(
        rubric=rubric.id, steps=list(STANCE_STEPS), decides=decides, threshold=threshold,
        kind_threshold=kind_threshold, kind_steps=list(KIND_STEPS), gate=gate, rank=stance_training.RANK,
        alpha=stance_training.ALPHA, targets=targets, trained_on=trained_on(args.files),
        training={"epochs": args.epochs, "seed": args.seed, "dropout": args.dropout,
                  "learning_rate": stance_training.LEARNING_RATE, "replies": len(labelled), "folds": args.folds},
        cross_validation=figures,
    )  # fmt: skip
    np.savez_compressed(npz_path, **trained.arrays)
    json_path.write_text(json.dumps(info.model_dump(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {json_path} and {npz_path} ({len(labelled)} replies)")
    return 0


def _digest(text: str) -> str:
    """A reply's SHA-1 in the saved cross-validation rows (they say which reply without repeating the gold)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _out_of_fold_from(path: Path, labelled: list[Labelled]) -> np.ndarray:
    """The out-of-fold probabilities an earlier run saved with ``--json`` (the same files, in the same order)."""
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    if [r["text_sha1"] for r in rows] != [_digest(item.row.text) for item in labelled]:
        raise SystemExit(f"error: {path} was written for other replies than these files")
    return np.array([r["out_of_fold"] for r in rows], dtype=float)


def _cross_validation_table(labelled: list[Labelled], after: np.ndarray,
                            rule: str) -> dict[str, dict[str, dict[str, float]]]:  # fmt: skip
    """Print and return, per group and over all rows, the grader's out-of-fold accuracy without and with the
    reader (``after``: rows x steps, as the chosen ``rule`` decides), then the mean over groups (what the
    thresholds were chosen by)."""
    from agent import stance_training

    groups = sorted({item.row.group for item in labelled})
    figures: dict[str, dict[str, dict[str, float]]] = {}
    print(f"{'out-of-fold accuracy':<40} " + " ".join(f"{s:>24}" for s in STANCE_STEPS))
    before = [np.array([item.violated[j] for item in labelled]) for j in range(len(STANCE_STEPS))]
    for group in [*groups, "all"]:
        rows = None if group == "all" else [i for i, item in enumerate(labelled) if item.row.group == group]
        cells = []
        for j, step in enumerate(STANCE_STEPS):
            a, n = stance_training.accuracy(labelled, before[j], j, rows)
            b, _ = stance_training.accuracy(labelled, after[:, j], j, rows)
            figures.setdefault(group, {})[step] = {"n": n, "grader": round(a, 4), "with_reader": round(b, 4)}
            cells.append(f"{a:.3f} -> {b:.3f} ({n:>4})" if n else f"{'-':>24}")
        print(f"{group:<40} " + " ".join(f"{c:>24}" for c in cells))
    mean = stance_training.group_mean_accuracy
    means = [(mean(labelled, before[j], j), mean(labelled, after[:, j], j)) for j in range(len(STANCE_STEPS))]
    print(f"{'mean over groups':<40} " + " ".join(f"{f'{a:.3f} -> {b:.3f}':>24}" for a, b in means))
    figures["mean_over_groups"] = {s: {"grader": round(a, 4), "with_reader": round(b, 4)}
                                   for s, (a, b) in zip(STANCE_STEPS, means, strict=True)}  # fmt: skip
    print(f"thresholds (no kind move / kind move): {rule}")
    return figures
