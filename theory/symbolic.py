"""Transformer layers on sympy object arrays: the vocabulary the symbolic model families are written in.

Arrays are numpy ``object`` arrays of sympy expressions in the library's layout (``nn.Linear``
weights ``(out, in)``, streams ``(T, d)``). The arguments of norms and activations are expanded
(sympy's canonical form); everything else keeps sympy's automatic form, in which a sign flipped
twice or a sum in another order is already the same expression. The final identity check expands
everything (``exp`` of a sum stays one atom), so this only affects speed, never the verdict. Element-wise activations are undefined functions
(:data:`ACT`), so an identity proved here holds for every activation; RoPE uses free symbols for
``cos``/``sin`` of each position and frequency, so it holds for every rotary schedule.

Example:
  >>> x = syms("x", (2, 3))
  >>> rms_norm(x, syms("g", (3,)))[0, 0]
  sqrt(3)*g_0*x_0/sqrt(x_0**2 + x_1**2 + x_2**2 + 3*epsilon)
"""

from __future__ import annotations

import numpy as np
import sympy as sp

EPS = sp.Symbol("epsilon", positive=True)
"""The norm epsilon (any positive value)."""

ACT = sp.Function("act")
"""The MLP non-linearity (SiLU, GELU, ...): left undefined."""

TANH = sp.tanh


def syms(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """An object array of fresh real symbols ``name_0, name_1, ...`` of ``shape``."""
    n = int(np.prod(shape))
    flat = sp.symbols(f"{name}_0:{n}", real=True) if n else ()
    return np.array(flat, dtype=object).reshape(shape)


def _expand1(e):
    # products and integer powers of sums only: exp(a + b) stays one atom, so softmax terms stay small
    return sp.expand(e, power_exp=False, power_base=False, log=False)


def expand(a: np.ndarray) -> np.ndarray:
    """Entry-wise polynomial expansion (:func:`sympy.expand` without splitting ``exp`` of sums)."""
    return np.vectorize(_expand1, otypes=[object])(a)


def apply(fn, a: np.ndarray) -> np.ndarray:
    """Entry-wise ``fn`` (e.g. :data:`ACT`) of the expanded entries (canonical arguments)."""
    return np.vectorize(lambda e: fn(_expand1(e)), otypes=[object])(a)


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``x @ w.T (+ b)`` for ``x (..., in)`` and ``w (out, in)`` (not expanded: see :func:`apply`)."""
    y = x.dot(w.T)
    return y if b is None else y + b


def rms_norm(x: np.ndarray, gain: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """``(offset + gain) ⊙ x / sqrt(mean(x²) + eps)`` over the last axis of ``x (T, d)``."""
    d = x.shape[-1]
    rows = []
    for row in x:
        inv = 1 / sp.sqrt(_expand1(sum(v**2 for v in row) / d) + EPS)
        rows.append([(sp.nsimplify(offset) + gain[i]) * row[i] * inv for i in range(d)])
    return np.array(rows, dtype=object)


def layer_norm(x: np.ndarray, gain: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``gain ⊙ (x - mean) / sqrt(var + eps) (+ bias)`` over the last axis of ``x (T, d)``."""
    d = x.shape[-1]
    rows = []
    for row in x:
        c = [_expand1(v - sum(row) / d) for v in row]
        inv = 1 / sp.sqrt(_expand1(sum(v**2 for v in c) / d) + EPS)
        rows.append([gain[i] * c[i] * inv + (0 if bias is None else bias[i]) for i in range(d)])
    return np.array(rows, dtype=object)


def rope(x: np.ndarray, rotary_dim: int) -> np.ndarray:
    """Half-split (``rotate_half``) rotary embedding of the first ``rotary_dim`` dims of ``x (T, heads, H)``.

    ``cos``/``sin`` of position ``t`` and frequency ``f`` are the free symbols ``c_t_f``/``s_t_f``.
    """
    if rotary_dim == 0:
        return x
    half = rotary_dim // 2
    out = x.copy()
    for t in range(x.shape[0]):
        cos = [sp.Symbol(f"c_{t}_{f}", real=True) for f in range(half)] * 2
        sin = [sp.Symbol(f"s_{t}_{f}", real=True) for f in range(half)] * 2
        for h in range(x.shape[1]):
            xr = x[t, h, :rotary_dim]
            rotated = np.concatenate([-xr[half:], xr[:half]])
            out[t, h, :rotary_dim] = [_expand1(xr[i] * cos[i] + rotated[i] * sin[i]) for i in range(rotary_dim)]
    return out


def softmax(scores: list) -> list:
    """``exp(s) / Σ exp(s)``."""
    e = [sp.exp(s) for s in scores]
    z = sum(e)
    return [v / z for v in e]


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool) -> np.ndarray:
    """Grouped-query softmax attention, ``q (T, N, H)``, ``k, v (T, K, H)`` → ``(T, N·H)``.

    Query head ``n`` reads key/value head ``n // (N // K)``; scores are ``q·k / sqrt(H)``.
    """
    t_len, n_heads, hd = q.shape
    rep = n_heads // k.shape[1]
    out = np.empty((t_len, n_heads, hd), dtype=object)
    for n in range(n_heads):
        kv = n // rep
        for t in range(t_len):
            keys = range(t + 1) if causal else range(t_len)
            probs = softmax([q[t, n].dot(k[s, kv]) / sp.sqrt(hd) for s in keys])
            out[t, n] = sum(p * v[s, kv] for s, p in zip(keys, probs))
    return out.reshape(t_len, n_heads * hd)
