"""The pieces symbolic model families are assembled from: :class:`Stage` and shared sub-layers.

A stage is one small piece of a forward pass that maps residual-chart tensors to a residual-chart
tensor (``output`` names it) or to something no gauge acts on (``output=None``: logits, a pooler).
Stage functions receive the config, ``g`` (global parameters), ``l`` (the parameters of one block,
layer axis removed) and their inputs, each a ``(T, d)`` object array (:mod:`theory.symbolic`).
Parameters are looked up by the library's names; optional ones with ``.get`` (absent: ``None``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from theory.symbolic import ACT, apply, attention, layer_norm, linear, rms_norm, rope

TOKENS = (0, 1)
"""The symbolic models read this token sequence (every embedding row that matters appears)."""


@dataclass(frozen=True)
class Stage:
    """One piece of the forward pass.

    Attributes:
      name: what it computes (``"attention"``, ``"mlp"``, ...).
      inputs: names of residual-chart tensors it reads (``()`` for the embedding).
      output: name of the residual-chart tensor it writes, or ``None`` for an invariant output.
      fn: ``fn(c, g, l, **inputs) -> array``.
    """

    name: str
    inputs: tuple[str, ...]
    output: str | None
    fn: Callable


def heads(x: np.ndarray, n: int, hd: int) -> np.ndarray:
    """``(T, n·hd)`` → ``(T, n, hd)``."""
    return x.reshape(x.shape[0], n, hd)


def token_rows(c, g, l) -> np.ndarray:
    """The embedding stage of a model without positions: token rows."""
    return g["embed"][list(TOKENS)]


def logits(c, g, l, n) -> np.ndarray:
    """``head n (+ per-token bias)`` with the tied or untied head: no gauge acts on the result."""
    head = g["embed"] if c.tie_embeddings else g["lm_head"]
    return linear(n, head, g.get("lm_head_bias"))


def rms_stage(name: str, where: str = "l", offset: float = 0.0) -> Callable:
    """An RMSNorm stage with gain ``name`` (per block, or global with ``where="g"``)."""
    def fn(c, g, l, **inputs):
        (x,) = inputs.values()
        return rms_norm(x, (g if where == "g" else l)[name], offset)
    return fn


def ln_stage(name: str, where: str = "l") -> Callable:
    """A LayerNorm stage with gain ``name`` and, where the library has one, bias ``name_bias``."""
    def fn(c, g, l, **inputs):
        p = g if where == "g" else l
        (x,) = inputs.values()
        return layer_norm(x, p[name], p.get(name + "_bias"))
    return fn


def _per_head(norm: Callable, x: np.ndarray, gain: np.ndarray, *extra) -> np.ndarray:
    """``norm`` over each head of ``x (T, heads, H)``; gains ``(H,)`` shared or ``(heads, H)`` per head."""
    return np.stack([norm(x[:, h], gain if gain.ndim == 1 else gain[h], *extra) for h in range(x.shape[1])], axis=1)


def self_attention(c, l, n, *, qk_norm: str | None = None, offset: float = 0.0, rotary: int | None = None,
                   layer_norm_qk: bool = False) -> np.ndarray:
    """``o(attn(rope(q n), rope(k n), v n))`` (+ ``o_bias``): causal, grouped-query, optional q/k/v biases.

    Args:
      qk_norm: RMSNorm of queries and keys, ``"head"`` (over each head) or ``"proj"`` (over the
        whole projection), gains ``q_norm``/``k_norm``.
      offset: RMSNorm gain offset (``(1 + w)`` gains).
      rotary: rotated dims per head (default the config's ``rotary_dim``, else the whole head; 0: none).
      layer_norm_qk: LayerNorm over each q/k head instead (``q_norm``/``k_norm`` and optional biases).
    """
    n_kv = getattr(c, "n_kv_heads", c.n_heads)
    q = linear(n, l["q"], l.get("q_bias"))
    k = linear(n, l["k"], l.get("k_bias"))
    v = linear(n, l["v"], l.get("v_bias"))
    if qk_norm == "proj":
        q, k = rms_norm(q, l["q_norm"], offset), rms_norm(k, l["k_norm"], offset)
    q, k, v = heads(q, c.n_heads, c.head_dim), heads(k, n_kv, c.head_dim), heads(v, n_kv, c.head_dim)
    if qk_norm == "head":
        q, k = _per_head(rms_norm, q, l["q_norm"], offset), _per_head(rms_norm, k, l["k_norm"], offset)
    if layer_norm_qk:
        q = _per_head(layer_norm, q, l["q_norm"], l.get("q_norm_bias"))
        k = _per_head(layer_norm, k, l["k_norm"], l.get("k_norm_bias"))
    rd = (getattr(c, "rotary_dim", None) or c.head_dim) if rotary is None else rotary
    return linear(attention(rope(q, rd), rope(k, rd), v, causal=True), l["o"], l.get("o_bias"))


def gated_mlp(l, n, prefix: str = "") -> np.ndarray:
    """``down(act(gate n) * up n)`` with optional biases (``prefix`` picks e.g. the shared expert)."""
    g = apply(ACT, linear(n, l[prefix + "gate"], l.get(prefix + "gate_bias")))
    return linear(g * linear(n, l[prefix + "up"], l.get(prefix + "up_bias")), l[prefix + "down"],
                  l.get(prefix + "down_bias"))


def plain_mlp(l, n, fc_in: str = "fc_in", fc_out: str = "fc_out") -> np.ndarray:
    """``fc_out(act(fc_in n + b) ) + b`` (GELU / ReLU MLPs)."""
    return linear(apply(ACT, linear(n, l[fc_in], l.get(fc_in + "_bias"))), l[fc_out], l.get(fc_out + "_bias"))
