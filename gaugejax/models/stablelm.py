"""StableLM (StableLM-2, StableLM-3B-4E1T, ``StableLmForCausalLM``): LayerNorm, partial rotary, SwiGLU.

Block: ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``, or in parallel ``x + attn(ln1(x)) +
mlp(ln1(x))`` (``use_parallel_residual``). Rotary acts on the first ``partial_rotary_factor ·
head_dim`` dims (half-split). Optional q/k biases and per-head q/k LayerNorms (one bias-free
LayerNorm per head, stored as one HF tensor per head and stacked here as ``(heads, head_dim)``;
they act on heads, not the stream). Gauge group ``S_d × {±1}``.
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
class StableLmConfig(ModelConfig):
    """StableLM config.

    Attributes:
      n_kv_heads: key/value heads.
      rope_theta: RoPE base; rotary_pct: the rotated fraction of each head.
      qkv_bias: q/k/v projections have biases.
      qk_layernorm: per-head LayerNorms on queries and keys.
      parallel_residual: attention and MLP read the same LayerNorm and add in parallel.
      max_positions: HF ``max_position_embeddings``.
    """

    family: str = "stablelm"
    model_type: str = "stablelm"
    n_kv_heads: int = 4
    rope_theta: float = 10000.0
    rotary_pct: float = 0.25
    qkv_bias: bool = False
    qk_layernorm: bool = False
    parallel_residual: bool = False
    max_positions: int = 4096

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
    computed={"vocab_size", "intermediate_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "hidden_act", "max_position_embeddings", "layer_norm_eps",
              "tie_word_embeddings", "rope_parameters", "rope_scaling", "rope_theta", "partial_rotary_factor",
              "use_qkv_bias", "qk_layernorm", "use_parallel_residual"},
    inert={"hidden_dropout"},
)
"""The ``config.json`` keys computed or inert (everything else is refused)."""


def config_from_hf(cfg: dict) -> StableLmConfig:
    """Builds the config from a Hugging Face StableLM ``config.json`` dict (closed world: :data:`KEYS`)."""
    KEYS.check(cfg)
    d, nh = get_int(cfg, "hidden_size"), get_int(cfg, "num_attention_heads")
    if d % nh:
        refuse(cfg, "num_attention_heads", f"the width {d} is not a multiple of {nh} heads")
    nkv = get_int(cfg, "num_key_value_heads", None, none_ok=True) or nh
    if nh % nkv:
        refuse(cfg, "num_key_value_heads", f"{nh} query heads are not a multiple of {nkv} key/value heads")
    theta, _, partial = rope_from_hf(cfg, partial_key="partial_rotary_factor", default_partial=0.25,
                                     kinds=("default",))
    if not 0 < partial <= 1 or int(d // nh * partial) % 2 or int(d // nh * partial) == 0:
        refuse(cfg, "partial_rotary_factor", f"the rotated part of a {d // nh}-wide head must be even and non-empty")
    return StableLmConfig(
        vocab_size=get_int(cfg, "vocab_size"),
        d_model=d,
        n_layers=get_int(cfg, "num_hidden_layers"),
        n_heads=nh,
        n_kv_heads=nkv,
        d_ff=get_int(cfg, "intermediate_size"),
        norm_eps=get_float(cfg, "layer_norm_eps", 1e-5),
        tie_embeddings=get_bool(cfg, "tie_word_embeddings", False),
        activation=get_choice(cfg, "hidden_act", "silu", L.ACTIVATIONS),
        rope_theta=theta,
        rotary_pct=partial,
        qkv_bias=get_bool(cfg, "use_qkv_bias", False),
        qk_layernorm=get_bool(cfg, "qk_layernorm", False),
        parallel_residual=get_bool(cfg, "use_parallel_residual", False),
        max_positions=get_int(cfg, "max_position_embeddings", 4096),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: StableLmConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = json.loads(c.hf_extra)
    cfg.pop("rope_scaling", None)
    cfg.update(
        model_type="stablelm", architectures=["StableLmForCausalLM"], vocab_size=c.vocab_size,
        intermediate_size=c.d_ff, hidden_size=c.d_model, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, hidden_act=c.activation, max_position_embeddings=c.max_positions,
        layer_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings, use_qkv_bias=c.qkv_bias,
        qk_layernorm=c.qk_layernorm, use_parallel_residual=c.parallel_residual,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta, "partial_rotary_factor": c.rotary_pct},
    )
    return cfg


_L = "model.layers.{i}."


def params(c: StableLmConfig) -> list[Param]:
    """The parameter table (per-head q/k LayerNorms are stacks of one HF tensor per head)."""
    d, f, v, hd = c.d_model, c.d_ff, c.vocab_size, c.head_dim
    kv = c.n_kv_heads * hd
    a = _L + "self_attn."
    table = [
        Param("embed", (v, d), READ, "model.embed_tokens.weight", shard=0),
        Param("attn_norm", (d,), GAIN, _L + "input_layernorm.weight"),
        Param("attn_norm_bias", (d,), VECTOR, _L + "input_layernorm.bias"),
        Param("q", (d, d), READ, a + "q_proj.weight", shard=0),
        Param("k", (kv, d), READ, a + "k_proj.weight", shard=0),
        Param("v", (kv, d), READ, a + "v_proj.weight", shard=0),
        Param("o", (d, d), WRITE, a + "o_proj.weight", shard=1),
    ]
    if c.qkv_bias:
        table += [Param("q_bias", (d,), NONE, a + "q_proj.bias", shard=0),
                  Param("k_bias", (kv,), NONE, a + "k_proj.bias", shard=0),
                  Param("v_bias", (kv,), NONE, a + "v_proj.bias", shard=0)]
    if c.qk_layernorm:
        table += [Param("q_norm", (c.n_heads, hd), NONE, a + "q_layernorm.norms.{e}.weight"),
                  Param("k_norm", (c.n_kv_heads, hd), NONE, a + "k_layernorm.norms.{e}.weight")]
    if not c.parallel_residual:
        table += [Param("mlp_norm", (d,), GAIN, _L + "post_attention_layernorm.weight"),
                  Param("mlp_norm_bias", (d,), VECTOR, _L + "post_attention_layernorm.bias")]
    table += [
        Param("gate", (f, d), READ, _L + "mlp.gate_proj.weight", shard=0),
        Param("up", (f, d), READ, _L + "mlp.up_proj.weight", shard=0),
        Param("down", (d, f), WRITE, _L + "mlp.down_proj.weight", shard=1),
        Param("final_norm", (d,), GAIN, "model.norm.weight"),
        Param("final_norm_bias", (d,), VECTOR, "model.norm.bias"),
    ]
    if not c.tie_embeddings:
        table.append(Param("lm_head", (v, d), READ, "lm_head.weight", shard=0))
    return table


def context(c: StableLmConfig, t: int) -> dict[str, jax.Array]:
    """Partial-rotary ``cos``/``sin`` and the causal mask for ``t`` positions."""
    cos, sin = L.rope_cos_sin(jnp.arange(t), c.rotary_dim, c.rope_theta, None)
    return {"cos": cos, "sin": sin, "mask": L.causal_mask(t)}


def embed(c: StableLmConfig, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Token embeddings ``(B, T, D)``."""
    return p["embed"][tokens]


def block(c: StableLmConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """Sequential ``x + attn(ln1(x))``, ``x + mlp(ln2(x))``, or parallel ``x + attn(ln1(x)) + mlp(ln1(x))``."""
    b, t, d = x.shape
    h = L.layer_norm(x, p["attn_norm"], p["attn_norm_bias"], c.norm_eps)
    q = L.linear(h, p["q"], p.get("q_bias")).reshape(b, t, c.n_heads, c.head_dim)
    k = L.linear(h, p["k"], p.get("k_bias")).reshape(b, t, c.n_kv_heads, c.head_dim)
    v = L.linear(h, p["v"], p.get("v_bias")).reshape(b, t, c.n_kv_heads, c.head_dim)
    if c.qk_layernorm:
        q, k = L.layer_norm(q, p["q_norm"], None, c.norm_eps), L.layer_norm(k, p["k_norm"], None, c.norm_eps)
    q, k = L.apply_rope(q, ctx["cos"], ctx["sin"]), L.apply_rope(k, ctx["cos"], ctx["sin"])
    attn = L.linear(L.attention(q, k, v, ctx["mask"]).reshape(b, t, d), p["o"])
    act = L.activation(c.activation)

    def mlp(z):
        return L.linear(act(L.linear(z, p["gate"])) * L.linear(z, p["up"]), p["down"])

    if c.parallel_residual:
        return x + attn + mlp(h)
    x = x + attn
    return x + mlp(L.layer_norm(x, p["mlp_norm"], p["mlp_norm_bias"], c.norm_eps))


def final_norm(c: StableLmConfig, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final LayerNorm."""
    return L.layer_norm(x, p["final_norm"], p["final_norm_bias"], c.norm_eps)
