"""Cohere (Command-R): bias-free LayerNorm, parallel block, interleaved rotary, scaled logits.

Block: ``h = ln(x); x = x + attn(h) + mlp(h)`` with a SwiGLU MLP; logits
``= logit_scale · ln(x) @ embed.T`` (tied by default). The LayerNorm has no bias but still
subtracts the mean, so the gauge group is ``S_d × {±1}``, not ``B_d``. Rotary rotates adjacent
pairs ``(2i, 2i + 1)`` of each head (GPT-J's layout). Optional per-head q/k LayerNorms
(``use_qk_norm``) carry one gain per head, ``(heads, head_dim)``, acting on heads, not the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from gaugejax.models import layers as L
from gaugejax.models import lnshared as S
from gaugejax.models.base import ModelConfig
from gaugejax.models import table as T
from gaugejax.models.config_keys import Keys, get_bool, get_float, get_int, refuse, rope_from_hf, rope_source
from gaugejax.models.lnshared import embed  # noqa: F401  (this family's forward piece)
from gaugejax.models.table import GAIN, NONE, Param


@dataclass(frozen=True)
class CohereConfig(ModelConfig):
    """Cohere config.

    Attributes:
      n_kv_heads, head_dim: GQA key/value heads and per-head size.
      rope_theta: RoPE base.
      qk_norm: per-head LayerNorms (no bias) on queries and keys.
      attn_bias: q/k/v/o projections have biases.
      max_positions: HF ``max_position_embeddings``.
    """

    family: str = "cohere"
    model_type: str = "cohere"
    tie_embeddings: bool = True
    logit_scale: float = 0.0625
    n_kv_heads: int = 4
    head_dim: int = 16
    rope_theta: float = 10000.0
    qk_norm: bool = False
    attn_bias: bool = False
    max_positions: int = 8192

    @property
    def norm(self) -> str:
        return "layernorm"


KEYS = Keys(
    computed={"vocab_size", "hidden_size", "intermediate_size", "logit_scale", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings",
              "layer_norm_eps", "tie_word_embeddings", "rope_parameters", "rope_scaling", "rope_theta",
              "attention_bias", "use_qk_norm"},
)
"""The ``config.json`` keys computed (everything else but the common inert keys is refused)."""


def config_from_hf(cfg: dict) -> CohereConfig:
    """Builds the config from a Hugging Face Cohere ``config.json`` dict (closed world: :data:`KEYS`)."""
    KEYS.check(cfg)
    d, nh = get_int(cfg, "hidden_size"), get_int(cfg, "num_attention_heads")
    head_dim = get_int(cfg, "head_dim", None, none_ok=True) or d // nh
    if head_dim % 2:
        refuse(cfg, "head_dim", f"head size {head_dim} must be even (RoPE rotates pairs)")
    fields = S.decoder_fields(cfg, nh, activation="silu", tie=True, max_positions=8192)
    theta, _, partial = rope_from_hf(cfg, kinds=("default",))
    if partial != 1.0:
        refuse(cfg, rope_source(cfg), "partial_rotary_factor != 1 is not computed for Cohere")
    return CohereConfig(
        **S.hf_sizes(cfg, d, nh),
        **fields,
        head_dim=head_dim,
        logit_scale=get_float(cfg, "logit_scale", 0.0625),
        rope_theta=theta,
        qk_norm=get_bool(cfg, "use_qk_norm", False),
        attn_bias=get_bool(cfg, "attention_bias", False),
        hf_extra=KEYS.extra(cfg),
    )


def config_to_hf(c: CohereConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = S.decoder_to_hf(c, "CohereForCausalLM")
    cfg.update(logit_scale=c.logit_scale, head_dim=c.head_dim, attention_bias=c.attn_bias, use_qk_norm=c.qk_norm,
               rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta})
    return cfg


_L = "model.layers.{i}."


def params(c: CohereConfig) -> list[Param]:
    """The parameter table."""
    d, a = c.d_model, _L + "self_attn."
    table = [*T.embed_rows(c, "model.embed_tokens.weight"), Param("norm", (d,), GAIN, _L + "input_layernorm.weight"),
             *T.gqa_attention_rows(c, a, qkv_bias=c.attn_bias, o_bias=c.attn_bias)]
    if c.qk_norm:  # one gain per head over head_dim: not residual gains
        table += [Param("q_norm", (c.n_heads, c.head_dim), NONE, a + "q_norm.weight", shard=0),
                  Param("k_norm", (c.n_kv_heads, c.head_dim), NONE, a + "k_norm.weight", shard=0)]
    return [*table, *T.gated_mlp_rows(_L + "mlp.", d, c.d_ff), Param("final_norm", (d,), GAIN, "model.norm.weight"),
            *S.head_rows(c)]


def context(c: CohereConfig, t: int) -> dict[str, jax.Array]:
    """Rotary ``cos``/``sin`` and the causal mask for ``t`` positions."""
    return S.rope_context(t, c.head_dim, c.rope_theta)


def block(c: CohereConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``h = ln(x); x + attn(h) + mlp(h)``."""
    h = L.layer_norm(x, p["norm"], None, c.norm_eps)
    q, k, v = S.split_heads(c, p, h)
    if c.qk_norm:
        q, k = L.layer_norm(q, p["q_norm"], None, c.norm_eps), L.layer_norm(k, p["k_norm"], None, c.norm_eps)
    return x + S.rotary_attention(p, q, k, v, ctx, rope=L.apply_rope_interleaved) + S.gated_mlp(c, p, h)


def final_norm(c: CohereConfig, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final (bias-free) LayerNorm."""
    return L.layer_norm(x, p["final_norm"], None, c.norm_eps)
