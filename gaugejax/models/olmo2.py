"""OLMo 2: no norm before attention or the MLP; an RMSNorm on each of their outputs; q/k normed whole.

Block: ``x = x + rms(attn(x)); x = x + rms(mlp(x))``, where attention RMS-normalises the whole
query and key projections (lengths ``n_heads·head_dim`` and ``n_kv_heads·head_dim``) before RoPE.

Gauge roles: the output norms are gains of the stream (``o``/``down`` write a vector that the
gauge permutes and signs; RMSNorm commutes with that, so only the gain is permuted). The q/k norms
scale ``q = W_q x``, which the gauge leaves unchanged: role NONE, even though ``n_heads·head_dim``
usually equals ``d`` and their length alone would pass for a residual gain.
"""

from __future__ import annotations

from typing import Any

import jax

from gaugejax.models import dense as D
from gaugejax.models.config_keys import Keys
from gaugejax.models.dense import DenseConfig, context, embed, final_norm  # noqa: F401  (the runner's pieces)
from gaugejax.models.table import GAIN, Param

KEYS = Keys(computed=D.COMMON_KEYS | {"hidden_act"})
"""The ``config.json`` keys computed (everything else but the common inert keys is refused)."""
_DEFAULTS = dict(vocab_size=50304, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False)
"""transformers' ``Olmo2Config`` defaults (no ``head_dim``: ``hidden_size // num_attention_heads``)."""


def config_from_hf(cfg: dict) -> DenseConfig:
    """The config of an ``olmo2`` ``config.json`` (closed world: see :data:`KEYS`)."""
    fields = D.common_fields(cfg, KEYS, _DEFAULTS, "olmo2")
    theta, scaling = D.rope(cfg)
    return DenseConfig(**fields, activation=D.activation(cfg, "hidden_act", "silu"), rope_theta=theta,
                       rope_scaling=scaling, qk_norm="proj")


def config_to_hf(c: DenseConfig) -> dict[str, Any]:
    """The ``config.json`` dict of a config."""
    cfg = D.common_to_hf(c, "Olmo2ForCausalLM")
    cfg.update(hidden_act=c.activation)
    return cfg


def params(c: DenseConfig) -> list[Param]:
    """The parameter table."""
    d = c.d_model
    return [D.embed_row(c), *D.attention_rows(c), *D.qk_norm_rows(c),
            Param("post_attn_norm", (d,), GAIN, "model.layers.{i}.post_attention_layernorm.weight"),
            *D.mlp_rows(c),
            Param("post_mlp_norm", (d,), GAIN, "model.layers.{i}.post_feedforward_layernorm.weight"),
            *D.head_rows(c, GAIN)]


def block(c: DenseConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``x = x + rms(attn(x)); x = x + rms(mlp(x))``."""
    x = x + D.rms(c, D.attention(c, p, x, ctx), p["post_attn_norm"])
    return x + D.rms(c, D.mlp(c, p, x), p["post_mlp_norm"])
