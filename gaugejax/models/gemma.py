"""Gemma 1, 2 and 3 (text): ``(1 + w)`` RMSNorm gains, ``sqrt(d)``-scaled embeddings, GeGLU MLP.

* ``gemma``: ``x = x + attn(rms(x)); x = x + mlp(rms(x))``.
* ``gemma2``: sandwich norms, ``x = x + rms(attn(rms(x))); x = x + rms(mlp(rms(x)))``; attention
  scores scaled by ``query_pre_attn_scalar ** -0.5`` and soft-capped; logits soft-capped;
  sliding-window layers (every other one by default).
* ``gemma3_text``: Gemma 2 plus an RMSNorm over each q/k head, different RoPE bases for sliding
  (local) and full (global) layers, no attention soft-cap, five sliding layers in six by default.

Gauge roles: every residual-width norm is a GAIN of the stream (only its ``w`` permuted). The
post-attention/post-feedforward norms act on a block's output before it joins the stream:
``o``/``down`` write ``a = W h``, the gauge makes it ``signs · a[perm]``, and since RMSNorm's
scale is invariant under signed permutations, ``g[perm] ⊙ rms(signs · a[perm]) = signs ·
(g ⊙ rms(a))[perm]``: the output moves like the stream with ``g`` only permuted (a gain).
The q/k norms of Gemma 3 act on ``head_dim``: NONE. ``sqrt(d)`` and the soft-caps are scalars.
The multimodal ``gemma3`` checkpoint (a ``text_config`` beside a vision tower) is not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from gaugejax.models import dense as D
from gaugejax.models.config_keys import Keys, get_float, get_int, refuse
from gaugejax.models.dense import DenseConfig, context, embed, final_norm  # noqa: F401  (the runner's pieces)
from gaugejax.models.table import GAIN, Param


@dataclass(frozen=True)
class GemmaConfig(DenseConfig):
    """:class:`DenseConfig` plus ``query_pre_attn_scalar`` (Gemma 2/3; ``query_scale`` is its ``** -0.5``)."""

    query_pre_attn_scalar: int | None = None


_ARCH = {"gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}
_BASE = dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
             num_attention_heads=8, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6, tie_word_embeddings=True,
             max_position_embeddings=8192)
_DEFAULTS = {
    "gemma": dict(_BASE, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=16),
    "gemma2": dict(_BASE, final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
    "gemma3_text": dict(_BASE, vocab_size=262208, max_position_embeddings=131072, final_logit_softcapping=None,
                        attn_logit_softcapping=None),
}
"""transformers' config defaults per model type (used for absent keys)."""
_V2 = {"hidden_activation", "query_pre_attn_scalar", "sliding_window", "layer_types", "final_logit_softcapping",
       "attn_logit_softcapping"}
_CAUSAL = {"use_bidirectional_attention": (None, False)}
KEYS: dict[str, Keys] = {
    "gemma": Keys(computed=D.COMMON_KEYS | {"hidden_act"}, inert={"hidden_activation"}, fixed=_CAUSAL),
    "gemma2": Keys(computed=D.COMMON_KEYS | _V2, inert={"hidden_act", "cache_implementation", "sliding_window_size"},
                   fixed=_CAUSAL),
    "gemma3_text": Keys(computed=D.COMMON_KEYS | _V2 | {"rope_local_base_freq", "sliding_window_pattern"},
                        inert={"hidden_act", "cache_implementation", "_sliding_window_pattern"}, fixed=_CAUSAL),
}
"""Per ``model_type``: keys computed, inert (never read by that transformers class: Gemma 1 reads
``hidden_act``, Gemma 2/3 ``hidden_activation``) and fixed (bidirectional attention is refused)."""


def config_from_hf(cfg: dict) -> GemmaConfig:
    """The config of a ``gemma``, ``gemma2`` or ``gemma3_text`` ``config.json`` (closed world: :data:`KEYS`)."""
    mt = cfg.get("model_type")
    defaults = _DEFAULTS[mt]
    fields = D.common_fields(cfg, KEYS[mt], defaults, "gemma")
    fields.update(norm_offset=1.0, embed_scale=float(fields["d_model"]) ** 0.5)
    if mt == "gemma":
        act = D.activation(cfg, "hidden_act", "gelu_pytorch_tanh")
        theta, scaling = D.rope(cfg)
        return GemmaConfig(**fields, activation="gelu_pytorch_tanh" if act == "gelu" else act,  # as transformers
                           rope_theta=theta, rope_scaling=scaling)
    n = fields["n_layers"]
    every = 2 if mt == "gemma2" else get_int(cfg, "sliding_window_pattern", 6)
    sliding = D.layer_flags(cfg, "layer_types", n, "sliding_attention", [(i + 1) % every != 0 for i in range(n)])
    scalar = get_int(cfg, "query_pre_attn_scalar", 256)  # an int in transformers' config
    fields.update(activation=D.activation(cfg, "hidden_activation", "gelu_pytorch_tanh"),
                  sliding_window=get_int(cfg, "sliding_window", 4096, none_ok=True),
                  sliding_layers=sliding if any(sliding) else (), query_pre_attn_scalar=scalar,
                  query_scale=scalar ** -0.5, logit_softcap=_cap(cfg, "final_logit_softcapping", defaults))
    attn_cap = _cap(cfg, "attn_logit_softcapping", defaults)
    if mt == "gemma2":
        theta, scaling = D.rope(cfg)
        return D.check_sliding(GemmaConfig(**fields, rope_theta=theta, rope_scaling=scaling, attn_softcap=attn_cap))
    if attn_cap is not None:
        refuse(cfg, "attn_logit_softcapping", "transformers' Gemma 3 never applies it; set it to null")
    (theta, scaling), (local, local_scaling) = _gemma3_rope(cfg)
    return D.check_sliding(GemmaConfig(**fields, rope_theta=theta, rope_scaling=scaling, local_rope_theta=local,
                                       local_rope_scaling=local_scaling, qk_norm="head"))


def _cap(cfg: dict, key: str, defaults: dict) -> float | None:
    """A soft-cap: a positive number or null."""
    return None if cfg.get(key, defaults[key]) is None else get_float(cfg, key, defaults[key])


def _gemma3_rope(cfg: dict) -> tuple[tuple[float, str | None], tuple[float, str | None]]:
    """Global and local RoPE from ``rope_parameters`` keyed by layer type, or the legacy
    ``rope_theta`` (+ ``rope_scaling``) and ``rope_local_base_freq``, as transformers resolves them."""
    rp = cfg.get("rope_parameters")
    if rp is not None and (not isinstance(rp, dict) or not set(rp) <= {"full_attention", "sliding_attention"}):
        refuse(cfg, "rope_parameters", "Gemma 3 keys it by full_attention / sliding_attention")
    rp = rp or {}
    mt = cfg["model_type"]
    legacy = cfg.get("rope_scaling") or {}  # transformers merges it into the global RoPE
    if not isinstance(legacy, dict):
        refuse(cfg, "rope_scaling", "expected a JSON object")
    legacy = dict(legacy)
    if "type" in legacy:
        legacy["rope_type"] = legacy.pop("type")
    full = {"rope_theta": cfg.get("rope_theta", 1e6), **(rp.get("full_attention") or {}), **legacy}
    local = {"rope_theta": cfg.get("rope_local_base_freq", 1e4), **(rp.get("sliding_attention") or {})}
    return (D.rope({"model_type": mt, "rope_parameters": full}),
            D.rope({"model_type": mt, "rope_parameters": local}))


def config_to_hf(c: GemmaConfig) -> dict[str, Any]:
    """The ``config.json`` dict of a config."""
    cfg = D.common_to_hf(c, _ARCH[c.model_type])
    if c.model_type == "gemma":
        cfg.update(hidden_act=c.activation)
        return cfg
    cfg.update(hidden_activation=c.activation, query_pre_attn_scalar=c.query_pre_attn_scalar,
               sliding_window=c.sliding_window, layer_types=D.layer_types_to_hf(c),
               final_logit_softcapping=c.logit_softcap, attn_logit_softcapping=c.attn_softcap)
    if c.model_type == "gemma3_text":
        cfg["rope_parameters"] = {"full_attention": D.rope_to_hf(c.rope_theta, c.rope_scaling),
                                  "sliding_attention": D.rope_to_hf(c.local_rope_theta, c.local_rope_scaling)}
    return cfg


def _sandwich(c: GemmaConfig) -> bool:
    return c.model_type != "gemma"


def params(c: GemmaConfig) -> list[Param]:
    """The parameter table (Gemma 1's ``post_attention_layernorm`` is its pre-MLP norm)."""
    d, pre = c.d_model, "model.layers.{i}."
    if _sandwich(c):
        norms = [Param("post_attn_norm", (d,), GAIN, pre + "post_attention_layernorm.weight"),
                 Param("mlp_norm", (d,), GAIN, pre + "pre_feedforward_layernorm.weight"),
                 Param("post_mlp_norm", (d,), GAIN, pre + "post_feedforward_layernorm.weight")]
    else:
        norms = [Param("mlp_norm", (d,), GAIN, pre + "post_attention_layernorm.weight")]
    return [D.embed_row(c), Param("attn_norm", (d,), GAIN, pre + "input_layernorm.weight"),
            *D.attention_rows(c), *(D.qk_norm_rows(c) if c.qk_norm else []), *norms,
            *D.mlp_rows(c), *D.head_rows(c, GAIN)]


def block(c: GemmaConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``x = x + attn(rms(x)); x = x + mlp(rms(x))``, each output normed first in Gemma 2/3."""
    a = D.attention(c, p, D.rms(c, x, p["attn_norm"]), ctx)
    x = x + (D.rms(c, a, p["post_attn_norm"]) if _sandwich(c) else a)
    m = D.mlp(c, p, D.rms(c, x, p["mlp_norm"]))
    return x + (D.rms(c, m, p["post_mlp_norm"]) if _sandwich(c) else m)

