"""Agreement between the held-out hostility files' authors, two independent labellers and the grader.

Run from the repository root: ``.venv/bin/python tests/data/gold/hostility/labellers/agreement.py [OUT.json]``.
The labellers (stop 32) saw only ``brief.md`` (labeller B the same replies in another order): the rubric's
three don't-steps, the nine situations and the 372 replies of ``heldout.jsonl``, ``heldout2.jsonl`` and
``heldout3.jsonl``, never the authors' labels. Per file and step (and "any": hostile on some step at all), it
prints how often each pair agrees, the grader's accuracy against the majority of the three readings, and its
accuracy on the replies where author and both labellers agree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from agent import calibrate
from agent.grader import grade_fast
from agent.rubrics import load_rubric

HERE = Path(__file__).resolve().parent
STEPS = {"arg": "argue_back", "dis": "dismiss_feelings", "cool": "lose_cool"}
FILES = ("heldout", "heldout2", "heldout3")


def labeller(name: str) -> dict[str, dict[str, bool]]:
    rows = [json.loads(line) for line in (HERE / f"heldout-all-labeller-{name}.jsonl").read_text().splitlines()]
    return {r["id"]: {k: r[k] == "v" for k in STEPS} for r in rows}


Labels = dict[str, dict[str, bool]]


def value(labels: Labels, reply_id: str, step: str) -> bool:
    """The label of one reply on one step ("any": violated on some step)."""
    return any(labels[reply_id].values()) if step == "any" else labels[reply_id][step]


def majority(*readings: Labels) -> Labels:
    """Per reply and step, what most of the readings say (three readings: at least two)."""
    return {i: {k: sum(r[i][k] for r in readings) * 2 > len(readings) for k in STEPS} for i in readings[0]}


def agree(x: Labels, y: Labels, ids: list[str], step: str) -> float:
    return round(float(np.mean([value(x, i, step) == value(y, i, step) for i in ids])), 3)


def main() -> None:
    rubric = load_rubric("deescalation")
    a, b = labeller("A"), labeller("B")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in FILES:
        examples = calibrate.load_examples(HERE.parent / f"{name}.jsonl", rubric)
        author = {e.id: {k: e.labels[s] == "violated" for k, s in STEPS.items()} for e in examples}
        grader = {}
        for e in examples:
            verdicts = grade_fast(rubric, e.reply, calibrate.persona_context(e, rubric)).verdicts  # as calibrate grades
            grader[e.id] = {k: verdicts[s].verdict == "violated" for k, s in STEPS.items()}
        out[name] = {}
        print(f"{name} ({len(author)} replies)")
        ids = list(author)
        most = majority(author, a, b)
        for step in [*STEPS, "any"]:
            clear = [i for i in ids if value(a, i, step) == value(author, i, step) == value(b, i, step)]
            row = {"A~author": agree(a, author, ids, step), "B~author": agree(b, author, ids, step),
                   "A~B": agree(a, b, ids, step), "grader~author": agree(grader, author, ids, step),
                   "grader~majority": agree(grader, most, ids, step),
                   "clear": len(clear), "grader_on_clear": agree(grader, author, clear, step)}  # fmt: skip
            out[name][step] = row
            print(f"  {step:5} " + "  ".join(f"{k} {v}" for k, v in row.items()))
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
