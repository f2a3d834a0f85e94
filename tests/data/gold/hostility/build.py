"""Build train.jsonl / heldout.jsonl (the calibration format of agent/calibrate.py) from source.yaml.

Run from the repository root: ``.venv/bin/python tests/data/gold/hostility/build.py``. The split is
fixed before any tuning: replies are grouped by their label pattern (which of argue_back,
dismiss_feelings, lose_cool they violate; controls violate none), each group is shuffled with a fixed
seed and dealt alternately to train and held-out, so both halves hold every pattern in about equal
numbers and the held-out half never changes between runs.

The training-only additions, written after the split by other authors (``source_extra.yaml`` to
``source_extra19.yaml``, one author each), go to train.jsonl only, with ids ``hs-x-...``, ``hs-b-...``,
``hs-c-...``, ``hs-d-...`` to ``hs-o-...``, and (stop 33) ``hs-r-...`` to ``hs-u-...``; they take no part
in the split, so the held-out half is the same with or without them. Two more authors' files
(``source_heldout2.yaml``, ``source_heldout3.yaml``, ids ``hs-p-...``, ``hs-q-...``) are held out whole, as
``heldout2.jsonl`` and ``heldout3.jsonl``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CODES = {"arg": "argue_back", "dis": "dismiss_feelings", "cool": "lose_cool"}
VALUES = {"v": "violated", "o": "ok"}
SEED = 20261204
# Training-only replies written after the split, each file by another author: (file, id prefix).
EXTRAS = [
    ("source_extra.yaml", "hs-x"),
    ("source_extra2.yaml", "hs-b"),
    ("source_extra3.yaml", "hs-c"),
    ("source_extra4.yaml", "hs-d"),
    ("source_extra5.yaml", "hs-e"),
    ("source_extra6.yaml", "hs-f"),
    ("source_extra7.yaml", "hs-g"),
    ("source_extra8.yaml", "hs-h"),
    ("source_extra9.yaml", "hs-i"),
    ("source_extra10.yaml", "hs-j"),
    ("source_extra11.yaml", "hs-k"),
    ("source_extra12.yaml", "hs-l"),
    ("source_extra13.yaml", "hs-m"),
    ("source_extra14.yaml", "hs-n"),
    ("source_extra15.yaml", "hs-o"),
    # stop 33: sincere courtesy against hollow courtesy (named feelings, named costs, thanks, admissions)
    ("source_extra16.yaml", "hs-r"),
    ("source_extra17.yaml", "hs-s"),
    ("source_extra18.yaml", "hs-t"),
    ("source_extra19.yaml", "hs-u"),
]
# Held out whole, each by another author who saw only the brief (stop 32): never trained or tuned on; a
# second and third reading of the same goal beside heldout.jsonl, which earlier stops scored many times.
HELDOUT_EXTRAS = [
    ("source_heldout2.yaml", "hs-p", "heldout2"),
    ("source_heldout3.yaml", "hs-q", "heldout3"),
]
# Who wrote each training reply (``author`` in train.jsonl): ``learn-stance`` leaves whole authors out
# when it cross-validates. "A" wrote source.yaml; held-out rows carry no author (the file stays as split).
AUTHOR_OF_SOURCE = "A"


def examples(source: str = "source.yaml", prefix: str = "hs") -> list[dict]:
    return rows(HERE / source, prefix, CODES, VALUES)


def rows(path: Path, prefix: str, codes: dict[str, str], values: dict[str, str]) -> list[dict]:
    """Calibration rows from a replies file (``[situation key, reply, "code=value ..."]``) answering the
    situations of source.yaml; a step in ``codes`` with no label is ``ok`` (also used by ../questions/build.py)."""
    situations = yaml.safe_load((HERE / "source.yaml").read_text(encoding="utf-8"))["situations"]
    replies = yaml.safe_load(path.read_text(encoding="utf-8"))["replies"]
    out, counters = [], {}
    for key, reply, *rest in replies:
        labels = {step: "ok" for step in codes.values()}
        for token in (rest[0] if rest else "").split():
            code, _, value = token.partition("=")
            labels[codes[code]] = values[value]
        where = situations[key]
        counters[key] = counters.get(key, 0) + 1
        out.append({
            "id": f"{prefix}-{where['situation']}-{counters[key]:02d}",
            "rubric": "deescalation",
            "situation": where["situation"],
            "context": where["context"],
            "history": [{"role": "patient", "content": where["patient"]}],
            "reply": reply,
            "labels": labels,
        })  # fmt: skip
    return out


def split(items: list[dict]) -> dict[str, list[dict]]:
    groups: dict[tuple[str, ...], list[dict]] = {}
    for item in items:
        groups.setdefault(tuple(item["labels"][s] for s in CODES.values()), []).append(item)
    rng = random.Random(SEED)
    halves: dict[str, list[dict]] = {"train": [], "heldout": []}
    turn = 0
    for pattern in sorted(groups):
        members = groups[pattern]
        rng.shuffle(members)
        for item in members:
            halves["train" if turn % 2 == 0 else "heldout"].append(item)
            turn += 1
    return halves


def main() -> None:
    halves = split(examples())
    # Training-only additions, never held out: one file per author (see the headers of each file).
    for item in halves["train"]:
        item["author"] = AUTHOR_OF_SOURCE
    for source, prefix in EXTRAS:
        halves["train"] += [{**item, "author": prefix.removeprefix("hs-")} for item in examples(source, prefix)]
    for source, prefix, name in HELDOUT_EXTRAS:
        halves[name] = examples(source, prefix)
    for name, items in halves.items():
        items.sort(key=lambda e: e["id"])
        lines = [json.dumps({**e, "split": name}, ensure_ascii=False) for e in items]
        (HERE / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        hostile = sum(any(v == "violated" for v in e["labels"].values()) for e in items)
        print(f"{name}: {len(items)} replies, {hostile} hostile, {len(items) - hostile} controls")


if __name__ == "__main__":
    main()
