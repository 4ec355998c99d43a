"""Mixture-of-experts families (Mixtral, Qwen2-MoE, Qwen3-MoE) against ``transformers``.

Per variant: load parity (logits, every hidden state and every layer's router logits), the gauge
round trip through ``gj.save_model`` and ``gaugejax apply``'s streaming rewrite, ``info``'s group
and ``gj.align``. Traps: the router reads the stream, so a gauge leaves its logits (hence the
routing) unchanged; expert stacks ``(E, f, d)`` / ``(E, d, f)`` gauge the residual axis, never the
expert axis; Qwen3-MoE's ``q_norm`` of length ``head_dim == d`` is not a residual gain.

Tolerances: :data:`family_helpers.RTOL` (1e-4 relative, float32 parity; measured ≲ 1e-6). Router
logits of a gauged model differ from the original only by float32 summation order (the same dot
products with permuted, sign-flipped terms): 1e-5 relative.

Weights are drawn with ``initializer_range=0.1`` (transformers' 0.02 makes routing and gates
nearly uniform, so a wrong role would move the logits too little to see). Sizes: head counts, vocabulary and shared-expert widths are odd; the residual width and expert
widths are multiples of 4 because transformers' default grouped-GEMM expert kernel
(``torch._grouped_mm``) needs 16-byte strides.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import gaugejax as gj  # noqa: E402
from family_helpers import (RTOL, assert_align, assert_gauge_round_trip, assert_group,  # noqa: E402
                            assert_parity, build, tokens)
from gaugejax.group import Group  # noqa: E402
from gaugejax.models import moe  # noqa: E402
from gaugejax.spec import RESIDUAL, Axes  # noqa: E402
from family_checks import build_cases  # noqa: E402
from helpers_hf import load_hf_model, rel_err, run_hf  # noqa: E402

V = 97
KINDS = {
    # GQA 5/1, a sliding window of 5 < 12 tokens, 5 experts, top-2 renormalised
    "mixtral": ("MixtralConfig", "MixtralForCausalLM",
                dict(vocab_size=V, hidden_size=40, intermediate_size=28, num_hidden_layers=2, num_attention_heads=5,
                     num_key_value_heads=1, num_local_experts=5, num_experts_per_tok=2, max_position_embeddings=64, initializer_range=0.1,
                     sliding_window=5)),
    # q/k/v biases, shared expert with its sigmoid gate, top-3 of 6 without renormalisation
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                  dict(vocab_size=V, hidden_size=56, intermediate_size=36, moe_intermediate_size=20,
                       shared_expert_intermediate_size=25, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, num_experts=6, num_experts_per_tok=3, norm_topk_prob=False,
                       max_position_embeddings=64, initializer_range=0.1)),
    # per-head q/k RMSNorm, tied embeddings, top-2 of 5 renormalised
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM",
                  dict(vocab_size=V, hidden_size=36, intermediate_size=40, moe_intermediate_size=24, num_hidden_layers=2,
                       num_attention_heads=3, num_key_value_heads=1, head_dim=10, num_experts=5, num_experts_per_tok=2,
                       norm_topk_prob=True, tie_word_embeddings=True, max_position_embeddings=64, initializer_range=0.1)),
    # trap: head_dim == d, so q_norm/k_norm have the residual width but act on heads; attention biases
    "qwen3_moe_headdim_d": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM",
                            dict(vocab_size=V, hidden_size=32, intermediate_size=40, moe_intermediate_size=20,
                                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                                 num_experts=4, num_experts_per_tok=2, norm_topk_prob=False, attention_bias=True,
                                 max_position_embeddings=64, initializer_range=0.1)),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """kind → (directory, tokens, reference logits, reference hidden states)."""
    return build_cases(tmp_path_factory.mktemp("moe"), KINDS, V, builder=build)


def _hf_router_logits(directory, toks) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = load_hf_model(directory)(torch.as_tensor(toks), output_router_logits=True)
    return np.stack([r.float().numpy().reshape(*toks.shape, -1) for r in out.router_logits])


@pytest.mark.parametrize("kind", list(KINDS))
def test_parity_with_transformers(ckpts, kind):
    d, toks, ref_logits, ref_hidden = ckpts[kind]
    model = gj.load_model(d)
    assert model.config.family == "moe" and model.config.model_type == kind.removesuffix("_headdim_d")
    assert_parity(model, toks, ref_logits, ref_hidden)
    ours = np.asarray(moe.router_logits(model, toks))
    assert ours.shape == (model.config.n_layers, *toks.shape, model.config.n_experts)
    assert rel_err(ours, _hf_router_logits(d, toks)) < RTOL


@pytest.mark.parametrize("kind", list(KINDS))
def test_gauge_round_trip_keeps_router_logits(ckpts, tmp_path, kind):
    d, toks, ref_logits, ref_hidden = ckpts[kind]
    g = assert_gauge_round_trip(d, toks, ref_logits, ref_hidden, tmp_path)
    # the router reads the stream: its logits, and so the selected experts, are chart-independent
    model = gj.load_model(d)
    before = np.asarray(moe.router_logits(model, toks))
    after = np.asarray(moe.router_logits(gj.apply_gauge(model, g), toks))
    assert rel_err(after, before) < 1e-5
    k = model.config.top_k
    np.testing.assert_array_equal(np.argsort(-after, -1)[..., :k], np.argsort(-before, -1)[..., :k])
    assert rel_err(_hf_router_logits(tmp_path / "gauged", toks), _hf_router_logits(d, toks)) < 1e-5


@pytest.mark.parametrize("kind", list(KINDS))
def test_group_and_info(ckpts, kind):
    assert_group(ckpts[kind][0], Group.B_D)


@pytest.mark.parametrize("kind", ["mixtral", "qwen2_moe", "qwen3_moe"])
def test_align_recovers_hidden_gauge(ckpts, kind):
    assert_align(gj.load_model(ckpts[kind][0]))


def test_expert_stacks_gauge_the_residual_axis():
    """``(E, f, d)`` READ acts on the last axis, ``(E, d, f)`` WRITE on the axis of size d, never on E."""
    c = moe.MoEConfig(model_type="qwen2_moe", d_model=8, n_heads=2, n_kv_heads=1, head_dim=4, d_ff=5, n_experts=3,
                      d_shared=6, vocab_size=11)
    spec = gj.gauge_spec(c)["layers"]
    assert spec["expert_gate"] == spec["expert_up"] == Axes(None, None, None, RESIDUAL)
    assert spec["expert_down"] == Axes(None, None, RESIDUAL, None)
    assert spec["router"] == spec["shared_expert_gate"] == Axes(None, None, RESIDUAL)
    from gaugejax.models.family import family_module
    from gaugejax.models.table import check_table

    fam = family_module(c)
    check_table(fam.params(c))
    axes = fam.hf_axes(c)  # per-expert tensors in their stored 2-D layout
    assert axes["model.layers.1.mlp.experts.2.down_proj.weight"] == Axes(RESIDUAL, None)
    assert axes["model.layers.0.mlp.experts.0.gate_proj.weight"] == Axes(None, RESIDUAL)
    names = [t.name for t in fam.hf_tensors(c)]
    assert sum(".experts." in n for n in names) == 2 * 3 * 3


def test_expert_stack_save_is_exact(ckpts, tmp_path):
    """Per-expert tensors are stacked on read and written back bit for bit (as save_pretrained wrote them)."""
    from safetensors.numpy import load_file

    d = ckpts["mixtral"][0]
    model = gj.load_model(d)
    assert model.params["layers"]["expert_down"].shape == (2, 5, 40, 28)  # (layers, E, d, f)
    theirs = load_file(d / "model.safetensors")
    ours = load_file(gj.save_model(model, tmp_path / "m") / "model.safetensors")
    assert set(ours) == set(theirs)
    for name, arr in theirs.items():
        np.testing.assert_array_equal(ours[name], arr, err_msg=name)
    np.testing.assert_array_equal(theirs["model.layers.1.block_sparse_moe.experts.3.w2.weight"],
                                  np.asarray(model.params["layers"]["expert_down"][1, 3]))


@pytest.mark.parametrize("kind,key", [("mixtral", "router"), ("qwen2_moe", "shared_expert_gate"),
                                      ("qwen3_moe", "expert_gate")])
def test_reading_weights_must_move(ckpts, kind, key):
    """Leaving a reading weight in the old chart (the router, Qwen2-MoE's shared-expert gate, an
    expert stack) changes the logits: the READ role the table gives it is needed."""
    d, toks, ref_logits, _ = ckpts[kind]
    model = gj.load_model(d)
    g = gj.SignedPermutation.random(3, model.config.d_model)
    moved = gj.apply_gauge(model, g)
    stale = {**moved.params, "layers": {**moved.params["layers"], key: model.params["layers"][key]}}
    assert rel_err(np.asarray(gj.forward(gj.Model(model.config, stale), toks)), ref_logits) > 1e-3


def test_routing_weights():
    logits = np.log(np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]))
    w = np.asarray(moe.routing(moe.MoEConfig(n_experts=3, top_k=2, norm_topk=False), logits))
    np.testing.assert_allclose(w, [[0, 0.6, 0.3], [0.5, 0, 0.3]], rtol=1e-6)
    w = np.asarray(moe.routing(moe.MoEConfig(n_experts=3, top_k=2, norm_topk=True), logits))
    np.testing.assert_allclose(w, [[0, 2 / 3, 1 / 3], [0.625, 0, 0.375]], rtol=1e-6)


@pytest.mark.parametrize("change,key", [
    (dict(mlp_only_layers=[1]), "mlp_only_layers"),
    (dict(decoder_sparse_step=2), "decoder_sparse_step"),
    (dict(use_sliding_window=True), "use_sliding_window"),
    (dict(router_temperature=2.0), "router_temperature"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}), "yarn"),
    (dict(num_experts_per_tok=5), "num_experts_per_tok"),
    (dict(layer_types=["full_attention", "sliding_attention"]), "layer_types"),
])
def test_config_is_closed_world(change, key):
    from gaugejax.models import config_from_hf

    cfg = dict(model_type="qwen2_moe", vocab_size=V, hidden_size=16, intermediate_size=8, moe_intermediate_size=8,
               shared_expert_intermediate_size=8, num_hidden_layers=2, num_attention_heads=2, num_experts=4,
               num_experts_per_tok=2)
    assert config_from_hf(cfg).n_experts == 4
    with pytest.raises(gj.CheckpointError, match=key):
        config_from_hf({**cfg, **change})


def test_saved_config_reloads_in_transformers(ckpts, tmp_path):
    """``config_to_hf`` writes a config transformers builds the same model from (routing flags included)."""
    for kind in ("qwen2_moe", "qwen3_moe"):
        d, toks, ref_logits, _ = ckpts[kind]
        out = gj.save_model(gj.load_model(d), tmp_path / kind)
        logits, _ = run_hf(load_hf_model(out), toks)
        assert rel_err(logits, ref_logits) < RTOL
