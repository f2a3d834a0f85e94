"""Split grounded/second_author.jsonl 50/50 into dev2.jsonl (read and tuned on) and heldout2.jsonl
(scored once per stop, never read), stratified by persona and label pattern with a fixed seed.

Run from the repository root: python tests/data/gold/grounded/split_second_author.py
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
SEED = 29


def main() -> None:
    text = (HERE / "second_author.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line]
    strata: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)
    for row in rows:
        labels = row["labels"]
        strata[(row["persona"], labels["summarize"], labels["offer_solution"], row.get("meets") or "-")].append(row)
    rng = random.Random(SEED)
    dev, held = [], []
    flip = 0
    for key in sorted(strata):
        group = strata[key]
        rng.shuffle(group)
        half, odd = divmod(len(group), 2)
        take = half + (odd and flip % 2 == 0)
        flip += odd
        dev += [dict(row, split="dev") for row in group[:take]]
        held += [dict(row, split="heldout") for row in group[take:]]
    for name, part in (("dev2.jsonl", dev), ("heldout2.jsonl", held)):
        part.sort(key=lambda row: row["id"])
        (HERE / name).write_text("".join(json.dumps(row) + "\n" for row in part), encoding="utf-8")
        print(f"{name}: {len(part)}")


if __name__ == "__main__":
    main()
