"""Granite (dense): Llama-style blocks with scalar multipliers on the embedding, the residual
branches, the attention scores and the logits.

Block: ``x = x + r · attn(rms(x)); x = x + r · mlp(rms(x))`` with ``r = residual_multiplier``;
embeddings times ``embedding_multiplier``; scores ``q·k · attention_multiplier`` (in place of
``1/sqrt(head_dim)``); logits divided by ``logits_scaling``. The multipliers are scalars, so the
gauge ignores them; the optional ``o``/``down`` biases are written into the stream (VECTOR).
"""

from __future__ import annotations

from typing import Any

from gaugejax.models import dense as D
from gaugejax.models.config_keys import Keys, get_bool, get_float
from gaugejax.models.dense import DenseConfig, context, embed, final_norm  # noqa: F401  (the runner's pieces)
from gaugejax.models.dense import pre_norm_block as block, pre_norm_params as params  # noqa: F401  (its table, block)

_MULTIPLIERS = ("embedding_multiplier", "residual_multiplier", "attention_multiplier", "logits_scaling")
KEYS = Keys(computed=D.COMMON_KEYS | {"hidden_act", "mlp_bias", *_MULTIPLIERS})
"""The ``config.json`` keys computed (everything else but the common inert keys is refused)."""
_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False)
"""transformers' ``GraniteConfig`` defaults (no ``head_dim``: ``hidden_size // num_attention_heads``)."""


def config_from_hf(cfg: dict) -> DenseConfig:
    """The config of a ``granite`` ``config.json`` (closed world: see :data:`KEYS`)."""
    fields = D.common_fields(cfg, KEYS, _DEFAULTS, "granite")
    theta, scaling = D.rope(cfg)
    m = {k: get_float(cfg, k, 1.0) for k in _MULTIPLIERS}
    return DenseConfig(**fields, activation=D.activation(cfg, "hidden_act", "silu"), rope_theta=theta,
                       rope_scaling=scaling, mlp_bias=get_bool(cfg, "mlp_bias", False),
                       embed_scale=m["embedding_multiplier"], residual_scale=m["residual_multiplier"],
                       query_scale=m["attention_multiplier"], logit_scale=1.0 / m["logits_scaling"])


def config_to_hf(c: DenseConfig) -> dict[str, Any]:
    """The ``config.json`` dict of a config."""
    cfg = D.common_to_hf(c, "GraniteForCausalLM")
    cfg.update(hidden_act=c.activation, mlp_bias=c.mlp_bias, embedding_multiplier=c.embed_scale,
               residual_multiplier=c.residual_scale, attention_multiplier=c.query_scale,
               logits_scaling=1.0 / c.logit_scale)
    return cfg
