"""The stance reader: MiniLM with a small learned adapter that reads what a reply does to the patient.

Why: hostility said without a keyword -- "Forty minutes isn't that long, honestly.", "Sure, I'll just
bump someone who actually came on the right day." -- is the part of issue 20 that neither the rubric's
patterns, the stance acts (:mod:`agent.stance`) nor classifiers over the frozen sentence vectors could
learn: all-MiniLM-L6-v2 places replies by topic, so a polite and a scornful reply about the same wait sit
together (tests/data/gold/README.md, "Hostility heads"). Fine-tuning the encoder on labelled replies moves
them apart. What is shipped is only the fine-tuning's *change*: low-rank deltas (LoRA) to the query and
value projections of the six layers, and a linear head per don't-step -- a few hundred kilobytes of
NumPy arrays beside the rubric (``rubrics/<id>.stance_reader.npz`` + ``.json``), written by
``python -m agent learn-stance`` (:mod:`agent.stance_training`, which needs PyTorch at training time
only). At load the deltas are added to the verified base weights in memory and the same ONNX graph as the
grader's encoder is built around them (:func:`agent.embed.build_graph`): one more forward pass per reply
(about 20 ms on one thread), no new runtime dependency, no weights file in git.

How it decides: the reader gives each don't-step a probability for the whole reply; a step it
``decides`` that the earlier stages left ``ok`` becomes ``violated`` when the probability reaches the
step's threshold. Where the reply also makes a kind move the grader already found (an apology, named
feeling, offer, ...), ``kind_threshold`` applies instead: a trainee who named the feeling must not be told
they dismissed it on a guess, and out of fold no threshold was precise enough there, so the shipped
reader is silent after a kind move. The head also scores ``lose_cool`` but does not decide it: out of
fold it cost the plain replies most (-0.05 on dev, -0.026 on the human training replies). The thresholds
were chosen on cross-validation folds that leave whole authors and files out (``learn-stance``); the gold
README ("A stance reader") says in which order each choice was made. The evidence quotes the reply's
sentence the reader scores highest for that step.

A rubric without the files gets no reader; ``DEESCALATE_GRADER=checks`` turns it off with the classifier.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent import checks, embed, learned
from agent.checks import StepVerdict
from agent.rubrics import Rubric, rubrics_dir

FORMAT = 1
# Projections of a layer an adapter may change (suffixes of ``encoder.layer.<i>.``); a reader file names the
# ones it changes (``targets``), :data:`DEFAULT_TARGETS` unless ``learn-stance --targets`` chose others.
TARGETS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
}
DEFAULT_TARGETS = ("query", "value")
# The head reads the unit-length sentence vector times this (the training recipe's logit scale).
SCALE = 10.0


class StanceReaderError(ValueError):
    """A stance reader file that cannot be used (wrong format, other encoder, missing arrays)."""


class Gate(BaseModel):
    """The hostility gate: one decision for "is this reply hostile at all", then which steps.

    Why: out of fold the reader tells hostile from polite replies far better than it tells which don't-step
    an author meant (stop 32: any-hostility AUC 0.99 against 0.93 per step on the authors it never saw),
    and a kind move followed by hostility is hostile whichever step the author wrote down. So a reply none of
    the earlier stages found hostile is hostile when its highest decided-step probability reaches
    ``threshold`` (``kind_threshold`` after a kind move); that step is violated, and so is every other
    decided step at or above ``floor``.
    """

    model_config = ConfigDict(extra="forbid")

    threshold: float
    kind_threshold: float
    floor: float

    def findings(self, scores: list[float], kind: bool) -> list[tuple[int, float]]:
        """(index into ``scores``, the probability it needed) for each decided step the gate calls violated:
        none unless the highest reaches the threshold; then that one, and each other at or above the floor.
        The one rule for the live reader (:func:`apply`) and the out-of-fold figures (``learn-stance``)."""
        best = max(range(len(scores)), key=scores.__getitem__)
        top = self.kind_threshold if kind else self.threshold
        if scores[best] < top:
            return []
        return [(best, top)] + [(k, self.floor) for k, p in enumerate(scores) if k != best and p >= self.floor]


class ReaderInfo(BaseModel):
    """What the JSON beside the arrays records: how to apply them and where they came from."""

    model_config = ConfigDict(extra="forbid")

    format: int = FORMAT
    rubric: str
    steps: list[str] = Field(description="the don't-steps the head scores, in the arrays' row order")
    decides: list[str] = Field(
        default_factory=list, description="the steps whose verdicts the reader may change (a subset of steps)"
    )
    threshold: dict[str, float] = Field(description="per step: probability that makes a reply violate it")
    kind_threshold: dict[str, float] = Field(
        description="per step: the probability needed when the grader found a kind move in the reply"
    )
    kind_steps: list[str] = Field(description="do-steps whose demonstration counts as a kind move")
    gate: Gate | None = Field(
        default=None, description="when set, the hostility gate decides instead of the per-step thresholds"
    )
    rank: int
    alpha: float
    layers: int = embed.LAYERS
    targets: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS))
    encoder_sha256: str = embed.WEIGHTS_SHA256
    trained_on: list[str] = Field(default_factory=list)
    training: dict[str, float | int | str] = Field(default_factory=dict)
    cross_validation: dict[str, object] = Field(default_factory=dict)


def paths(rubric: Rubric) -> tuple[Path, Path]:
    """Where a rubric's reader lives: ``rubrics/<id>.stance_reader.json`` and ``.npz``."""
    base = rubrics_dir() / f"{rubric.id}.stance_reader"
    return base.parent / f"{base.name}.json", base.parent / f"{base.name}.npz"


def adapter_key(layer: int, target: str, part: str) -> str:
    """The array name of one LoRA factor: ``layer3.value.A`` (r x in) or ``.B`` (out x r)."""
    return f"layer{layer}.{target}.{part}"


def merged_weights(
    base: dict[str, np.ndarray], arrays: dict[str, np.ndarray], info: ReaderInfo
) -> dict[str, np.ndarray]:
    """The base weights with each adapted projection's low-rank change added: W + (alpha / r) B A.

    Only the adapted matrices are copied; every other array is the verified base array itself.
    """
    out = dict(base)
    scale = info.alpha / info.rank
    for layer in range(info.layers):
        for target in info.targets:
            name = f"encoder.layer.{layer}.{TARGETS[target]}.weight"
            try:
                a, b = arrays[adapter_key(layer, target, "A")], arrays[adapter_key(layer, target, "B")]
            except KeyError as exc:
                raise StanceReaderError(f"the stance reader has no {exc.args[0]} array") from exc
            if a.shape != (info.rank, base[name].shape[1]) or b.shape != (base[name].shape[0], info.rank):
                raise StanceReaderError(f"{adapter_key(layer, target, 'A')}/B have shapes {a.shape}/{b.shape}")
            out[name] = (np.asarray(base[name], dtype=np.float32) + scale * (b @ a)).astype(np.float32)
    return out


@dataclass
class Reader:
    """The adapted encoder and the head, ready to score replies."""

    info: ReaderInfo
    encoder: embed.Encoder
    head_weight: np.ndarray  # steps x 384
    head_bias: np.ndarray  # steps

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Per text (rows) and step (columns, ``info.steps`` order): the probability it violates the step."""
        vectors = self.encoder.encode(texts)
        logits = SCALE * vectors @ self.head_weight.T + self.head_bias
        return 1.0 / (1.0 + np.exp(-logits))


def load(json_path: Path, npz_path: Path, *, threads: int = 1) -> Reader:
    """Read the reader's files, check them against the installed encoder and build its session."""
    try:
        info = ReaderInfo.model_validate(json.loads(json_path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise StanceReaderError(f"{json_path}: {exc}") from exc
    if info.format != FORMAT:
        raise StanceReaderError(f"{json_path}: format {info.format}, this version reads {FORMAT}")
    if info.encoder_sha256 != embed.WEIGHTS_SHA256:
        raise StanceReaderError(f"{json_path}: trained on another encoder ({info.encoder_sha256[:12]}...)")
    unknown = set(info.targets) - set(TARGETS)
    if unknown:
        raise StanceReaderError(f"{json_path}: unknown adapter targets {sorted(unknown)}")
    unscored = [
        s for s in info.decides if s not in info.steps or s not in info.threshold or s not in info.kind_threshold
    ]
    if unscored:
        raise StanceReaderError(f"{json_path}: decides {unscored} without a score or thresholds for them")
    try:
        with np.load(npz_path) as data:
            arrays = {name: np.asarray(data[name], dtype=np.float32) for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise StanceReaderError(f"{npz_path}: cannot read the arrays ({exc})") from exc
    try:
        head_weight, head_bias = arrays.pop("head.weight"), arrays.pop("head.bias")
    except KeyError as exc:
        raise StanceReaderError(f"{npz_path}: no {exc.args[0]} array") from exc
    if head_weight.shape != (len(info.steps), embed.DIMENSIONS) or head_bias.shape != (len(info.steps),):
        raise StanceReaderError(f"{npz_path}: head shapes {head_weight.shape}/{head_bias.shape} for {info.steps}")
    base, tokenizer = embed.load_weights()
    try:
        merged = merged_weights(base, arrays, info)
    except StanceReaderError as exc:
        raise StanceReaderError(f"{npz_path}: {exc}") from exc
    graph = embed.build_graph(merged).SerializeToString()
    del merged
    del base
    encoder = embed.Encoder.from_graph(graph, tokenizer, threads=threads)
    return Reader(info=info, encoder=encoder, head_weight=head_weight, head_bias=head_bias)


_lock = threading.Lock()
_loaded: dict[str, tuple[float, Reader | None]] = {}
log = logging.getLogger(__name__)


def reader_for(rubric: Rubric) -> Reader | None:
    """The rubric's reader, loaded once per file version; None when it has none, or when its files cannot
    be used: then the reason is logged once and the grader goes on without the reader (fails closed)."""
    if os.environ.get("DEESCALATE_GRADER", "").lower() == "checks":
        return None
    json_path, npz_path = paths(rubric)
    try:
        stamp = json_path.stat().st_mtime + npz_path.stat().st_mtime
    except OSError:
        return None
    with _lock:
        cached = _loaded.get(rubric.id)
        if cached is None or cached[0] != stamp:
            try:
                cached = (stamp, load(json_path, npz_path))
            except (StanceReaderError, embed.EncoderUnavailable) as exc:
                log.warning("stance reader not used: %s", exc)
                cached = (stamp, None)
            _loaded[rubric.id] = cached
        return cached[1]


def shows_kind_step(verdicts: dict[str, StepVerdict], kind_steps: list[str]) -> bool:
    """Whether the grader found one of the kind do-steps demonstrated in the reply."""
    return any(verdicts.get(step) is not None and verdicts[step].verdict == "demonstrated" for step in kind_steps)


def apply(reader: Reader, reading: checks.Reading, verdicts: dict[str, StepVerdict]) -> dict[str, StepVerdict]:
    """Don't-steps the earlier stages left ``ok`` and the reader scores at or above their threshold become
    ``violated``, quoting the sentence it scores highest; every other verdict is returned as it was. With a
    :class:`Gate`, only a reply no earlier stage found hostile is read, and the gate decides (:func:`_findings`).

    A reply of fewer than :data:`agent.learned.MIN_REPLY_WORDS` words is left to the checks (as the
    classifier leaves it), and so is the text the reply addresses to the grader (``for_classifier``).
    """
    reply = reading.for_classifier
    if len(reply.split()) < learned.MIN_REPLY_WORDS:
        return verdicts
    steps = [s for s in reader.info.decides if s in verdicts and verdicts[s].verdict == "ok"]
    if not steps:
        return verdicts
    if reader.info.gate is not None and any(verdicts[s].verdict == "violated" for s in reader.info.steps
                                             if s in verdicts):  # fmt: skip
        return verdicts  # the gate reads only replies no earlier stage found hostile
    parts = learned.sentences(reply)
    texts = learned.reply_texts(reply, parts)
    scored = reader.probabilities(texts)
    kind = shows_kind_step(verdicts, reader.info.kind_steps)
    out = dict(verdicts)
    for step, needed in _findings(reader.info, steps, scored[0], kind):
        column = reader.info.steps.index(step)
        probability = float(scored[0, column])
        sentence = parts[int(np.argmax(scored[1:, column]))] if len(texts) > 1 else parts[0]
        grounds = f"stance reader: {probability:.2f} (needs {needed:.2f})"
        out[step] = StepVerdict(step_id=step, verdict="violated", evidence=sentence, confidence=round(probability, 3),
                                source="learned", grounds=grounds)  # fmt: skip
    return out


def _findings(info: ReaderInfo, steps: list[str], scores: np.ndarray, kind: bool) -> list[tuple[str, float]]:
    """(step, the probability it needed) for each of ``steps`` the reader calls violated: each step at its
    own threshold, or the gate's decision (:meth:`Gate.findings`)."""
    scored = [float(scores[info.steps.index(s)]) for s in steps]
    if info.gate is not None:
        return [(steps[k], need) for k, need in info.gate.findings(scored, kind)]
    needs = [info.kind_threshold[s] if kind else info.threshold[s] for s in steps]
    return [(s, need) for s, p, need in zip(steps, scored, needs, strict=True) if p >= need]


def thresholds_text(steps: list[str], threshold: dict[str, float], kind_threshold: dict[str, float],
                    gate: Gate | None) -> str:  # fmt: skip
    """How a reader decides, in words: each step's thresholds (plain/after a kind move), or its gate."""
    if gate is not None:
        return (f"gate {gate.threshold:.2f}/{gate.kind_threshold:.2f} over {', '.join(steps)}, "
                f"floor {gate.floor:.2f}")  # fmt: skip
    return ", ".join(f"{s} {threshold[s]:.2f}/{kind_threshold[s]:.2f}" for s in steps)


def describe(rubric: Rubric) -> str:
    """One line for ``python -m agent model status``: the rubric's reader, what it was trained on, its thresholds."""
    json_path, npz_path = paths(rubric)
    if not json_path.is_file() or not npz_path.is_file():
        return f"none for rubric {rubric.id!r} (the hostility steps are judged by the checks, classifier and acts)"
    try:
        info = ReaderInfo.model_validate(json.loads(json_path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        return f"{json_path} is unusable ({exc.__class__.__name__}); the grader goes on without it"
    thresholds = thresholds_text(info.decides, info.threshold, info.kind_threshold, info.gate)
    replies = info.training.get("replies", "?")
    return (
        f"{json_path.name}: LoRA rank {info.rank}, {replies} replies; thresholds (plain/after a kind move) {thresholds}"
    )
