"""Llama family: RMSNorm, RoPE, grouped-query attention, SwiGLU (Llama, Mistral, Qwen2, SmolLM).

Block: ``x = x + attn(rms(x)); x = x + mlp(rms(x))``; logits ``= rms(x) @ lm_head.T``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.errors import CheckpointError
from gaugejax.models import dense as D
from gaugejax.models import layers as L
from gaugejax.models import table as T
from gaugejax.models.config_keys import (ROPE_KEYS, Keys, get_bool, get_choice, get_int, refuse, rope_from_hf,
                                         rope_source)
from gaugejax.models.table import GAIN, READ, Param


@dataclass(frozen=True)
class LlamaConfig(D.RMSNormConfig):
    """Llama-family config (RMSNorm, RoPE, GQA, SwiGLU); RoPE scaling ``linear``, ``dynamic``,
    ``llama3``, ``yarn`` or ``longrope``.

    Attributes:
      n_kv_heads: key/value heads (GQA when fewer than ``n_heads``).
      qkv_bias: q/k/v projections have biases (Qwen2; Llama's ``attention_bias``).
      o_bias: the output projection has a bias too (Llama's ``attention_bias``).
      mlp_bias: gate/up/down projections have biases (Llama's ``mlp_bias``).
      norm_offset: 1.0 for ``(1 + scale)`` gains (Gemma-style), else 0.0.
      sliding_window: attention window (Mistral, Qwen2), or ``None``.
      sliding_layers: the layers that use the window (Qwen2's ``max_window_layers`` /
        ``layer_types``); ``None``: every layer.
    """

    n_kv_heads: int = 4
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    norm_offset: float = 0.0
    sliding_layers: tuple[int, ...] | None = None


_COMMON = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
           "intermediate_size", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "tie_word_embeddings",
           "hidden_act", "max_position_embeddings", "head_dim", "partial_rotary_factor"}
KEYS: dict[str, Keys] = {
    "llama": Keys(computed=_COMMON | {"attention_bias", "mlp_bias"},
                  inert={"pretraining_tp", "is_llama_config", "transformers.js_config"},
                  fixed={"rope_interleaved": (False,)}),
    "mistral": Keys(computed=_COMMON | {"sliding_window"}),
    "qwen2": Keys(computed=_COMMON | {"use_sliding_window", "sliding_window", "max_window_layers",
                                      "layer_types"}, fixed={"use_mrope": (False,)}),
}
"""Per ``model_type``: the ``config.json`` keys computed, inert or fixed (everything else is refused).

``pretraining_tp`` only split matmuls in old transformers (the same function); Qwen2's q/k/v
always have biases (its config has no ``attention_bias``). ``partial_rotary_factor`` (top level or
in ``rope_parameters``) is ignored by these models' plain RoPE (the whole head rotates) and makes
every scaled RoPE type fail in transformers unless it still covers the whole head.

Keys of other tools that transformers' ``models/llama`` / ``models/qwen2`` code never reads
(SmolLM2's and Qwen2.5's published files): ``is_llama_config`` (a nanotron export marker) and
``transformers.js_config`` (browser runtime settings) are inert; ``rope_interleaved`` (nanotron's
RoPE layout) and Qwen2.5's ``use_mrope`` (Qwen2-VL's multimodal RoPE) are accepted only at
``false``, the layout transformers computes; ``true`` would mean a checkpoint made for another
RoPE than the one transformers applies, so it stays refused."""
_ARCH = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _sliding_layers(cfg: dict, mt: str, n_layers: int) -> tuple[int | None, tuple[int, ...] | None]:
    """``(window, layers it applies to or None for all)`` as transformers resolves them per model type."""
    if mt == "mistral":
        return get_int(cfg, "sliding_window", 4096, none_ok=True), None
    if mt != "qwen2" or not get_bool(cfg, "use_sliding_window", False):
        return None, None
    window = get_int(cfg, "sliding_window", 4096, none_ok=True)
    types = cfg.get("layer_types")
    if types is None:
        start = get_int(cfg, "max_window_layers", 28, low=0)
        types = ["sliding_attention" if i >= start else "full_attention" for i in range(n_layers)]
    if (not isinstance(types, list) or len(types) != n_layers
            or not set(types) <= {"sliding_attention", "full_attention"}):
        refuse(cfg, "layer_types", f"expected {n_layers} entries of sliding_attention / full_attention")
    layers = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    return (window, layers) if window is not None and layers else (None, None)


def _rope(cfg: dict, head_dim: int) -> tuple[float, dict | None]:
    """``(theta, scaling or None)``: every RoPE type of transformers' Llama rotary module."""
    theta, rope, partial = rope_from_hf(cfg, partial_key="partial_rotary_factor", kinds=tuple(ROPE_KEYS))
    kind = "default" if rope is None else rope["rope_type"]
    if kind != "default" and int(head_dim * partial) != head_dim:
        refuse(cfg, rope_source(cfg), f"partial_rotary_factor={partial} with {kind} RoPE rotates "
                                       f"{int(head_dim * partial)} of {head_dim} head dims, which transformers' Llama "
                                       "cannot run; use 1.0")
    if kind == "dynamic" and head_dim <= 2:
        refuse(cfg, rope_source(cfg), f"dynamic RoPE needs a head size > 2, got {head_dim}")
    if kind == "longrope":
        for key in ("short_factor", "long_factor"):
            if len(rope[key]) != head_dim // 2:
                refuse(cfg, rope_source(cfg), f"longrope {key} has {len(rope[key])} entries; a {head_dim}-wide "
                                               f"head needs {head_dim // 2}")
    return theta, rope


def config_from_hf(cfg: dict) -> LlamaConfig:
    """Builds the config from a Hugging Face ``config.json`` dict (closed world: see :data:`KEYS`)."""
    mt = cfg.get("model_type", "llama")
    KEYS[mt].check(cfg)
    fields = D.gqa_fields(cfg, {"rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings":
                                {"mistral": 131072, "qwen2": 32768}.get(mt, 2048)})
    theta, rope = _rope(cfg, fields["head_dim"])
    window, sliding_layers = _sliding_layers(cfg, mt, fields["n_layers"])
    return LlamaConfig(
        family="llama",
        model_type=mt,
        **fields,
        d_ff=get_int(cfg, "intermediate_size"),
        rope_theta=theta,
        rope_scaling=None if rope is None else json.dumps(rope, sort_keys=True),
        activation=get_choice(cfg, "hidden_act", "silu", L.ACTIVATIONS),
        qkv_bias=mt == "qwen2" or get_bool(cfg, "attention_bias", False),
        o_bias=mt == "llama" and get_bool(cfg, "attention_bias", False),
        mlp_bias=mt == "llama" and get_bool(cfg, "mlp_bias", False),
        sliding_window=window,
        sliding_layers=sliding_layers,
        hf_extra=KEYS[mt].extra(cfg),
    )


def config_to_hf(c: LlamaConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config (transformers builds the same function from it)."""
    if c.norm_offset != 0.0:
        raise CheckpointError("(1 + scale) RMSNorm gains have no Llama config.json form; save a Gemma-family model")
    cfg = D.gqa_to_hf(c, _ARCH.get(c.model_type, "LlamaForCausalLM"))
    cfg.update(intermediate_size=c.d_ff, rope_parameters=D.rope_to_hf(c.rope_theta, c.rope_scaling),
               hidden_act=c.activation)
    if c.model_type == "llama" and c.qkv_bias == c.o_bias:
        cfg.update(attention_bias=c.qkv_bias, mlp_bias=c.mlp_bias)
    elif (c.qkv_bias, c.o_bias) != (c.model_type == "qwen2", False):
        raise CheckpointError(f"{c.model_type} configs cannot express qkv_bias={c.qkv_bias}, o_bias={c.o_bias}")
    if c.mlp_bias and c.model_type != "llama":
        raise CheckpointError(f"{c.model_type} configs cannot express mlp_bias=True; use model_type llama")
    if c.model_type == "mistral":
        if c.sliding_layers is not None:
            raise CheckpointError("mistral configs window every layer; use model_type qwen2 for per-layer windows")
        cfg["sliding_window"] = c.sliding_window
    elif c.model_type == "qwen2":
        layers = range(c.n_layers) if c.sliding_layers is None else c.sliding_layers
        windowed = c.sliding_window is not None
        cfg.update(use_sliding_window=windowed, sliding_window=c.sliding_window,
                   max_window_layers=min(layers, default=c.n_layers) if windowed else cfg.get("max_window_layers", 28),
                   layer_types=["sliding_attention" if windowed and i in layers else "full_attention"
                                for i in range(c.n_layers)])
    elif c.sliding_window is not None:
        raise CheckpointError("llama configs have no sliding window; use model_type mistral or qwen2")
    return cfg


_L = "model.layers.{i}."
_B = "blk.{i}."


def params(c: LlamaConfig) -> list[Param]:
    """The parameter table (shapes, gauge roles, HF keys, GGUF names, shardable axes)."""
    d, f, q, kv, v = c.d_model, c.d_ff, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.vocab_size
    a, m = _L + "self_attn.", _L + "mlp."
    table = [
        *T.embed_rows(c, "model.embed_tokens.weight", gguf="token_embd.weight"),
        Param("attn_norm", (d,), GAIN, _L + "input_layernorm.weight", gguf=_B + "attn_norm.weight"),
        *T.attention_rows(a, d, q, kv, gguf=_B),
        Param("mlp_norm", (d,), GAIN, _L + "post_attention_layernorm.weight", gguf=_B + "ffn_norm.weight"),
        *T.gated_mlp_rows(m, d, f, gguf=_B),
        *T.attention_bias_rows(a, d, q, kv, qkv=c.qkv_bias, o=c.o_bias, gguf=_B),
    ]
    if c.mlp_bias:  # gate/up biases live in the MLP's hidden space; down's is written into the stream
        table += T.gated_mlp_bias_rows(m, d, f, gguf=_B)
    table.append(Param("final_norm", (d,), GAIN, "model.norm.weight", gguf="output_norm.weight"))
    if not c.tie_embeddings:
        table.append(Param("lm_head", (v, d), READ, "lm_head.weight", shard=0, gguf="output.weight"))
    return table


def context(c: LlamaConfig, t: int) -> dict[str, jax.Array]:
    """RoPE ``cos``/``sin`` and the causal mask (``window_mask`` too for per-layer windows)."""
    cos, sin = L.rope_cos_sin(jnp.arange(t), c.head_dim, c.rope_theta, c.rope_scaling_dict, c.max_positions)
    if c.sliding_layers is None:
        return {"cos": cos, "sin": sin, "mask": L.causal_mask(t, c.sliding_window)}
    windowed = jnp.isin(jnp.arange(c.n_layers), jnp.asarray(c.sliding_layers, jnp.int32))
    return {"cos": cos, "sin": sin, "mask": L.causal_mask(t), "window_mask": L.causal_mask(t, c.sliding_window),
            "windowed": windowed}


def embed(c: LlamaConfig, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Token embeddings ``(B, T, D)``."""
    return p["embed"][tokens]


def block(c: LlamaConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``x = x + attn(rms(x)); x = x + mlp(rms(x))``."""
    b, t, _ = x.shape
    h = L.rms_norm(x, p["attn_norm"], c.norm_eps, c.norm_offset)
    q = L.linear(h, p["q"], p.get("q_bias")).reshape(b, t, c.n_heads, c.head_dim)
    k = L.linear(h, p["k"], p.get("k_bias")).reshape(b, t, c.n_kv_heads, c.head_dim)
    v = L.linear(h, p["v"], p.get("v_bias")).reshape(b, t, c.n_kv_heads, c.head_dim)
    q, k = L.apply_rope(q, ctx["cos"], ctx["sin"]), L.apply_rope(k, ctx["cos"], ctx["sin"])
    mask = ctx["mask"] if "windowed" not in ctx else jnp.where(ctx["windowed"][ctx["layer"]], ctx["window_mask"],
                                                                ctx["mask"])
    a = L.attention(q, k, v, mask).reshape(b, t, c.n_heads * c.head_dim)
    x = x + L.linear(a, p["o"], p.get("o_bias"))
    h = L.rms_norm(x, p["mlp_norm"], c.norm_eps, c.norm_offset)
    act = L.activation(c.activation)
    gated = act(L.linear(h, p["gate"], p.get("gate_bias"))) * L.linear(h, p["up"], p.get("up_bias"))
    return x + L.linear(gated, p["down"], p.get("down_bias"))


def final_norm(c: LlamaConfig, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final RMSNorm."""
    return L.rms_norm(x, p["final_norm"], c.norm_eps, c.norm_offset)
