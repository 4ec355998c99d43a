"""Verifying that checkpoint B is checkpoint A moved by a gauge: same outputs, gauged residual stream.

:func:`verify` runs both models on the same tokens and measures, relative to A's scale,

* the output deviation ``max |out_B − out_A|`` for models whose output is logits (invariant under
  every gauge), or ``max |out_B − G(out_A)|`` for models whose output is a hidden state in the
  residual chart (BERT encoders return their final hidden states);
* per residual-stream index ``i`` (0 = embeddings, ``i`` = after block ``i``, the last one before the
  final norm) ``max |h_B[i] − G(h_A[i])|``.

A NaN or infinite value anywhere (either model, any layer, the outputs) is a failure, never a
small deviation: :attr:`VerifyResult.nonfinite` names the first place it appears, and ``ok`` is
``False``. :func:`first_nonfinite` and :func:`check_finite` are the same rule for other callers
(alignment, audits): they name the layer and raise :class:`~gaugejax.errors.NonFiniteError`.

Example:
  >>> import numpy as np, gaugejax as gj
  >>> m = gj.random_model("llama", seed=0)
  >>> g = gj.SignedPermutation.random(1, m.d)
  >>> tokens = np.random.default_rng(0).integers(0, 256, (2, 16))
  >>> verify(m, gj.apply_gauge(m, g), g, tokens).ok
  True
  >>> verify(m, gj.apply_gauge(m, g), g.permutation_part(), tokens).ok
  False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from gaugejax.errors import GaugeError, NonFiniteError
from gaugejax.io.finite import broken_weights as _broken_weights
from gaugejax.io.finite import check_finite_tensor, is_floating as _floating
from gaugejax.gauge import SignedPermutation
from gaugejax.group import Group

__all__ = ["VerifyResult", "verify", "output_deviation", "first_nonfinite", "check_finite", "check_finite_tensor",
           "check_finite_weights", "nonfinite_weight", "as_token_rows", "DEFAULT_TOL"]

DEFAULT_TOL = 1e-4
"""Relative tolerance of :func:`verify`: float32 forward passes (the reference implementations
compute norms and RoPE in float32, so even float64 parity stops near 1e-7)."""

Progress = Callable[[int, int], None]
"""Progress callbacks of long-running functions: ``progress(done, total)`` after each unit of work."""


# --------------------------------------------------------------------------- the non-finite rule
def first_nonfinite(stream: Any) -> int | None:
    """Index along the leading (layer) axis of the first entry holding a NaN or ±Inf; ``None`` if
    every value is finite. Works on numpy and JAX arrays.

    Example:
      >>> h = np.zeros((3, 2, 4)); h[2, 1, 0] = np.nan
      >>> first_nonfinite(h), first_nonfinite(h[:2])
      (2, None)
    """
    x = stream if hasattr(stream, "ndim") else np.asarray(stream)
    if x.ndim == 0:
        return None if bool(np.isfinite(np.asarray(x))) else 0
    if isinstance(x, np.ndarray):
        finite = np.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
    else:
        import jax.numpy as jnp

        finite = np.asarray(jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1))
    return None if bool(finite.all()) else int(np.argmin(finite))


def check_finite(stream: Any, *, labels: Sequence[int] | None = None, what: str = "the model") -> None:
    """Raises :class:`~gaugejax.errors.NonFiniteError` naming the first non-finite layer of ``stream``.

    Args:
      stream: ``(L, ...)`` activations, one entry per residual-stream index.
      labels: the residual-stream index of each entry (default ``0..L-1``).
      what: the subject of the message (e.g. ``"model B"``).

    Example:
      >>> check_finite(np.array([[0.0], [np.inf]]), labels=[3, 5], what="model A")
      Traceback (most recent call last):
      ...
      gaugejax.errors.NonFiniteError: model A has NaN or infinite activations at h[5] (0 = embeddings, i = after block i): a broken checkpoint or an overflow in its dtype; run `gaugejax verify` on it
    """
    i = first_nonfinite(stream)
    if i is not None:
        label = labels[i] if labels is not None else i
        raise NonFiniteError(f"{what} has NaN or infinite activations at h[{label}] (0 = embeddings, i = after "
                             "block i): a broken checkpoint or an overflow in its dtype; run `gaugejax verify` on it")


def check_finite_weights(model: Any, where: Any) -> None:
    """Raises :class:`~gaugejax.errors.NonFiniteError` naming the first stored tensor of ``model``
    (loaded from ``where``) that holds a NaN or ±Inf (:func:`nonfinite_weight`).

    Example:
      >>> import gaugejax as gj
      >>> check_finite_weights(gj.random_model("gpt2", seed=0), "model.gguf")
    """
    name = nonfinite_weight(model)
    if name is not None:
        raise NonFiniteError(_broken_weights(where, name))


def nonfinite_weight(model: Any) -> str | None:
    """The Hugging Face name of the first stored tensor of ``model`` holding a NaN or ±Inf, else ``None``.

    Example:
      >>> import gaugejax as gj
      >>> m = gj.random_model("llama", seed=0)
      >>> nonfinite_weight(m) is None
      True
      >>> up = m.params["layers"]["up"]
      >>> nonfinite_weight(gj.Model(m.config, {**m.params, "layers": {**m.params["layers"],
      ...                                      "up": up.at[1, 0, 0].set(np.inf)}}))
      'model.layers.1.mlp.up_proj.weight'
    """
    import jax
    import jax.numpy as jnp

    from gaugejax.models import family_module

    bad = {jax.tree_util.keystr(k) for k, x in jax.tree_util.tree_leaves_with_path(model.params)
           if _floating(x.dtype) and not bool(jnp.isfinite(x).all())}
    if not bad:
        return None
    c = model.config
    for t in family_module(c).hf_tensors(c):
        for key in [k for k, _ in t.parts] or [t.key]:
            path = ("layers", key) if t.layer is not None else (key,)
            if jax.tree_util.keystr(tuple(jax.tree_util.DictKey(p) for p in path)) not in bad:
                continue
            x = model.params["layers"][key] if t.layer is not None else model.params[key]
            at = () if t.layer is None else (t.layer,) if t.expert is None else (t.layer, t.expert)
            if not bool(jnp.isfinite(x[at]).all()):
                return t.name
    return sorted(bad)[0]  # a parameter the tensor table does not list (not expected)


# --------------------------------------------------------------------------- helpers
def as_token_rows(tokens: Any) -> np.ndarray:
    """Token ids as a non-empty integer ``(rows, seq)`` array (``(seq,)`` is one row).

    Raises:
      GaugeError: not integers, empty, or of rank other than 1 or 2.
    """
    t = np.asarray(tokens)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.size == 0:
        raise GaugeError(f"tokens must be a non-empty (rows, seq) array, got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise GaugeError(f"tokens must be integer ids, got dtype {t.dtype}")
    return t


def _output_in_residual_chart(config: Any, out: np.ndarray) -> bool:
    # Logits have the vocabulary on their last axis; anything else a forward pass returns here is a
    # hidden state in the residual chart (BERT encoders).
    return out.shape[-1] != config.vocab_size


def _first_nonfinite_place(stream: np.ndarray, out: np.ndarray, name: str) -> tuple[int, str] | None:
    """``(position, description)`` of the first NaN/Inf: ``h[i]`` at position ``i``, the outputs after
    every layer; ``None`` if all finite."""
    i = first_nonfinite(stream)
    if i is not None:
        return i, f"h[{i}] of model {name}"
    if not np.isfinite(out).all():
        return stream.shape[0], f"logits of model {name}"
    return None


def _rel(dev: Any, scale: Any) -> Any:
    with np.errstate(invalid="ignore", over="ignore"):  # inf / inf is the NaN a non-finite model reports
        return np.asarray(dev, np.float64) / np.maximum(np.asarray(scale, np.float64), 1e-30)


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`.

    Attributes:
      logits: relative max deviation of the outputs (``nan`` when not finite). For models whose
        output is a hidden state (BERT) the gauge is applied to A's output before comparing.
      layers: relative max deviation of ``h_B[i]`` from ``G(h_A[i])`` per residual-stream index
        ``i = 0..n_layers`` (the last before the final norm).
      tol: the tolerance every deviation is held to.
      n_tokens: tokens run through both models.
      output_in_residual_chart: the outputs are hidden states compared through the gauge.
      nonfinite: where a NaN or ±Inf first appears (``"h[3] of model A"``, ``"logits of model B"``),
        or ``None``.
    """

    logits: float
    layers: tuple[float, ...]
    tol: float
    n_tokens: int
    output_in_residual_chart: bool = False
    nonfinite: str | None = None

    @property
    def ok(self) -> bool:
        """Every value finite and every deviation within ``tol``."""
        devs = np.asarray([self.logits, *self.layers], np.float64)
        return self.nonfinite is None and bool(np.all(devs <= self.tol))

    def rows(self) -> list[tuple[str, float, bool]]:
        """``(name, relative deviation, within tol)`` for the outputs and every layer."""
        out = "output" if self.output_in_residual_chart else "logits"
        named = [(out, self.logits), *((f"h[{i}]", v) for i, v in enumerate(self.layers))]
        return [(n, float(v), bool(v <= self.tol)) for n, v in named]

    def summary(self) -> dict[str, Any]:
        """Plain-Python summary (JSON-serialisable; non-finite deviations as ``None``)."""
        fin = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731
        return {"ok": self.ok, "tol": self.tol, "n_tokens": self.n_tokens, "logits": fin(self.logits),
                "layers": [fin(v) for v in self.layers], "output_in_residual_chart": self.output_in_residual_chart,
                "nonfinite": self.nonfinite}


# --------------------------------------------------------------------------- verification
def output_deviation(model_a: Any, model_b: Any, tokens: Any, gauge: SignedPermutation | None = None) -> float:
    """``max |out_B − out_A| / max |out_A|`` on ``tokens`` (``nan`` if anything is not finite).

    Logits are compared as they are; hidden-state outputs (BERT) through ``gauge`` if given. This
    is the function-level half of :func:`verify`, for chart changes that need not be gauges.

    Example:
      >>> import gaugejax as gj
      >>> m = gj.random_model("gpt2", seed=0)
      >>> bool(output_deviation(m, gj.apply_gauge(m, gj.SignedPermutation.random(0, m.d, signed=False)), [1, 2]) < 1e-5)
      True
    """
    from gaugejax.models import forward

    t = as_token_rows(tokens)
    a, b = np.asarray(forward(model_a, t)), np.asarray(forward(model_b, t))
    if gauge is not None and _output_in_residual_chart(model_a.config, a):
        a = gauge.apply(a)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    return float(_rel(np.abs(a - b).max(), np.abs(a).max()))


def verify(model_a: Any, model_b: Any, gauge: SignedPermutation, tokens: Any, *, tol: float = DEFAULT_TOL,
           batch_rows: int = 8, progress: Progress | None = None) -> VerifyResult:
    """Checks that ``model_b`` is ``model_a`` moved by ``gauge`` (A→B), on ``tokens``.

    Args:
      model_a, model_b: :class:`~gaugejax.models.Model` s of the same family and shape.
      gauge: the gauge A→B; it must belong to A's group (``B_d`` for RMSNorm, ``S_d × {±1}`` for
        LayerNorm).
      tokens: ``(rows, seq)`` (or ``(seq,)``) integer ids.
      tol: relative tolerance (:data:`DEFAULT_TOL`).
      batch_rows: token rows per forward pass.
      progress: ``progress(rows done, rows total)`` after each batch.

    Returns:
      :class:`VerifyResult`; ``.ok`` is the verdict. A NaN or Inf anywhere makes it ``False`` and is
      named in ``.nonfinite``.

    Raises:
      CheckpointError: the models differ in family, width, depth or vocabulary.
      GaugeError: a gauge of the wrong width or outside the models' group; bad tokens.
    """
    from gaugejax.align import check_pair
    from gaugejax.models import forward, residual_stream

    ca = model_a.config
    check_pair(ca, model_b.config)
    Group.of(ca).check(gauge, d=ca.d_model)
    t = as_token_rows(tokens)
    batch_rows = max(1, int(batch_rows))
    dl = scale_l = 0.0
    dh = np.zeros(ca.n_layers + 1)
    scale_h = np.zeros(ca.n_layers + 1)
    residual_out = False
    nonfinite: tuple[int, str] | None = None  # (position along h[0..L], logits = L + 1; description)
    for start in range(0, t.shape[0], batch_rows):
        rows = t[start:start + batch_rows]
        ha = np.asarray(residual_stream(model_a, rows, final_norm=False))
        hb = np.asarray(residual_stream(model_b, rows, final_norm=False))
        la, lb = np.asarray(forward(model_a, rows)), np.asarray(forward(model_b, rows))
        for name, h, out in (("A", ha, la), ("B", hb, lb)):
            where = _first_nonfinite_place(h, out, name)
            if where is not None and (nonfinite is None or where[0] < nonfinite[0]):
                nonfinite = where
        residual_out = _output_in_residual_chart(ca, la)
        if residual_out:
            la = gauge.apply(la)
        # np.maximum propagates NaN (Python's max would skip it); inf - inf is a NaN reported in
        # ``nonfinite``, not a warning
        with np.errstate(invalid="ignore", over="ignore"):
            dl = np.maximum(dl, np.abs(la - lb).max())
            scale_l = np.maximum(scale_l, np.abs(la).max())
            dh = np.maximum(dh, np.abs(hb - gauge.apply(ha)).reshape(ca.n_layers + 1, -1).max(axis=1))
            scale_h = np.maximum(scale_h, np.abs(ha).reshape(ca.n_layers + 1, -1).max(axis=1))
        if progress is not None:
            progress(min(start + batch_rows, t.shape[0]), t.shape[0])
    return VerifyResult(
        logits=float(_rel(dl, scale_l)), layers=tuple(float(v) for v in _rel(dh, scale_h)), tol=float(tol),
        n_tokens=int(t.size), output_in_residual_chart=residual_out,
        nonfinite=None if nonfinite is None else nonfinite[1])
