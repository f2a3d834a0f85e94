"""Build train/dev/test (+ test2..test11) JSONL (design.md calibration format) from the hand-written source.txt.

Run from the repository root: ``.venv/bin/python tests/data/gold/build.py``. The split is fixed
(seeded shuffle within each situation, 60/20/20) so that every situation appears in every split
and the held-out test split never changes between runs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODES = {
    "emp": "empathize",
    "apo": "apologize",
    "name": "use_name",
    "sum": "summarize",
    "ask": "ask_questions",
    "sol": "offer_solution",
    "rea": "reassure",
    "mgr": "involve_manager",
    "bnd": "set_boundary",
    "xfer": "explain_transfer",
    "off": "take_offline",
    "find": "find_out",
    "arg": "argue_back",
    "cool": "lose_cool",
    "idk": "say_i_dont_know",
    "guess": "make_things_up",
    "dis": "dismiss_feelings",
}
DONTS = ["arg", "cool", "idk", "guess", "dis"]
VALUES = {"d": "demonstrated", "m": "missed", "n": "not_applicable", "v": "violated", "o": "ok"}
SPLITS = (("train", 0.6), ("dev", 0.2), ("test", 0.2))
SEED = 20261123


def parse_labels(text: str, where: str) -> tuple[dict[str, str], set[str]]:
    labels: dict[str, str] = {}
    skipped: set[str] = set()
    for token in text.split():
        if token.startswith("?"):
            skipped.add(token[1:])
            continue
        code, _, value = token.partition("=")
        if code not in CODES or value not in VALUES:
            raise ValueError(f"{where}: bad label {token!r}")
        labels[code] = value
    return labels, skipped


def parse(path: Path, prefix: str = "") -> list[dict]:
    examples: list[dict] = []
    situation: dict = {}
    history: list[dict] = []
    defaults: dict[str, str] = {}
    after_reply = False
    counters: dict[str, int] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        where = f"{path.name}:{number}"
        if not line or line.startswith("#") and not line.startswith("##"):
            continue
        if line.startswith("## "):
            name, *pairs = [p.strip() for p in line[3:].split("|")]
            fields = dict(p.split("=", 1) for p in pairs)
            situation = {
                "situation": name,
                "context": {
                    "persona_name": fields.get("name") or None,
                    "channel": fields["channel"],
                    "patient_abusive": fields.get("abusive") == "1",
                    "transferring": fields.get("transferring") == "1",
                },
            }
            history, defaults, after_reply = [], {}, False
        elif line.startswith("> "):
            if after_reply:
                history, defaults, after_reply = [], {}, False
            role, _, content = line[2:].partition(":")
            history.append({"role": role.strip(), "content": content.strip()})
        elif line.startswith("@defaults"):
            defaults, _ = parse_labels(line[len("@defaults") :], where)
        elif line.startswith("- "):
            reply, _, label_text = line[2:].rpartition("|")
            own, skipped = parse_labels(label_text, where)
            merged = {code: "o" for code in DONTS} | defaults | own
            for code in skipped:
                merged.pop(code, None)
            counters[situation["situation"]] = counters.get(situation["situation"], 0) + 1
            examples.append(
                {
                    "id": f"{prefix}{situation['situation']}-{counters[situation['situation']]:02d}",
                    "rubric": "deescalation",
                    "situation": situation["situation"],
                    "context": situation["context"],
                    "history": [dict(m) for m in history],
                    "reply": reply.strip(),
                    "labels": {CODES[c]: VALUES[v] for c, v in sorted(merged.items())},
                }
            )
            after_reply = True
        else:
            raise ValueError(f"{where}: cannot parse {line[:40]!r}")
    return examples


def split(examples: list[dict]) -> dict[str, list[dict]]:
    rng = random.Random(SEED)
    out: dict[str, list[dict]] = {name: [] for name, _ in SPLITS}
    for situation in dict.fromkeys(e["situation"] for e in examples):
        group = [e for e in examples if e["situation"] == situation]
        rng.shuffle(group)
        n_train = round(len(group) * SPLITS[0][1])
        n_dev = round(len(group) * SPLITS[1][1])
        out["train"] += group[:n_train]
        out["dev"] += group[n_train : n_train + n_dev]
        out["test"] += group[n_train + n_dev :]
    return out


def main() -> None:
    examples = parse(HERE / "source.txt")
    splits = split(examples)
    # A second held-out set, written after the first test split had been scored (README.md).
    splits["test2"] = parse(HERE / "source_test2.txt", prefix="t2-")
    # A third held-out set, written before the checks were changed after test2 (README.md).
    splits["test3"] = parse(HERE / "source_test3.txt", prefix="t3-")
    # A fourth held-out set, written before the learned grader component was scored (README.md).
    splits["test4"] = parse(HERE / "source_test4.txt", prefix="t4-")
    # A fifth held-out set, written before the revised grader was scored (README.md).
    splits["test5"] = parse(HERE / "source_test5.txt", prefix="t5-")
    # A sixth held-out set, written before the grader's next revision was scored (README.md).
    splits["test6"] = parse(HERE / "source_test6.txt", prefix="t6-")
    # A seventh held-out set, written before the grader's next revision was scored (README.md).
    splits["test7"] = parse(HERE / "source_test7.txt", prefix="t7-")
    # An eighth held-out set, written before the grader's next revision was scored (README.md).
    splits["test8"] = parse(HERE / "source_test8.txt", prefix="t8-")
    # A ninth held-out set, written before the grader's next revision was scored (README.md).
    splits["test9"] = parse(HERE / "source_test9.txt", prefix="t9-")
    # A tenth held-out set, written before the grader's next revision was scored (README.md).
    splits["test10"] = parse(HERE / "source_test10.txt", prefix="t10-")
    # An eleventh held-out set, written before the grader's next revision was scored (README.md).
    splits["test11"] = parse(HERE / "source_test11.txt", prefix="t11-")
    for name, rows in splits.items():
        with (HERE / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)}")


if __name__ == "__main__":
    main()
