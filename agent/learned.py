"""The learned grading component: one small logistic classifier per step over sentence embeddings.

Why: phrase patterns (:mod:`agent.checks`) are exact and quotable but only know the phrasings they
were written from; on held-out replies they missed empathy, reassurance, summaries and offers said
in new words (tests/data/gold/README.md). A classifier over MiniLM sentence vectors
(:mod:`agent.embed`) recognises paraphrases. It is trained on the team's labelled gold replies plus
the rubric's own good/bad examples, and stored next to the rubric it serves
(``rubrics/<id>.learned.json``) so a trainer can retrain it with ``python -m agent learn``.

How it is applied (see :func:`agent.grader.grade_fast` and :func:`combine`): the reply's vector and
the element-wise maximum over its sentences' vectors go into each step's classifier; a finding is
only ever *added* where the patterns found nothing, and the sentence that scores highest on its own
is quoted as the evidence. The trainee's text is only ever embedded and scored, never obeyed; the
20 injection replies of tests/test_grader.py leave every verdict as it was.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from agent import checks, embed
from agent.checks import StepVerdict
from agent.rubrics import Rubric

# A sentence ends at . ! ? followed by space, or at a line break; "Mr. Carter" and "3.40" do not end one.
BOUNDARY = re.compile(r"(?<=[.!?])\s+|\n+")
PROTECTED_DOT = "\u2024"
MIN_SENTENCE_WORDS = 2
MIN_REPLY_WORDS = 2
L2 = 1.0
# Probability needed to add a finding, chosen by cross-validation on the tuning files (the test3
# fold and two halves of test4, each scored by a model that never saw it): 0.5 / 0.6 / 0.7 for
# do-steps gave mean macro kappa 0.799 / 0.820 / 0.819. Don't-steps need more: a wrongly flagged
# violation cost more agreement than a missed one (0.7 vs 0.8: 0.820 vs 0.810).
THRESHOLD_DO = 0.6
THRESHOLD_DONT = 0.7
FORMAT = 1
log = logging.getLogger(__name__)


class StepClassifier(BaseModel):
    """Logistic regression on a reply's features (:func:`features_of`): ``p = sigmoid(w . x + b)``."""

    weights: list[float]
    bias: float
    positives: int
    negatives: int

    @cached_property
    def _weights(self) -> np.ndarray:
        """The weights as an array once, not once per scored reply (twice per step per turn)."""
        return np.asarray(self.weights, dtype=np.float32)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(vectors @ self._weights + self.bias)))


class LearnedModel(BaseModel):
    """Every step's classifier plus what it was trained on, stored as JSON next to the rubric."""

    format: int = FORMAT
    rubric: str
    encoder: str = embed.PACKAGE
    encoder_sha256: str = embed.WEIGHTS_SHA256
    trained_on: list[str]
    created: str
    l2: float = L2
    steps: dict[str, StepClassifier] = Field(default_factory=dict)


class LearnedError(ValueError):
    """A learned-model file is unreadable or does not match the rubric or encoder."""


def sentences(text: str) -> list[str]:
    """The reply's sentences (at least two words each); the whole reply if it has none."""
    protected = checks.TITLE_DOT.sub(lambda m: m.group(1) + PROTECTED_DOT, text)
    parts = [part.replace(PROTECTED_DOT, ".").strip() for part in BOUNDARY.split(protected)]
    found = [part for part in parts if len(part.split()) >= MIN_SENTENCE_WORDS]
    return found or [text.strip() or text]


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


class TrainingRow(BaseModel):
    text: str
    labels: dict[str, str]


def rows_from(paths: Iterable[str | Path], rubric: Rubric) -> list[TrainingRow]:
    """Every labelled reply of these calibration files, validated against ``rubric``."""
    from agent.calibrate import load_examples

    return [TrainingRow(text=e.reply, labels=e.labels) for path in paths for e in load_examples(path, rubric)]


def rubric_examples(rubric: Rubric) -> list[TrainingRow]:
    """The rubric's good/bad examples as labelled rows (good shows a do-step; bad shows a don't-step)."""
    rows = []
    for step in rubric.turn_steps():
        shows, lacks = (step.good, step.bad) if step.kind == "do" else (step.bad, step.good)
        positive, negative = ("demonstrated", "missed") if step.kind == "do" else ("violated", "ok")
        rows += [TrainingRow(text=t, labels={step.id: positive}) for t in shows]
        rows += [TrainingRow(text=t, labels={step.id: negative}) for t in lacks]
    return rows


def fit(
    rubric: Rubric,
    rows: Sequence[TrainingRow],
    encoder: embed.TextEncoder,
    *,
    trained_on: Iterable[str] = (),
    l2: float = L2,
    min_per_class: int = 4,
    progress: bool = False,
) -> LearnedModel:
    """One classifier per graded turn step with ``learned: true`` and ``min_per_class`` of each label."""
    texts = [row.text for row in rows]
    vectors = encode_all(encoder, texts, progress=progress)
    model = LearnedModel(
        rubric=rubric.id, trained_on=list(trained_on), created=datetime.now(UTC).isoformat(timespec="seconds"), l2=l2
    )
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


FEATURES = 2 * embed.DIMENSIONS


def features_of(vectors: np.ndarray) -> np.ndarray:
    """Classifier input from one reply's vectors (row 0: the whole reply, then its sentences).

    The whole-reply vector carries the overall register; the element-wise maximum over the
    sentences keeps a behaviour that one sentence of a long reply shows ("... I'll ring the lab
    and call you back before three."), which the average dilutes. Measured by cross-validation
    on the held-out folds: macro kappa 0.741 -> 0.777 on test6 over the whole-reply vector alone.
    """
    pooled = vectors[1:].max(axis=0) if len(vectors) > 1 else vectors[0]
    return np.concatenate([vectors[0], pooled])


def reply_texts(reply: str, parts: list[str] | None = None) -> list[str]:
    """What gets embedded for a reply: the reply itself, then its sentences when it has several."""
    parts = sentences(reply) if parts is None else parts
    return [reply] + (parts if len(parts) > 1 else [])


def encode_all(encoder: embed.TextEncoder, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
    """One feature row per reply (see :func:`features_of`)."""
    iterator: Iterable[str] = texts
    if progress:
        import sys

        from tqdm import tqdm

        iterator = tqdm(texts, desc="embedding", unit="reply", file=sys.stderr, leave=False)
    rows = [features_of(encoder.encode(reply_texts(t))) for t in iterator]
    return np.vstack(rows) if rows else np.zeros((0, FEATURES))


class ReplyScores(BaseModel):
    """Per step: the classifier's probability for the whole reply, and its best-scoring sentence."""

    probability: dict[str, float]
    sentence: dict[str, str]


def score_reply(model: LearnedModel, encoder: embed.TextEncoder, reply: str) -> ReplyScores:
    """Score the reply (the verdict) and each sentence on its own (which one to quote as evidence).

    A one-word reply ("Hello.", "Okay.") gets no scores: no gold reply is that short, and the
    classifiers, which learnt that curt replies are often rude, called "Hello." losing one's cool.
    """
    if len(reply.split()) < MIN_REPLY_WORDS:
        return ReplyScores(probability={}, sentence={})
    parts = sentences(reply)
    vectors = encoder.encode(reply_texts(reply, parts))
    whole = features_of(vectors)[None, :]
    per_sentence = np.hstack([vectors[1:], vectors[1:]]) if len(vectors) > 1 else whole
    probability: dict[str, float] = {}
    sentence: dict[str, str] = {}
    for step_id, classifier in model.steps.items():
        probability[step_id] = float(classifier.probabilities(whole)[0])
        best = int(np.argmax(classifier.probabilities(per_sentence))) if len(parts) > 1 else 0
        sentence[step_id] = parts[best]
    return ReplyScores(probability=probability, sentence=sentence)


def _quotes_good(rubric: Rubric, verdicts: dict[str, StepVerdict], sentence: str | None) -> bool:
    """Whether a pattern quoted a semantic do-step (empathy, apology, ...) inside ``sentence``.

    "I'm so sorry you've been waiting. I understand how frustrating that must be." once came out as
    a learned dismissal (p = 0.70): the classifier had learnt "sorry you feel ..." non-apologies.
    A quoted "I understand" in the very sentence it points at outweighs that guess.
    """
    if not sentence:
        return False
    return any(
        v.verdict == "demonstrated"
        and v.source == "check"
        and v.evidence
        and v.evidence in sentence
        and rubric.step(step_id).kind == "do"
        and rubric.step(step_id).learned
        for step_id, v in verdicts.items()
    )


def _violates_any(verdicts: dict[str, StepVerdict]) -> bool:
    return any(v.verdict == "violated" for v in verdicts.values())


def combine(rubric: Rubric, verdicts: dict[str, StepVerdict], scores: ReplyScores) -> dict[str, StepVerdict]:
    """Add what the classifier finds to the checks' verdicts; a check's quoted match always stands.

    The classifier can only turn an *absence* into a finding: a do-step ``missed`` becomes
    ``demonstrated``, a don't-step ``ok`` becomes ``violated``. It leaves ``not_applicable`` alone
    (each classifier learnt from replies where its step applies, and on the tuning data letting it
    judge other situations cost agreement: explain_transfer 0.99 -> 0.81) except for steps marked
    ``learned_outside`` in the rubric (find_out: a promise to find out counts wherever it is made).
    Nor does it add a do-step to a reply that violates a don't-step: "Don't get so worked up,
    it's one appointment" sits near empathy in the vector space but is its opposite; on the
    test3 fold this rule raised macro kappa 0.789 -> 0.809. A classifier violation of a step with
    ``yields_to_quotes`` is dropped when a pattern quoted a semantic do-step in the same sentence
    (cross-validated on test4-test8: mean macro kappa 0.824 -> 0.828). Pure function: tested
    without the encoder.
    """
    out = dict(verdicts)
    # Don't-steps first, so that a violation the classifier finds also blocks do-step findings.
    ordered = sorted(rubric.turn_steps(), key=lambda step: step.kind != "dont")
    for step in ordered:
        current = out.get(step.id)
        p = scores.probability.get(step.id)
        if current is None or p is None or not step.learned or current.evidence is not None:
            continue
        threshold = step.learned_threshold or (THRESHOLD_DO if step.kind == "do" else THRESHOLD_DONT)
        if p < threshold:
            continue
        evidence = scores.sentence.get(step.id)
        confidence = round(min(p, 0.95), 3)
        overruled = step.yields_to_quotes and _quotes_good(rubric, verdicts, evidence)
        if step.kind == "dont" and current.verdict == "ok" and not overruled:
            out[step.id] = StepVerdict(step_id=step.id, verdict="violated", evidence=evidence,
                                       confidence=confidence, source="learned")  # fmt: skip
        elif (
            step.kind == "do"
            and (current.verdict == "missed" or (current.verdict == "not_applicable" and step.learned_outside))
            and not _violates_any(out)
        ):
            out[step.id] = StepVerdict(step_id=step.id, verdict="demonstrated", evidence=evidence,
                                       confidence=confidence, source="learned")  # fmt: skip
    return checks.apply_voids(rubric, checks.apply_after_violations(rubric, out))


def model_path(rubric: Rubric) -> Path:
    """``rubrics/deescalation.yaml`` -> ``rubrics/deescalation.learned.json``."""
    if rubric.source is None:
        raise LearnedError(f"rubric {rubric.id!r} was not loaded from a file, so it has no learned model beside it")
    return rubric.source.with_suffix(".learned.json")


def save(model: LearnedModel, path: Path) -> None:
    path.write_text(json.dumps(model.model_dump(), separators=(",", ":")) + "\n", encoding="utf-8")


def load(path: Path, rubric: Rubric) -> LearnedModel:
    """Read and check a learned model: its steps must exist in ``rubric`` and its encoder must match."""
    try:
        model = LearnedModel.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LearnedError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise LearnedError(f"{path}: not a learned model ({str(exc).splitlines()[0]})") from exc
    if model.rubric != rubric.id:
        raise LearnedError(f"{path}: trained for rubric {model.rubric!r}, not {rubric.id!r}")
    if model.encoder_sha256 != embed.WEIGHTS_SHA256:
        raise LearnedError(f"{path}: trained with another encoder ({model.encoder}); retrain it")
    unknown = sorted(set(model.steps) - set(rubric.step_ids))
    if unknown:
        raise LearnedError(f"{path}: steps.{unknown[0]}: rubric {rubric.id!r} has no such step; retrain it")
    for step_id, classifier in model.steps.items():
        if len(classifier.weights) != FEATURES:
            raise LearnedError(f"{path}: steps.{step_id}.weights: {len(classifier.weights)} values, "
                               f"expected {FEATURES}")  # fmt: skip
    return model


class Component(BaseModel):
    """The learned component ready to score replies, or why it is not (the grader then uses checks only)."""

    model_config = {"arbitrary_types_allowed": True}
    model: LearnedModel | None = None
    encoder: embed.Encoder | None = None
    reason: str | None = None

    @property
    def ready(self) -> bool:
        return self.model is not None and self.encoder is not None


_components: dict[tuple[str, int, int], Component] = {}
_components_lock = threading.Lock()


def component_for(rubric: Rubric) -> Component:
    """The rubric's learned model and the shared encoder, loaded once per model file version.

    ``DEESCALATE_GRADER=checks`` turns the component off (to compare, or on a machine without the
    encoder); a missing model file or encoder is not an error, the reason is kept and logged once.
    """
    if os.environ.get("DEESCALATE_GRADER", "").lower() == "checks":
        return Component(reason="DEESCALATE_GRADER=checks")
    try:
        path = model_path(rubric)
        stat = path.stat()
    except (LearnedError, OSError) as exc:
        return Component(reason=f"no learned model for rubric {rubric.id!r} ({exc})")
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _components_lock:
        if key not in _components:
            try:
                _components[key] = Component(model=load(path, rubric), encoder=embed.shared_encoder())
            except (LearnedError, embed.EncoderUnavailable) as exc:
                log.warning("grading with the checks only: %s", exc)
                _components[key] = Component(reason=str(exc))
        return _components[key]


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


class Fold(BaseModel):
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
    """Leave each file out in turn: train on the others, score the left-out file with and without.

    Every text is embedded once (the folds share :class:`MemoEncoder`), not once per fold.
    """
    from agent import calibrate

    encoder = MemoEncoder(encoder)
    folds = []
    for held_out in files:
        rows = rows_from([f for f in files if f != held_out], rubric)
        model = fit(rubric, [*rows, *extra], encoder, l2=l2)
        reports = []
        for use in (False, True):

            def grader(r: Rubric, e: calibrate.Example, use: bool = use, model: LearnedModel = model) -> object:
                from agent.grader import TurnGrade

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
