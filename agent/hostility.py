"""Hostility without keywords: per-step heads that read what a reply does to the patient.

Why this exists (issue 20, item 2): the don't-steps ``argue_back``, ``dismiss_feelings`` and
``lose_cool`` were decided by phrase patterns plus the rubric-wide classifier (:mod:`agent.learned`),
and both read words, not acts: on the keyword-free hostility set (tests/data/gold/hostility) they
found 3 of 21 held-out argue_back violations and 4 of 22 dismiss_feelings ones; blame in polite words,
sarcasm and curt brush-offs pass as ``ok``.

So a hostility step can get a small logistic head that reads what the grader already computed --
the rubric-wide classifier's probabilities for every step (from the MiniLM vectors
:func:`agent.learned.score_reading` embedded: nothing is embedded twice), the reply's similarity to a
handful of *acts* described in ``rubrics/<id>.hostility.yaml`` (blames the patient, belittles the
complaint, brushes off, mocks, ... and, as counterweights, acknowledges and refuses kindly), and the kind
do-steps the checks quoted. ``python -m agent learn-hostility`` trains the heads on labelled gold replies
(including the keyword-free set ``tests/data/gold/hostility/train.jsonl``) and writes
``rubrics/<id>.hostility.json``; :func:`model_for` picks such a file up.

**No head file ships** (tests/data/gold/README.md, "Hostility heads"): trained and cross-validated on
every training file, the heads changed nothing on argue_back (2 more violations found, 2 more false) and
set 3 more of 22 dismiss_feelings violations right on the 72 held-out hostility replies, and at any
threshold that helped they also called kind replies hostile (a named feeling, the rubric's own good
question). The vectors do not separate these replies: on the training half of the
hostility set, a reply's nearest neighbours' labels agree with its own 0.72-0.81 of the time for
argue_back and 0.60-0.72 for dismiss_feelings. A sentence encoder that reads stance is what this needs.

Rules, each for a reason:
* a check's quoted violation always stands (a head only turns an ``ok`` with no evidence into
  ``violated``), and a finding quotes the sentence most like the step's acts;
* a reply that shows a calming step (empathy, apology, offer, reassurance: quoted by a check, or found
  by the classifier) is left alone;
* like the classifier, the heads leave a reply it abstained on, or one too short to score, to the checks;
* the embedded chat model never decides a verdict here; the heads are deterministic arithmetic;
* text aimed at the grader never shields the rest: when a reply has meta parts, the heads also read the
  text that loses only the narrow meta parts (:attr:`agent.checks.Reading.for_donts`).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from agent import checks, embed, learned
from agent.checks import Reading, StepVerdict
from agent.rubrics import Rubric

STEPS = ("argue_back", "dismiss_feelings", "lose_cool")
FORMAT = 1
# Probability a head needs when its file names no threshold (the learned don't-step default).
THRESHOLD = learned.THRESHOLD_DONT
log = logging.getLogger(__name__)


class HostilityError(ValueError):
    """An acts or head file is unreadable or does not match the rubric or the encoder."""


class Act(BaseModel):
    """One thing a reply can do to the patient, said in a few plain sentences (its prototype)."""

    model_config = ConfigDict(frozen=True)

    id: str
    steps: list[str] = Field(
        default_factory=list, description="the don't-steps this act is a sign of (none: a counterweight)"
    )
    says: list[str] = Field(min_length=1)


class Acts(BaseModel):
    rubric: str
    acts: list[Act] = Field(min_length=1)


class Head(BaseModel):
    """Logistic regression on :meth:`HostilityModel.inputs_of`, a finding from ``threshold``."""

    weights: list[float]
    bias: float
    threshold: float = THRESHOLD
    positives: int
    negatives: int

    @cached_property
    def _weights(self) -> np.ndarray:
        return np.asarray(self.weights, dtype=np.float32)

    def probability(self, row: np.ndarray) -> float:
        return float(1.0 / (1.0 + np.exp(-(row @ self._weights + self.bias))))


class HostilityModel(BaseModel):
    """The heads, the acts' vectors they read, and what they were trained on (``<rubric>.hostility.json``).

    A head reads three kinds of input (``inputs`` names them in order): the rubric-wide classifier's
    probability for each of its steps (``p:<step>``: what the reply's vectors say about blame, empathy,
    an offer, ...), the reply's closest similarity to each act (``act:<id>``), and whether a check
    quoted a kind do-step (``check:<step>``: an apology or an offer the patterns found).
    """

    format: int = FORMAT
    rubric: str
    encoder_sha256: str = embed.WEIGHTS_SHA256
    trained_on: list[str]
    created: str
    l2: float
    acts: list[str]
    act_vectors: list[list[float]]
    inputs: list[str]
    steps: dict[str, Head] = Field(default_factory=dict)

    @cached_property
    def _acts(self) -> np.ndarray:
        return np.asarray(self.act_vectors, dtype=np.float32).reshape(len(self.acts), embed.DIMENSIONS)

    def inputs_of(
        self, probability: dict[str, float], vectors: np.ndarray, verdicts: dict[str, StepVerdict]
    ) -> np.ndarray:
        """The heads' input row for one reply (see the class docstring)."""
        similarity = dict(zip(self.acts, (vectors @ self._acts.T).max(axis=0).tolist(), strict=True))
        row = []
        for name in self.inputs:
            kind, _, key = name.partition(":")
            if kind == "p":
                row.append(probability.get(key, 0.0))
            elif kind == "act":
                row.append(similarity[key])
            else:
                found = verdicts.get(key)
                row.append(float(found is not None and found.verdict == "demonstrated" and found.source == "check"))
        return np.asarray(row, dtype=np.float32)


# The checks' kind do-steps a head reads (``check:<step>``): a quoted apology or offer weighs against hostility.
KIND_STEPS = ("empathize", "apologize", "offer_solution", "reassure", "find_out", "ask_questions", "summarize")


# A reply that shows one of these is left alone by the heads (:func:`_shows_kindness`). Questions are not
# among them: an argumentative question is common hostility, and the rubric voids it (``void_if``).
CALMING_STEPS = ("empathize", "apologize", "offer_solution", "reassure")


def input_names(classifier: learned.LearnedModel, acts: Acts) -> list[str]:
    return ([f"p:{s}" for s in classifier.steps] + [f"act:{a.id}" for a in acts.acts]
            + [f"check:{s}" for s in KIND_STEPS])  # fmt: skip


def acts_path(rubric: Rubric) -> Path:
    """``rubrics/deescalation.yaml`` -> ``rubrics/deescalation.hostility.yaml``."""
    if rubric.source is None:
        raise HostilityError(f"rubric {rubric.id!r} was not loaded from a file")
    return rubric.source.with_suffix(".hostility.yaml")


def model_path(rubric: Rubric) -> Path:
    """``rubrics/deescalation.yaml`` -> ``rubrics/deescalation.hostility.json``."""
    return acts_path(rubric).with_suffix(".json")


def load_acts(path: Path) -> Acts:
    try:
        return Acts.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise HostilityError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise HostilityError(f"{path}: not an acts file ({str(exc).splitlines()[0]})") from exc


def act_vectors(acts: Acts, encoder: embed.TextEncoder) -> np.ndarray:
    """One unit vector per act: the mean of its sentences' vectors, normalised."""
    rows = []
    for act in acts.acts:
        mean = encoder.encode(list(act.says)).mean(axis=0)
        rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    return np.asarray(rows, dtype=np.float32)


def load(path: Path, rubric: Rubric) -> HostilityModel:
    try:
        model = HostilityModel.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HostilityError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise HostilityError(f"{path}: not a hostility model ({str(exc).splitlines()[0]})") from exc
    if model.rubric != rubric.id:
        raise HostilityError(f"{path}: trained for rubric {model.rubric!r}, not {rubric.id!r}")
    if model.encoder_sha256 != embed.WEIGHTS_SHA256:
        raise HostilityError(f"{path}: trained with another encoder; retrain it (python -m agent learn-hostility)")
    unknown = sorted(set(model.steps) - set(rubric.step_ids))
    if unknown:
        raise HostilityError(f"{path}: steps.{unknown[0]}: rubric {rubric.id!r} has no such step")
    size = len(model.inputs)
    for step_id, head in model.steps.items():
        if len(head.weights) != size:
            raise HostilityError(f"{path}: steps.{step_id}.weights: {len(head.weights)} values, expected {size}")
    return model


_models: dict[tuple[str, int, int], HostilityModel | None] = {}
_models_lock = threading.Lock()


def model_for(rubric: Rubric) -> HostilityModel | None:
    """The rubric's heads, loaded once per file version; None (logged once) when there are none."""
    try:
        path = model_path(rubric)
        stat = path.stat()
    except (HostilityError, OSError):
        return None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _models_lock:
        if key not in _models:
            try:
                _models[key] = load(path, rubric)
            except HostilityError as exc:
                log.warning("hostility heads off: %s", exc)
                _models[key] = None
        return _models[key]


def narrow_scores(
    reading: Reading, classifier: learned.LearnedModel, encoder: embed.TextEncoder
) -> tuple[dict[str, float], np.ndarray] | None:
    """The classifier's probabilities and the vectors of the reply without only its narrow meta parts.

    Only replies with text to the grader get here (adversarial, rare), so this embedding is not paid on
    an ordinary turn; None when nothing but the meta parts differ or too little is left.
    """
    text = reading.for_donts
    if not reading.meta or text == reading.for_classifier or len(text.split()) < learned.MIN_REPLY_WORDS:
        return None
    vectors = encoder.encode(learned.reply_texts(text))
    whole = learned.features_of(vectors)[None, :]
    return {s: float(c.probabilities(whole)[0]) for s, c in classifier.steps.items()}, vectors


def best_sentence(model: HostilityModel, head: Head, vectors: np.ndarray, parts: list[str]) -> str:
    """The sentence to quote: the one most like the acts of this head's step (the whole reply if one)."""
    if len(parts) < 2 or len(vectors) < 2:
        return parts[0]
    acts = [i for i, name in enumerate(model.inputs) if name.startswith("act:")]
    weights = np.asarray([head.weights[i] for i in acts], dtype=np.float32)
    per_sentence = vectors[1:] @ model._acts.T @ weights
    return parts[int(np.argmax(per_sentence))]


def _shows_kindness(rubric: Rubric, verdicts: dict[str, StepVerdict], scores: learned.ReplyScores) -> bool:
    """Whether the reply shows a kind do-step: a check quoted one, or the classifier finds one at its threshold.

    The heads then stay silent: hostility under a kind veneer is left to the checks and the classifier,
    the same precedence as :func:`agent.learned.combine` (no do-step is added to a violating reply) read
    the other way; a trained head weighed "I hear you" as little as the acts it saw beside it.
    """
    for step_id in CALMING_STEPS:
        found = verdicts.get(step_id)
        if found is not None and found.verdict == "demonstrated":
            return True
        step = rubric.step(step_id)
        threshold = step.learned_threshold or learned.THRESHOLD_DO
        if step.learned and scores.probability.get(step_id, 0.0) >= threshold:
            return True
    return False


def weigh(
    rubric: Rubric,
    reading: Reading,
    verdicts: dict[str, StepVerdict],
    scores: learned.ReplyScores,
    component: learned.Component,
    model: HostilityModel | None = None,
) -> dict[str, StepVerdict]:
    """The checks' verdicts with the heads' findings added.

    Called by :func:`agent.grader.grade_fast` between the classifier's scoring and
    :func:`agent.learned.combine`, so that a violation found here also blocks the classifier's do-step
    findings and voids rhetorical questions. It reads what the classifier computed (its probabilities,
    the reply's vectors): nothing is embedded again. Like the classifier it leaves a reply it abstained
    on, or one too short to score, to the checks. ``model``: the heads (default: the rubric's file).
    """
    model = model or model_for(rubric)
    if model is None or component.model is None or component.encoder is None:
        return verdicts
    found: list[tuple[dict[str, float], np.ndarray, list[str]]] = []
    if scores.vectors is not None and not scores.abstained and scores.probability:
        found.append((scores.probability, scores.vectors, learned.sentences(reading.for_classifier)))
    narrow = narrow_scores(reading, component.model, component.encoder)
    if narrow is not None:
        found.append((*narrow, learned.sentences(reading.for_donts)))
    if _shows_kindness(rubric, verdicts, scores):
        return verdicts
    out = dict(verdicts)
    for probability, vectors, parts in found:
        row = model.inputs_of(probability, vectors, verdicts)
        for step_id, head in model.steps.items():
            current = out.get(step_id)
            if current is None or current.verdict != "ok" or current.evidence is not None:
                continue
            p = head.probability(row)
            if p >= head.threshold:
                out[step_id] = StepVerdict(step_id=step_id, verdict="violated",
                                           evidence=best_sentence(model, head, vectors, parts),
                                           confidence=round(min(p, 0.95), 3), source="learned",
                                           grounds="what the reply does to the patient (hostility head)")  # fmt: skip
    if out == verdicts:
        return verdicts
    return checks.apply_voids(rubric, checks.apply_after_violations(rubric, out))


# -- training (python -m agent learn-hostility) -------------------------------------------------------


class Row(BaseModel):
    """One labelled reply as the heads read it: its input row and 1/0 per head step it is labelled on."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inputs: list[float]
    labels: dict[str, int]
    weight: float = 1.0


def rows_from(
    paths: list[str | Path],
    rubric: Rubric,
    model: HostilityModel,
    classifier: learned.LearnedModel,
    encoder: embed.TextEncoder,
    weight: float = 1.0,
) -> list[Row]:
    """Every reply of these calibration files labelled on a head step, read as :func:`weigh` reads it."""
    from agent import calibrate

    rows = []
    for path in paths:
        for example in calibrate.load_examples(path, rubric):
            labels = {s: int(example.labels[s] == "violated") for s in model.steps
                      if example.labels.get(s) in ("violated", "ok")}  # fmt: skip
            context = example.turn_context()
            reading = checks.read(example.reply, rubric.step_ids, checks.name_tokens(context.persona_name))
            if not labels or len(reading.for_classifier.split()) < learned.MIN_REPLY_WORDS:
                continue
            verdicts = checks.judge(rubric, reading, context)
            vectors = encoder.encode(learned.reply_texts(reading.for_classifier))
            whole = learned.features_of(vectors)[None, :]
            probability = {s: float(c.probabilities(whole)[0]) for s, c in classifier.steps.items()}
            row = model.inputs_of(probability, vectors, verdicts)
            rows.append(Row(inputs=[float(v) for v in row], labels=labels, weight=weight))
    return rows


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Class-balanced, row-weighted, L2-regularised logistic regression (Newton's method)."""
    n, d = x.shape
    pos = max(float(weight[y == 1].sum()), 1e-9)
    neg = max(float(weight[y == 0].sum()), 1e-9)
    total = pos + neg
    sample = weight * np.where(y == 1, total / (2 * pos), total / (2 * neg))
    matrix = np.hstack([x, np.ones((n, 1))]).astype(np.float64)
    beta = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(-(matrix @ beta)))
        gradient = matrix.T @ (sample * (p - y)) + penalty * beta
        hessian = (matrix * (sample * p * (1 - p))[:, None]).T @ matrix + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-6:
            break
    return beta[:-1], float(beta[-1])


def blank_model(
    rubric: Rubric,
    acts: Acts,
    vectors: np.ndarray,
    classifier: learned.LearnedModel,
    *,
    steps: dict[str, float],
    l2: float,
    trained_on: list[str],
) -> HostilityModel:
    """A model with its inputs fixed and untrained heads (``steps``: step id -> threshold)."""
    names = input_names(classifier, acts)
    model = HostilityModel(
        rubric=rubric.id, trained_on=trained_on, created=datetime.now(UTC).isoformat(timespec="seconds"), l2=l2,
        acts=[a.id for a in acts.acts], act_vectors=[[round(float(v), 6) for v in row] for row in vectors],
        inputs=names,
    )  # fmt: skip
    for step_id, threshold in steps.items():
        model.steps[step_id] = Head(weights=[0.0] * len(names), bias=0.0, threshold=threshold, positives=0, negatives=0)
    return model


def fit(model: HostilityModel, rows: list[Row]) -> HostilityModel:
    """Train every head of ``model`` on ``rows`` (:func:`rows_from`)."""
    x = np.asarray([r.inputs for r in rows], dtype=np.float64)
    for step_id, head in model.steps.items():
        index = [i for i, r in enumerate(rows) if step_id in r.labels]
        y = np.array([rows[i].labels[step_id] for i in index], dtype=np.float64)
        w = np.array([rows[i].weight for i in index], dtype=np.float64)
        weights, bias = fit_logistic(x[index], y, w, model.l2)
        model.steps[step_id] = Head(weights=[round(float(v), 6) for v in weights], bias=round(bias, 6),
                                    threshold=head.threshold, positives=int(y.sum()),
                                    negatives=int(len(y) - y.sum()))  # fmt: skip
    return model
