"""Training the learned grading component (:mod:`agent.learned`) and estimating its agreement.

:func:`fit` trains one class-balanced logistic classifier per rubric step over the reply features of
:func:`agent.learned.features_of`, from labelled calibration replies (:func:`rows_from`) plus the
rubric's own good/bad examples (:func:`rubric_examples`); :func:`save` writes the model beside the
rubric. :func:`cross_validate` leaves each calibration file out in turn and scores it with the
checks alone and with checks + a classifier trained on the other files. Used by
``python -m agent learn``; the grader never imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from agent import calibrate, checks, embed
from agent.grades import TurnGrade
from agent.learned import (
    FAMILIAR_AT,
    FEATURES,
    L2,
    LearnedModel,
    StepClassifier,
    combine,
    features_of,
    reference_path,
    reply_texts,
    score_reply,
)
from agent.rubrics import Rubric

CHUNK = 512  # texts per encoder call in encode_all (the progress bar moves once per chunk)


class TrainingRow(BaseModel):
    """One labelled reply: step id -> verdict for the steps its labeller decided."""

    text: str
    labels: dict[str, str]


def positive_label(kind: str, verdict: str) -> int | None:
    """1 when the reply shows the step's behaviour, 0 when it doesn't, None when the label says nothing."""
    if kind == "do":
        return {"demonstrated": 1, "missed": 0}.get(verdict)
    return {"violated": 1, "ok": 0}.get(verdict)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, iterations: int = 25) -> tuple[np.ndarray, float]:
    """L2-regularised, class-balanced logistic regression by Newton's method (exact, no tuning knobs).

    Balanced weights matter because most steps are rare: without them "never" wins.
    """
    n, d = x.shape
    positives = max(int(y.sum()), 1)
    negatives = max(n - positives, 1)
    sample = np.where(y == 1, n / (2 * positives), n / (2 * negatives))
    design = np.hstack([x, np.ones((n, 1))]).astype(np.float64)
    beta = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))
        gradient = design.T @ (sample * (p - y)) + penalty * beta
        hessian = (design * (sample * p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-6:
            break
    return beta[:-1], float(beta[-1])


def rows_from(paths: Iterable[str | Path], rubric: Rubric) -> list[TrainingRow]:
    """Every labelled reply of these calibration files, validated against ``rubric``."""
    return [TrainingRow(text=e.reply, labels=e.labels) for path in paths for e in calibrate.load_examples(path, rubric)]


def rubric_examples(rubric: Rubric) -> list[TrainingRow]:
    """The rubric's good/bad examples as labelled rows (good shows a do-step; bad shows a don't-step)."""
    rows = []
    for step in rubric.turn_steps():
        shows, lacks = (step.good, step.bad) if step.kind == "do" else (step.bad, step.good)
        positive, negative = ("demonstrated", "missed") if step.kind == "do" else ("violated", "ok")
        rows += [TrainingRow(text=t, labels={step.id: positive}) for t in shows]
        rows += [TrainingRow(text=t, labels={step.id: negative}) for t in lacks]
    return rows


def encode_all(encoder: embed.TextEncoder, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
    """One feature row per reply (see :func:`agent.learned.features_of`).

    Every distinct text (a reply, one of its sentences) is embedded once, and they go to the
    encoder ``CHUNK`` at a time rather than one reply per call, so that the ONNX encoder fills whole
    batches. Once per text also keeps a repeated reply's vector identical wherever it occurs (a
    batched forward pass may differ in the last float bit with the batch it ran in).
    """
    groups = [reply_texts(t) for t in texts]
    distinct = list(dict.fromkeys(text for group in groups for text in group))
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=len(distinct), desc="embedding", unit="text", file=sys.stderr, leave=False)
    vectors: dict[str, np.ndarray] = {}
    for start in range(0, len(distinct), CHUNK):
        chunk = distinct[start : start + CHUNK]
        vectors.update(zip(chunk, encoder.encode(chunk), strict=True))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    rows = [features_of(np.vstack([vectors[t] for t in group])) for group in groups]
    return np.vstack(rows) if rows else np.zeros((0, FEATURES))


def fit(
    rubric: Rubric,
    rows: Sequence[TrainingRow],
    encoder: embed.TextEncoder,
    *,
    trained_on: Iterable[str] = (),
    l2: float = L2,
    min_per_class: int = 4,
    familiar_at: float = FAMILIAR_AT,
    progress: bool = False,
) -> LearnedModel:
    """One classifier per graded turn step with ``learned: true`` and ``min_per_class`` of each label.

    The model keeps the training replies' whole-reply vectors too, so that it can leave a long reply
    unlike all of them (below ``familiar_at``) to the checks (:meth:`LearnedModel.abstains`).
    """
    texts = [row.text for row in rows]
    vectors = encode_all(encoder, texts, progress=progress)
    model = LearnedModel(
        rubric=rubric.id, trained_on=list(trained_on), created=datetime.now(UTC).isoformat(timespec="seconds"), l2=l2,
        familiar_at=familiar_at,
    )  # fmt: skip
    model.with_reference(np.unique(vectors[:, : embed.DIMENSIONS], axis=0))
    for step in rubric.turn_steps():
        if not step.graded or not step.learned:
            continue
        picked = [(i, positive_label(step.kind, row.labels[step.id])) for i, row in enumerate(rows)
                  if step.id in row.labels]  # fmt: skip
        picked = [(i, y) for i, y in picked if y is not None]
        y = np.array([label for _, label in picked], dtype=np.float64)
        if y.sum() < min_per_class or len(y) - y.sum() < min_per_class:
            continue
        weights, bias = fit_logistic(vectors[[i for i, _ in picked]], y, l2)
        model.steps[step.id] = StepClassifier(
            weights=[round(float(w), 6) for w in weights],
            bias=round(bias, 6),
            positives=int(y.sum()),
            negatives=int(len(y) - y.sum()),
        )
    return model


def save(model: LearnedModel, path: Path) -> None:
    """Write the model as one line of compact JSON (what :func:`agent.learned.load` reads).

    The training replies' vectors go beside it (``.npz``, float16: ~1 MB for 1,461 replies) when
    the model abstains on unfamiliar replies.
    """
    path.write_text(json.dumps(model.model_dump(), separators=(",", ":")) + "\n", encoding="utf-8")
    if model.familiar_at > 0 and model.reference is not None:
        with reference_path(path).open("wb") as handle:
            np.savez_compressed(handle, replies=model.reference.astype(np.float16),
                                encoder_sha256=np.array(embed.WEIGHTS_SHA256))  # fmt: skip


class MemoEncoder:
    """An encoder that remembers each text's vector: cross-validation embeds the same replies per fold."""

    def __init__(self, encoder: embed.TextEncoder) -> None:
        self.encoder = encoder
        self.vectors: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.encoder.encode(missing), strict=True))
        return np.vstack([self.vectors[t] for t in texts]).reshape(len(texts), embed.DIMENSIONS)


class VectorCache(MemoEncoder):
    """A :class:`MemoEncoder` kept in a file between runs (``learn --vectors``).

    Embedding ~1,700 replies and their sentences takes minutes on a busy 2-core machine; a retrain
    after a rubric change embeds the same texts again. The file records the encoder's weights hash,
    so vectors from another encoder are never reused.
    """

    def __init__(self, encoder: embed.TextEncoder, path: Path) -> None:
        super().__init__(encoder)
        self.path = path
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                if str(data["encoder_sha256"]) == embed.WEIGHTS_SHA256:
                    self.vectors = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))

    def save(self) -> None:
        texts = list(self.vectors)
        vectors = np.vstack([self.vectors[t] for t in texts]) if texts else np.zeros((0, embed.DIMENSIONS))
        with self.path.open("wb") as handle:
            np.savez(handle, texts=np.array(texts, dtype=str), vectors=vectors.astype(np.float32),
                     encoder_sha256=np.array(embed.WEIGHTS_SHA256))  # fmt: skip


class Fold(BaseModel):
    """One held-out file's agreement with its labels: checks alone, and checks + the fold's classifier."""

    held_out: str
    checks_kappa: float
    learned_kappa: float
    checks_accuracy: float
    learned_accuracy: float


def cross_validate(
    rubric: Rubric,
    files: Sequence[str],
    encoder: embed.TextEncoder,
    *,
    l2: float = L2,
    extra: Sequence[TrainingRow] = (),
) -> list[Fold]:
    """Leave each file out in turn: train on the others (plus ``extra``), score the left-out file with and without.

    Every text is embedded once (the folds share :class:`MemoEncoder`), not once per fold.
    """
    encoder = MemoEncoder(encoder)
    folds = []
    for held_out in files:
        rows = rows_from([f for f in files if f != held_out], rubric)
        model = fit(rubric, [*rows, *extra], encoder, l2=l2)
        reports = []
        for use in (False, True):

            def grader(r: Rubric, e: calibrate.Example, use: bool = use, model: LearnedModel = model) -> TurnGrade:
                verdicts = checks.run(r, e.reply, e.turn_context())
                if use:
                    verdicts = combine(r, verdicts, score_reply(model, encoder, e.reply))
                return TurnGrade(verdicts=verdicts)

            reports.append(calibrate.calibrate(held_out, rubric, grader=grader))
        folds.append(Fold(held_out=str(held_out), checks_kappa=reports[0].macro_kappa or 0.0,
                          learned_kappa=reports[1].macro_kappa or 0.0,
                          checks_accuracy=reports[0].macro_accuracy or 0.0,
                          learned_accuracy=reports[1].macro_accuracy or 0.0))  # fmt: skip
    return folds
