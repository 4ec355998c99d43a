"""The generic forward pass: embed, blocks under ``lax.scan``, final norm, one shared unembedding.

A family module supplies the pieces (see :mod:`gaugejax.models.family`):

* ``context(c, t) -> dict``: what every block needs for a length-``t`` input (RoPE ``cos``/``sin``,
  masks); the runner adds ``ctx["layer"]``, the block's index (a traced integer).
* ``embed(c, params, tokens) -> x`` ``(B, T, D)``: the stream entering block 0.
* ``block(c, layer_params, x, ctx) -> x``: one block on the stream.
* ``final_norm(c, params, x) -> x``.

Everything here is pure and traceable: wrap it in ``jax.jit`` (the config is static).

A *hook* ``(layer, fn)`` edits the stream at residual index ``layer`` (0: the embeddings, ``i``:
after block ``i``, ``n_layers``: before the final norm) as ``x = fn(x)`` and continues from there;
the reported stream holds the edited value at ``layer``.
"""

from __future__ import annotations

import types
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gaugejax.errors import InputError
from gaugejax.models.base import ModelConfig

Hook = tuple[int, Callable[[jax.Array], jax.Array]]


def _scan(mod: types.ModuleType, c: ModelConfig, layers: Any, x: jax.Array, ctx: dict, lo: int, hi: int):
    """Blocks ``lo..hi-1``: returns their outputs ``(hi - lo, B, T, D)`` and the last one."""
    if hi <= lo:
        return jnp.zeros((0, *x.shape), x.dtype), x

    def step(x, inputs):
        p, i = inputs
        p = jax.tree.map(lambda a: a.astype(x.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, p)
        y = mod.block(c, p, x, {**ctx, "layer": i}).astype(x.dtype)
        return y, y

    sliced = jax.tree.map(lambda a: a[lo:hi], layers)
    x_last, ys = jax.lax.scan(step, x, (sliced, jnp.arange(lo, hi)))
    return ys, x_last


def hidden_states(mod: types.ModuleType, c: ModelConfig, params: Any, tokens: jax.Array, *,
                  hook: Hook | None = None) -> tuple[jax.Array, jax.Array]:
    """Residual stream before each block and after the last one, and the final-normed stream.

    Args:
      mod: the family module.
      c: its config.
      params: the params pytree, global entries in the compute dtype (the stacked blocks are cast
        to the stream's dtype one block at a time).
      tokens: ``(B, T)`` integer ids.
      hook: optional ``(layer, fn)``: ``x = fn(x)`` at residual index ``layer`` (static), then on.

    Returns:
      ``stream`` ``(n_layers + 1, B, T, D)`` (index 0 the embeddings, index i after block i,
      pre final norm) and ``final`` ``(B, T, D)`` after the final norm.
    """
    n = jax.tree.leaves(params["layers"])[0].shape[0]  # the stacked blocks (normally c.n_layers)
    at, fn = hook if hook is not None else (n + 1, None)
    if not 0 <= at <= n + 1:
        raise InputError(f"hook layer {at} outside [0, {n}]; pick a residual index in 0..{n} (0 = embeddings)")
    ctx = mod.context(c, tokens.shape[1])
    x = mod.embed(c, params, tokens)
    if at == 0:
        x = fn(x)
    first = x
    split = min(max(at, 0), n)
    ys1, x = _scan(mod, c, params["layers"], x, ctx, 0, split)
    if 0 < at <= n:
        x = fn(x)
        ys1 = ys1.at[-1].set(x)
    ys2, x = _scan(mod, c, params["layers"], x, ctx, split, n)
    stream = jnp.concatenate([first[None], ys1, ys2], axis=0)
    return stream, mod.final_norm(c, params, x)


def unembed(c: ModelConfig, params: Any, final: jax.Array) -> jax.Array:
    """Logits ``(B, T, V)`` from the final-normed stream, for every family.

    The head is ``params["lm_head"]`` or, with tied embeddings, ``params["embed"]``, plus
    ``params["lm_head_bias"]`` when present (GPT-J, Phi-2); logits are
    multiplied by ``c.logit_scale`` and, when ``c.logit_softcap`` is set, soft-capped as
    ``cap · tanh(logits / cap)``. An encoder without a head (BERT) returns ``final`` unchanged.
    """
    if "lm_head" in params:
        head = params["lm_head"]
    elif c.tie_embeddings:
        head = params["embed"]
    else:
        return final
    logits = jnp.einsum("btd,vd->btv", final, head)
    if "lm_head_bias" in params:
        logits = logits + params["lm_head_bias"]
    if c.logit_scale != 1.0:
        logits = logits * c.logit_scale
    if c.logit_softcap is not None:
        logits = c.logit_softcap * jnp.tanh(logits / c.logit_softcap)
    return logits


def upcast(params: Any) -> Any:
    """Floating params in the compute dtype: float64 if any leaf is float64, else float32."""
    leaves = jax.tree.leaves(params)
    dt = jnp.float64 if any(x.dtype == jnp.float64 for x in leaves) else jnp.float32
    return jax.tree.map(lambda x: x.astype(dt) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
