"""OLMo 2 against transformers: parity, gauge round trip, group, alignment, and its traps.

Traps: the q/k norms normalise the whole projection; with ``n_heads·head_dim == d`` (OLMo 2's
usual shape, both cases here; the tied case has no GQA so k_norm has length d too) they have the
stream's width but are not gains of it (role NONE): moving them as gains breaks the model. The
output norms (after attention and after the MLP) are gains of the stream: moving them as signed
vectors breaks the model. Tied embeddings and q/k/v/o biases. Tolerances: see family_checks.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import gaugejax as gj  # noqa: E402
from gaugejax.errors import CheckpointError  # noqa: E402
from gaugejax.io import load_model  # noqa: E402
from gaugejax.models import olmo2  # noqa: E402
from gaugejax.spec import RESIDUAL_PERM, Axes  # noqa: E402
import family_checks as F  # noqa: E402

VOCAB = 101
CASES = {
    # GQA 6/3, head_dim 10: q_norm has length 60 == d, k_norm 30; odd MLP width
    "gqa": dict(vocab_size=VOCAB, hidden_size=60, intermediate_size=97, num_hidden_layers=3, num_attention_heads=6,
                num_key_value_heads=3, max_position_embeddings=64, initializer_range=0.1),
    # no GQA: q_norm and k_norm both of length d; tied; q/k/v/o biases
    "tied_bias": dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=75, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      tie_word_embeddings=True, attention_bias=True, initializer_range=0.1),
}


ckpts, test_parity, test_gauge_round_trip, test_group_info_and_align = F.standard_tests(
    "olmo2", "Olmo2Config", "Olmo2ForCausalLM", CASES, VOCAB, align_case="gqa")


def test_config_read(ckpts):
    c = load_model(ckpts["gqa"][0]).config
    assert (c.family, c.qk_norm, c.head_dim, c.norm_eps) == ("olmo2", "proj", 10, 1e-5)
    t = load_model(ckpts["tied_bias"][0])
    assert t.config.tie_embeddings and "lm_head" not in t.params and "o_bias" in t.params["layers"]
    for m in (c, t.config):
        assert olmo2.config_from_hf(olmo2.config_to_hf(m)) == m


@pytest.mark.parametrize("case,keys", [("gqa", ["q_norm"]), ("tied_bias", ["q_norm", "k_norm"])])
def test_qk_norms_of_width_d_are_not_gains(ckpts, case, keys):
    d, toks, logits, _ = ckpts[case]
    model = load_model(d)
    spec = gj.gauge_spec(model)["layers"]
    g = gj.SignedPermutation.random(3, model.config.d_model)
    for k in keys:
        assert model.params["layers"][k].shape[-1] == model.config.d_model
        assert spec[k] == Axes(None, None), k
        F.assert_wrong_role_breaks(model, g, k, toks, logits)


def test_output_norms_are_gains(ckpts):
    d, toks, logits, _ = ckpts["gqa"]
    model = load_model(d)
    spec = gj.gauge_spec(model)["layers"]
    g = gj.SignedPermutation.random(3, model.config.d_model)
    for k in ("post_attn_norm", "post_mlp_norm"):
        assert spec[k] == Axes(None, RESIDUAL_PERM)
        F.assert_wrong_role_breaks(model, g, k, toks, logits, wrong="vector")


def test_qk_norm_matters(ckpts):
    d, toks, logits, _ = ckpts["gqa"]
    F.assert_changes_logits(load_model(d), toks, logits, qk_norm=None)


def test_unsupported_config_refused():
    cfg = dict(model_type="olmo2", vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, rope_theta=500000.0, rope_scaling=None, clip_qkv=8.0)
    with pytest.raises(CheckpointError, match="clip_qkv"):
        olmo2.config_from_hf(cfg)
    del cfg["clip_qkv"]
    c = olmo2.config_from_hf(cfg)  # a hub-style legacy file: rope_theta, no rope_parameters, no head_dim
    assert (c.rope_theta, c.head_dim, c.n_kv_heads, c.norm_eps) == (500000.0, 12, 4, 1e-5)
