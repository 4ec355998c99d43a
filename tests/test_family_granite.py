"""Granite (dense) against transformers: parity, gauge round trip, group, alignment, and its traps.

Traps: the four scalar multipliers (embedding, residual, attention, logits) are gauge-invariant
but each changes the function, so parity covers each; the ``o``/``down`` biases are written into
the stream after the residual multiplier: they move as signed vectors (permuting them without
their signs breaks the model); gate/up biases are untouched; tied embeddings.
Tolerances: see family_checks.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import gaugejax as gj  # noqa: E402
from gaugejax.errors import CheckpointError  # noqa: E402
from gaugejax.io import load_model  # noqa: E402
from gaugejax.models import granite  # noqa: E402
from gaugejax.spec import RESIDUAL, Axes  # noqa: E402
import family_checks as F  # noqa: E402

VOCAB = 101
_MULT = dict(embedding_multiplier=3.0, residual_multiplier=0.3, attention_multiplier=0.2, logits_scaling=4.0)
CASES = {
    # GQA 6/3, every bias present, untied
    "bias": dict(vocab_size=VOCAB, hidden_size=60, intermediate_size=97, num_hidden_layers=3, num_attention_heads=6,
                 num_key_value_heads=3, max_position_embeddings=64, attention_bias=True, mlp_bias=True,
                 initializer_range=0.1, **_MULT),
    "tied": dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=75, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, initializer_range=0.1,
                 embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.1, logits_scaling=8.0),
}


ckpts, test_parity, test_gauge_round_trip, test_group_info_and_align = F.standard_tests(
    "granite", "GraniteConfig", "GraniteForCausalLM", CASES, VOCAB, align_case="bias")


def test_config_read(ckpts):
    c = load_model(ckpts["bias"][0]).config
    assert (c.embed_scale, c.residual_scale, c.query_scale, c.logit_scale) == (3.0, 0.3, 0.2, 0.25)
    assert c.attn_bias and c.mlp_bias and c.head_dim == 10
    t = load_model(ckpts["tied"][0])
    assert t.config.tie_embeddings and "lm_head" not in t.params
    for m in (c, t.config):
        assert granite.config_from_hf(granite.config_to_hf(m)) == m


def test_written_biases_are_signed_vectors(ckpts):
    d, toks, logits, _ = ckpts["bias"]
    model = load_model(d)
    spec = gj.gauge_spec(model)["layers"]
    assert spec["o_bias"] == spec["down_bias"] == Axes(None, RESIDUAL)
    assert spec["gate_bias"] == spec["up_bias"] == spec["q_bias"] == Axes(None, None)
    g = gj.SignedPermutation.random(3, model.config.d_model)
    for k in ("o_bias", "down_bias"):
        F.assert_wrong_role_breaks(model, g, k, toks, logits, wrong="gain")


@pytest.mark.parametrize("change", [dict(embed_scale=1.0), dict(residual_scale=1.0), dict(query_scale=None),
                                    dict(logit_scale=1.0)])
def test_multipliers_matter(ckpts, change):
    d, toks, logits, _ = ckpts["bias"]
    F.assert_changes_logits(load_model(d), toks, logits, **change)


def test_unsupported_config_refused():
    cfg = dict(model_type="granite", vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, embedding_multiplier=12.0)
    assert granite.config_from_hf(cfg).embed_scale == 12.0
    with pytest.raises(CheckpointError, match="residual_multiplier"):
        granite.config_from_hf(dict(cfg, residual_multiplier="0.2"))
    with pytest.raises(CheckpointError, match="num_local_experts"):
        granite.config_from_hf(dict(cfg, num_local_experts=8))
