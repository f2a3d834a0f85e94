"""Agreement between the two independent labelling passes over the human-written pool (issue 13).

Reads ``labels_a.jsonl`` and ``labels_b.jsonl`` (one ``{"id", "labels" | "exclude", ...}`` per pool
line) and reports, BEFORE adjudication:

* exclusion agreement over all pool lines (both exclude / both keep, kappa on the yes/no decision);
* per step, over the lines both labellers kept (neither excluded) and on which both labelled that
  step: n, percent agreement and Cohen's kappa (each labeller's own marginals);
* overall: macro kappa (mean over steps with a defined kappa), macro accuracy (mean per-step
  agreement) and pooled agreement over all step verdicts.

A kappa is undefined (``null``) when both labellers used one and the same verdict on every line of
a step (chance agreement is 1); such steps are left out of the macro kappa, as in
``agent.calibrate``. Plain Python: no project imports.

This is the ceiling the grader is measured against on the adjudicated ``train.jsonl`` /
``heldout.jsonl``: two careful people agree this well with each other.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def read(path: Path) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            data = json.loads(line)
            if data["id"] in rows:
                raise SystemExit(f"{path}:{number}: duplicate id {data['id']}")
            rows[data["id"]] = data
    return rows


def kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two raters; None when chance agreement is 1 (one shared class)."""
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[c] / n * cb[c] / n for c in set(ca) | set(cb))
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def agreement(a: dict[str, dict], b: dict[str, dict], pool_ids: list[str] | None = None) -> dict:
    ids = pool_ids if pool_ids is not None else sorted(set(a) | set(b))
    missing = [i for i in ids if i not in a or i not in b]
    if missing:
        raise SystemExit(f"ids without a line in both files: {', '.join(missing[:10])}")
    ex_a = ["exclude" if "exclude" in a[i] else "keep" for i in ids]
    ex_b = ["exclude" if "exclude" in b[i] else "keep" for i in ids]
    exclusion = {
        "lines": len(ids),
        "excluded_a": ex_a.count("exclude"),
        "excluded_b": ex_b.count("exclude"),
        "excluded_both": sum(x == y == "exclude" for x, y in zip(ex_a, ex_b, strict=True)),
        "agreement": sum(x == y for x, y in zip(ex_a, ex_b, strict=True)) / len(ids),
        "kappa": kappa(ex_a, ex_b),
    }
    kept = [i for i, x, y in zip(ids, ex_a, ex_b, strict=True) if x == y == "keep"]
    steps: dict[str, dict] = {}
    order: list[str] = []
    for i in kept:
        for step in list(a[i].get("labels", {})) + list(b[i].get("labels", {})):
            if step not in order:
                order.append(step)
    total = agreed = 0
    for step in order:
        pairs = [
            (a[i]["labels"][step], b[i]["labels"][step])
            for i in kept
            if step in a[i].get("labels", {}) and step in b[i].get("labels", {})
        ]
        if not pairs:
            continue
        la, lb = [p[0] for p in pairs], [p[1] for p in pairs]
        same = sum(x == y for x, y in pairs)
        total += len(pairs)
        agreed += same
        steps[step] = {
            "n": len(pairs),
            "agreement": same / len(pairs),
            "kappa": kappa(la, lb),
            "disagreements": len(pairs) - same,
            "verdicts_a": dict(sorted(Counter(la).items())),
            "verdicts_b": dict(sorted(Counter(lb).items())),
        }
    kappas = [s["kappa"] for s in steps.values() if s["kappa"] is not None]
    return {
        "exclusion": exclusion,
        "lines_both_kept": len(kept),
        "steps": steps,
        "macro_kappa": sum(kappas) / len(kappas) if kappas else None,
        "macro_agreement": sum(s["agreement"] for s in steps.values()) / len(steps) if steps else None,
        "pooled_agreement": agreed / total if total else None,
        "verdicts_compared": total,
        "verdicts_disagreeing": total - agreed,
        "lines_with_a_disagreement": sum(
            any(a[i]["labels"].get(s) != b[i]["labels"].get(s) for s in set(a[i]["labels"]) & set(b[i]["labels"]))
            for i in kept
        ),
    }


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(result: dict) -> str:
    ex = result["exclusion"]
    lines = [
        f"exclusion over {ex['lines']} pool lines: A excludes {ex['excluded_a']}, B {ex['excluded_b']}, "
        f"both {ex['excluded_both']}; agreement {ex['agreement']:.1%}, kappa {fmt(ex['kappa'])}",
        f"step verdicts on the {result['lines_both_kept']} lines both kept:",
        "",
        f"{'step':<18} {'n':>4} {'agree':>7} {'kappa':>6} {'diff':>5}",
    ]
    for step, s in result["steps"].items():
        lines.append(f"{step:<18} {s['n']:>4} {s['agreement']:>7.1%} {fmt(s['kappa']):>6} {s['disagreements']:>5}")
    lines += [
        "",
        f"macro kappa {fmt(result['macro_kappa'])} (steps with a defined kappa), "
        f"macro agreement {fmt(result['macro_agreement'])}, pooled agreement {fmt(result['pooled_agreement'])} "
        f"({result['verdicts_disagreeing']} of {result['verdicts_compared']} verdicts differ, "
        f"on {result['lines_with_a_disagreement']} lines)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Inter-labeller agreement (percent and Cohen's kappa per step, macro) between two "
        "independent labelling passes over pool.jsonl, computed before adjudication.",
    )
    parser.add_argument("--a", type=Path, default=HERE / "labels_a.jsonl", help="first labeller's file")
    parser.add_argument("--b", type=Path, default=HERE / "labels_b.jsonl", help="second labeller's file")
    parser.add_argument("--pool", type=Path, default=HERE / "pool.jsonl", help="pool whose ids are compared")
    parser.add_argument("--split", choices=["train", "heldout"], help="only the pool lines of this split")
    parser.add_argument("--source", help="only ids of this source (twcs, inc, cc, p4g)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    pool = [json.loads(line) for line in args.pool.read_text(encoding="utf-8").splitlines() if line.strip()]
    ids = [
        p["id"]
        for p in pool
        if (args.split is None or p.get("split") == args.split)
        and (args.source is None or p["id"].split("-")[1] == args.source)
    ]
    if not ids:
        parser.error("no pool lines match")
    result = agreement(read(args.a), read(args.b), ids)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
