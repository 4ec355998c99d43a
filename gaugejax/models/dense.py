"""What the RMSNorm decoder families share (Qwen3, Gemma 1-3, OLMo2, Granite, SmolLM3; Llama, MoE, Phi-3 in part).

Each of those families is one module with one parameter table and one block function; the pieces
they have in common live here, written once:

* :class:`RMSNormConfig`: the fields of every RoPE, grouped-query RMSNorm decoder (Llama, the
  MoEs and Phi-3 build on it too, as on :func:`gqa_fields` and :func:`gqa_to_hf`);
* :class:`DenseConfig`: the config fields (per-layer sliding windows and RoPE, q/k norms, scalar
  multipliers), all static;
* closed-world reading of ``config.json`` (:func:`common_fields` checks a family's
  :class:`~gaugejax.models.config_keys.Keys`): every key it does not compute is refused unless it
  never changes the forward pass;
* table rows for the embedding, the attention and gated-MLP projections and the head;
* the forward pieces: :func:`context`, :func:`embed`, :func:`attention`, :func:`mlp`,
  :func:`final_norm`.

The gauge roles of the shared rows: ``q``/``k``/``v``/``gate``/``up`` read the stream (READ),
``o``/``down`` write it (WRITE) and their biases are VECTORs; q/k/v/gate/up biases and every q/k
norm live off the residual axis (NONE), whatever their length.

Example:
  >>> c = DenseConfig(d_model=8, n_heads=2, n_kv_heads=1, head_dim=4, sliding_layers=(True, False))
  >>> [p.name for p in attention_rows(c)]
  ['q', 'k', 'v', 'o']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from gaugejax.errors import CheckpointError
from gaugejax.models import layers as L
from gaugejax.models.base import ModelConfig
from gaugejax.models.config_keys import (Keys, get_bool, get_choice, get_float, get_int, refuse, rope_from_hf,
                                         rope_source)
from gaugejax.models import table as T
from gaugejax.models.table import GAIN, NONE, READ, Param


@dataclass(frozen=True)
class RMSNormConfig(ModelConfig):
    """A RoPE, grouped-query RMSNorm decoder's config (Llama, the MoEs, Phi-3 and :class:`DenseConfig`).

    Attributes:
      n_kv_heads, head_dim: key/value heads (GQA) and per-head size.
      rope_theta, rope_scaling: RoPE base and HF scaling (JSON text of ``rope_parameters`` minus
        the base; ``None``: plain RoPE).
      sliding_window: attention window, or ``None``.
    """

    n_kv_heads: int = 2
    head_dim: int = 16
    rope_theta: float = 10000.0
    rope_scaling: str | None = None
    sliding_window: int | None = None

    @property
    def norm(self) -> str:
        return "rmsnorm"

    @property
    def rope_scaling_dict(self) -> dict | None:
        return None if self.rope_scaling is None else json.loads(self.rope_scaling)


@dataclass(frozen=True)
class DenseConfig(RMSNormConfig):
    """Config of a dense RMSNorm decoder (fields shared by the families built on this module).

    Attributes:
      rope_theta, rope_scaling: (see :class:`RMSNormConfig`) the RoPE of full-attention layers (all
        layers unless ``local_rope_theta``).
      local_rope_theta, local_rope_scaling: RoPE of sliding-window layers when it differs (Gemma 3).
      rope_layers: per layer, whether RoPE is applied (SmolLM3); empty: every layer.
      sliding_layers: per layer, whether the sliding window applies; empty: none.
      attn_bias, mlp_bias: q/k/v/o and gate/up/down projections have biases.
      qk_norm: ``"head"`` (RMSNorm over each head: Qwen3, Gemma 3), ``"proj"`` (over the whole
        q/k projection: OLMo2) or ``None``.
      query_scale: attention scores are ``q·k · query_scale`` (``None``: ``1/sqrt(head_dim)``).
      attn_softcap: attention scores soft-capped as ``cap · tanh(s / cap)`` (Gemma 2).
      norm_offset: 1.0 for ``(1 + scale)`` gains (Gemma), else 0.0.
      embed_scale: embeddings are multiplied by it (Gemma ``sqrt(d)``, Granite multiplier).
      residual_scale: each block's outputs are multiplied by it before the residual add (Granite).
    """

    local_rope_theta: float | None = None
    local_rope_scaling: str | None = None
    rope_layers: tuple[bool, ...] = ()
    sliding_layers: tuple[bool, ...] = ()
    attn_bias: bool = False
    mlp_bias: bool = False
    qk_norm: str | None = None
    query_scale: float | None = None
    attn_softcap: float | None = None
    norm_offset: float = 0.0
    embed_scale: float = 1.0
    residual_scale: float = 1.0


# ----------------------------------------------------------------------------------------------
# config.json, closed world (each family's :class:`Keys` table; the rules in :mod:`config_keys`)

COMMON_KEYS = frozenset({
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "rms_norm_eps", "tie_word_embeddings", "max_position_embeddings",
    "rope_parameters", "rope_theta", "rope_scaling", "attention_bias",
})
"""Keys every family here computes (read by :func:`common_fields`)."""


def _default(defaults: dict, key: str) -> tuple:
    return (defaults[key],) if key in defaults else ()


def gqa_fields(cfg: dict, defaults: dict, *, even_head: bool = True) -> dict[str, Any]:
    """The size fields of a RoPE, grouped-query RMSNorm decoder (every one but ``d_ff``), from the
    standard HF keys; refuses key/value heads that do not divide the heads and, with
    ``even_head``, an odd head size (RoPE rotates pairs).

    ``defaults`` holds transformers' default of each key, used when it is absent (a missing or
    null ``head_dim`` is ``hidden_size // num_attention_heads``, missing key/value heads are the heads).

    Example:
      >>> cfg = {"vocab_size": 9, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}
      >>> f = gqa_fields(cfg, {"rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 64})
      >>> f["head_dim"], f["n_kv_heads"]
      (4, 2)
    """
    d = get_int(cfg, "hidden_size", *_default(defaults, "hidden_size"))
    nh = get_int(cfg, "num_attention_heads", *_default(defaults, "num_attention_heads"))
    head_dim = get_int(cfg, "head_dim", defaults.get("head_dim"), none_ok=True) or d // nh
    if even_head and (head_dim < 2 or head_dim % 2):
        refuse(cfg, "head_dim", f"head size {head_dim} must be a positive even number (RoPE rotates pairs)")
    nkv = get_int(cfg, "num_key_value_heads", defaults.get("num_key_value_heads"), none_ok=True) or nh
    if nh % nkv:
        refuse(cfg, "num_key_value_heads", f"{nh} query heads are not a multiple of {nkv} key/value heads")
    return dict(
        d_model=d, n_heads=nh, n_kv_heads=nkv, head_dim=head_dim,
        vocab_size=get_int(cfg, "vocab_size", *_default(defaults, "vocab_size")),
        n_layers=get_int(cfg, "num_hidden_layers", *_default(defaults, "num_hidden_layers")),
        norm_eps=get_float(cfg, "rms_norm_eps", defaults["rms_norm_eps"]),
        tie_embeddings=get_bool(cfg, "tie_word_embeddings", defaults["tie_word_embeddings"]),
        max_positions=get_int(cfg, "max_position_embeddings", defaults["max_position_embeddings"]))


def common_fields(cfg: dict, keys: Keys, defaults: dict, family: str) -> dict[str, Any]:
    """:class:`DenseConfig` keyword arguments for the :data:`COMMON_KEYS`, closed world checked.

    Args:
      cfg: the ``config.json`` dict.
      keys: the model type's key table (checked here: unknown keys are refused).
      defaults: transformers' default of each key, used when it is absent (see :func:`gqa_fields`).
      family: the family name.
    """
    keys.check(cfg)
    return dict(gqa_fields(cfg, defaults), family=family, model_type=cfg["model_type"],
                d_ff=get_int(cfg, "intermediate_size", *_default(defaults, "intermediate_size")),
                attn_bias=get_bool(cfg, "attention_bias", False), hf_extra=keys.extra(cfg))


def activation(cfg: dict, key: str, default: str) -> str:
    """The MLP activation named by ``cfg[key]`` (one gaugejax computes)."""
    return get_choice(cfg, key, default, L.ACTIVATIONS)


def rope(cfg: dict, default_theta: float = 10000.0) -> tuple[float, str | None]:
    """``(theta, scaling JSON or None)`` as transformers 5 resolves ``rope_parameters`` / the legacy
    ``rope_theta`` + ``rope_scaling`` (``default_theta``: the config class's ``default_theta``);
    unsupported types and partial rotary factors are refused."""
    if "rope_theta" not in cfg:  # the fallback when rope_parameters has no base either
        cfg = {**cfg, "rope_theta": default_theta}
    theta, scaling, partial = rope_from_hf(cfg)
    if partial != 1.0:
        refuse(cfg, rope_source(cfg), "partial_rotary_factor != 1 is not computed for this model type")
    return theta, None if scaling is None else json.dumps(scaling, sort_keys=True)


def rope_to_hf(theta: float, scaling: str | None) -> dict:
    """The ``rope_parameters`` dict of ``(theta, scaling)``."""
    return {"rope_theta": theta, **(json.loads(scaling) if scaling else {"rope_type": "default"})}


def layer_flags(cfg: dict, key: str, n: int, on: Any, default: list[bool]) -> tuple[bool, ...]:
    """Per-layer flags ``entry == on`` from the list ``cfg[key]`` (``default`` when absent or null)."""
    given = cfg.get(key)
    if given is None:
        return tuple(default)
    allowed = ("full_attention", "sliding_attention") if key == "layer_types" else (0, 1)
    if not isinstance(given, list) or len(given) != n or any(x not in allowed or isinstance(x, bool) for x in given):
        refuse(cfg, key, f"expected {n} entries, each one of {', '.join(map(str, allowed))}")
    return tuple(x == on for x in given)


def gqa_to_hf(c: ModelConfig, architecture: str) -> dict[str, Any]:
    """The ``config.json`` entries of :func:`gqa_fields` (and the model type), over the inert keys kept at load."""
    cfg = json.loads(c.hf_extra)
    cfg.update(
        model_type=c.model_type, architectures=[architecture], vocab_size=c.vocab_size, hidden_size=c.d_model,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads,
        head_dim=c.head_dim, rms_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings,
        max_position_embeddings=c.max_positions)
    return cfg


def common_to_hf(c: DenseConfig, architecture: str) -> dict[str, Any]:
    """The ``config.json`` entries of the :data:`COMMON_KEYS` plus the inert keys kept at load."""
    cfg = gqa_to_hf(c, architecture)
    cfg.update(intermediate_size=c.d_ff, attention_bias=c.attn_bias,
               rope_parameters=rope_to_hf(c.rope_theta, c.rope_scaling))
    return cfg


def layer_types_to_hf(c: DenseConfig) -> list[str]:
    """HF ``layer_types`` of a config."""
    sliding = c.sliding_layers or (False,) * c.n_layers
    return ["sliding_attention" if s else "full_attention" for s in sliding]


def check_sliding(c: DenseConfig) -> DenseConfig:
    """Refuses sliding layers without a window; returns ``c``."""
    if any(c.sliding_layers) and not c.sliding_window:
        raise CheckpointError(f"{c.model_type} config layer_types has sliding_attention layers but no sliding_window")
    return c


# ----------------------------------------------------------------------------------------------
# table rows

_L = "model.layers.{i}."


def embed_row(c: DenseConfig) -> Param:
    """The token embedding (:func:`~gaugejax.models.table.embed_rows`)."""
    return T.embed_rows(c, "model.embed_tokens.weight")[0]


def attention_rows(c: DenseConfig) -> list[Param]:
    """q/k/v (READ), o (WRITE) and, with ``attn_bias``, their biases (q/k/v NONE, o VECTOR)."""
    return T.gqa_attention_rows(c, _L + "self_attn.", qkv_bias=c.attn_bias, o_bias=c.attn_bias)


def qk_norm_rows(c: DenseConfig) -> list[Param]:
    """q/k norm gains: over ``head_dim`` (``"head"``) or the whole projection (``"proj"``); NONE:
    they scale q and k, which the residual gauge leaves unchanged, even when their length is d."""
    q, kv = (c.head_dim, c.head_dim) if c.qk_norm == "head" else (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim)
    return [Param("q_norm", (q,), NONE, _L + "self_attn.q_norm.weight"),
            Param("k_norm", (kv,), NONE, _L + "self_attn.k_norm.weight")]


def mlp_rows(c: DenseConfig) -> list[Param]:
    """gate/up (READ), down (WRITE) and, with ``mlp_bias``, their biases (gate/up NONE, down VECTOR)."""
    pre = _L + "mlp."
    bias = T.gated_mlp_bias_rows(pre, c.d_model, c.d_ff) if c.mlp_bias else []
    return T.gated_mlp_rows(pre, c.d_model, c.d_ff) + bias


def head_rows(c: DenseConfig, final_norm_role) -> list[Param]:
    """The final norm gain and, unless tied, the output head (READ)."""
    rows = [Param("final_norm", (c.d_model,), final_norm_role, "model.norm.weight")]
    if not c.tie_embeddings:
        rows.append(Param("lm_head", (c.vocab_size, c.d_model), READ, "lm_head.weight", shard=0))
    return rows


def pre_norm_params(c: DenseConfig) -> list[Param]:
    """The table of a Llama-style block (an RMSNorm before attention and one before the MLP; q/k
    norms when the config has them): Granite, SmolLM3, Qwen3."""
    d = c.d_model
    return [embed_row(c), Param("attn_norm", (d,), GAIN, _L + "input_layernorm.weight"),
            *attention_rows(c), *(qk_norm_rows(c) if c.qk_norm else []),
            Param("mlp_norm", (d,), GAIN, _L + "post_attention_layernorm.weight"),
            *mlp_rows(c), *head_rows(c, GAIN)]


# ----------------------------------------------------------------------------------------------
# forward pieces


def _at(flags: tuple[bool, ...], layer: jax.Array) -> jax.Array:
    """``flags[layer]`` for a static per-layer tuple and a traced layer index."""
    return jnp.asarray(flags, bool)[layer]


def context(c: DenseConfig, t: int) -> dict[str, jax.Array]:
    """RoPE ``cos``/``sin`` (and the sliding layers' own when they differ) and causal masks."""
    pos = jnp.arange(t)
    cos, sin = L.rope_cos_sin(pos, c.head_dim, c.rope_theta, c.rope_scaling and json.loads(c.rope_scaling),
                              c.max_positions)
    ctx = {"cos": cos, "sin": sin, "mask": L.causal_mask(t)}
    if c.local_rope_theta is not None:
        scaling = c.local_rope_scaling and json.loads(c.local_rope_scaling)
        ctx["cos_local"], ctx["sin_local"] = L.rope_cos_sin(pos, c.head_dim, c.local_rope_theta, scaling,
                                                             c.max_positions)
    if any(c.sliding_layers):
        ctx["mask_local"] = L.causal_mask(t, c.sliding_window)
    return ctx


def embed(c: DenseConfig, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Token embeddings times ``embed_scale`` ``(B, T, D)``."""
    x = p["embed"][tokens]
    return x if c.embed_scale == 1.0 else x * jnp.asarray(c.embed_scale, x.dtype)


def rms(c: DenseConfig, x: jax.Array, gain: jax.Array, offset: float | None = None) -> jax.Array:
    """RMSNorm with the config's epsilon and gain offset (or ``offset``)."""
    return L.rms_norm(x, gain, c.norm_eps, c.norm_offset if offset is None else offset)


def attention(c: DenseConfig, p: dict[str, jax.Array], h: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """The attention sub-layer on a normed stream ``h`` ``(B, T, D)``, ``o_proj`` included.

    q/k norms (per head or over the projection), the layer's RoPE (local or global base; none on
    no-RoPE layers), its mask (sliding window or full), score scale and soft-cap, all per
    ``ctx["layer"]``.
    """
    b, t, _ = h.shape
    q = L.linear(h, p["q"], p.get("q_bias"))
    k = L.linear(h, p["k"], p.get("k_bias"))
    v = L.linear(h, p["v"], p.get("v_bias"))
    if c.qk_norm == "proj":
        q, k = rms(c, q, p["q_norm"]), rms(c, k, p["k_norm"])
    q = q.reshape(b, t, c.n_heads, c.head_dim)
    k = k.reshape(b, t, c.n_kv_heads, c.head_dim)
    v = v.reshape(b, t, c.n_kv_heads, c.head_dim)
    if c.qk_norm == "head":
        q, k = rms(c, q, p["q_norm"]), rms(c, k, p["k_norm"])
    layer = ctx["layer"]
    sliding = _at(c.sliding_layers, layer) if any(c.sliding_layers) else None
    cos, sin = ctx["cos"], ctx["sin"]
    if "cos_local" in ctx and sliding is not None:
        cos, sin = jnp.where(sliding, ctx["cos_local"], cos), jnp.where(sliding, ctx["sin_local"], sin)
    qr, kr = L.apply_rope(q, cos, sin), L.apply_rope(k, cos, sin)
    if c.rope_layers and not all(c.rope_layers):
        on = _at(c.rope_layers, layer)
        qr, kr = jnp.where(on, qr, q), jnp.where(on, kr, k)
    mask = ctx["mask"] if sliding is None else jnp.where(sliding, ctx["mask_local"], ctx["mask"])
    a = L.attention(qr, kr, v, mask, scale=c.query_scale, softcap=c.attn_softcap)
    return L.linear(a.reshape(b, t, c.n_heads * c.head_dim), p["o"], p.get("o_bias"))


def mlp(c: DenseConfig, p: dict[str, jax.Array], h: jax.Array) -> jax.Array:
    """The gated MLP ``down(act(gate(h)) * up(h))`` on a normed stream."""
    act = L.activation(c.activation)
    g = act(L.linear(h, p["gate"], p.get("gate_bias")))
    return L.linear(g * L.linear(h, p["up"], p.get("up_bias")), p["down"], p.get("down_bias"))


def final_norm(c: DenseConfig, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final RMSNorm."""
    return rms(c, x, p["final_norm"])


def pre_norm_block(c: DenseConfig, p: dict[str, jax.Array], x: jax.Array, ctx: dict[str, jax.Array]) -> jax.Array:
    """``x = x + r · attn(rms(x)); x = x + r · mlp(rms(x))`` with ``r = residual_scale`` (the
    block of :func:`pre_norm_params`)."""
    x = x + c.residual_scale * attention(c, p, rms(c, x, p["attn_norm"]), ctx)
    return x + c.residual_scale * mlp(c, p, rms(c, x, p["mlp_norm"]))
