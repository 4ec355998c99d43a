"""Gauges along fine-tuning trajectories: compose local gauges between saved checkpoints.

Two checkpoints far apart in training may be too different for their residual coordinates to be
matched directly, while every pair of *adjacent* saved checkpoints is easy to match. With the
local gauges ``G_i: C_i → C_{i+1}`` the gauge ``C_1 → C_k`` is their composition
``G_1.then(G_2)...``; across two runs from the same base the path goes back down run A to the base
and up run B.

* :func:`align_path`: adjacent hops composed along a list of checkpoints (and, optionally, the
  direct endpoint match for comparison), with per-hop and per-coordinate confidence.
* :func:`cross_run`: run A's last checkpoint → run B's last checkpoint in three ways: composed
  along both trajectories through the base, routing through the base alone (``A_m → base →
  B_n``, two direct matches) and endpoint matching (``A_m → B_n``).

Checkpoints are :class:`~gaugejax.models.Model` objects or paths (loaded one or two at a time).

Example:
  >>> import gaugejax as gj
  >>> m = gj.random_model("llama", seed=0)
  >>> gs = [gj.SignedPermutation.random(i, m.d) for i in range(3)]
  >>> ckpts = [gj.apply_gauge(m, g) for g in gs]           # one model saved in three charts
  >>> tokens = np.random.default_rng(0).integers(0, 256, (8, 64))
  >>> path = align_path(ckpts, tokens)
  >>> path.gauge == gs[0].inverse().then(gs[2]), path.confident_fraction
  (True, 1.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from gaugejax.errors import GaugeError
from gaugejax.gauge import SignedPermutation
from gaugejax.models import Model
from gaugejax.verify import Progress

__all__ = ["Hop", "PathAlignment", "CrossRunAlignment", "align_pair", "align_path", "cross_run", "compose_hops",
           "compose_chain", "compose_files"]

Checkpoint = Any  # a Model or a path


@dataclass(frozen=True)
class Hop:
    """One matched pair of checkpoints.

    Attributes:
      src, dst: labels (paths or ``"#i"``).
      gauge: src → dst.
      n_tokens: tokens used.
      mean_abs_corr: mean ``|matched correlation|`` (1 for a pure re-gauging).
      min_margin: smallest assignment margin.
      n_ambiguous: coordinates not certified.
      ambiguous: ``(d,)`` bool, by dst coordinate.
    """

    src: str
    dst: str
    gauge: SignedPermutation
    n_tokens: int | None
    mean_abs_corr: float
    min_margin: float
    n_ambiguous: int
    ambiguous: np.ndarray = field(repr=False)

    @property
    def confident_fraction(self) -> float:
        """Fraction of coordinates certified on this hop."""
        return 1.0 - self.n_ambiguous / self.gauge.d

    @classmethod
    def from_match(cls, src: str, dst: str, result: Any) -> "Hop":
        return cls(src, dst, result.gauge, result.n_tokens, float(np.abs(result.matched_corr).mean()),
                   float(result.margin.min()), int(result.ambiguous.sum()), np.asarray(result.ambiguous, bool))

    def row(self) -> list[Any]:
        return [f"{self.src} → {self.dst}", self.n_tokens, self.mean_abs_corr, self.min_margin, self.n_ambiguous]


def compose_chain(gauges: Sequence[SignedPermutation],
                  ambiguous: Sequence[Any] | None = None) -> tuple[SignedPermutation, np.ndarray | None]:
    """Composes ``G_1.then(G_2)...`` and propagates per-coordinate ambiguity along the chain.

    Coordinate ``j`` of the last chart is ambiguous when its own hop flags it or when the
    coordinate it came from (``G_k.perm[j]``) was ambiguous in the chain before.

    Args:
      gauges: ``G_i`` maps chart ``i`` → ``i + 1``.
      ambiguous: one ``(d,)`` bool array per gauge (by target coordinate), or ``None`` entries /
        ``None`` when unknown.

    Returns:
      ``(composed gauge, ambiguous (d,) bool)``; the flags are ``None`` unless every hop has them.

    Example:
      >>> g = SignedPermutation([1, 0, 2])
      >>> _, amb = compose_chain([g, g], [np.array([True, False, False]), np.zeros(3, bool)])
      >>> amb.tolist()
      [False, True, False]
    """
    gauges = list(gauges)
    if not gauges:
        raise GaugeError("no gauges to compose")
    flags = [None] * len(gauges) if ambiguous is None else list(ambiguous)
    if len(flags) != len(gauges):
        raise GaugeError(f"{len(flags)} ambiguity arrays for {len(gauges)} gauges")
    total, amb = gauges[0], None
    known = all(f is not None and np.shape(f) == (g.d,) for f, g in zip(flags, gauges))
    if known:
        amb = np.asarray(flags[0], bool)
    for i, g in enumerate(gauges[1:], start=1):
        if g.d != total.d:
            raise GaugeError(f"cannot compose: gauge {i} has d={g.d} but the gauges before it have d={total.d}")
        total = total.then(g)
        if known:
            amb = np.asarray(flags[i], bool) | amb[g.perm]  # j of the new chart came from g.perm[j]
    return total, amb


def compose_hops(hops: Sequence[Hop]) -> tuple[SignedPermutation, np.ndarray]:
    """The composed gauge first → last, and per-coordinate confidence of the whole chain.

    Coordinate ``j`` of the last checkpoint is *confident* when every hop along its chain of
    matches was certified (:func:`compose_chain`).
    """
    if not hops:
        raise GaugeError("no hops to compose")
    gauge, amb = compose_chain([h.gauge for h in hops], [h.ambiguous for h in hops])
    return gauge, ~amb


def compose_files(paths: Sequence[str | os.PathLike]) -> tuple[SignedPermutation, dict[str, np.ndarray]]:
    """Composes gauge files ``G_1 then G_2 ...`` (A→B, B→C, ... gives A→last).

    Returns:
      The composed gauge and metadata for its file: ``composed_from`` (file names),
      ``method="composed"`` and, when every input records them, chain-propagated ``ambiguous``
      flags (:func:`compose_chain`).

    Raises:
      GaugeError: no paths, an unreadable file, or gauges of different widths.
    """
    from gaugejax.gauge import load_gauge_metadata

    paths = list(paths)
    if not paths:
        raise GaugeError("compose needs at least one gauge file")
    gauges = [SignedPermutation.load(p) for p in paths]
    for p, g in zip(paths, gauges):
        if g.d != gauges[0].d:
            raise GaugeError(f"cannot compose: {os.fspath(p)} has d={g.d} but the gauges before it have d={gauges[0].d}")
    flags = [load_gauge_metadata(p).get("ambiguous") for p in paths]
    total, amb = compose_chain(gauges, flags)
    meta = {"composed_from": np.asarray([os.path.basename(os.fspath(p)) for p in paths]),
            "method": np.asarray("composed")}
    if amb is not None:
        meta["ambiguous"] = amb
    return total, meta


@dataclass
class PathAlignment:
    """Result of :func:`align_path`.

    Attributes:
      gauge: composed gauge first → last checkpoint.
      hops: the local matches, in order.
      confident: ``(d,)`` bool, the chain of every last-checkpoint coordinate was certified.
      endpoint: the direct first → last :class:`~gaugejax.matching.MatchResult` (if asked).
    """

    gauge: SignedPermutation
    hops: list[Hop]
    confident: np.ndarray
    endpoint: Any = None

    @property
    def confident_fraction(self) -> float:
        return float(self.confident.mean())

    def endpoint_agreement(self) -> dict[str, float] | None:
        """Agreement of the direct endpoint gauge with the composed one (``None`` if not computed)."""
        return None if self.endpoint is None else self.endpoint.gauge.agreement(self.gauge)

    def summary(self) -> dict[str, Any]:
        out = {"d": self.gauge.d, "hops": [h.row() for h in self.hops], "confident_fraction": self.confident_fraction,
               "negative_signs": int((self.gauge.signs < 0).sum())}
        if self.endpoint is not None:
            out["endpoint_agreement"] = self.endpoint_agreement()
        return out


def _label(c: Checkpoint, i: int) -> str:
    return os.fspath(c) if isinstance(c, (str, os.PathLike)) else f"#{i}"


def _load(c: Checkpoint) -> Model:
    if isinstance(c, Model):
        return c
    if isinstance(c, (str, os.PathLike)):
        from gaugejax.io import load_model

        return load_model(c)
    raise GaugeError(f"a checkpoint must be a Model or a path, got {type(c).__name__}")


def align_pair(a: Checkpoint, b: Checkpoint, tokens: Any, *, layers: Sequence[int] | None = None,
               method: str = "sign_marginalized", labels: tuple[str, str] | None = None, **kwargs: Any) -> Any:
    """Direct match A → B (:func:`gaugejax.align.align`), accepting Models or paths.

    ``labels`` name the two checkpoints in errors (default ``"model A"``, ``"model B"``).
    """
    from gaugejax.align import align

    kwargs.setdefault("warn", False)
    if labels is not None:
        kwargs["names"] = labels
    return align(_load(a), _load(b), tokens, layers=layers, method=method, **kwargs)


class _Steps:
    """Counts matches for a ``progress(done, total)`` callback."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def align_path(checkpoints: Sequence[Checkpoint], tokens: Any, *, layers: Sequence[int] | None = None,
               method: str = "sign_marginalized", endpoint: bool = False, progress: Progress | None = None,
               **align_kwargs: Any) -> PathAlignment:
    """Matches every adjacent pair of checkpoints and composes the local gauges.

    Args:
      checkpoints: ``C_1, ..., C_k`` (Models or paths), ``k ≥ 2``, in path order.
      tokens: ``(rows, seq)`` probe token ids.
      layers: residual-stream indices to pool (default: :func:`gaugejax.align.default_layers`).
      method: matching method (``sign_marginalized`` for RMSNorm models).
      endpoint: also match ``C_1 → C_k`` directly.
      progress: ``progress(matches done, matches total)`` after each match (``k - 1`` hops, plus
        the endpoint match).
      **align_kwargs: passed to :func:`gaugejax.align.align` (``max_tokens``, ``confidence``, ...).

    Returns:
      :class:`PathAlignment`; ``.gauge`` maps ``C_1 → C_k``.

    Raises:
      NonFiniteError: a checkpoint's activations are NaN or infinite (named with the layer).
    """
    ckpts = list(checkpoints)
    if len(ckpts) < 2:
        raise GaugeError("a path needs at least two checkpoints")
    return _align_path(ckpts, tokens, _Steps(progress, len(ckpts) - 1 + int(endpoint)), layers=layers,
                       method=method, endpoint=endpoint, **align_kwargs)


def _align_path(ckpts: list[Checkpoint], tokens: Any, steps: _Steps, *, endpoint: bool = False,
                **kwargs: Any) -> PathAlignment:
    hops: list[Hop] = []
    prev = _load(ckpts[0])
    first = prev
    for i in range(1, len(ckpts)):
        cur = _load(ckpts[i])
        r = align_pair(prev, cur, tokens, labels=(_label(ckpts[i - 1], i - 1), _label(ckpts[i], i)), **kwargs)
        hop = Hop.from_match(_label(ckpts[i - 1], i - 1), _label(ckpts[i], i), r)
        hops.append(hop)
        steps.step()
        prev = cur
    gauge, confident = compose_hops(hops)
    direct = None
    if endpoint:
        direct = align_pair(first, prev, tokens, labels=(_label(ckpts[0], 0), _label(ckpts[-1], len(ckpts) - 1)),
                            **kwargs)
        steps.step()
    return PathAlignment(gauge, hops, confident, direct)


@dataclass
class CrossRunAlignment:
    """Result of :func:`cross_run`: run A's last checkpoint → run B's last checkpoint.

    Attributes:
      composed: the path ``A_m → ... → A_1 → base → B_1 → ... → B_n`` (:class:`PathAlignment`).
      via_base: ``A_m → base → B_n`` composed from two direct matches.
      endpoint: the direct ``A_m → B_n`` match.
    """

    composed: PathAlignment
    via_base: SignedPermutation
    endpoint: Any
    via_base_hops: tuple[Hop, Hop]

    @property
    def gauge(self) -> SignedPermutation:
        """The composed gauge (the recommended one)."""
        return self.composed.gauge

    def agreement(self, truth: SignedPermutation) -> dict[str, dict[str, float]]:
        """Recovery of each strategy against a known true gauge (``SignedPermutation.agreement``)."""
        return {"composed": self.composed.gauge.agreement(truth), "via_base": self.via_base.agreement(truth),
                "endpoint": self.endpoint.gauge.agreement(truth)}

    def summary(self) -> dict[str, Any]:
        return {"composed": self.composed.summary(),
                "via_base_vs_composed": self.via_base.agreement(self.composed.gauge),
                "endpoint_vs_composed": self.endpoint.gauge.agreement(self.composed.gauge)}


def cross_run(run_a: Sequence[Checkpoint], run_b: Sequence[Checkpoint], base: Checkpoint, tokens: Any, *,
              layers: Sequence[int] | None = None, method: str = "sign_marginalized",
              progress: Progress | None = None, **align_kwargs: Any) -> CrossRunAlignment:
    """Gauge from run A's last checkpoint to run B's last, both fine-tuned from ``base``.

    Args:
      run_a: run A's checkpoints in training order (``A_1`` nearest the base, ``A_m`` last).
      run_b: run B's checkpoints in training order.
      base: the shared starting checkpoint.
      progress: ``progress(matches done, matches total)`` after each match (the ``m + n`` hops of
        the path, the direct matches to and from the base when not already hops, the endpoint).
      tokens, layers, method, **align_kwargs: see :func:`align_path`.

    Returns:
      :class:`CrossRunAlignment` with the composed, via-base and endpoint gauges.
    """
    run_a, run_b = list(run_a), list(run_b)
    if not run_a or not run_b:
        raise GaugeError("each run needs at least one checkpoint")
    kw = dict(layers=layers, method=method, **align_kwargs)
    steps = _Steps(progress, len(run_a) + len(run_b) + int(len(run_a) > 1) + int(len(run_b) > 1) + 1)
    composed = _align_path([*reversed(run_a), base, *run_b], tokens, steps, **kw)
    a_end, b_end = run_a[-1], run_b[-1]
    la, lbase, lb = _label(a_end, 0), _label(base, 1), _label(b_end, 2)
    if len(run_a) == 1:
        to_base = composed.hops[0]
    else:
        to_base = Hop.from_match(la, lbase, align_pair(a_end, base, tokens, labels=(la, lbase), **kw))
        steps.step()
    if len(run_b) == 1:
        from_base = composed.hops[-1]
    else:
        from_base = Hop.from_match(lbase, lb, align_pair(base, b_end, tokens, labels=(lbase, lb), **kw))
        steps.step()
    endpoint = align_pair(a_end, b_end, tokens, labels=(la, lb), **kw)
    steps.step()
    return CrossRunAlignment(composed, to_base.gauge.then(from_base.gauge), endpoint, (to_base, from_base))
