"""Phi-1 / Phi-1.5 / Phi-2 (``PhiForCausalLM``): LayerNorm, parallel block, partial rotary, dense biases.

Block: ``h = ln(x); x = x + attn(h) + mlp(h)`` with biases on every projection; logits
``= ln_f(x) @ lm_head.T + b``. Rotary acts on the first ``partial_rotary_factor · head_dim`` dims
of each head (half-split layout). Optional per-head LayerNorms on queries and keys
(``qk_layernorm``) act on ``head_dim``, not on the stream. Gauge group ``S_d × {±1}``: the
attention output and MLP output biases are stream vectors (``VECTOR``); q/k/v, ``fc1`` and head
biases are untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.models import layers as L
from gaugejax.models.base import ModelConfig
from gaugejax.models.config_keys import Keys, get_bool, get_choice, get_float, get_int, refuse, rope_from_hf
from gaugejax.models.table import GAIN, NONE, READ, VECTOR, WRITE, Param


@dataclass(frozen=True)
class PhiConfig(ModelConfig):
    """Phi-2 config.

    Attributes:
      n_kv_heads: key/value heads.
      rope_theta: RoPE base; rotary_pct: the rotated fraction of each head.
      qk_layernorm: LayerNorm (with bias) on each query and key head.
      max_positions: HF ``max_position_embeddings``.
    """

    family: str = "phi"
    model_type: str = "phi"
    activation: str = "gelu_new"
    n_kv_heads: int = 4
    rope_theta: float = 10000.0
    rotary_pct: float = 0.5
    qk_layernorm: bool = False
    max_positions: int = 2048

    @property
    def norm(self) -> str:
        return "layernorm"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_pct)


KEYS = Keys(
    computed={"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "hidden_act", "max_position_embeddings", "layer_norm_eps",
              "tie_word_embeddings", "rope_parameters", "rope_scaling", "rope_theta", "partial_rotary_factor",
              "qk_layernorm"},
    inert={"resid_pdrop", "embd_pdrop"},
)
"""The ``config.json`` keys computed or inert (everything else is refused)."""


def config_from_hf(cfg: dict) -> PhiConfig:
    """Builds the config from a Hugging Face Phi ``config.json`` dict (closed world: :data:`KEYS`)."""
    KEYS.check(cfg)
    d, nh = get_int(cfg, "hidden_size"), get_int(cfg, "num_attention_heads")
    if d % nh:
        refuse(cfg, "num_attention_heads", f"the width {d} is not a multiple of {nh} heads")
    nkv = get_int(cfg, "num_key_value_heads", None, none_ok=True) or nh
    if nh % nkv:
        refuse(cfg, "num_key_value_heads", f"{nh} query heads are not a multiple of {nkv} key/value heads")
    theta, _, partial = rope_from_hf(cfg, partial_key="partial_rotary_factor", default_partial=0.5,
                                     kinds=("default",))
    if not 0 < partial <= 1 or int(d // nh * partial) % 2:
        refuse(cfg, "partial_rotary_factor", f"the rotated part of a {d // nh}-wide head must be even and non-empty")
    return PhiConfig(
        vocab_size=get_int(cfg, "vocab_size"),
        d_model=d,
        n_layers=get_int(cfg, "num_hidden_layers"),
        n_heads=nh,
        n_kv_heads=nkv,
        d_ff=get_int(cfg, "intermediate_size"),
        norm_eps=get_float(cfg, "layer_norm_eps", 1e-5),
        tie_embeddings=get_bool(cfg, "tie_word_embeddings", False),
        activation=get_choice(cfg, "hidden_act", "gelu_new", L.ACTIVATIONS),
        rope_theta=theta,
        rotary_pct=partial,
        qk_layernorm=get_bool(cfg, "qk_layernorm", False),
        max_positions=get_int(cfg, "max_position_embeddings", 2048),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: PhiConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = json.loads(c.hf_extra)
    cfg.pop("rope_scaling", None)
    cfg.update(
        model_type="phi", architectures=["PhiForCausalLM"], vocab_size=c.vocab_size, hidden_size=c.d_model,
        intermediate_size=c.d_ff, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, hidden_act=c.activation, max_position_embeddings=c.max_positions,
        layer_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings, qk_layernorm=c.qk_layernorm,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta, "partial_rotary_factor": c.rotary_pct},
    )
    return cfg


_L = "model.layers.{i}."


def params(c: PhiConfig) -> list[Param]:
    """The parameter table."""
    d, f, v, hd = c.d_model, c.d_ff, c.vocab_size, c.head_dim
    kv = c.n_kv_heads * hd
    a = _L + "self_attn."
    table = [
        Param("embed", (v, d), READ, "model.embed_tokens.weight", shard=0),
        Param("norm", (d,), GAIN, _L + "input_layernorm.weight"),
        Param("norm_bias", (d,), VECTOR, _L + "input_layernorm.bias"),
        Param("q", (d, d), READ, a + "q_proj.weight", shard=0),
        Param("q_bias", (d,), NONE, a + "q_proj.bias", shard=0),
        Param("k", (kv, d), READ, a + "k_proj.weight", shard=0),
        Param("k_bias", (kv,), NONE, a + "k_proj.bias", shard=0),
        Param("v", (kv, d), READ, a + "v_proj.weight", shard=0),
        Param("v_bias", (kv,), NONE, a + "v_proj.bias", shard=0),
        Param("o", (d, d), WRITE, a + "dense.weight", shard=1),
        Param("o_bias", (d,), VECTOR, a + "dense.bias"),
    ]
    if c.qk_layernorm:  # over head_dim: not residual gains
        table += [Param(f"{n}_norm{s}", (hd,), NONE, a + f"{n}_layernorm.{w}")
                  for n in ("q", "k") for s, w in (("", "weight"), ("_bias", "bias"))]
    table += [
        Param("fc1", (f, d), READ, _L + "mlp.fc1.weight", shard=0),
        Param("fc1_bias", (f,), NONE, _L + "mlp.fc1.bias", shard=0),
        Param("fc2", (d, f), WRITE, _L + "mlp.fc2.weight", shard=1),
        Param("fc2_bias", (d,), VECTOR, _L + "mlp.fc2.bias"),
        Param("final_norm", (d,), GAIN, "model.final_layernorm.weight"),
        Param("final_norm_bias", (d,), VECTOR, "model.final_layernorm.bias"),
    ]
    if not c.tie_embeddings:
        table.append(Param("lm_head", (v, d), READ, "lm_head.weight", shard=0))
    table.append(Param("lm_head_bias", (v,), NONE, "lm_head.bias", shard=0))
    return table


def context(c: PhiConfig, t: int) -> dict[str, jax.Array]:
    """Partial-rotary ``cos``/``sin`` and the causal mask for ``t`` positions."""
    cos, sin = L.rope_cos_sin(jnp.arange(t), c.rotary_dim, c.rope_theta, None)
    return {"cos": cos, "sin": sin, "mask": L.causal_mask(t)}


def embed(c: PhiConfig, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Token embeddings ``(B, T, D)``."""
    return p["embed"][tokens]


def block(c: PhiConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``h = ln(x); x + attn(h) + mlp(h)``."""
    b, t, d = x.shape
    h = L.layer_norm(x, p["norm"], p["norm_bias"], c.norm_eps)
    q = L.linear(h, p["q"], p["q_bias"]).reshape(b, t, c.n_heads, c.head_dim)
    k = L.linear(h, p["k"], p["k_bias"]).reshape(b, t, c.n_kv_heads, c.head_dim)
    v = L.linear(h, p["v"], p["v_bias"]).reshape(b, t, c.n_kv_heads, c.head_dim)
    if c.qk_layernorm:
        q = L.layer_norm(q, p["q_norm"], p["q_norm_bias"], c.norm_eps)
        k = L.layer_norm(k, p["k_norm"], p["k_norm_bias"], c.norm_eps)
    q, k = L.apply_rope(q, ctx["cos"], ctx["sin"]), L.apply_rope(k, ctx["cos"], ctx["sin"])
    attn = L.linear(L.attention(q, k, v, ctx["mask"]).reshape(b, t, d), p["o"], p["o_bias"])
    act = L.activation(c.activation)
    return x + attn + L.linear(act(L.linear(h, p["fc1"], p["fc1_bias"])), p["fc2"], p["fc2_bias"])


def final_norm(c: PhiConfig, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final LayerNorm."""
    return L.layer_norm(x, p["final_norm"], p["final_norm_bias"], c.norm_eps)
