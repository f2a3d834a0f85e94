"""Build the adjudicated human-written gold (issue 13): train.jsonl and heldout.jsonl.

Inputs (all in this folder):

* ``pool.jsonl``: the collected replies (``labels: {}``, ``split`` drawn before labelling);
* ``labels_a.jsonl`` / ``labels_b.jsonl``: the two independent labelling passes;
* ``adjudication.jsonl``: the adjudicator's decisions, one line per pool id that needed one:
  ``{"id", "labels": {step: verdict}, "why"}`` settles the steps A and B disagree on,
  ``{"id", "exclude": why}`` settles an exclude-vs-keep disagreement by excluding the line,
  ``{"id", "context": {field: value}, "context_why"}`` corrects a context field.

Rules: a line is left out when both labellers exclude it or the adjudicator does; a kept line
takes every verdict A and B agree on, and the adjudicator's verdict for each step they disagree
on (the script refuses to run while a disagreement is undecided, or when a decision names a step
the labellers agree on). Output lines are pool lines with ``labels`` filled in (calibration format;
``split`` and ``source`` kept), written by ``split``.

Checks on the result: ``transferring`` is true exactly where ``explain_transfer`` is labelled
(demonstrated or missed); ``use_name`` is labelled demonstrated/missed only where ``persona_name``
is set; ``set_boundary`` is not_applicable only where ``patient_abusive`` is false.

Writes nothing but ``train.jsonl`` and ``heldout.jsonl`` (``--check`` writes nothing and fails if
they differ from what would be written). Plain Python; it does not grade anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPLITS = ("train", "heldout")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build(folder: Path = HERE) -> tuple[dict[str, list[dict]], dict]:
    pool = read(folder / "pool.jsonl")
    a = {row["id"]: row for row in read(folder / "labels_a.jsonl")}
    b = {row["id"]: row for row in read(folder / "labels_b.jsonl")}
    decisions = {row["id"]: row for row in read(folder / "adjudication.jsonl")}
    problems: list[str] = []
    unknown = set(decisions) - {p["id"] for p in pool}
    if unknown:
        problems.append(f"adjudication names ids not in the pool: {sorted(unknown)}")
    out: dict[str, list[dict]] = {split: [] for split in SPLITS}
    stats: Counter[str] = Counter()
    for line in pool:
        i = line["id"]
        ra, rb, dec = a[i], b[i], decisions.get(i, {})
        ex_a, ex_b = "exclude" in ra, "exclude" in rb
        if ex_a and ex_b:
            stats["excluded by both labellers"] += 1
            stats[f"excluded {i.split('-')[1]}"] += 1
            continue
        if ex_a != ex_b:
            if "exclude" not in dec and "labels" not in dec:
                problems.append(f"{i}: one labeller excludes it; no decision")
                continue
            if "exclude" in dec:
                stats["excluded by the adjudicator"] += 1
                stats[f"excluded {i.split('-')[1]}"] += 1
                continue
            kept = rb if ex_a else ra
            labels = {**kept["labels"], **dec.get("labels", {})}
            stats["kept against one exclusion"] += 1
        else:
            if "exclude" in dec:
                stats["excluded by the adjudicator"] += 1
                stats[f"excluded {i.split('-')[1]}"] += 1
                continue
            la, lb = ra["labels"], rb["labels"]
            if set(la) != set(lb):
                problems.append(f"{i}: the labellers labelled different steps: {sorted(set(la) ^ set(lb))}")
            settled = dec.get("labels", {})
            labels = {}
            for step in la:
                if step not in lb:
                    continue
                if la[step] == lb[step]:
                    if step in settled and settled[step] != la[step]:
                        problems.append(f"{i}.{step}: A and B agree on {la[step]!r}; decision says {settled[step]!r}")
                    labels[step] = la[step]
                elif step in settled:
                    labels[step] = settled[step]
                    stats["step verdicts adjudicated"] += 1
                else:
                    problems.append(f"{i}.{step}: A {la[step]!r}, B {lb[step]!r}: no decision")
        context = {**line["context"], **dec.get("context", {})}
        if "context" in dec:
            stats["context fields corrected"] += len(dec["context"])
        transfer_labelled = labels.get("explain_transfer", "not_applicable") != "not_applicable"
        if context["transferring"] != transfer_labelled:
            problems.append(
                f"{i}: transferring {context['transferring']} but explain_transfer {labels.get('explain_transfer')}"
            )
        if context["persona_name"] is None and labels.get("use_name", "not_applicable") != "not_applicable":
            problems.append(f"{i}: use_name {labels['use_name']} without persona_name")
        if context["patient_abusive"] and labels.get("set_boundary") == "not_applicable":
            problems.append(f"{i}: patient_abusive but set_boundary not_applicable")
        result = {**line, "context": context, "labels": labels}
        out[line["split"]].append(result)
        stats[f"kept {line['split']} {i.split('-')[1]}"] += 1
    if problems:
        raise SystemExit("adjudication incomplete or inconsistent:\n  " + "\n  ".join(problems))
    return out, dict(sorted(stats.items()))


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Merge the two labelling passes and the adjudicator's decisions into the human-written "
        "gold: train.jsonl and heldout.jsonl (calibration format). Does not grade anything.",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; fail if the files on disk differ")
    args = parser.parse_args(argv)
    out, stats = build()
    stale = []
    for split in SPLITS:
        path = HERE / f"{split}.jsonl"
        text = render(out[split])
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    for key, value in stats.items():
        print(f"{key}: {value}")
    for split in SPLITS:
        print(f"{split}.jsonl: {len(out[split])} lines")
    if stale:
        print(f"out of date: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
