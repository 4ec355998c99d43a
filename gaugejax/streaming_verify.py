"""Verifying a gauge block by block: :func:`gaugejax.verify.verify` with one block of each model in memory.

Both checkpoints run through :func:`gaugejax.streaming.streamed_residuals` in lockstep; every
``h[i]`` of B is compared with ``gauge.apply`` of A's, and the output head (or the tied embedding)
is read once, after the last block, for the logits.

Example:
  >>> import gaugejax as gj
  >>> m = gj.random_model("llama", seed=0)
  >>> g = gj.SignedPermutation.random(1, m.config.d_model)
  >>> verify_streamed(m, gj.apply_gauge(m, g), g, np.arange(32)[None]).ok
  True
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gaugejax.models.base import ModelConfig
from gaugejax.streaming import (DEFAULT_CHUNK_ROWS, ModelBlocks, _chunks, _device, _final, _to, block_source,
                                streamed_residuals)
from gaugejax.verify import as_token_rows

__all__ = ["verify_streamed"]


@partial(jax.jit, static_argnums=0)
def _logits(config: ModelConfig, head: dict, final: jax.Array) -> jax.Array:
    from gaugejax.models.runner import unembed

    return unembed(config, _to(head, "float32"), final.astype(jnp.float32))


def verify_streamed(source_a: Any, source_b: Any, gauge: Any, tokens: Any, *, tol: float | None = None,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Any:
    """:func:`gaugejax.verify.verify` run block by block (float32): one block of each model in memory.

    The output head (or the tied embedding) is read once, after the last block.

    Returns:
      A :class:`gaugejax.verify.VerifyResult` (deviations of every ``h[i]`` and of the logits).
    """
    from gaugejax.align import check_pair
    from gaugejax.group import Group
    from gaugejax.verify import DEFAULT_TOL, VerifyResult, _output_in_residual_chart, _rel

    a, b = block_source(source_a), block_source(source_b)
    c = a.config
    check_pair(c, b.config)
    Group.of(c).check(gauge, d=c.d_model)
    tok = as_token_rows(tokens)
    dh, scale, nonfinite = [], [], None
    finals = {}
    for (i, ha), (_, hb) in zip(streamed_residuals(a, tok, chunk_rows=chunk_rows),
                                streamed_residuals(b, tok, chunk_rows=chunk_rows)):
        for name, h in (("A", ha), ("B", hb)):
            if nonfinite is None and not np.isfinite(h).all():
                nonfinite = f"h[{i}] of model {name}"
        dh.append(np.abs(hb - gauge.apply(ha)).max())
        scale.append(np.abs(ha).max())
        if i == c.n_layers:
            finals = {"A": ha, "B": hb}
    outs = {}
    for name, src in (("A", a), ("B", b)):
        head = _head(src)
        glob = _device(src.globals(None))
        outs[name] = np.concatenate([np.asarray(_logits(c, head, _final(c, "float32", glob, jnp.asarray(finals[name][s]))))
                                     for s in _chunks(len(tok), chunk_rows)])
    la, lb = outs["A"], outs["B"]
    residual_out = _output_in_residual_chart(c, la)
    if residual_out:
        la = gauge.apply(la)
    if nonfinite is None and not (np.isfinite(la).all() and np.isfinite(lb).all()):
        nonfinite = "the logits"
    return VerifyResult(logits=float(_rel(np.abs(la - lb).max(), np.abs(la).max())),
                        layers=tuple(float(v) for v in _rel(np.asarray(dh), np.asarray(scale))),
                        tol=float(DEFAULT_TOL if tol is None else tol), n_tokens=int(tok.size),
                        output_in_residual_chart=residual_out, nonfinite=nonfinite)


def _head(src: Any) -> dict:
    """The output head's parameters (``lm_head``/``lm_head_bias``, or the tied ``embed``)."""
    if isinstance(src, ModelBlocks):
        p = src.model.params
        return {k: jnp.asarray(p[k]) for k in ("lm_head", "lm_head_bias", "embed") if k in p}
    from gaugejax.io.hf import _split_fused

    out = {}
    for t in src._tensors:
        if t.layer is None and t.key in ("lm_head", "lm_head_bias", "embed"):
            arr = src.checkpoint.tensor(t.name)
            arr = arr.T if t.transpose else arr
            for key, part in _split_fused(t, arr):
                out[key] = jnp.asarray(part)
    if "lm_head" in out:
        out.pop("embed", None)
    return out
