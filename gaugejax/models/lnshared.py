"""What the LayerNorm families share (GPT-NeoX, Phi, StableLM, GPT-J, Falcon, OPT, Cohere, BERT, GPT-2).

Each of those families is one module with one parameter table and one block function; the pieces
they have in common live here, written once (the RMSNorm counterpart is :mod:`gaugejax.models.dense`):

* :class:`LayerNormConfig` / :class:`PartialRotaryConfig` / :class:`RotaryDecoderConfig`: the
  ``norm``, ``head_dim`` and ``rotary_dim`` properties, the RoPE fields and the GQA / q-k norm fields;
* closed-world reading of the sizes and writing them back (:func:`heads`, :func:`kv_heads`,
  :func:`hf_sizes` / :func:`sizes_to_hf`, :func:`gpt_sizes` / :func:`gpt_sizes_to_hf`, and for
  the rotary decoders :func:`decoder_fields` / :func:`decoder_to_hf`, :func:`rotary_fraction`);
* table rows: a LayerNorm (:func:`ln_rows`), a biased projection (:func:`biased_rows`), a biased
  attention (:func:`biased_attention_rows`) and MLP (:func:`biased_mlp_rows`), the untied head
  (:func:`head_rows`);
* the forward pieces: :func:`ln`, :func:`rope_context`, :func:`embed`, :func:`embed_learned`,
  :func:`final_norm`, :func:`biased_mlp`, :func:`gated_mlp`, :func:`split_heads`, :func:`attend`, :func:`rotary_attention`.

Gauge roles: a LayerNorm gain is a GAIN and its bias a VECTOR (both on the residual axis); a
READ projection's bias lives off the residual axis (NONE); a WRITE projection's bias is a VECTOR.

Example:
  >>> [(p.name, p.hf) for p in ln_rows("final_norm", 8, "ln_f")]
  [('final_norm', 'ln_f.weight'), ('final_norm_bias', 'ln_f.bias')]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gaugejax.models import layers as L
from gaugejax.models.base import ModelConfig
from gaugejax.models.config_keys import get_bool, get_choice, get_float, get_int, refuse, rope_from_hf
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
    """A LayerNorm config whose RoPE (base ``rope_theta``) rotates the first ``rotary_pct`` of each head."""

    rotary_pct: float = 0.25
    rope_theta: float = 10000.0

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rotary_pct)


@dataclass(frozen=True)
class RotaryDecoderConfig(PartialRotaryConfig):
    """A partial-rotary decoder with grouped-query attention (Phi, StableLM).

    Attributes:
      n_kv_heads: key/value heads.
      qk_layernorm: LayerNorms on each query and key head (per family: with or without bias).
    """

    n_kv_heads: int = 4
    qk_layernorm: bool = False


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


def sizes_to_hf(c: ModelConfig) -> dict[str, Any]:
    """The ``config.json`` entries :func:`hf_sizes` reads (and ``hidden_size``, ``num_attention_heads``)."""
    return dict(vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layers,
                num_attention_heads=c.n_heads, intermediate_size=c.d_ff, layer_norm_eps=c.norm_eps)


def gpt_sizes(cfg: dict, d: int, nh: int) -> dict[str, Any]:
    """The size fields of a config read from GPT-2's keys (GPT-2, GPT-J): ``n_layer``, ``n_inner``
    (``null`` or absent: ``4 · d``), ``layer_norm_epsilon`` (default 1e-5).

    Example:
      >>> gpt_sizes({"vocab_size": 9, "n_layer": 2, "n_inner": None}, 8, 2)["d_ff"]
      32
    """
    return dict(vocab_size=get_int(cfg, "vocab_size"), d_model=d, n_layers=get_int(cfg, "n_layer"), n_heads=nh,
                d_ff=get_int(cfg, "n_inner", None, none_ok=True) or 4 * d,
                norm_eps=get_float(cfg, "layer_norm_epsilon", 1e-5))


def gpt_sizes_to_hf(c: ModelConfig) -> dict[str, Any]:
    """The ``config.json`` entries :func:`gpt_sizes` reads (and ``n_embd``, ``n_head``)."""
    return dict(vocab_size=c.vocab_size, n_embd=c.d_model, n_layer=c.n_layers, n_head=c.n_heads, n_inner=c.d_ff,
                layer_norm_epsilon=c.norm_eps)


def decoder_fields(cfg: dict, nh: int, *, activation: str, tie: bool, max_positions: int) -> dict[str, Any]:
    """The attention and head fields of a rotary decoder (Phi, StableLM, Cohere): key/value heads
    (:func:`kv_heads`), ``tie_word_embeddings``, ``hidden_act`` and ``max_position_embeddings``,
    with the given defaults.

    Example:
      >>> decoder_fields({}, 4, activation="silu", tie=False, max_positions=64)["n_kv_heads"]
      4
    """
    return dict(n_kv_heads=kv_heads(cfg, nh), tie_embeddings=get_bool(cfg, "tie_word_embeddings", tie),
                activation=get_choice(cfg, "hidden_act", activation, L.ACTIVATIONS),
                max_positions=get_int(cfg, "max_position_embeddings", max_positions))


def to_hf(c: ModelConfig, architecture: str, **fields: Any) -> dict[str, Any]:
    """A ``config.json`` dict: the inert keys kept at load, then ``model_type``, ``architectures``
    and ``fields``.

    Example:
      >>> to_hf(LayerNormConfig(model_type="x"), "XModel", hidden_size=8)
      {'model_type': 'x', 'architectures': ['XModel'], 'hidden_size': 8}
    """
    cfg = json.loads(c.hf_extra)
    cfg.update(model_type=c.model_type, architectures=[architecture], **fields)
    return cfg


def decoder_to_hf(c: Any, architecture: str) -> dict[str, Any]:
    """The ``config.json`` of a rotary decoder's shared fields (:func:`sizes_to_hf`,
    :func:`decoder_fields`), over the inert keys kept at load; a legacy ``rope_scaling`` is
    dropped (the family writes ``rope_parameters``)."""
    cfg = to_hf(c, architecture, **sizes_to_hf(c), num_key_value_heads=c.n_kv_heads, hidden_act=c.activation,
                max_position_embeddings=c.max_positions, tie_word_embeddings=c.tie_embeddings)
    cfg.pop("rope_scaling", None)
    return cfg


def rotary_fraction(cfg: dict, head_dim: int, default: float, *, allow_empty: bool = False) -> tuple[float, float]:
    """``(theta, partial_rotary_factor)`` of a plain (unscaled) partial RoPE; refuses a rotated part
    of the head that is odd or (unless ``allow_empty``, as Phi has always read it) empty.

    Example:
      >>> rotary_fraction({"partial_rotary_factor": 0.5}, 16, 0.25)
      (10000.0, 0.5)
    """
    theta, _, partial = rope_from_hf(cfg, partial_key="partial_rotary_factor", default_partial=default,
                                     kinds=("default",))
    if not 0 < partial <= 1 or int(head_dim * partial) % 2 or (int(head_dim * partial) == 0 and not allow_empty):
        refuse(cfg, "partial_rotary_factor", f"the rotated part of a {head_dim}-wide head must be even and non-empty")
    return theta, partial


def partial_rope_to_hf(c: Any) -> dict[str, Any]:
    """The ``rope_parameters`` of :func:`rotary_fraction`."""
    return {"rope_type": "default", "rope_theta": c.rope_theta, "partial_rotary_factor": c.rotary_pct}


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


def biased_attention_rows(d: int, kv: int, keys: Any) -> list[Param]:
    """``q``, ``k``, ``v`` (READ, ``kv`` rows for k and v) and ``o`` (WRITE), each followed by its
    bias (:func:`biased_rows`); ``keys``: their four HF prefixes."""
    q, k, v, o = keys
    return [*biased_rows("q", (d, d), READ, q), *biased_rows("k", (kv, d), READ, k),
            *biased_rows("v", (kv, d), READ, v), *biased_rows("o", (d, d), WRITE, o)]


def biased_mlp_rows(d: int, f: int, fc_in: str, fc_out: str, names: tuple[str, str] = ("fc_in", "fc_out"),
                    **weight: Any) -> list[Param]:
    """A biased two-layer MLP: ``fc_in`` ``(f, d)`` reads, ``fc_out`` ``(d, f)`` writes
    (:func:`biased_rows`; ``weight`` as there), stored under the HF prefixes ``fc_in``, ``fc_out``."""
    return [*biased_rows(names[0], (f, d), READ, fc_in, **weight),
            *biased_rows(names[1], (d, f), WRITE, fc_out, **weight)]


def fused_block_rows(c: ModelConfig, keys: dict[str, str], **weight: Any) -> list[Param]:
    """The block and final-norm rows of a pre-LN decoder with a fused, biased ``qkv`` (GPT-2, GPT-NeoX):
    ``attn_norm``, ``qkv`` (READ, ``3d`` rows), ``o`` (WRITE), ``mlp_norm``, :func:`biased_mlp_rows`,
    ``final_norm``; ``keys`` maps each of those names (``fc_in``, ``fc_out`` for the MLP) to its
    HF prefix; ``weight`` as in :func:`biased_rows`."""
    d, k = c.d_model, keys
    return [*ln_rows("attn_norm", d, k["attn_norm"]), *biased_rows("qkv", (3 * d, d), READ, k["qkv"], **weight),
            *biased_rows("o", (d, d), WRITE, k["o"], **weight), *ln_rows("mlp_norm", d, k["mlp_norm"]),
            *biased_mlp_rows(d, c.d_ff, k["fc_in"], k["fc_out"], **weight), *ln_rows("final_norm", d, k["final_norm"])]


def head_rows(c: ModelConfig, hf: str = "lm_head.weight") -> list[Param]:
    """The output head row, or none when it is tied to the embedding."""
    return [] if c.tie_embeddings else [Param("lm_head", (c.vocab_size, c.d_model), READ, hf, shard=0)]


def ln(c: ModelConfig, p: dict[str, Any], name: str, x: jax.Array) -> jax.Array:
    """The LayerNorm ``p[name]``, ``p[name + "_bias"]`` (none when the table has none) applied to ``x``."""
    return L.layer_norm(x, p[name], p.get(name + "_bias"), c.norm_eps)


def rope_context(t: int, rotary_dim: int, theta: float, scaling: dict | None = None,
                 max_positions: int | None = None) -> dict[str, jax.Array]:
    """Partial-rotary ``cos``/``sin`` and the causal mask for ``t`` positions."""
    cos, sin = L.rope_cos_sin(jnp.arange(t), rotary_dim, theta, scaling, max_positions)
    return {"cos": cos, "sin": sin, "mask": L.causal_mask(t)}


def rotary_context(c: PartialRotaryConfig, t: int) -> dict[str, jax.Array]:
    """Partial-rotary ``cos``/``sin`` (unscaled) and the causal mask for ``t`` positions."""
    return rope_context(t, c.rotary_dim, c.rope_theta)


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


def decoder_heads(c: RotaryDecoderConfig, p: dict[str, Any], h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`split_heads`, then the per-head ``q_norm`` / ``k_norm`` LayerNorms when ``c.qk_layernorm``."""
    q, k, v = split_heads(c, p, h)
    if c.qk_layernorm:
        q, k = ln(c, p, "q_norm", q), ln(c, p, "k_norm", k)
    return q, k, v


def rotary_attention(p: dict[str, Any], q: jax.Array, k: jax.Array, v: jax.Array, ctx: dict[str, jax.Array],
                     rope: Callable[..., jax.Array] = L.apply_rope) -> jax.Array:
    """``o(attention(rope(q), rope(k), v)) + o_bias`` (no bias when the table has none), ``(B, T, D)``."""
    q, k = rope(q, ctx["cos"], ctx["sin"]), rope(k, ctx["cos"], ctx["sin"])
    return attend(p, q, k, v, ctx["mask"])


def attend(p: dict[str, Any], q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """``o(attention(q, k, v)) + o_bias`` (no bias when the table has none), ``(B, T, D)``."""
    o = L.attention(q, k, v, mask)
    return L.linear(o.reshape(*o.shape[:2], -1), p["o"], p.get("o_bias"))
