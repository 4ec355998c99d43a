"""Gemma 1, 2 and 3 (text) against transformers: parity, gauge round trip, group, alignment, traps.

Traps: ``(1 + w)`` gains (the gauge permutes ``w``); the post-attention/post-feedforward norms of
Gemma 2/3 norm a block's output before it joins the stream, so their gains are gains of the
stream (permuted, never signed: signing them breaks the model) while ``o``/``down`` that feed them
stay writes; Gemma 3's q/k norms act on ``head_dim`` (role NONE; the Gemma 3 case has
``head_dim == d`` so a gain role would fit by shape and is shown to break the model); the
``sqrt(d)`` embedding scale, both soft-caps, ``query_pre_attn_scalar``, alternating sliding
windows and local/global RoPE bases each change the logits, so parity covers them; legacy
``config.json`` layouts parse as transformers parses them; the multimodal ``gemma3`` is refused.
Tolerances: see family_checks.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import gaugejax as gj  # noqa: E402
from gaugejax.errors import CheckpointError  # noqa: E402
from gaugejax.io import load_model  # noqa: E402
from gaugejax.models import config_from_hf, gemma  # noqa: E402
from gaugejax.spec import RESIDUAL, RESIDUAL_PERM, Axes  # noqa: E402
import family_checks as F  # noqa: E402

VOCAB = 101
_BASE = dict(vocab_size=VOCAB, hidden_size=60, intermediate_size=97, num_hidden_layers=3, num_attention_heads=6,
             num_key_value_heads=3, head_dim=14, max_position_embeddings=64,
             initializer_range=0.1)  # 5× transformers' default: attention scores large enough for the caps to bite
CASES = {
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(_BASE)),  # tied (Gemma's default)
    # default layer_types: layers 0 and 2 slide (window 5 < 12 tokens); caps low enough to bite; untied
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               dict(_BASE, sliding_window=5, query_pre_attn_scalar=20, final_logit_softcapping=5.0,
                    attn_logit_softcapping=3.0, tie_word_embeddings=False)),
    # head_dim == d; local base 50 vs global 10^4 with linear scaling
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               dict(_BASE, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=48,
                    sliding_window=5, query_pre_attn_scalar=20,
                    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                    rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e4},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}})),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """case → (directory, tokens, transformers logits, transformers hidden states)."""
    return F.build_cases(tmp_path_factory.mktemp("gemma"), CASES, VOCAB)


@pytest.mark.parametrize("case", list(CASES))
def test_parity(ckpts, case):
    F.check_parity(ckpts[case])


@pytest.mark.parametrize("case", list(CASES))
def test_gauge_round_trip(ckpts, case, tmp_path):
    F.check_round_trip(ckpts[case], tmp_path)


def test_group_info_and_align(ckpts):
    F.check_group_and_align(ckpts["gemma2"][0])


def test_config_read(ckpts):
    c1, c2, c3 = (load_model(ckpts[k][0]).config for k in CASES)
    assert c1.norm_offset == c2.norm_offset == c3.norm_offset == 1.0
    assert c1.embed_scale == 60 ** 0.5 and c1.tie_embeddings and not c2.tie_embeddings
    assert (c2.sliding_layers, c2.sliding_window) == ((True, False, True), 5)
    assert (c2.attn_softcap, c2.logit_softcap) == (3.0, 5.0)
    assert c2.query_scale == 20 ** -0.5 and c1.query_scale is None
    assert (c3.rope_theta, c3.local_rope_theta, c3.qk_norm, c3.attn_softcap) == (1e4, 50.0, "head", None)
    for c in (c1, c2, c3):
        assert gemma.config_from_hf(gemma.config_to_hf(c)) == c


def test_post_norms_are_gains_and_their_inputs_writes(ckpts):
    d, toks, logits, _ = ckpts["gemma2"]
    model = load_model(d)
    spec = gj.gauge_spec(model)["layers"]
    for k in ("attn_norm", "post_attn_norm", "mlp_norm", "post_mlp_norm"):
        assert spec[k] == Axes(None, RESIDUAL_PERM), k
    assert spec["o"] == spec["down"] == Axes(None, RESIDUAL, None)
    g = gj.SignedPermutation.random(3, model.config.d_model)
    for k in ("post_attn_norm", "post_mlp_norm"):
        F.assert_wrong_role_breaks(model, g, k, toks, logits, wrong="vector")


def test_gemma3_qk_norms_act_on_heads(ckpts):
    d, toks, logits, _ = ckpts["gemma3"]
    model = load_model(d)
    spec = gj.gauge_spec(model)["layers"]
    assert spec["q_norm"] == spec["k_norm"] == Axes(None, None)
    F.assert_wrong_role_breaks(model, gj.SignedPermutation.random(3, model.config.d_model), "q_norm", toks, logits)


@pytest.mark.parametrize("case,change", [
    ("gemma", dict(embed_scale=1.0)),
    ("gemma2", dict(attn_softcap=None)),
    ("gemma2", dict(logit_softcap=None)),
    ("gemma2", dict(query_scale=None)),
    ("gemma2", dict(sliding_layers=())),
    ("gemma3", dict(local_rope_theta=None)),
    ("gemma3", dict(rope_scaling=None)),
])
def test_features_matter(ckpts, case, change):
    d, toks, logits, _ = ckpts[case]
    F.assert_changes_logits(load_model(d), toks, logits, **change)


_SMALL = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=7, num_attention_heads=4,
              num_key_value_heads=2, head_dim=12)


@pytest.mark.parametrize("model_type,cls,legacy", [
    ("gemma", "GemmaConfig", dict(hidden_act="gelu", hidden_activation=None, rope_theta=500.0, rope_scaling=None)),
    ("gemma2", "Gemma2Config", dict(hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh",
                                    rope_theta=500.0, cache_implementation="hybrid", sliding_window=64)),
    ("gemma3_text", "Gemma3TextConfig", dict(rope_theta=2e5, rope_local_base_freq=300.0, sliding_window_pattern=3,
                                             rope_scaling={"rope_type": "linear", "factor": 8.0},
                                             cache_implementation="hybrid", sliding_window=64)),
])
def test_legacy_config_parsed_like_transformers(model_type, cls, legacy):
    """Hub configs written by older transformers (rope_theta, rope_local_base_freq, no layer_types)."""
    import transformers

    cfg = dict(_SMALL, model_type=model_type, **legacy)
    ours = gemma.config_from_hf(cfg)
    theirs = getattr(transformers, cls)(**{k: v for k, v in cfg.items() if k != "model_type"})
    assert ours.activation == "gelu_pytorch_tanh"
    if model_type == "gemma":
        assert ours.rope_theta == theirs.rope_parameters["rope_theta"] == 500.0 and ours.sliding_layers == ()
        return
    assert list(ours.sliding_layers) == [t == "sliding_attention" for t in theirs.layer_types]
    if model_type == "gemma2":
        assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    else:
        full, local = theirs.rope_parameters["full_attention"], theirs.rope_parameters["sliding_attention"]
        assert (ours.rope_theta, ours.local_rope_theta) == (full["rope_theta"], local["rope_theta"]) == (2e5, 300.0)
        assert '"factor": 8.0' in ours.rope_scaling and full["factor"] == 8.0 and ours.local_rope_scaling is None


@pytest.mark.parametrize("cfg,word", [
    (dict(_SMALL, model_type="gemma3", text_config=dict(_SMALL)), "gemma3_text"),
    (dict(_SMALL, model_type="gemma2", use_bidirectional_attention=True), "use_bidirectional_attention"),
    (dict(_SMALL, model_type="gemma3_text", attn_logit_softcapping=50.0), "never applies it"),
    (dict(_SMALL, model_type="gemma3_text", rope_parameters={"rope_type": "default", "rope_theta": 1e4}),
     "keys it by full_attention"),
    (dict(_SMALL, model_type="gemma2", final_logit_softcap=30.0), "final_logit_softcap"),
])
def test_unsupported_config_refused(cfg, word):
    with pytest.raises(CheckpointError, match=word):
        config_from_hf(cfg)


def test_info_names_refused_multimodal_gemma3(tmp_path, capsys):
    """``gaugejax info`` on a multimodal Gemma 3 directory: one stderr line naming the model_type and the fix."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    from gaugejax.cli import main

    (tmp_path / "config.json").write_text(json.dumps(dict(model_type="gemma3", text_config=dict(_SMALL))))
    save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))
    try:
        code = main(["info", str(tmp_path)])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code not in (0, None) and len(err) == 1
    assert "model_type='gemma3'" in err[0] and "gemma3_text" in err[0]
