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

import jax

from gaugejax.models import layers as L
from gaugejax.models import lnshared as S
from gaugejax.models.config_keys import Keys, get_bool, get_choice, get_int, refuse, rope_from_hf
from gaugejax.models.lnshared import embed, final_norm  # noqa: F401  (this family's forward pieces)
from gaugejax.models.table import NONE, READ, WRITE, Param


@dataclass(frozen=True)
class PhiConfig(S.PartialRotaryConfig):
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
    d, nh = S.heads(cfg, "hidden_size", "num_attention_heads")
    nkv = S.kv_heads(cfg, nh)
    theta, _, partial = rope_from_hf(cfg, partial_key="partial_rotary_factor", default_partial=0.5,
                                     kinds=("default",))
    if not 0 < partial <= 1 or int(d // nh * partial) % 2:
        refuse(cfg, "partial_rotary_factor", f"the rotated part of a {d // nh}-wide head must be even and non-empty")
    return PhiConfig(
        **S.hf_sizes(cfg, d, nh),
        n_kv_heads=nkv,
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
        *S.ln_rows("norm", d, _L + "input_layernorm"),
        *S.biased_rows("q", (d, d), READ, a + "q_proj"),
        *S.biased_rows("k", (kv, d), READ, a + "k_proj"),
        *S.biased_rows("v", (kv, d), READ, a + "v_proj"),
        *S.biased_rows("o", (d, d), WRITE, a + "dense"),
    ]
    if c.qk_layernorm:  # over head_dim: not residual gains
        table += [Param(f"{n}_norm{s}", (hd,), NONE, a + f"{n}_layernorm.{w}")
                  for n in ("q", "k") for s, w in (("", "weight"), ("_bias", "bias"))]
    return table + [
        *S.biased_rows("fc1", (f, d), READ, _L + "mlp.fc1"),
        *S.biased_rows("fc2", (d, f), WRITE, _L + "mlp.fc2"),
        *S.ln_rows("final_norm", d, "model.final_layernorm"),
        *S.head_rows(c),
        Param("lm_head_bias", (v,), NONE, "lm_head.bias", shard=0),
    ]


def context(c: PhiConfig, t: int) -> dict[str, jax.Array]:
    """Partial-rotary ``cos``/``sin`` and the causal mask for ``t`` positions."""
    return S.rope_context(t, c.rotary_dim, c.rope_theta)


def block(c: PhiConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``h = ln(x); x + attn(h) + mlp(h)``."""
    h = S.ln(c, p, "norm", x)
    q, k, v = S.split_heads(c, p, h)
    if c.qk_layernorm:
        q, k = S.ln(c, p, "q_norm", q), S.ln(c, p, "k_norm", k)
    return x + S.rotary_attention(p, q, k, v, ctx) + S.biased_mlp(c, p, h, "fc1", "fc2")
