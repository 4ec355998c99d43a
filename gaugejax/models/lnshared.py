"""What the LayerNorm families share (GPT-NeoX, Phi, StableLM, GPT-J, Falcon, OPT, Cohere, BERT, GPT-2).

Each of those families is one module with one parameter table and one block function; the pieces
they have in common live here, written once (the RMSNorm counterpart is :mod:`gaugejax.models.dense`):

* :class:`LayerNormConfig` / :class:`PartialRotaryConfig`: the ``norm``, ``head_dim`` and
  ``rotary_dim`` properties;
* closed-world reading of the sizes (:func:`heads`, :func:`kv_heads`, :func:`hf_sizes`);
* table rows: a LayerNorm (:func:`ln_rows`), a biased projection (:func:`biased_rows`), the
  untied head (:func:`head_rows`);
* the forward pieces: :func:`ln`, :func:`rope_context`, :func:`embed`, :func:`embed_learned`,
  :func:`final_norm`, :func:`biased_mlp`, :func:`gated_mlp`, :func:`split_heads`, :func:`attend`, :func:`rotary_attention`.

Gauge roles: a LayerNorm gain is a GAIN and its bias a VECTOR (both on the residual axis); a
READ projection's bias lives off the residual axis (NONE); a WRITE projection's bias is a VECTOR.

Example:
  >>> [(p.name, p.hf) for p in ln_rows("final_norm", 8, "ln_f")]
  [('final_norm', 'ln_f.weight'), ('final_norm_bias', 'ln_f.bias')]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gaugejax.models import layers as L
from gaugejax.models.base import ModelConfig
from gaugejax.models.config_keys import get_float, get_int, refuse
from gaugejax.models.table import GAIN, NONE, READ, VECTOR, WRITE, Param


@dataclass(frozen=True)
class LayerNormConfig(ModelConfig):
    """A LayerNorm family's config: gauge group ``S_d × {±1}``, heads of ``d_model / n_heads``."""

    @property
    def norm(self) -> str:
        return "layernorm"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class PartialRotaryConfig(LayerNormConfig):
    """A LayerNorm config whose RoPE rotates the first ``rotary_pct`` of each head (subclasses define the field)."""

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_pct)  # type: ignore[attr-defined]


def heads(cfg: dict, d_key: str, h_key: str, reason: str | None = None) -> tuple[int, int]:
    """``(d_model, n_heads)`` read from ``cfg``; refuses a width that is not a multiple of the heads.

    ``reason`` (formatted with ``d`` and ``nh``) replaces the default refusal text.

    Example:
      >>> heads({"hidden_size": 8, "num_attention_heads": 2}, "hidden_size", "num_attention_heads")
      (8, 2)
    """
    d, nh = get_int(cfg, d_key), get_int(cfg, h_key)
    if d % nh:
        refuse(cfg, h_key, (reason or "the width {d} is not a multiple of {nh} heads").format(d=d, nh=nh))
    return d, nh


def hf_sizes(cfg: dict, d: int, nh: int, eps: float = 1e-5) -> dict[str, Any]:
    """The size fields (and LayerNorm eps) of a config read from the standard HF keys
    (``vocab_size``, ``num_hidden_layers``, ``intermediate_size``, ``layer_norm_eps``).

    Example:
      >>> hf_sizes({"vocab_size": 9, "num_hidden_layers": 2, "intermediate_size": 16}, 8, 2)["d_ff"]
      16
    """
    return dict(vocab_size=get_int(cfg, "vocab_size"), d_model=d, n_layers=get_int(cfg, "num_hidden_layers"),
                n_heads=nh, d_ff=get_int(cfg, "intermediate_size"),
                norm_eps=get_float(cfg, "layer_norm_eps", eps))


def kv_heads(cfg: dict, nh: int) -> int:
    """HF ``num_key_value_heads`` (default: ``nh``); refuses one that does not divide ``nh``.

    Example:
      >>> kv_heads({"num_key_value_heads": None}, 4)
      4
    """
    nkv = get_int(cfg, "num_key_value_heads", None, none_ok=True) or nh
    if nh % nkv:
        refuse(cfg, "num_key_value_heads", f"{nh} query heads are not a multiple of {nkv} key/value heads")
    return nkv


def ln_rows(name: str, d: int, hf: str) -> list[Param]:
    """The gain (GAIN) and bias (VECTOR) rows of a LayerNorm stored as ``hf.weight`` / ``hf.bias``."""
    return [Param(name, (d,), GAIN, hf + ".weight"), Param(name + "_bias", (d,), VECTOR, hf + ".bias")]


def biased_rows(name: str, shape: tuple[int, int], role: Any, hf: str, **weight: Any) -> list[Param]:
    """A READ or WRITE projection and its bias (NONE for READ, VECTOR for WRITE), ``hf.weight`` / ``hf.bias``.

    ``weight`` holds extra :class:`~gaugejax.models.table.Param` fields of the matrix row (``transpose``).
    """
    if role == READ:
        return [Param(name, shape, READ, hf + ".weight", shard=0, **weight),
                Param(name + "_bias", shape[:1], NONE, hf + ".bias", shard=0)]
    return [Param(name, shape, WRITE, hf + ".weight", shard=1, **weight),
            Param(name + "_bias", shape[:1], VECTOR, hf + ".bias")]


def head_rows(c: ModelConfig, hf: str = "lm_head.weight") -> list[Param]:
    """The output head row, or none when it is tied to the embedding."""
    return [] if c.tie_embeddings else [Param("lm_head", (c.vocab_size, c.d_model), READ, hf, shard=0)]


def ln(c: ModelConfig, p: dict[str, Any], name: str, x: jax.Array) -> jax.Array:
    """The LayerNorm ``p[name]``, ``p[name + "_bias"]`` applied to ``x``."""
    return L.layer_norm(x, p[name], p[name + "_bias"], c.norm_eps)


def rope_context(t: int, rotary_dim: int, theta: float, scaling: dict | None = None,
                 max_positions: int | None = None) -> dict[str, jax.Array]:
    """Partial-rotary ``cos``/``sin`` and the causal mask for ``t`` positions."""
    cos, sin = L.rope_cos_sin(jnp.arange(t), rotary_dim, theta, scaling, max_positions)
    return {"cos": cos, "sin": sin, "mask": L.causal_mask(t)}


def embed(c: ModelConfig, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Token embeddings ``(B, T, D)``."""
    return p["embed"][tokens]


def embed_learned(c: ModelConfig, p: dict[str, Any], tokens: jax.Array) -> jax.Array:
    """Token plus learned position embeddings ``(B, T, D)``."""
    return p["embed"][tokens] + p["pos_embed"][jnp.arange(tokens.shape[1])][None]


def final_norm(c: ModelConfig, p: dict[str, Any], x: jax.Array) -> jax.Array:
    """The final LayerNorm."""
    return ln(c, p, "final_norm", x)


def biased_mlp(c: ModelConfig, p: dict[str, Any], h: jax.Array, fc_in: str = "fc_in",
               fc_out: str = "fc_out") -> jax.Array:
    """``fc_out(act(fc_in(h)))`` with the projections' biases (where the table has them)."""
    act = L.activation(c.activation)
    return L.linear(act(L.linear(h, p[fc_in], p.get(fc_in + "_bias"))), p[fc_out], p.get(fc_out + "_bias"))


def gated_mlp(c: ModelConfig, p: dict[str, Any], h: jax.Array) -> jax.Array:
    """``down(act(gate(h)) * up(h))`` without biases."""
    act = L.activation(c.activation)
    return L.linear(act(L.linear(h, p["gate"])) * L.linear(h, p["up"]), p["down"])


def split_heads(c: Any, p: dict[str, Any], h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``q, k, v`` of shape ``(B, T, heads, head_dim)`` from separate ``q``/``k``/``v`` projections
    (biases where the table has them; ``n_kv_heads`` key/value heads when the config has them)."""
    b, t, _ = h.shape
    nkv = getattr(c, "n_kv_heads", c.n_heads)
    return (L.linear(h, p["q"], p.get("q_bias")).reshape(b, t, c.n_heads, c.head_dim),
            L.linear(h, p["k"], p.get("k_bias")).reshape(b, t, nkv, c.head_dim),
            L.linear(h, p["v"], p.get("v_bias")).reshape(b, t, nkv, c.head_dim))


def rotary_attention(p: dict[str, Any], q: jax.Array, k: jax.Array, v: jax.Array, ctx: dict[str, jax.Array],
                     rope: Callable[..., jax.Array] = L.apply_rope) -> jax.Array:
    """``o(attention(rope(q), rope(k), v)) + o_bias`` (no bias when the table has none), ``(B, T, D)``."""
    q, k = rope(q, ctx["cos"], ctx["sin"]), rope(k, ctx["cos"], ctx["sin"])
    return attend(p, q, k, v, ctx["mask"])


def attend(p: dict[str, Any], q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """``o(attention(q, k, v)) + o_bias`` (no bias when the table has none), ``(B, T, D)``."""
    o = L.attention(q, k, v, mask)
    return L.linear(o.reshape(*o.shape[:2], -1), p["o"], p.get("o_bias"))
