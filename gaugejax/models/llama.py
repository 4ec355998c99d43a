"""Llama family: RMSNorm, RoPE, grouped-query attention, SwiGLU (Llama, Mistral, Qwen2, SmolLM).

Block: ``x = x + attn(rms(x)); x = x + mlp(rms(x))``; logits ``= rms(x) @ lm_head.T``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.models import layers as L
from gaugejax.models.base import ModelConfig
from gaugejax.models.table import GAIN, NONE, READ, WRITE, Param


@dataclass(frozen=True)
class LlamaConfig(ModelConfig):
    """Llama-family config (RMSNorm, RoPE, GQA, SwiGLU).

    Attributes:
      n_kv_heads: key/value heads (GQA when fewer than ``n_heads``).
      head_dim: per-head size (default ``d_model // n_heads``).
      rope_theta: RoPE base.
      rope_scaling: HF ``rope_scaling`` as JSON text (``linear``, ``dynamic``, ``llama3``) or ``None``.
      qkv_bias: q/k/v projections have biases (Qwen2).
      norm_offset: 1.0 for ``(1 + scale)`` gains (Gemma-style), else 0.0.
      sliding_window: attention window (Mistral), or ``None``.
      max_positions: HF ``max_position_embeddings``.
    """

    n_kv_heads: int = 4
    head_dim: int = 16
    rope_theta: float = 10000.0
    rope_scaling: str | None = None
    qkv_bias: bool = False
    norm_offset: float = 0.0
    sliding_window: int | None = None
    max_positions: int = 2048

    @property
    def norm(self) -> str:
        return "rmsnorm"

    @property
    def rope_scaling_dict(self) -> dict | None:
        return None if self.rope_scaling is None else json.loads(self.rope_scaling)


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


_L = "model.layers.{i}."
_B = "blk.{i}."


def params(c: LlamaConfig) -> list[Param]:
    """The parameter table (shapes, gauge roles, HF keys, GGUF names, shardable axes)."""
    d, f, q, kv, v = c.d_model, c.d_ff, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.vocab_size
    table = [
        Param("embed", (v, d), READ, "model.embed_tokens.weight", shard=0, gguf="token_embd.weight"),
        Param("attn_norm", (d,), GAIN, _L + "input_layernorm.weight", gguf=_B + "attn_norm.weight"),
        Param("q", (q, d), READ, _L + "self_attn.q_proj.weight", shard=0, gguf=_B + "attn_q.weight"),
        Param("k", (kv, d), READ, _L + "self_attn.k_proj.weight", shard=0, gguf=_B + "attn_k.weight"),
        Param("v", (kv, d), READ, _L + "self_attn.v_proj.weight", shard=0, gguf=_B + "attn_v.weight"),
        Param("o", (d, q), WRITE, _L + "self_attn.o_proj.weight", shard=1, gguf=_B + "attn_output.weight"),
        Param("mlp_norm", (d,), GAIN, _L + "post_attention_layernorm.weight", gguf=_B + "ffn_norm.weight"),
        Param("gate", (f, d), READ, _L + "mlp.gate_proj.weight", shard=0, gguf=_B + "ffn_gate.weight"),
        Param("up", (f, d), READ, _L + "mlp.up_proj.weight", shard=0, gguf=_B + "ffn_up.weight"),
        Param("down", (d, f), WRITE, _L + "mlp.down_proj.weight", shard=1, gguf=_B + "ffn_down.weight"),
    ]
    if c.qkv_bias:
        table += [Param("q_bias", (q,), NONE, _L + "self_attn.q_proj.bias", shard=0, gguf=_B + "attn_q.bias"),
                  Param("k_bias", (kv,), NONE, _L + "self_attn.k_proj.bias", shard=0, gguf=_B + "attn_k.bias"),
                  Param("v_bias", (kv,), NONE, _L + "self_attn.v_proj.bias", shard=0, gguf=_B + "attn_v.bias")]
    table.append(Param("final_norm", (d,), GAIN, "model.norm.weight", gguf="output_norm.weight"))
    if not c.tie_embeddings:
        table.append(Param("lm_head", (v, d), READ, "lm_head.weight", shard=0, gguf="output.weight"))
    return table


def context(c: LlamaConfig, t: int) -> dict[str, jax.Array]:
    """RoPE ``cos``/``sin`` and the causal (sliding-window) mask for ``t`` positions."""
    cos, sin = L.rope_cos_sin(jnp.arange(t), c.head_dim, c.rope_theta, c.rope_scaling_dict)
    return {"cos": cos, "sin": sin, "mask": L.causal_mask(t, c.sliding_window)}


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
    a = L.attention(q, k, v, ctx["mask"]).reshape(b, t, c.n_heads * c.head_dim)
    x = x + L.linear(a, p["o"])
    h = L.rms_norm(x, p["mlp_norm"], c.norm_eps, c.norm_offset)
    act = L.activation(c.activation)
    return x + L.linear(act(L.linear(h, p["gate"])) * L.linear(h, p["up"]), p["down"])


def final_norm(c: LlamaConfig, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final RMSNorm."""
    return L.rms_norm(x, p["final_norm"], c.norm_eps, c.norm_offset)
