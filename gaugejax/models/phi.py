"""Phi-1 / Phi-1.5 / Phi-2 (``PhiForCausalLM``): LayerNorm, parallel block, partial rotary, dense biases.

Block: ``h = ln(x); x = x + attn(h) + mlp(h)`` with biases on every projection; logits
``= ln_f(x) @ lm_head.T + b``. Rotary acts on the first ``partial_rotary_factor · head_dim`` dims
of each head (half-split layout). Optional per-head LayerNorms on queries and keys
(``qk_layernorm``) act on ``head_dim``, not on the stream. Gauge group ``S_d × {±1}``: the
attention output and MLP output biases are stream vectors (``VECTOR``); q/k/v, ``fc1`` and head
biases are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

from gaugejax.models import lnshared as S
from gaugejax.models import table as T
from gaugejax.models.config_keys import Keys, get_bool
from gaugejax.models.lnshared import embed, final_norm, rotary_context as context  # noqa: F401  (its pieces)
from gaugejax.models.table import NONE, Param


@dataclass(frozen=True)
class PhiConfig(S.RotaryDecoderConfig):
    """Phi-2 config (its q/k LayerNorms have biases)."""

    family: str = "phi"
    model_type: str = "phi"
    activation: str = "gelu_new"
    rotary_pct: float = 0.5


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
    fields = S.decoder_fields(cfg, nh, activation="gelu_new", tie=False, max_positions=2048)
    theta, partial = S.rotary_fraction(cfg, d // nh, 0.5, allow_empty=True)
    return PhiConfig(**S.hf_sizes(cfg, d, nh), **fields, rope_theta=theta, rotary_pct=partial,
                     qk_layernorm=get_bool(cfg, "qk_layernorm", False), hf_extra=KEYS.extra(cfg))


def config_to_hf(c: PhiConfig) -> dict:
    """The Hugging Face ``config.json`` dict of a config."""
    cfg = S.decoder_to_hf(c, "PhiForCausalLM")
    cfg.update(qk_layernorm=c.qk_layernorm, rope_parameters=S.partial_rope_to_hf(c))
    return cfg


_L = "model.layers.{i}."


def params(c: PhiConfig) -> list[Param]:
    """The parameter table."""
    d, f, v, hd = c.d_model, c.d_ff, c.vocab_size, c.head_dim
    kv = c.n_kv_heads * hd
    a = _L + "self_attn."
    table = [
        *T.embed_rows(c, "model.embed_tokens.weight"),
        *S.ln_rows("norm", d, _L + "input_layernorm"),
        *S.biased_attention_rows(d, kv, [a + n for n in ("q_proj", "k_proj", "v_proj", "dense")]),
    ]
    if c.qk_layernorm:  # over head_dim: not residual gains
        table += [Param(f"{n}_norm{s}", (hd,), NONE, a + f"{n}_layernorm.{w}")
                  for n in ("q", "k") for s, w in (("", "weight"), ("_bias", "bias"))]
    return table + [
        *S.biased_mlp_rows(d, f, _L + "mlp.fc1", _L + "mlp.fc2", ("fc1", "fc2")),
        *S.ln_rows("final_norm", d, "model.final_layernorm"),
        *S.head_rows(c),
        Param("lm_head_bias", (v,), NONE, "lm_head.bias", shard=0),
    ]


def block(c: PhiConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``h = ln(x); x + attn(h) + mlp(h)``."""
    h = S.ln(c, p, "norm", x)
    return x + S.rotary_attention(p, *S.decoder_heads(c, p, h), ctx) + S.biased_mlp(c, p, h, "fc1", "fc2")
