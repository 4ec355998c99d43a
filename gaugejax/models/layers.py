"""Transformer building blocks as pure functions.

Einsum letters: B batch, T query time, S key time, D model, N query heads, K kv heads,
R heads per kv head (N = K·R), H head dim, F hidden (MLP).
Matmuls compute in the dtype they are given; norms and softmax in (at least) float32, cast back.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gaugejax.errors import CheckpointError, InputError


def rms_norm(x: jax.Array, gain: jax.Array, eps: float, offset: float = 0.0) -> jax.Array:
    """RMSNorm ``(offset + gain) ⊙ x / sqrt(mean(x²) + eps)`` over the last axis.

    ``offset=1`` is the ``(1 + scale)`` parametrisation (Gemma): the gauge permutes ``scale``.

    Example:
      >>> float(rms_norm(jnp.array([3.0, 4.0]), jnp.ones(2), 0.0)[1])  # doctest: +ELLIPSIS
      1.131...
    """
    dt, x = x.dtype, _f32(x)
    inv = jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)
    return ((offset + _f32(gain)) * (x * inv)).astype(dt)


def layer_norm(x: jax.Array, gain: jax.Array | None, bias: jax.Array | None, eps: float) -> jax.Array:
    """LayerNorm ``g ⊙ (x - mean) / sqrt(var + eps) + b`` over the last axis (biased variance)."""
    dt, x = x.dtype, _f32(x)
    mu = jnp.mean(x, axis=-1, keepdims=True)
    xc = x - mu
    y = xc * jax.lax.rsqrt(jnp.mean(jnp.square(xc), axis=-1, keepdims=True) + eps)
    if gain is not None:
        y = y * _f32(gain)
    if bias is not None:
        y = y + _f32(bias)
    return y.astype(dt)


def _f32(x: jax.Array) -> jax.Array:
    """At least float32: half-precision inputs (bf16 compute) are normalised in float32."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS = {
    "silu": jax.nn.silu, "swish": jax.nn.silu,
    "gelu": _gelu, "gelu_python": _gelu,
    "gelu_new": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh, "gelu_fast": _gelu_tanh, "gelu_tanh": _gelu_tanh,
    "gelu_python_tanh": _gelu_tanh, "gelu_accurate": _gelu_tanh,
    "gelu_10": lambda x: jnp.clip(_gelu(x), -10.0, 10.0),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu, "relu2": lambda x: jnp.square(jax.nn.relu(x)), "relu6": jax.nn.relu6,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01),
    "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "linear": lambda x: x,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
}
"""Hugging Face ``hidden_act`` names → the function (same formula as ``transformers.activations``)."""


def activation(name: str):
    """The MLP non-linearity named as in Hugging Face configs (see :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise CheckpointError(f"unsupported activation {name!r}; use one of {', '.join(sorted(ACTIVATIONS))}") from None


def rope_inv_freq(rotary_dim: int, theta: float, scaling: dict | None) -> jnp.ndarray:
    """Inverse frequencies of rotary embeddings, with HF's ``linear`` / ``llama3`` scaling.

    ``linear`` is applied to positions by :func:`rope_cos_sin`; ``dynamic`` changes the base only
    past ``max_positions`` and is handled there too.
    """
    inv = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "llama3":
        factor = scaling["factor"]
        lo, hi = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        smooth = (old / wavelen - lo) / (hi - lo)
        scaled = jnp.where(wavelen > old / lo, inv / factor, inv)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wavelen >= old / hi) & (wavelen <= old / lo)
        inv = jnp.where(is_mid, mid, scaled)
    return inv


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_inv_freq(rotary_dim: int, theta: float, s: dict) -> tuple[jnp.ndarray, float]:
    """YaRN inverse frequencies and attention factor, as transformers' ``_compute_yarn_parameters``.

    Frequencies blend interpolation (``/ factor``) and extrapolation by a linear ramp over the
    dimensions between the correction range of ``beta_fast`` / ``beta_slow`` rotations within
    ``original_max_position_embeddings`` (floored / ceiled when ``truncate``, the default). The
    attention factor defaults to ``0.1 ln(factor) + 1`` (or the ``mscale`` / ``mscale_all_dim`` ratio).

    Example:
      >>> inv, att = yarn_inv_freq(8, 10000.0, {"factor": 4.0, "original_max_position_embeddings": 16})
      >>> inv.shape, round(att, 4)
      ((4,), 1.1386)
    """
    factor, orig = s["factor"], s["original_max_position_embeddings"]
    att = s.get("attention_factor")
    if att is None:
        m, m_all = s.get("mscale"), s.get("mscale_all_dim")
        att = _yarn_mscale(factor, m) / _yarn_mscale(factor, m_all) if m and m_all else _yarn_mscale(factor)
    fast, slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1
    corr = lambda n: rotary_dim * math.log(orig / (n * 2 * math.pi)) / (2 * math.log(theta))  # noqa: E731
    low, high = corr(fast), corr(slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001
    extrapolate = 1 - jnp.clip((jnp.arange(rotary_dim // 2, dtype=jnp.float32) - low) / (high - low), 0, 1)
    pos_freqs = theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim)
    inv = (1.0 / (factor * pos_freqs)) * (1 - extrapolate) + (1.0 / pos_freqs) * extrapolate
    return inv, float(att)


def longrope_inv_freq(positions: jax.Array, rotary_dim: int, theta: float, s: dict,
                      max_positions: int | None) -> tuple[jax.Array, float]:
    """LongRoPE inverse frequencies and attention factor, as transformers' forward picks them.

    The frequencies are divided by ``long_factor`` when the sequence (``max(positions) + 1``) is
    longer than ``original_max_position_embeddings``, else by ``short_factor``; the attention
    factor is ``sqrt(1 + ln(factor) / ln(original))`` with ``factor`` defaulting to
    ``max_positions / original`` (1 when ``factor <= 1``), unless ``attention_factor`` is given.
    """
    orig = s["original_max_position_embeddings"]
    factor, att = s.get("factor"), s.get("attention_factor")
    if factor is None:
        if max_positions is None:
            raise InputError("longrope RoPE without factor needs max_positions; pass max_position_embeddings")
        factor = max_positions / orig
    if att is None:
        att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
    base = theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim)
    long = jnp.max(positions) + 1 > orig
    ext = jnp.where(long, jnp.asarray(s["long_factor"], jnp.float32), jnp.asarray(s["short_factor"], jnp.float32))
    return 1.0 / (ext * base), float(att)


def rope_cos_sin(positions: jax.Array, rotary_dim: int, theta: float, scaling: dict | None,
                 max_positions: int | None = None):
    """``cos, sin`` of shape ``(T, rotary_dim)`` in HF's half-split (rotate_half) layout.

    ``dynamic`` (NTK) scaling follows transformers' ``_compute_dynamic_ntk_parameters`` on a fresh
    model: the base grows with ``seq = max(max(positions) + 1, max_positions)`` (the config's
    ``max_position_embeddings``; ``original_max_position_embeddings`` plays no part), so sequences
    up to ``max_positions`` use plain RoPE. ``yarn`` and ``longrope`` (:func:`yarn_inv_freq`,
    :func:`longrope_inv_freq`) also scale ``cos`` and ``sin`` by their attention factor, as
    transformers' rotary modules do.
    """
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    pos = positions.astype(jnp.float32)
    if kind == "linear":
        pos = pos / scaling["factor"]
    if kind in ("yarn", "longrope"):
        inv, att = (yarn_inv_freq(rotary_dim, theta, scaling) if kind == "yarn"
                    else longrope_inv_freq(positions, rotary_dim, theta, scaling, max_positions))
        emb = jnp.concatenate([pos[:, None] * inv[None, :]] * 2, axis=-1)
        return jnp.cos(emb) * att, jnp.sin(emb) * att
    if kind == "dynamic":
        if max_positions is None:
            raise InputError("dynamic RoPE needs max_positions; pass the config's max_position_embeddings")
        old = max_positions
        seq = jnp.maximum(jnp.max(positions) + 1, old)
        factor = scaling["factor"]
        theta = theta * ((factor * seq / old) - (factor - 1)) ** (rotary_dim / (rotary_dim - 2))
        inv = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    else:
        inv = rope_inv_freq(rotary_dim, theta, scaling)
    freqs = pos[:, None] * inv[None, :]  # (T, H/2)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates the first ``cos.shape[-1]`` dims of ``x`` (B, T, heads, H); the rest pass through."""
    r = cos.shape[-1]
    xr, xpass = x[..., :r], x[..., r:]
    x1, x2 = xr[..., : r // 2], xr[..., r // 2 :]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    out = xr * cos + rotated * sin
    return jnp.concatenate([out, xpass], axis=-1) if xpass.shape[-1] else out


def apply_rope_interleaved(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotary embedding in the interleaved layout (GPT-J, Cohere): pair ``(2i, 2i + 1)`` of the first
    ``cos.shape[-1]`` dims of ``x`` (B, T, heads, H) turns by frequency ``i``; the rest pass through.

    Takes the half-split tables of :func:`rope_cos_sin` (their first half holds each frequency once).

    Example:
      >>> cos, sin = rope_cos_sin(jnp.arange(2), 2, 10000.0, None)
      >>> apply_rope_interleaved(jnp.array([1.0, 0.0]).reshape(1, 1, 1, 2).repeat(2, 1), cos, sin)[0, 1, 0].round(4)
      Array([0.5403, 0.8415], dtype=float32)
    """
    r = cos.shape[-1]
    cos, sin = cos[None, :, None, : r // 2], sin[None, :, None, : r // 2]
    x1, x2 = x[..., 0:r:2], x[..., 1:r:2]
    out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(*x.shape[:-1], r)
    return jnp.concatenate([out, x[..., r:]], axis=-1) if x.shape[-1] > r else out


def causal_mask(t: int, sliding_window: int | None = None) -> jax.Array:
    """``(T, S)`` boolean mask: query ``t`` may attend key ``s`` iff ``s <= t`` (within the window)."""
    i = jnp.arange(t)[:, None]
    j = jnp.arange(t)[None, :]
    mask = j <= i
    if sliding_window is not None:
        mask = mask & (i - j < sliding_window)
    return mask


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, scale: float | None = None,
              softcap: float | None = None) -> jax.Array:
    """Grouped-query softmax attention.

    Args:
      q: (B, T, N, H) queries; k, v: (B, S, K, H) with ``N % K == 0``.
      mask: (T, S) boolean, True where attention is allowed (every row has one True).
      scale: scores are ``q·k · scale`` (default ``1/sqrt(H)``).
      softcap: scores are soft-capped as ``cap · tanh(scores / cap)`` before masking (Gemma 2).

    Returns:
      (B, T, N, H).
    """
    b, t, n, h = q.shape
    kv = k.shape[2]
    qg = q.reshape(b, t, kv, n // kv, h)  # B T K R H
    scores = jnp.einsum("btkrh,bskh->bkrts", qg, k)
    if scale is None:
        scores = scores / jnp.sqrt(jnp.asarray(h, q.dtype))
    else:
        scores = scores * jnp.asarray(scale, q.dtype)
    if softcap is not None:
        scores = softcap * jnp.tanh(scores / softcap)
    scores = jnp.where(mask, scores, -jnp.inf)
    probs = jax.nn.softmax(_f32(scores), axis=-1).astype(v.dtype)  # softmax in float32 under bf16 compute
    out = jnp.einsum("bkrts,bskh->btkrh", probs, v)
    return out.reshape(b, t, n, h)


def linear(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
    """``x @ w.T + b`` with ``w`` in PyTorch layout ``(out, in)``."""
    y = jnp.einsum("...i,oi->...o", x, w)
    return y if b is None else y + b


def run_blocks(block, x: jax.Array, stacked_params) -> tuple[jax.Array, jax.Array]:
    """Runs ``x = block(x, p)`` for each layer's slice ``p`` of ``stacked_params`` under ``lax.scan``.

    Returns:
      ``stream`` (n_layers + 1, ...) with the input first, and the last output.
    """

    def step(x, p):
        y = block(x, p)
        return y, y

    x_last, per_layer = jax.lax.scan(step, x, stacked_params)
    return jnp.concatenate([x[None], per_layer], axis=0), x_last
