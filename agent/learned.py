"""The learned grading component at run time: load a step classifier model, score a reply, combine.

One small logistic classifier per rubric step reads MiniLM sentence vectors (:mod:`agent.embed`) of a
reply, so that the grader recognises behaviours said in words the phrase patterns of
:mod:`agent.checks` do not know. The model is stored beside the rubric it serves
(``rubrics/<id>.learned.json``) and trained by :mod:`agent.training` (``python -m agent learn``).

:func:`component_for` loads the model and the shared encoder once per model file version;
:func:`score_reply` gives each step's probability for the reply (from the reply's vector and the
element-wise maximum over its sentences' vectors) and the sentence that scores highest on its own;
:func:`combine` adds those findings to the checks' verdicts (see :func:`agent.grader.grade_fast`):
a finding is only ever *added* where the patterns found nothing, quoting that sentence as evidence.
The trainee's text is only ever embedded and scored, never obeyed.
Why each rule is there, and the figures that chose the thresholds: tests/data/gold/README.md.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr

from agent import checks, embed
from agent.checks import WORD, StepVerdict
from agent.rubrics import Rubric, RubricError, load_rubric

# A sentence ends at . ! ? followed by space, or at a line break; "Mr. Carter" and "3.40" do not end one.
BOUNDARY = re.compile(r"(?<=[.!?])\s+|\n+")
PROTECTED_DOT = "\u2024"
MIN_SENTENCE_WORDS = 2
MIN_REPLY_WORDS = 2
# The L2 penalty a model records when its file names none (training's default, agent.training).
L2 = 1.0
# Probability needed to add a finding unless the step sets ``learned_threshold``; a don't-step
# needs more, since a wrongly flagged violation costs more agreement than a missed one.
THRESHOLD_DO = 0.6
THRESHOLD_DONT = 0.7
FORMAT = 1
# A reply of at least FAMILIAR_MIN_WORDS words whose vector is less similar than FAMILIAR_AT (cosine)
# to every training reply is left to the checks: on such text (support tweets, code reviews,
# counselling posts) the classifiers judged the register, not the behaviour. Shorter replies are
# always scored: a few words put a curt clinic reply ("Whatever you say, sir.") as far from the
# training replies as a tweet, and those are the replies the don't-step classifiers exist for.
# Chosen on the design files: tests/data/gold/README.md, "Round 4".
FAMILIAR_AT = 0.45
FAMILIAR_MIN_WORDS = 12
# A finding outside the step's conditions (``learned_outside``) must be the writer's own promise: a
# sentence of the reply says what I or we will do ("I'll ring the lab", "let me check", "we're going
# to"), and that sentence is quoted.
# On human replies (issue 13) the classifier also scored advice and explanations ("this article
# explains ...", "maybe you will discover ...") as promises to find out.
OWN_PROMISE = re.compile(
    r"\b((i|we) ?(will|shall|ll|'ll|’ll)|let (me|us)|lets|let's|let’s|(i|we) ?(am|are|'m|'re|’m|’re|m|re) "
    r"(going to|gonna|about to|checking|looking|finding|asking|calling)|"
    r"(i|we) (can|could) (check|find|ask|look|call|ring|chase))\b",
    re.IGNORECASE,
)
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


class Reference:
    """Unit-length vectors of the training replies, stored as float16 (what the ``.npz`` file holds)."""

    def __init__(self, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.vectors = vectors.astype(np.float16).astype(np.float32)

    def nearest(self, vector: np.ndarray) -> float | None:
        """The highest cosine similarity between ``vector`` and any training reply."""
        if not len(self.vectors):
            return None
        norm = float(np.linalg.norm(vector)) or 1.0
        return float((self.vectors @ (vector / norm)).max())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and np.array_equal(self.vectors, other.vectors)

    __hash__ = None  # type: ignore[assignment]


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
    # Familiarity below which a long reply is left to the checks (0: never); see FAMILIAR_AT.
    familiar_at: float = 0.0
    # The training replies' whole-reply vectors, kept in ``<model>.npz`` beside the JSON.
    _reference: Reference | None = PrivateAttr(default=None)

    @property
    def reference(self) -> np.ndarray | None:
        return None if self._reference is None else self._reference.vectors

    def with_reference(self, vectors: np.ndarray) -> LearnedModel:
        """Attach the training replies' vectors that :meth:`familiarity` compares a reply with."""
        self._reference = Reference(vectors)
        return self

    def familiarity(self, vector: np.ndarray) -> float | None:
        """Cosine similarity of a reply's vector to its nearest training reply; None without a reference."""
        return None if self._reference is None else self._reference.nearest(vector)

    def abstains(self, familiarity: float | None, words: int) -> bool:
        """Whether to leave a reply to the checks: long, and unlike every training reply."""
        return familiarity is not None and familiarity < self.familiar_at and words >= FAMILIAR_MIN_WORDS


class LearnedError(ValueError):
    """A learned-model file is unreadable or does not match the rubric or encoder."""


def sentences(text: str) -> list[str]:
    """The reply's sentences (at least two words each); the whole reply if it has none."""
    protected = checks.TITLE_DOT.sub(lambda m: m.group(1) + PROTECTED_DOT, text)
    parts = [part.replace(PROTECTED_DOT, ".").strip() for part in BOUNDARY.split(protected)]
    found = [part for part in parts if len(part.split()) >= MIN_SENTENCE_WORDS]
    return found or [text.strip() or text]


FEATURES = 2 * embed.DIMENSIONS


def features_of(vectors: np.ndarray) -> np.ndarray:
    """Classifier input from one reply's vectors (row 0: the whole reply, then its sentences).

    The whole-reply vector carries the overall register; the element-wise maximum over the
    sentences keeps a behaviour that one sentence of a long reply shows ("... I'll ring the lab
    and call you back before three."), which the average would dilute.
    """
    pooled = vectors[1:].max(axis=0) if len(vectors) > 1 else vectors[0]
    return np.concatenate([vectors[0], pooled])


def reply_texts(reply: str, parts: list[str] | None = None) -> list[str]:
    """What gets embedded for a reply: the reply itself, then its sentences when it has several."""
    parts = sentences(reply) if parts is None else parts
    return [reply] + (parts if len(parts) > 1 else [])


class ReplyScores(BaseModel):
    """Per step: the classifier's probability for the whole reply, and its best-scoring sentence."""

    probability: dict[str, float]
    sentence: dict[str, str]
    # The first sentence that is the writer's own promise (:data:`OWN_PROMISE`), if any.
    promise: str | None = None
    # Cosine to the nearest training reply (:meth:`LearnedModel.familiarity`); None: no reference.
    familiarity: float | None = None
    # True when the classifiers said nothing because the reply is unlike their training replies.
    abstained: bool = False


def _step_ids(model: LearnedModel) -> list[str]:
    """Every step id of the model's rubric (the rubric is cached), so that "[ask_questions]" is meta-text too."""
    try:
        return [*model.steps, *load_rubric(model.rubric).step_ids]
    except RubricError:
        return list(model.steps)


def score_reply(model: LearnedModel, encoder: embed.TextEncoder, reply: str, names: Iterable[str] = ()) -> ReplyScores:
    """:func:`score_reading` of ``reply`` as :func:`agent.checks.read` reads it (``names``: the patient's
    name tokens), for callers that have not read it already (training, tools)."""
    return score_reading(model, encoder, checks.read(reply, _step_ids(model), names))


def score_reading(model: LearnedModel, encoder: embed.TextEncoder, reading: checks.Reading) -> ReplyScores:
    """Score the reply (the verdict) and each sentence on its own (which one to quote as evidence).

    The classifier reads the reply without the text that addresses the grader, the coach or the
    model, names a rubric step or fakes a transcript line (``reading.for_classifier``): never evidence.
    A reply of fewer than ``MIN_REPLY_WORDS`` words ("Hello.", "Okay.") gets no scores and is left to
    the checks: no gold reply is that short, and the classifiers read curtness as rudeness.
    Nor does a long reply unlike every training reply (:meth:`LearnedModel.abstains`): ``abstained``
    says so, and the checks decide alone.
    """
    reply = reading.for_classifier
    words = len(reply.split())
    if words < MIN_REPLY_WORDS:
        return ReplyScores(probability={}, sentence={})
    parts = sentences(reply)
    # The whole reply first: its sentences are only embedded (one forward pass each) when it is scored.
    texts = reply_texts(reply, parts)
    vectors = encoder.encode(texts[:1])
    familiarity = model.familiarity(vectors[0])
    familiarity = None if familiarity is None else round(familiarity, 4)
    if model.abstains(familiarity, words):
        return ReplyScores(probability={}, sentence={}, familiarity=familiarity, abstained=True)
    if len(texts) > 1:
        vectors = np.vstack([vectors, encoder.encode(texts[1:])])
    whole = features_of(vectors)[None, :]
    per_sentence = np.hstack([vectors[1:], vectors[1:]]) if len(vectors) > 1 else whole
    probability: dict[str, float] = {}
    sentence: dict[str, str] = {}
    for step_id, classifier in model.steps.items():
        probability[step_id] = float(classifier.probabilities(whole)[0])
        best = int(np.argmax(classifier.probabilities(per_sentence))) if len(parts) > 1 else 0
        sentence[step_id] = parts[best]
    promise = next((part for part in parts if _own_promise(part)), None)
    return ReplyScores(probability=probability, sentence=sentence, promise=promise, familiarity=familiarity)


# A sentence of at most this many words is a fragment ("I know.", "Okay."): no stance of its own.
FRAGMENT_WORDS = 2


def _quotes_good(rubric: Rubric, verdicts: dict[str, StepVerdict], sentence: str | None) -> bool:
    """Whether a pattern quoted a learned do-step (empathy, apology, ...) inside ``sentence``, or
    anywhere in the reply when ``sentence`` is a fragment.

    A quoted "I understand" in the very sentence a classifier points at as a dismissal outweighs
    that guess (the classifier also learnt "sorry you feel ..." non-apologies). A fragment such as
    "I know." takes its stance from the rest of the reply: read alone it looks like a brush-off, so in
    "I know. That must be really frustrating." the quoted empathy outweighs it; in "Right. Next."
    nothing kind is quoted and the finding stands.
    """
    if not sentence:
        return False
    fragment = len(WORD.findall(sentence)) <= FRAGMENT_WORDS
    return any(
        v.verdict == "demonstrated"
        and v.source == "check"
        and v.evidence
        and (fragment or v.evidence in sentence)
        and rubric.step(step_id).kind == "do"
        and rubric.step(step_id).learned
        for step_id, v in verdicts.items()
    )


def _own_promise(sentence: str | None) -> bool:
    return bool(sentence and OWN_PROMISE.search(sentence))


def _violates_any(verdicts: dict[str, StepVerdict]) -> bool:
    return any(v.verdict == "violated" for v in verdicts.values())


def combine(rubric: Rubric, verdicts: dict[str, StepVerdict], scores: ReplyScores) -> dict[str, StepVerdict]:
    """Add what the classifier finds to the checks' verdicts; a check's quoted match always stands.

    A step's probability must reach its ``learned_threshold`` (else ``THRESHOLD_DO`` /
    ``THRESHOLD_DONT``). The classifier can only turn an *absence* into a finding: a do-step
    ``missed`` becomes ``demonstrated``, a don't-step ``ok`` becomes ``violated``. It leaves
    ``not_applicable`` alone (each classifier learnt from replies where its step applies) except
    for steps marked ``learned_outside`` in the rubric (find_out: a promise to find out counts
    wherever it is made, when a sentence of the reply is the writer's own promise, :data:`OWN_PROMISE`).
    It adds no do-step to a reply that violates a don't-step ("Don't get so
    worked up, it's one appointment" sits near empathy in the vector space but is its opposite).
    A classifier violation of a step with ``yields_to_quotes`` is dropped when a pattern quoted a
    learned do-step in the same sentence. Then the rubric's ``applies_after`` and ``void_if``
    rules are applied to the result. Pure function: tested without the encoder.
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
        if current.verdict == "not_applicable" and step.learned_outside and not _own_promise(evidence):
            evidence = scores.promise  # the reply's own promise, quoted; None: no finding outside
        confidence = round(min(p, 0.95), 3)
        overruled = step.yields_to_quotes and _quotes_good(rubric, verdicts, evidence)
        if step.kind == "dont" and current.verdict == "ok" and not overruled:
            out[step.id] = StepVerdict(step_id=step.id, verdict="violated", evidence=evidence,
                                       confidence=confidence, source="learned")  # fmt: skip
        elif (
            step.kind == "do"
            and (
                current.verdict == "missed"
                or (current.verdict == "not_applicable" and step.learned_outside and _own_promise(evidence))
            )
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


def reference_path(path: Path) -> Path:
    """``deescalation.learned.json`` -> ``deescalation.learned.npz`` (the training replies' vectors)."""
    return path.with_suffix(".npz")


def load_reference(path: Path) -> np.ndarray:
    """The training replies' vectors saved beside a model (:func:`agent.training.save`)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            sha = str(data["encoder_sha256"])
            vectors = np.asarray(data["replies"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise LearnedError(f"{path}: cannot read the training replies' vectors ({exc}); retrain") from exc
    if sha != embed.WEIGHTS_SHA256:
        raise LearnedError(f"{path}: vectors of another encoder; retrain")
    if vectors.ndim != 2 or vectors.shape[1] != embed.DIMENSIONS:
        raise LearnedError(f"{path}: replies: shape {vectors.shape}, expected (n, {embed.DIMENSIONS}); retrain")
    return vectors


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
    if model.familiar_at > 0:
        model.with_reference(load_reference(reference_path(path)))
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
