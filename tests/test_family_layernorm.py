"""LayerNorm families (GPT-J, Phi-2, Cohere, OPT) against ``transformers``; gauge group ``S_d × {±1}``.

Per variant: load parity (logits, every hidden state), the gauge round trip with a permutation
and global sign -1 through ``gj.save_model`` and ``gaugejax apply``'s streaming rewrite, ``info``'s
group and ``gj.align``. Traps: a per-coordinate sign flip is refused (mean subtraction only
commutes with a global sign); biases of writing matrices are stream vectors (signed and
permuted), biases of reading matrices and of the output head are untouched; GPT-J's and Cohere's
interleaved rotary, Phi-2's partial rotary, Cohere's logit scale and OPT's learned positions
(offset 2, rows read like embeddings) matter.

Tolerance: :data:`family_helpers.RTOL` (1e-4 relative, float32 parity).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

pytest.importorskip("torch")
pytest.importorskip("transformers")

import gaugejax as gj  # noqa: E402
from family_helpers import (RTOL, assert_align, assert_changes_logits, assert_gauge_round_trip,  # noqa: E402
                            assert_group, assert_parity, assert_wrong_role_breaks, build, tokens)
import gaugejax.testing as gt  # noqa: E402
from gaugejax.group import Group  # noqa: E402
from gaugejax.spec import RESIDUAL, Axes  # noqa: E402
from family_checks import build_cases  # noqa: E402
from helpers_hf import load_hf_model, rel_err, run_hf  # noqa: E402

V = 83
KINDS = {
    # parallel block, interleaved rotary on 6 of 10 head dims, biased MLP and head
    "gptj": ("GPTJConfig", "GPTJForCausalLM",
             dict(vocab_size=V, n_embd=50, n_layer=2, n_head=5, rotary_dim=6, n_inner=37, n_positions=64,
                  bos_token_id=0, eos_token_id=0, initializer_range=0.1)),
    # parallel block, GQA 6/2, partial rotary on 4 of 10 head dims (factor 0.4 as Phi-2), dense biases
    "phi": ("PhiConfig", "PhiForCausalLM",
            dict(vocab_size=V, hidden_size=60, intermediate_size=41, num_hidden_layers=2, num_attention_heads=6,
                 num_key_value_heads=2, partial_rotary_factor=0.4, max_position_embeddings=64, initializer_range=0.1)),
    # trap: one head, so the per-head q/k LayerNorms have the residual width; tied head with a bias
    "phi_qk_layernorm": ("PhiConfig", "PhiForCausalLM",
                         dict(vocab_size=V, hidden_size=30, intermediate_size=33, num_hidden_layers=2,
                              num_attention_heads=1, partial_rotary_factor=0.4, qk_layernorm=True,
                              tie_word_embeddings=True, max_position_embeddings=64, initializer_range=0.1)),
    # bias-free LayerNorm, parallel block, interleaved rotary, GQA 6/2, logit scale, tied head, attention biases
    "cohere": ("CohereConfig", "CohereForCausalLM",
               dict(vocab_size=V, hidden_size=60, intermediate_size=43, num_hidden_layers=2, num_attention_heads=6,
                    num_key_value_heads=2, logit_scale=0.25, attention_bias=True, max_position_embeddings=64,
                    pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.1)),
    # per-head q/k LayerNorms with one gain per head, untied head
    "cohere_qk_norm": ("CohereConfig", "CohereForCausalLM",
                       dict(vocab_size=V, hidden_size=36, intermediate_size=29, num_hidden_layers=2,
                            num_attention_heads=3, num_key_value_heads=1, use_qk_norm=True, tie_word_embeddings=False,
                            max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                            initializer_range=0.1)),
    # pre-norm, learned positions at offset 2, ReLU, tied head
    "opt": ("OPTConfig", "OPTForCausalLM",
            dict(vocab_size=V, hidden_size=45, ffn_dim=31, num_hidden_layers=2, num_attention_heads=5,
                 word_embed_proj_dim=45, max_position_embeddings=40, init_std=0.1)),
    # post-norm (do_layer_norm_before=false, as opt-350m): no final norm, untied head
    "opt_post_norm": ("OPTConfig", "OPTForCausalLM",
                      dict(vocab_size=V, hidden_size=36, ffn_dim=23, num_hidden_layers=2, num_attention_heads=3,
                           word_embed_proj_dim=36, do_layer_norm_before=False, tie_word_embeddings=False,
                           max_position_embeddings=40, init_std=0.1)),
    # sequential, partial rotary on 4 of 16 head dims, q/k/v biases, GQA 4/2
    "stablelm": ("StableLmConfig", "StableLmForCausalLM",
                 dict(vocab_size=V, hidden_size=64, intermediate_size=39, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, partial_rotary_factor=0.25, use_qkv_bias=True,
                      max_position_embeddings=64, initializer_range=0.1)),
    # parallel residual, per-head q/k LayerNorms (one HF tensor per head), tied head
    "stablelm_parallel": ("StableLmConfig", "StableLmForCausalLM",
                          dict(vocab_size=V, hidden_size=48, intermediate_size=35, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, partial_rotary_factor=0.5,
                               use_parallel_residual=True, qk_layernorm=True, tie_word_embeddings=True,
                               max_position_embeddings=64, initializer_range=0.1)),
    # Falcon-7B layout: multi-query fused query_key_value (6 query heads, 1 key, 1 value), parallel, tied
    "falcon": ("FalconConfig", "FalconForCausalLM",
               dict(vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, ffn_hidden_size=37,
                    max_position_embeddings=64, initializer_range=0.1)),
    # Falcon-40B layout: grouped query_key_value (2 groups of 3 queries + key + value), ln_attn/ln_mlp, biases
    "falcon_new": ("FalconConfig", "FalconForCausalLM",
                   dict(vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_kv_heads=2,
                        new_decoder_architecture=True, bias=True, ffn_hidden_size=37, tie_word_embeddings=False,
                        max_position_embeddings=64, initializer_range=0.1)),
    # per-head (heads, 3, head_dim) query_key_value, sequential block, biases
    "falcon_sequential": ("FalconConfig", "FalconForCausalLM",
                          dict(vocab_size=V, hidden_size=40, num_hidden_layers=2, num_attention_heads=5,
                               multi_query=False, parallel_attn=False, bias=True, ffn_hidden_size=29,
                               max_position_embeddings=64, initializer_range=0.1)),
}
FAMILY = {"gptj": "gptj", "phi": "phi", "phi_qk_layernorm": "phi", "cohere": "cohere", "cohere_qk_norm": "cohere",
          "opt": "opt", "opt_post_norm": "opt", "stablelm": "stablelm", "stablelm_parallel": "stablelm",
          "falcon": "falcon", "falcon_new": "falcon", "falcon_sequential": "falcon"}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """kind → (directory, tokens, reference logits, reference hidden states)."""
    return build_cases(tmp_path_factory.mktemp("layernorm"), KINDS, V, builder=build)


@pytest.mark.parametrize("kind", list(KINDS))
def test_parity_with_transformers(ckpts, kind):
    d, toks, ref_logits, ref_hidden = ckpts[kind]
    model = gj.load_model(d)
    assert model.config.family == FAMILY[kind] and model.config.norm == "layernorm"
    assert_parity(model, toks, ref_logits, ref_hidden)


@pytest.mark.parametrize("kind", list(KINDS))
def test_gauged_checkpoint_reloads_in_transformers(ckpts, tmp_path, kind):
    d, toks, ref_logits, ref_hidden = ckpts[kind]
    g = assert_gauge_round_trip(d, toks, ref_logits, ref_hidden, tmp_path)
    assert (g.signs == -1).all()


@pytest.mark.parametrize("kind", list(KINDS))
def test_group_and_info(ckpts, kind):
    assert_group(ckpts[kind][0], Group.S_D_SIGN)


@pytest.mark.parametrize("kind", list(KINDS))
def test_align_recovers_hidden_gauge(ckpts, kind):
    assert_align(gj.load_model(ckpts[kind][0]))


@pytest.mark.parametrize("kind", list(KINDS))
def test_local_signs_are_refused_and_break_the_model(ckpts, kind):
    """Per-coordinate signs are not a symmetry of a LayerNorm model (bias or not: the mean is
    subtracted): ``apply_gauge`` refuses them, and forcing them through the spec changes the logits."""
    from gaugejax.spec import apply_spec

    d, toks, ref_logits, _ = ckpts[kind]
    model = gj.load_model(d)
    g = gj.SignedPermutation.random(1, model.config.d_model)
    with pytest.raises(gj.GaugeError, match="global sign"):
        gj.apply_gauge(model, g)
    forced = gj.Model(model.config, apply_spec(model.params, gj.gauge_spec(model), g))
    assert rel_err(np.asarray(gj.forward(forced, toks)), ref_logits) > 1e-3


@pytest.mark.parametrize("kind", list(KINDS))
def test_bias_roles(ckpts, kind):
    """Biases added to the stream are VECTOR (signed, permuted); reading and head biases are untouched."""
    spec = gj.gauge_spec(gj.load_model(ckpts[kind][0]))
    flat = {**{k: a for k, a in spec.items() if k != "layers"}, **spec["layers"]}
    stream = {"gptj": ["norm_bias", "fc_out_bias", "final_norm_bias"],
              "phi": ["norm_bias", "o_bias", "fc2_bias", "final_norm_bias"],
              "cohere": ["o_bias"] if kind == "cohere" else [],
              "opt": ["attn_norm_bias", "o_bias", "mlp_norm_bias", "fc2_bias", "pos_embed", "pos_offset"],
              "stablelm": ["attn_norm_bias", "final_norm_bias"],
              "falcon": ["attn_norm_bias", "final_norm_bias"] + (["o_bias", "fc_out_bias"] if kind != "falcon" else [])
              }[FAMILY[kind]]
    reading = {"gptj": ["fc_in_bias", "lm_head_bias"],
               "phi": ["q_bias", "k_bias", "v_bias", "fc1_bias", "lm_head_bias"],
               "cohere": ["q_bias", "k_bias", "v_bias"] if kind == "cohere" else ["q_norm", "k_norm"],
               "opt": ["q_bias", "k_bias", "v_bias", "fc1_bias"],
               "stablelm": ["q_bias", "k_bias", "v_bias"] if kind == "stablelm" else ["q_norm", "k_norm"],
               "falcon": ["qkv_bias", "fc_in_bias"] if kind != "falcon" else []}[FAMILY[kind]]
    for k in stream:
        assert flat[k].actions[-1] == RESIDUAL, k
    for k in reading:
        assert not flat[k].acts, k


@pytest.mark.parametrize("kind,change", [("gptj", dict(rotary_dim=2)), ("phi", dict(rotary_pct=0.2)),
                                         ("phi_qk_layernorm", dict(qk_layernorm=False)),
                                         ("cohere", dict(logit_scale=1.0)), ("cohere_qk_norm", dict(qk_norm=False)),
                                         ("opt_post_norm", dict(pre_norm=True)),
                                         ("stablelm", dict(rotary_pct=0.5)),
                                         ("stablelm_parallel", dict(qk_layernorm=False)),
                                         ("falcon_new", dict(two_norms=False))])
def test_features_matter(ckpts, kind, change):
    d, toks, ref_logits, _ = ckpts[kind]
    model = gj.load_model(d)
    if change.get("pre_norm"):  # the pre-norm variant of a post-norm model needs a final norm: the identity
        dm = model.config.d_model
        model = gj.Model(model.config, {**model.params, "final_norm": np.ones(dm, np.float32),
                                        "final_norm_bias": np.zeros(dm, np.float32)})
    assert_changes_logits(model, toks, ref_logits, **change)


@pytest.mark.parametrize("key", ["q_norm", "k_norm", "q_norm_bias"])
def test_head_layernorm_of_width_d_is_not_residual(ckpts, key):
    """Phi's per-head q/k LayerNorm has length d here (one head) but acts on the head: permuting it
    like a residual LayerNorm breaks the model; the table leaves it alone."""
    d, toks, ref_logits, _ = ckpts["phi_qk_layernorm"]
    model = gj.load_model(d)
    assert not gj.gauge_spec(model)["layers"][key].acts
    g = gj.SignedPermutation(gj.SignedPermutation.random(2, model.config.d_model, signed=False).perm,
                             np.ones(model.config.d_model, np.int8))
    assert_wrong_role_breaks(model, g, key, toks, ref_logits)


def test_opt_positions_have_offset_two(ckpts):
    """Position t reads row t + 2 of ``embed_positions``; reading row t instead breaks parity."""
    from safetensors.numpy import load_file

    d, toks, ref_logits, _ = ckpts["opt"]
    model = gj.load_model(d)
    table = load_file(d / "model.safetensors")["model.decoder.embed_positions.weight"]
    assert table.shape == (40 + 2, 45) and model.params["pos_embed"].shape == (40, 45)
    np.testing.assert_array_equal(np.asarray(model.params["pos_embed"]), table[2:])
    shifted = {**model.params, "pos_embed": table[:-2]}
    assert rel_err(np.asarray(gj.forward(gj.Model(model.config, shifted), toks)), ref_logits) > 1e-3
    with pytest.raises(gj.GaugeError, match="40 learned positions"):
        gj.forward(model, tokens(V, 1, 41))


def test_stablelm_per_head_norms_are_stacked(ckpts, tmp_path):
    """One HF tensor per head (``q_layernorm.norms.{h}``) is stacked to ``(heads, head_dim)`` and written
    back bit for bit; the stack axis and head_dim are never gauged."""
    from safetensors.numpy import load_file

    d = ckpts["stablelm_parallel"][0]
    model = gj.load_model(d)
    assert model.params["layers"]["q_norm"].shape == (2, 4, 12)
    assert gj.gauge_spec(model)["layers"]["k_norm"] == Axes(None, None, None)
    theirs = load_file(d / "model.safetensors")
    np.testing.assert_array_equal(np.asarray(model.params["layers"]["k_norm"][1, 1]),
                                  theirs["model.layers.1.self_attn.k_layernorm.norms.1.weight"])
    assert len({float(theirs[f"model.layers.0.self_attn.q_layernorm.norms.{h}.weight"][0]) for h in range(4)}) == 4
    ours = load_file(gj.save_model(model, tmp_path / "m") / "model.safetensors")
    assert set(ours) == set(theirs)
    for name, arr in theirs.items():
        np.testing.assert_array_equal(ours[name], arr, err_msg=name)


def _transformers_split_qkv(attn, fused):
    """Queries, keys and values ``(B, T, heads, H)`` as transformers' ``FalconAttention`` splits a fused
    projection: its ``_split_heads`` (4.x), or its forward (5.x splits inline) with the projection
    replaced by the identity, the rotation by cos = 1, sin = 0, and an attention that records its inputs."""
    import torch
    import transformers

    fused = torch.as_tensor(fused)
    if hasattr(attn, "_split_heads"):
        return [t.numpy() for t in attn._split_heads(fused)]
    seen = {}

    def record(module, q, k, v, mask, **kwargs):
        seen.update(q=q, k=k, v=v)
        return q.transpose(1, 2), None

    transformers.AttentionInterface.register("gaugejax_record_qkv", record)
    attn.config._attn_implementation = "gaugejax_record_qkv"
    attn.query_key_value = torch.nn.Identity()
    b, t, _ = fused.shape
    cos_sin = (torch.ones(b, t, attn.head_dim), torch.zeros(b, t, attn.head_dim))
    with torch.no_grad():
        attn(fused, None, position_embeddings=cos_sin)
    return [seen[x].transpose(1, 2).numpy() for x in "qkv"]


@pytest.mark.parametrize("kind", ["falcon", "falcon_new", "falcon_sequential"])
def test_falcon_fused_qkv_layouts_match_transformers(ckpts, kind):
    """``split_qkv`` reads each fused ``query_key_value`` layout as transformers' attention does."""
    import transformers

    from gaugejax.models import falcon

    model = gj.load_model(ckpts[kind][0])
    c = model.config
    attn = transformers.models.falcon.modeling_falcon.FalconAttention(transformers.FalconConfig(**KINDS[kind][2]), 0)
    fused = np.random.default_rng(0).normal(size=(2, 5, (c.n_heads + 2 * c.n_kv_heads) * c.head_dim)).astype(np.float32)
    ref = _transformers_split_qkv(attn, fused)
    ours = [np.asarray(a) for a in falcon.split_qkv(c, fused)]
    np.testing.assert_array_equal(ours[0], ref[0])
    for o, r in zip(ours[1:], ref[1:]):  # transformers 4.x broadcasts grouped keys/values to every query head
        np.testing.assert_array_equal(np.repeat(o, r.shape[2] // o.shape[2], axis=2), r)


def test_interleaved_rotary_matches_gptj():
    """``apply_rope_interleaved`` is GPT-J's rotate-every-two rotary (transformers' own function as
    the oracle) and differs from the half-split layout on the same dims."""
    import torch
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb, create_sinusoidal_positions

    from gaugejax.models import layers as L

    x = np.random.default_rng(0).normal(size=(2, 7, 3, 6)).astype(np.float32)  # (B, T, heads, rotary dims)
    sin, cos = torch.split(create_sinusoidal_positions(7, 6)[None], 3, dim=-1)
    ref = apply_rotary_pos_emb(torch.as_tensor(x), sin, cos).numpy()
    cos_j, sin_j = L.rope_cos_sin(np.arange(7), 6, 10000.0, None)
    np.testing.assert_allclose(np.asarray(L.apply_rope_interleaved(x, cos_j, sin_j)), ref, rtol=1e-5, atol=1e-6)
    assert rel_err(np.asarray(L.apply_rope(x, cos_j, sin_j)), ref) > 0.1


@pytest.mark.parametrize("kind", list(KINDS))
def test_saved_config_reloads_in_transformers(ckpts, tmp_path, kind):
    d, toks, ref_logits, _ = ckpts[kind]
    out = gj.save_model(gj.load_model(d), tmp_path / kind)
    assert rel_err(run_hf(load_hf_model(out), toks)[0], ref_logits) < RTOL


@pytest.mark.parametrize("model_type,base,change,key", [
    ("gptj", dict(n_embd=16, n_layer=1, n_head=2, rotary_dim=4), dict(rotary_dim=None), "rotary_dim"),
    ("gptj", dict(n_embd=16, n_layer=1, n_head=2, rotary_dim=4), dict(scale_attn=False), "scale_attn"),
    ("gptj", dict(n_embd=16, n_layer=1, n_head=2, rotary_dim=4), dict(use_parallel_residual=False),
     "use_parallel_residual"),
    ("phi", dict(hidden_size=16, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2), dict(partial_rotary_factor=0.4),
     "partial_rotary_factor"),
    ("phi", dict(hidden_size=16, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2),
     dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "linear"),
    ("cohere", dict(hidden_size=16, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2),
     dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}),
     "partial_rotary_factor"),
    ("cohere", dict(hidden_size=16, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2),
     dict(sliding_window=4), "sliding_window"),
    ("opt", dict(hidden_size=16, ffn_dim=8, num_hidden_layers=1, num_attention_heads=2), dict(word_embed_proj_dim=8),
     "word_embed_proj_dim"),
    ("opt", dict(hidden_size=16, ffn_dim=8, num_hidden_layers=1, num_attention_heads=2), dict(enable_bias=False),
     "enable_bias"),
    ("opt", dict(hidden_size=16, ffn_dim=8, num_hidden_layers=1, num_attention_heads=2),
     dict(_remove_final_layer_norm=True), "_remove_final_layer_norm"),
    ("falcon", dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2), dict(alibi=True), "alibi"),
    ("falcon", dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2),
     dict(new_decoder_architecture=True, parallel_attn=False), "parallel_attn"),
    ("falcon", dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2), dict(num_ln_in_parallel_attn=2),
     "num_ln_in_parallel_attn"),
    # num_key_value_heads (written by transformers 5) must agree with the heads the attention has
    ("falcon", dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2), dict(num_key_value_heads=2),
     "'num_key_value_heads'=2 is not supported: it contradicts"),
    ("falcon", dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=4, new_decoder_architecture=True,
                    num_kv_heads=2), dict(num_key_value_heads=4), "'num_key_value_heads'=4"),
    # per-head keys with fewer key/value heads: transformers' attention fails on them
    ("falcon", dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, multi_query=False),
     dict(num_kv_heads=1), "'num_kv_heads'=1 is not supported: the per-head layout"),
])
def test_config_is_closed_world(model_type, base, change, key):
    from gaugejax.models import config_from_hf

    cfg = dict(model_type=model_type, vocab_size=V, **base)
    assert config_from_hf(cfg).norm == "layernorm"
    with pytest.raises(gj.CheckpointError, match=key):
        config_from_hf({**cfg, **change})


FALCON = dict(model_type="falcon", vocab_size=V, hidden_size=24, num_hidden_layers=1, num_attention_heads=6)


@pytest.mark.parametrize("new,multi_query,num_kv_heads", [
    (False, True, None), (False, True, 6), (False, True, 3), (False, False, None), (False, False, 6),
    (True, True, None), (True, True, 2), (True, False, 3), (True, True, 1),
])
def test_falcon_key_value_heads_as_transformers_derives_them(new, multi_query, num_kv_heads):
    """Our key/value heads are transformers 5's ``num_key_value_heads`` (what its attention uses,
    ``num_kv_heads if (new_decoder_architecture or not multi_query) else 1``), from files with
    ``num_kv_heads`` only (4.x), with both keys (5.x writes both), and with neither."""
    import transformers

    from gaugejax.models import config_from_hf

    kw = dict(new_decoder_architecture=new, multi_query=multi_query, num_kv_heads=num_kv_heads)
    theirs = transformers.FalconConfig(**{k: v for k, v in FALCON.items() if k != "model_type"}, **kw)
    old_file = {**FALCON, **{k: v for k, v in kw.items() if v is not None}}
    new_file = {**old_file, "num_key_value_heads": theirs.num_key_value_heads}
    for cfg in (old_file, new_file):
        assert config_from_hf(cfg).n_kv_heads == theirs.num_key_value_heads


@settings(deadline=None, max_examples=9)
@given(n_kv_heads=st.sampled_from([1, 2, 4]), layout=st.sampled_from(["multi_query", "grouped", "per_head"]))
@example(n_kv_heads=2, layout="multi_query")  # issue 25: tiny_models drew it, and gj.forward crashed in a reshape
def test_falcon_config_runs_or_is_refused_in_one_line(n_kv_heads, layout):
    """A Falcon config either is one transformers describes (it survives ``config.json`` and runs)
    or is refused at construction, naming the layout that holds those heads."""
    from gaugejax.models import config_from_hf, falcon, tiny_config

    try:
        cfg = tiny_config("falcon", n_layers=1, n_kv_heads=n_kv_heads, layout=layout)
    except gj.CheckpointError as e:
        assert "\n" not in str(e) and "layout 'grouped'" in str(e)
        assert (layout, n_kv_heads) in {("multi_query", 2), ("multi_query", 4), ("per_head", 1), ("per_head", 2)}
        return
    assert config_from_hf(falcon.config_to_hf(cfg)) == cfg
    out = np.asarray(gj.forward(gj.random_model(cfg, 0), tokens(cfg.vocab_size, seq=5)))
    assert out.shape == (2, 5, cfg.vocab_size) and np.isfinite(out).all()


@settings(deadline=None, max_examples=10)
@given(gt.tiny_models(kinds=["falcon"]))
def test_falcon_tiny_models_run(model):
    """Every Falcon model the library's own strategy draws runs (the strategy drew impossible layouts)."""
    out = np.asarray(gj.forward(model, np.arange(6)[None] % model.config.vocab_size))
    assert out.shape == (1, 6, model.config.vocab_size) and np.isfinite(out).all()
