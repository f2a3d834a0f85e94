"""Build train.jsonl / heldout.jsonl (the calibration format of agent/calibrate.py) from the two authors' files.

Run from the repository root: ``.venv/bin/python tests/data/gold/questions/build.py``. Each file is one
author's (see its header): ``source_q1.yaml`` is the training file, ``source_q2.yaml``, by another author
who never saw the first, is held out whole. The situations (persona, channel, the patient's line) are the
keyword-free hostility set's (``../hostility/source.yaml``), so both sets ask the same questions of a reply.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The hostility set's build script (a sibling folder, not a package): its situations and row format.
_spec = importlib.util.spec_from_file_location("hostility_build", HERE.parent / "hostility" / "build.py")
assert _spec is not None and _spec.loader is not None
hostility = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostility)
CODES = {"arg": "argue_back", "dis": "dismiss_feelings", "cool": "lose_cool", "ask": "ask_questions"}
VALUES = {"v": "violated", "d": "demonstrated", "m": "missed"}
FILES = {"train.jsonl": ("source_q1.yaml", "q1"), "heldout.jsonl": ("source_q2.yaml", "q2")}
# The training file leaves lose_cool unlabelled: learnt from these short sarcastic questions, the classifier
# read "Mr. Boyd, I'm listening." as curt (0.81 against its 0.8; tests/test_redteam_verdicts.py). The file is
# here to teach argue_back and ask_questions on questions; the held-out file keeps every label for scoring.
UNLABELLED_IN_TRAINING = ("lose_cool",)


def examples(source: str, prefix: str, drop: tuple[str, ...] = ()) -> list[dict]:
    """The hostility build's rows (same situations, same format), less the ``drop`` labels, with their author."""
    out = hostility.rows(HERE / source, prefix, CODES, VALUES)
    return [
        {**row, "labels": {s: v for s, v in row["labels"].items() if s not in drop}, "author": prefix} for row in out
    ]


def main() -> None:
    for name, (source, prefix) in FILES.items():
        rows = examples(source, prefix, UNLABELLED_IN_TRAINING if name == "train.jsonl" else ())
        with (HERE / name).open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} replies")


if __name__ == "__main__":
    main()
