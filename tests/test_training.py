"""Training the learned component: the fitter, the rows it learns from, the model file it writes, the CLI."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np

from agent import embed, learned, training
from agent.rubrics import load_rubric

RUBRIC = load_rubric()
GOLD = Path(__file__).parent / "data" / "gold"
ROOT = Path(__file__).resolve().parents[1]


class HashEncoder:
    """A stand-in for the sentence encoder: a fixed pseudo-random unit vector per text."""

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).normal(size=embed.DIMENSIONS)
            rows.append(vector / np.linalg.norm(vector))
        return np.vstack(rows).astype(np.float32)


def test_fit_logistic_separates_and_balances_a_rare_class():
    rng = np.random.default_rng(0)
    negatives = rng.normal(-1.0, 0.5, size=(95, 3))
    positives = rng.normal(1.0, 0.5, size=(5, 3))
    x = np.vstack([negatives, positives])
    y = np.array([0] * 95 + [1] * 5, dtype=float)
    weights, bias = training.fit_logistic(x, y)
    predicted = (x @ weights + bias) > 0
    assert predicted[95:].all(), "the rare class must not be given up for accuracy"
    assert predicted[:95].mean() < 0.05


def test_rubric_examples_label_good_as_shown_for_do_steps_and_bad_as_shown_for_dont_steps():
    rows = training.rubric_examples(RUBRIC)
    empathize, dismiss = RUBRIC.step("empathize"), RUBRIC.step("dismiss_feelings")
    assert training.TrainingRow(text=empathize.good[0], labels={"empathize": "demonstrated"}) in rows
    assert training.TrainingRow(text=empathize.bad[0], labels={"empathize": "missed"}) in rows
    assert training.TrainingRow(text=dismiss.bad[0], labels={"dismiss_feelings": "violated"}) in rows
    assert training.TrainingRow(text=dismiss.good[0], labels={"dismiss_feelings": "ok"}) in rows


def test_rows_from_reads_every_labelled_reply_of_the_files():
    rows = training.rows_from([GOLD / "dev.jsonl"], RUBRIC)
    lines = [line for line in (GOLD / "dev.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == len(lines) and all(row.labels for row in rows)


def test_fit_trains_learned_steps_with_enough_labels_and_the_saved_file_loads_back(tmp_path):
    rows = training.rows_from([GOLD / "dev.jsonl"], RUBRIC) + training.rubric_examples(RUBRIC)
    model = training.fit(RUBRIC, rows, HashEncoder(), trained_on=["dev.jsonl"])
    assert model.steps and set(model.steps) <= {s.id for s in RUBRIC.turn_steps() if s.learned}
    assert all(c.positives >= 4 and c.negatives >= 4 for c in model.steps.values())
    assert all(len(c.weights) == learned.FEATURES for c in model.steps.values())
    assert model.familiar_at == learned.FAMILIAR_AT and model.reference is not None
    assert len(model.reference) == len({row.text for row in rows})  # one vector per distinct reply
    path = tmp_path / "model.learned.json"
    training.save(model, path)
    assert (tmp_path / "model.learned.npz").exists()
    loaded = learned.load(path, RUBRIC)
    assert loaded == model and np.array_equal(loaded.reference, model.reference)


def test_learn_cli_trains_a_loadable_model(tmp_path):
    out = tmp_path / "model.learned.json"
    result = subprocess.run(
        [sys.executable, "-m", "agent", "learn", str(GOLD / "dev.jsonl"), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    model = learned.load(out, RUBRIC)
    assert model.trained_on == ["gold/dev.jsonl"] and "empathize" in model.steps


def test_learn_cli_cross_validates_leaving_each_file_out(tmp_path):
    out = tmp_path / "cv.learned.json"
    result = subprocess.run(
        [sys.executable, "-m", "agent", "learn", str(GOLD / "dev.jsonl"), str(GOLD / "test.jsonl"), "--cv",
         "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("dev.jsonl", "test.jsonl"))]
    assert [r[0] for r in rows] == ["dev.jsonl", "test.jsonl"]
    assert all(0.0 <= float(value) <= 1.0 for r in rows for value in r[1:5])
    assert learned.load(out, RUBRIC).trained_on == ["gold/dev.jsonl", "gold/test.jsonl"]


def test_memo_encoder_embeds_each_text_once():
    calls: list[list[str]] = []

    class Counting:
        def encode(self, texts: list[str]) -> np.ndarray:
            calls.append(list(texts))
            return np.ones((len(texts), 384), dtype=np.float32)

    memo = training.MemoEncoder(Counting())
    assert memo.encode(["a", "b", "a"]).shape == (3, 384)
    assert memo.encode(["b", "c"]).shape == (2, 384)
    assert calls == [["a", "b"], ["c"]]


def test_vector_cache_reuses_vectors_from_its_file_but_never_another_encoders(tmp_path, monkeypatch):
    calls: list[list[str]] = []

    class Counting(HashEncoder):
        def encode(self, texts: list[str]) -> np.ndarray:
            calls.append(list(texts))
            return super().encode(texts)

    path = tmp_path / "vectors.npz"
    first = training.VectorCache(Counting(), path)
    vectors = first.encode(["I'm sorry.", "Let me check."])
    first.save()
    second = training.VectorCache(Counting(), path)
    assert np.allclose(second.encode(["Let me check.", "I'm sorry."]), vectors[::-1])
    assert calls == [["I'm sorry.", "Let me check."]]
    monkeypatch.setattr(embed, "WEIGHTS_SHA256", "another encoder")
    training.VectorCache(Counting(), path).encode(["I'm sorry."])
    assert calls[-1] == ["I'm sorry."]


def test_encode_all_sends_many_replies_to_the_encoder_at_once_and_keeps_each_reply_its_rows():
    """The ONNX encoder is fast per batch, not per call: learn must not embed one reply per call."""
    calls = []

    class Counting(HashEncoder):
        def encode(self, texts: list[str]) -> np.ndarray:
            calls.append(len(texts))
            return super().encode(texts)

    replies = [row.text for row in training.rows_from([GOLD / "dev.jsonl"], RUBRIC)]
    features = training.encode_all(Counting(), replies)
    distinct = {t for r in replies for t in learned.reply_texts(r)}
    assert sum(calls) == len(distinct), "each distinct text once"
    assert len(calls) == -(-len(distinct) // training.CHUNK) < len(replies)
    expected = np.vstack([learned.features_of(HashEncoder().encode(learned.reply_texts(r))) for r in replies])
    np.testing.assert_array_equal(features, expected)
