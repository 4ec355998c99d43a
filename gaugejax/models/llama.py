"""Llama family: RMSNorm, RoPE, grouped-query attention, SwiGLU (Llama, Mistral, Qwen2, SmolLM).

Block: ``x = x + attn(rms(x)); x = x + mlp(rms(x))``; logits ``= rms(x) @ lm_head.T``.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.models import layers as L
from gaugejax.models.base import HFTensor, LlamaConfig, init_from_shapes
from gaugejax.spec import RESIDUAL, RESIDUAL_PERM, Axes

_HF_KNOWN = {
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "intermediate_size", "rms_norm_eps", "rope_theta", "rope_scaling",
    "tie_word_embeddings", "hidden_act", "head_dim", "max_position_embeddings", "sliding_window",
    "attention_bias", "use_sliding_window", "architectures", "torch_dtype", "dtype",
}
_ARCH = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def config_from_hf(cfg: dict) -> LlamaConfig:
    """Builds the config from a Hugging Face ``config.json`` dict."""
    mt = cfg.get("model_type", "llama")
    d = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    rope = cfg.get("rope_scaling")
    theta = cfg.get("rope_theta")
    rope_params = cfg.get("rope_parameters")
    if rope_params:  # transformers >= 5 keeps theta and scaling together
        theta = rope_params.get("rope_theta", theta)
        if rope_params.get("rope_type", "default") != "default":
            rope = {k: v for k, v in rope_params.items() if k != "rope_theta"}
    if rope is not None:
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind not in ("default", "linear", "dynamic", "llama3"):
            from gaugejax.errors import CheckpointError

            raise CheckpointError(f"rope scaling {kind!r} is not supported (supported: linear, dynamic, llama3)")
        if kind == "default":
            rope = None
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window", mt == "mistral") else None
    return LlamaConfig(
        family="llama",
        model_type=mt,
        vocab_size=cfg["vocab_size"],
        d_model=d,
        n_layers=cfg["num_hidden_layers"],
        n_heads=nh,
        n_kv_heads=cfg.get("num_key_value_heads") or nh,
        head_dim=cfg.get("head_dim") or d // nh,
        d_ff=cfg["intermediate_size"],
        norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta if theta is not None else 10000.0),
        rope_scaling=None if rope is None else json.dumps(rope, sort_keys=True),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        activation=cfg.get("hidden_act", "silu"),
        qkv_bias=bool(cfg.get("attention_bias", mt == "qwen2")),
        sliding_window=window,
        max_positions=cfg.get("max_position_embeddings", 2048),
        hf_extra=json.dumps({k: v for k, v in cfg.items() if k not in _HF_KNOWN and k != "rope_parameters"}),
    )


def config_to_hf(c: LlamaConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = json.loads(c.hf_extra)
    cfg.update(
        model_type=c.model_type,
        architectures=[_ARCH.get(c.model_type, "LlamaForCausalLM")],
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads,
        head_dim=c.head_dim,
        intermediate_size=c.d_ff,
        rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta,
        rope_scaling=c.rope_scaling_dict,
        tie_word_embeddings=c.tie_embeddings,
        hidden_act=c.activation,
        max_position_embeddings=c.max_positions,
    )
    if c.model_type == "llama":
        cfg["attention_bias"] = c.qkv_bias
    if c.model_type == "mistral":
        cfg["sliding_window"] = c.sliding_window
    if c.model_type == "qwen2":
        cfg["use_sliding_window"] = c.sliding_window is not None
        cfg["sliding_window"] = c.sliding_window
    return cfg


def param_shapes(c: LlamaConfig) -> dict[str, Any]:
    """Shapes of every parameter (per layer inside ``"layers"``, without the layer axis)."""
    d, f, q, kv = c.d_model, c.d_ff, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    layer = {
        "attn_norm": (d,), "q": (q, d), "k": (kv, d), "v": (kv, d), "o": (d, q),
        "mlp_norm": (d,), "gate": (f, d), "up": (f, d), "down": (d, f),
    }
    if c.qkv_bias:
        layer.update(q_bias=(q,), k_bias=(kv,), v_bias=(kv,))
    shapes = {"embed": (c.vocab_size, d), "layers": layer, "final_norm": (d,)}
    if not c.tie_embeddings:
        shapes["lm_head"] = (c.vocab_size, d)
    return shapes


def param_axes(c: LlamaConfig) -> dict[str, Any]:
    """The gauge spec (SPEC §3), per layer inside ``"layers"`` without the layer axis."""
    read, write, gain = Axes(None, RESIDUAL), Axes(RESIDUAL, None), Axes(RESIDUAL_PERM)
    layer = {
        "attn_norm": gain, "q": read, "k": read, "v": read, "o": write,
        "mlp_norm": gain, "gate": read, "up": read, "down": write,
    }
    if c.qkv_bias:
        layer.update(q_bias=Axes(None), k_bias=Axes(None), v_bias=Axes(None))
    axes = {"embed": read, "layers": layer, "final_norm": gain}
    if not c.tie_embeddings:
        axes["lm_head"] = read
    return axes


def hf_tensors(c: LlamaConfig) -> list[HFTensor]:
    """Every safetensors key of the HF checkpoint and where it lives in ``params``."""
    out = [HFTensor("model.embed_tokens.weight", "embed", None)]
    names = {
        "attn_norm": "input_layernorm.weight", "q": "self_attn.q_proj.weight",
        "k": "self_attn.k_proj.weight", "v": "self_attn.v_proj.weight", "o": "self_attn.o_proj.weight",
        "mlp_norm": "post_attention_layernorm.weight", "gate": "mlp.gate_proj.weight",
        "up": "mlp.up_proj.weight", "down": "mlp.down_proj.weight",
    }
    if c.qkv_bias:
        names.update(q_bias="self_attn.q_proj.bias", k_bias="self_attn.k_proj.bias", v_bias="self_attn.v_proj.bias")
    for i in range(c.n_layers):
        out += [HFTensor(f"model.layers.{i}.{n}", k, i) for k, n in names.items()]
    out.append(HFTensor("model.norm.weight", "final_norm", None))
    if not c.tie_embeddings:
        out.append(HFTensor("lm_head.weight", "lm_head", None))
    return out


def init_params(c: LlamaConfig, key: jax.Array, dtype=jnp.float32) -> dict[str, Any]:
    """Random parameters with generic (pairwise distinct) norm gains (see :func:`init_from_shapes`)."""
    return init_from_shapes(param_shapes(c), c.n_layers, key, dtype, gain_offset=c.norm_offset)


def _block(c: LlamaConfig, x: jax.Array, p: dict[str, jax.Array], cos, sin, mask) -> jax.Array:
    b, t, _ = x.shape
    h = L.rms_norm(x, p["attn_norm"], c.norm_eps, c.norm_offset)
    q = L.linear(h, p["q"], p.get("q_bias")).reshape(b, t, c.n_heads, c.head_dim)
    k = L.linear(h, p["k"], p.get("k_bias")).reshape(b, t, c.n_kv_heads, c.head_dim)
    v = L.linear(h, p["v"], p.get("v_bias")).reshape(b, t, c.n_kv_heads, c.head_dim)
    q, k = L.apply_rope(q, cos, sin), L.apply_rope(k, cos, sin)
    a = L.attention(q, k, v, mask).reshape(b, t, c.n_heads * c.head_dim)
    x = x + L.linear(a, p["o"])
    h = L.rms_norm(x, p["mlp_norm"], c.norm_eps, c.norm_offset)
    act = L.activation(c.activation)
    x = x + L.linear(act(L.linear(h, p["gate"])) * L.linear(h, p["up"]), p["down"])
    return x


def hidden_states(c: LlamaConfig, params: dict[str, Any], tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Residual stream before each block and after the last one, and the final-normed stream.

    Returns:
      ``stream`` (n_layers + 1, B, T, D) with index 0 the embeddings, index i after block i (pre
      final norm), and ``final`` (B, T, D) after the final norm.
    """
    t = tokens.shape[1]
    x = params["embed"][tokens]
    cos, sin = L.rope_cos_sin(jnp.arange(t), c.head_dim, c.rope_theta, c.rope_scaling_dict)
    mask = L.causal_mask(t, c.sliding_window)
    stream, x_last = L.run_blocks(lambda x, p: _block(c, x, p, cos, sin, mask), x, params["layers"])
    final = L.rms_norm(x_last, params["final_norm"], c.norm_eps, c.norm_offset)
    return stream, final


def unembed(c: LlamaConfig, params: dict[str, Any], final: jax.Array) -> jax.Array:
    """Logits ``(B, T, V)`` from the final-normed stream."""
    head = params["embed"] if c.tie_embeddings else params["lm_head"]
    return jnp.einsum("btd,vd->btv", final, head)
