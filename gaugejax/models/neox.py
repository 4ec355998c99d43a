"""GPT-NeoX (Pythia): LayerNorm, partial rotary, parallel residual.

Parallel block: ``x = x + attn(ln1(x)) + mlp(ln2(x))``; sequential:
``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``. The fused ``query_key_value`` rows are laid out
``(heads, 3, head_dim)``.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.models import gpt2
from gaugejax.models import layers as L
from gaugejax.models.base import HFTensor, NeoXConfig, init_from_shapes

_HF_KNOWN = {
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "layer_norm_eps", "rotary_pct", "rotary_emb_base", "use_parallel_residual", "max_position_embeddings",
    "hidden_act", "tie_word_embeddings", "architectures", "torch_dtype", "dtype", "attention_bias",
    "partial_rotary_factor", "rope_theta",
}


def config_from_hf(cfg: dict) -> NeoXConfig:
    """Builds the config from a Hugging Face GPT-NeoX ``config.json`` dict."""
    from gaugejax.errors import CheckpointError

    if cfg.get("attention_bias", True) is False:
        raise CheckpointError("GPT-NeoX with attention_bias=false is not supported")
    rope = cfg.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or cfg.get("rope_scaling"):
        raise CheckpointError("GPT-NeoX rope scaling is not supported")
    return NeoXConfig(
        vocab_size=cfg["vocab_size"],
        d_model=cfg["hidden_size"],
        n_layers=cfg["num_hidden_layers"],
        n_heads=cfg["num_attention_heads"],
        d_ff=cfg["intermediate_size"],
        norm_eps=cfg.get("layer_norm_eps", 1e-5),
        rotary_pct=rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", cfg.get("rotary_pct", 0.25))),
        rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", cfg.get("rotary_emb_base", 10000)))),
        parallel_residual=bool(cfg.get("use_parallel_residual", True)),
        max_positions=cfg.get("max_position_embeddings", 2048),
        activation=cfg.get("hidden_act", "gelu"),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        hf_extra=json.dumps({k: v for k, v in cfg.items() if k not in _HF_KNOWN and k != "rope_parameters"}),
    )


def config_to_hf(c: NeoXConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = json.loads(c.hf_extra)
    cfg.update(
        model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"], vocab_size=c.vocab_size,
        hidden_size=c.d_model, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        intermediate_size=c.d_ff, layer_norm_eps=c.norm_eps, rotary_pct=c.rotary_pct,
        partial_rotary_factor=c.rotary_pct, rotary_emb_base=c.rope_theta, rope_theta=c.rope_theta,
        use_parallel_residual=c.parallel_residual, max_position_embeddings=c.max_positions,
        hidden_act=c.activation, tie_word_embeddings=c.tie_embeddings, attention_bias=True,
    )
    return cfg


def param_shapes(c: NeoXConfig) -> dict[str, Any]:
    """Shapes of every parameter: GPT-2's without learned positions."""
    shapes = gpt2.param_shapes(c)
    del shapes["pos_embed"]
    return shapes


def param_axes(c: NeoXConfig) -> dict[str, Any]:
    """The gauge spec (SPEC §3): GPT-2's roles without learned positions."""
    axes = gpt2.param_axes(c)
    del axes["pos_embed"]
    return axes


def hf_tensors(c: NeoXConfig) -> list[HFTensor]:
    """Every safetensors key of the HF checkpoint and where it lives in ``params``."""
    out = [HFTensor("gpt_neox.embed_in.weight", "embed", None)]
    names = {
        "attn_norm": "input_layernorm.weight", "attn_norm_bias": "input_layernorm.bias",
        "qkv": "attention.query_key_value.weight", "qkv_bias": "attention.query_key_value.bias",
        "o": "attention.dense.weight", "o_bias": "attention.dense.bias",
        "mlp_norm": "post_attention_layernorm.weight", "mlp_norm_bias": "post_attention_layernorm.bias",
        "fc_in": "mlp.dense_h_to_4h.weight", "fc_in_bias": "mlp.dense_h_to_4h.bias",
        "fc_out": "mlp.dense_4h_to_h.weight", "fc_out_bias": "mlp.dense_4h_to_h.bias",
    }
    for i in range(c.n_layers):
        out += [HFTensor(f"gpt_neox.layers.{i}.{n}", k, i) for k, n in names.items()]
    out += [HFTensor("gpt_neox.final_layer_norm.weight", "final_norm", None),
            HFTensor("gpt_neox.final_layer_norm.bias", "final_norm_bias", None)]
    if not c.tie_embeddings:
        out.append(HFTensor("embed_out.weight", "lm_head", None))
    return out


def init_params(c: NeoXConfig, key: jax.Array, dtype=jnp.float32) -> dict[str, Any]:
    """Random parameters with generic gains (see :func:`init_from_shapes`)."""
    return init_from_shapes(param_shapes(c), c.n_layers, key, dtype)


def _block(c: NeoXConfig, x: jax.Array, p: dict[str, jax.Array], cos, sin, mask) -> jax.Array:
    b, t, d = x.shape
    hd = c.head_dim
    h = L.layer_norm(x, p["attn_norm"], p["attn_norm_bias"], c.norm_eps)
    qkv = L.linear(h, p["qkv"], p["qkv_bias"]).reshape(b, t, c.n_heads, 3, hd)
    q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
    q, k = L.apply_rope(q, cos, sin), L.apply_rope(k, cos, sin)
    attn = L.linear(L.attention(q, k, v, mask).reshape(b, t, d), p["o"], p["o_bias"])
    act = L.activation(c.activation)

    def mlp(z):
        h2 = L.layer_norm(z, p["mlp_norm"], p["mlp_norm_bias"], c.norm_eps)
        return L.linear(act(L.linear(h2, p["fc_in"], p["fc_in_bias"])), p["fc_out"], p["fc_out_bias"])

    if c.parallel_residual:
        return x + attn + mlp(x)
    x = x + attn
    return x + mlp(x)


def hidden_states(c: NeoXConfig, params: dict[str, Any], tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """See :func:`gaugejax.models.llama.hidden_states`."""
    t = tokens.shape[1]
    x = params["embed"][tokens]
    cos, sin = L.rope_cos_sin(jnp.arange(t), c.rotary_dim, c.rope_theta, None)
    mask = L.causal_mask(t)
    stream, x_last = L.run_blocks(lambda x, p: _block(c, x, p, cos, sin, mask), x, params["layers"])
    final = L.layer_norm(x_last, params["final_norm"], params["final_norm_bias"], c.norm_eps)
    return stream, final


def unembed(c: NeoXConfig, params: dict[str, Any], final: jax.Array) -> jax.Array:
    """Logits ``(B, T, V)`` from the final-normed stream."""
    head = params["embed"] if c.tie_embeddings else params["lm_head"]
    return jnp.einsum("btd,vd->btv", final, head)
