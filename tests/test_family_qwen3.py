"""Qwen3 against transformers: parity, gauge round trip, group, alignment, and its traps.

Traps: the per-head q/k norms have length ``head_dim`` and act on heads, not on the stream (role
NONE): the tied case has ``head_dim == d`` so a wrong "gain" role would be accepted by shape and
must be shown to break the model; sliding-window layers chosen by ``max_window_layers``; q/k/v/o
biases (o's bias is written into the stream); tied embeddings. Tolerances: see family_checks.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import gaugejax as gj  # noqa: E402
from gaugejax.errors import CheckpointError  # noqa: E402
from gaugejax.io import load_model  # noqa: E402
from gaugejax.models import qwen3  # noqa: E402
from gaugejax.spec import Axes  # noqa: E402
import family_checks as F  # noqa: E402

VOCAB = 101
CASES = {
    # odd sizes, GQA 6/3, n_heads·head_dim ≠ d; layers 1 and 2 slide (window 5 < 12 tokens)
    "sliding": dict(vocab_size=VOCAB, hidden_size=60, intermediate_size=97, num_hidden_layers=3, num_attention_heads=6,
                    num_key_value_heads=3, head_dim=14, max_position_embeddings=64, use_sliding_window=True,
                    sliding_window=5, max_window_layers=1,
                    rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
    # tied, biased, and head_dim == d: the q/k norm gains have the residual width but are not gains of it
    "tied_bias": dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=75, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=48, max_position_embeddings=64,
                      tie_word_embeddings=True, attention_bias=True),
}


ckpts, test_parity, test_gauge_round_trip, test_group_info_and_align = F.standard_tests(
    "qwen3", "Qwen3Config", "Qwen3ForCausalLM", CASES, VOCAB, align_case="sliding")


def test_config_read(ckpts):
    c = load_model(ckpts["sliding"][0]).config
    assert (c.family, c.qk_norm, c.sliding_window, c.sliding_layers) == ("qwen3", "head", 5, (False, True, True))
    assert c.rope_theta == 500.0 and not c.tie_embeddings
    t = load_model(ckpts["tied_bias"][0])
    assert t.config.tie_embeddings and "lm_head" not in t.params and "o_bias" in t.params["layers"]
    assert qwen3.config_from_hf(qwen3.config_to_hf(c)) == c


def test_qk_norms_are_not_residual_gains(ckpts):
    d, toks, logits, _ = ckpts["tied_bias"]
    model = load_model(d)
    spec = gj.gauge_spec(model)["layers"]
    assert spec["q_norm"] == spec["k_norm"] == Axes(None, None)
    assert model.params["layers"]["q_norm"].shape[-1] == model.config.d_model
    F.assert_wrong_role_breaks(model, gj.SignedPermutation.random(3, model.config.d_model), "q_norm", toks, logits)


@pytest.mark.parametrize("change", [dict(sliding_layers=()), dict(qk_norm=None)])
def test_features_matter(ckpts, change):
    d, toks, logits, _ = ckpts["sliding"]
    F.assert_changes_logits(load_model(d), toks, logits, **change)


def _cfg(**kw):
    base = dict(model_type="qwen3", vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=12)
    return {**base, **kw}


def test_legacy_keys_and_defaults():
    c = qwen3.config_from_hf(_cfg(rope_theta=1e6, rope_scaling=None, use_sliding_window=False, sliding_window=None,
                                  max_window_layers=28, torch_dtype="bfloat16", tie_word_embeddings=True))
    assert c.rope_theta == 1e6 and c.rope_scaling is None and c.sliding_layers == () and c.tie_embeddings
    assert c.norm_eps == 1e-6 and c.activation == "silu"  # transformers' Qwen3Config defaults
    lin = qwen3.config_from_hf(_cfg(rope_scaling={"type": "linear", "factor": 2.0}))
    assert lin.rope_scaling is not None and "linear" in lin.rope_scaling


@pytest.mark.parametrize("extra,word", [
    (dict(quantization_config={"bits": 4}), "quantization_config"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}), "yarn"),
    (dict(layer_types=["full_attention", "chunked_attention"]), "chunked_attention"),
    (dict(layer_types=["full_attention", "sliding_attention"]), "sliding_window"),
])
def test_unsupported_config_refused(extra, word):
    with pytest.raises(CheckpointError, match=word):
        qwen3.config_from_hf(_cfg(**extra))
