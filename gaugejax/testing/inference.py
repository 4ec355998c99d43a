"""Inferring the gauge spec of any model from invariance tests alone.

:func:`infer_spec` proposes which axes of size ``d`` are residual and whether the sign acts on
them, for any parameter pytree and any ``fn(params, inputs)``, then verifies the whole spec on
random group elements. The algorithm (every step is a test of ``fn``, never a guess from names):

1. *Candidates.* Every axis of size ``d`` of a floating leaf. A leaf whose perturbation does not
   change the output is *unused*; an axis along which a leaf is constant is *undetermined* (no
   test can see it move). Both are left untouched and reported.
2. *Which axes permute*, one axis at a time. For a transposition ``τ = (i j)``, set slice ``j``
   to slice ``i`` along every candidate axis except the one tested, ``u``. If ``u`` belongs to a
   set of axes ``B`` that permute together without changing ``fn``, then ``τ`` on ``B`` only
   swaps ``u`` there (the rest is symmetric), so swapping ``u`` alone must leave ``fn`` unchanged,
   exactly; an axis that merely has size ``d`` (``n_heads · head_dim == d``, a q-norm over it)
   changes it. The test does not depend on which other axes are right. Four transpositions
   (see :func:`_test_pairs`); if the axes that pass do not make ``fn`` invariant on the permutation probes
   (rare: e.g. every transposition fell within one attention head), a descent toggles axes, one or
   two at a time, until they do. Leaves stacked on a leading layer axis are one leaf: the gauge
   acts on every layer alike.
3. *Separate symmetries.* When a smaller set of axes also permutes on its own (MLP neurons when
   ``d_ff == d``), it is split off and reported: the residual stream is the largest one.
4. *Signs.* Start from the convention (leaves with all values ``>= 0``, gains and Adam's ``nu``,
   permute only; everything else takes the sign) and descend on the global sign flip; then try
   single-coordinate flips with the same placement. Both pass: ``B_d``; only the global one:
   ``S_d × {±1}``; neither: ``S_d`` (every axis permute-only). Where the sign could sit in either of two places (a gain or
   the readers of the normalised stream) the convention's placement is the one kept.
5. *Verification.* The spec is checked on transpositions, sign flips and random elements of the
   group; a spec that fails is never returned.

Example:
  >>> import numpy as np, gaugejax as gj
  >>> m = gj.random_model("llama", seed=0)
  >>> tokens = np.arange(12).reshape(2, 6)
  >>> spec = infer_spec(lambda p, t: gj.forward(gj.Model(m.config, p), t), m.params, tokens, m.d)
  >>> spec == gj.gauge_spec(m)
  True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gaugejax.errors import GaugeError
from gaugejax.group import Group
from gaugejax.spec import Axes
from gaugejax.testing.assertions import default_rtol
from gaugejax.testing.flat import Harness, is_float_array
from gaugejax.testing.probing import probes, random_element, sign_flip, transposition
from gaugejax.testing.search import Scorer, describe_axes, disagreements, nonnegative, residual_action

__all__ = ["infer", "infer_spec", "Inference", "LeafEvidence"]

Unit = tuple[int, int]  # (leaf index, axis)


@dataclass(frozen=True)
class LeafEvidence:
    """What the tests found for one leaf.

    Attributes:
      path: the leaf's keys joined by ``/``.
      shape: its shape.
      axes: the inferred rule.
      status: ``"residual"``, ``"untouched"`` (has an axis of size d that is not residual),
        ``"no axis of size d"``, ``"unused"`` (``fn`` does not depend on it), ``"undetermined"``
        (constant along its axes of size d) or ``"other symmetry"``.
      note: the evidence in words, with the measured deviations.
    """

    path: str
    shape: tuple[int, ...]
    axes: Axes
    status: str
    note: str


@dataclass(frozen=True)
class Inference:
    """An inferred spec with its evidence.

    Attributes:
      spec: the spec pytree (structure of the params).
      group: the largest of ``B_d``, ``S_d × {±1}``, ``S_d`` under which ``fn`` is invariant with it.
      leaves: a :class:`LeafEvidence` per leaf, in flattening order.
      other_symmetries: sets of ``"path:axis"`` that permute among themselves but are not the
        residual stream (e.g. MLP neurons when ``d_ff == d``).
      checks: ``(probe, deviation)`` of the final verification.
      evaluations: how many times ``fn`` ran.
    """

    spec: Any
    group: Group
    leaves: tuple[LeafEvidence, ...]
    other_symmetries: tuple[tuple[str, ...], ...]
    checks: tuple[tuple[str, float], ...]
    evaluations: int

    def __str__(self) -> str:
        width = max((len(e.path) for e in self.leaves), default=4)
        lines = [f"group {self.group}; verified on {len(self.checks)} probes "
                 f"(max deviation {max((d for _, d in self.checks), default=0.0):.1e}); {self.evaluations} evaluations"]
        lines += [f"{e.path:<{width}}  {str(e.shape):<16} {describe_axes(e.axes):<36} {e.note}" for e in self.leaves]
        lines += [f"separate symmetry (not residual): {', '.join(s)}" for s in self.other_symmetries]
        return "\n".join(lines)


def _axes(h: Harness, units: set[Unit] | list[Unit], signed: dict[Unit, bool] | None = None) -> list[Axes]:
    acts: list[list] = [[None] * len(h.flat.shape(i)) for i in range(len(h.flat))]
    for i, ax in units:
        acts[i][ax] = residual_action(bool(signed and signed.get((i, ax))))
    return [Axes(*a) for a in acts]


def _unused(h: Harness, i: int, seed: int, tol: float) -> bool:
    """Whether a random perturbation of leaf ``i`` (10 % of its RMS) leaves the output unchanged."""
    x = h.host(i)
    a = x.astype(np.float64)
    scale = 0.1 * (float(np.sqrt((a ** 2).mean())) or 1.0)
    leaves = list(h.flat.leaves)
    leaves[i] = (a + scale * np.random.default_rng([seed, i]).normal(size=a.shape)).astype(x.dtype)
    return h.deviation(leaves, None) <= tol


def _constant_along(x: Any, ax: int) -> bool:
    a = np.asarray(x)
    return bool(np.all(a == np.take(a, [0], axis=ax)))


def _prefer(h: Harness, units: set[Unit]) -> tuple[int, int]:
    """Ties between equally valid axis sets: more leaves moved, then fewer axes."""
    return -len({i for i, _ in units}), len(units)


def _symmetrized(x: Any, axes: list[int], i: int, j: int) -> np.ndarray:
    """``x`` with slice ``j`` set to slice ``i`` along each of ``axes`` (a fixed point of swapping them)."""
    a = np.array(x)
    for ax in axes:
        a = np.moveaxis(a, ax, 0)
        a[j] = a[i]
        a = np.moveaxis(a, 0, ax)
    return a


def _test_pairs(d: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Transpositions for step 2: ``(i, i + d/2)`` lies in two different heads when heads are
    contiguous blocks, ``(i, i + 1)`` when they are interleaved; two random ones besides. (Inside
    one head, the query/key channels of a model without RoPE permute too: a real but separate
    symmetry that would otherwise pass.)"""
    a, b = int(rng.integers(0, d - d // 2)), int(rng.integers(0, d - 1))
    pairs = [(a, a + d // 2), (b, b + 1)] + [tuple(sorted(rng.choice(d, 2, replace=False).tolist())) for _ in range(2)]
    return list(dict.fromkeys(p for p in pairs if p[0] != p[1]))


def _in_some_symmetry(h: Harness, units: list[Unit], pairs: list[tuple[int, int]], tol: float) -> set[Unit]:
    """Step 2a: the axes that belong to *some* set of axes permuting without changing ``fn``.

    For a transposition ``τ = (i j)``, make every candidate axis symmetric under ``τ`` (slice
    ``j`` := slice ``i``) except the one tested, ``u``. If ``u`` is in a symmetric set ``B``, then
    ``τ`` on ``B`` only swaps ``u`` (the rest is symmetric), so swapping ``u`` alone must leave
    ``fn`` unchanged, exactly. An axis in no such set changes it. One axis at a time, so the test
    does not depend on which other axes are right.
    """
    by_leaf: dict[int, list[int]] = {}
    for i, ax in units:
        by_leaf.setdefault(i, []).append(ax)
    passed = set(units)
    for i, j in pairs:
        sym = {k: _symmetrized(h.host(k), axs, i, j) for k, axs in by_leaf.items()}
        for u in sorted(passed):
            k, ax = u
            leaves = list(h.flat.leaves)
            for kk, x in sym.items():
                leaves[kk] = x
            leaves[k] = _symmetrized(h.host(k), [a for a in by_leaf[k] if a != ax], i, j)
            swapped = list(leaves)
            swapped[k] = transposition(h.flat.shape(k)[ax], i, j).apply(leaves[k], axis=ax, signed=False)
            ref = h.outputs(leaves)
            scale = max((float(np.abs(r).max()) for r in ref if r.size), default=0.0) or 1.0
            dev = max((float(np.abs(a - b).max()) for a, b in zip(h.outputs(swapped), ref) if a.size), default=0.0)
            if not dev / scale <= tol:
                passed.discard(u)
    return passed


def _permuting_axes(h: Harness, units: list[Unit], sc: Scorer, start: set[Unit]) -> set[Unit]:
    """Step 2b: from ``start``, toggle axes one at a time (pairs if none helps) until every
    permutation probe passes."""
    cur = set(start)
    energy = sc.energy(_axes(h, cur))
    for _ in range(4 * len(units) + 4):
        if sc.valid(_axes(h, cur)):
            return cur
        ranked = sorted((sc.energy(_axes(h, cur ^ {u})), _prefer(h, cur ^ {u}), u) for u in units)
        if ranked[0][0] < energy * (1 - 1e-9):
            energy, _, u = ranked[0]
            cur ^= {u}
            continue
        top = [u for _, _, u in ranked[:12]]
        pairs = sorted((sc.energy(_axes(h, cur ^ {u, v})), _prefer(h, cur ^ {u, v}), (u, v))
                       for k, u in enumerate(top) for v in top[k + 1:])
        if not pairs or pairs[0][0] >= energy * (1 - 1e-9):
            break
        energy, _, (u, v) = pairs[0]
        cur ^= {u, v}
    fail = sc.first_failure(_axes(h, cur))
    raise GaugeError(f"no set of axes of size d={sc.probes[0][1].d} leaves fn unchanged under permutations "
                     f"(best attempt fails '{fail[0]}' by {fail[1]:.2g}); check d, or whether fn has a residual "
                     "stream symmetry at all")


def _split(h: Harness, cur: set[Unit], sc: Scorer, cap: int = 5) -> tuple[set[Unit], list[set[Unit]]]:
    """Step 3: split off smaller sets of axes that permute on their own (grown from leaves moving twice)."""
    blocks: list[set[Unit]] = []
    one = Scorer(sc.h, sc.probes[:1], sc.tol, cache=sc.cache)
    seeds = sorted(u for u in cur if sum(1 for v in cur if v[0] == u[0]) > 1)
    for seed in seeds:
        if seed not in cur:
            continue
        block = {seed}
        while len(block) <= cap and not sc.valid(_axes(h, cur - block)):
            rest = sorted(cur - block)
            if not rest:
                break
            block.add(min(rest, key=lambda u: (one.energy(_axes(h, cur - block - {u})), u)))
        if len(block) < len(cur - block) and sc.valid(_axes(h, cur - block)):
            blocks.append(block)
            cur = cur - block
    return cur, blocks


def _placement(h: Harness, units: list[Unit], sc: Scorer, start: dict[Unit, bool]) -> dict[Unit, bool] | None:
    """Step 4: descend from the convention's sign placement to one the sign probes accept."""
    leaves = h.flat.leaves
    cur = dict(start)
    if not any(cur.values()):
        return None
    energy = sc.energy(_axes(h, units, cur))
    for _ in range(2 * len(units) + 2):
        if sc.valid(_axes(h, units, cur)):
            return cur
        ranked = []
        for u in units:
            trial = {**cur, u: not cur[u]}
            if not any(trial.values()):  # signing nothing passes trivially: it is not a sign symmetry
                continue
            ax = _axes(h, units, trial)
            ranked.append((sc.energy(ax), disagreements(ax, leaves, True), u))
        ranked.sort()
        if not ranked or ranked[0][0] >= energy * (1 - 1e-9):
            return None
        energy, _, u = ranked[0]
        cur[u] = not cur[u]
    return None


def infer(fn: Callable[[Any, Any], Any], params: Any, inputs: Any, d: int, *, out_axes: Any = None,
          rtol: float | None = None, seed: int = 0, jit: bool = True) -> Inference:
    """Infers and verifies the gauge spec of ``params`` for ``fn``, with the evidence.

    Args:
      fn: ``fn(params, inputs)`` → array; invariant under the residual gauge (or equivariant, see
        ``out_axes``). Use generic parameters (:func:`~gaugejax.testing.generic`): tied gains or
        zero biases hide rules.
      params: any pytree: dicts, Flax linen variables, Flax NNX ``State``, Equinox modules, optax
        states (with the parameters, e.g. ``(params, opt_state)``).
      inputs: the inputs of ``fn``.
      d: the residual width.
      out_axes: ``None`` if the output is invariant; else its :class:`~gaugejax.spec.Axes` (e.g.
        an encoder returning the residual stream ``(batch, seq, d)``: ``Axes(None, None, RESIDUAL)``).
      rtol: tolerance on relative deviations (default ``1000 · eps`` of the output dtype).
      seed: chooses the probe gauges.
      jit: compile ``fn`` (default).

    Returns:
      An :class:`Inference` (``.spec``, ``.group``, per-leaf ``.leaves`` evidence).

    Raises:
      GaugeError: no axis of size ``d``, or no spec makes ``fn`` invariant (the message names the
        probe that fails).
    """
    if d < 2:
        raise GaugeError(f"d={d}: the residual width must be at least 2")
    h = Harness(fn, params, inputs, out_axes=out_axes, jit=jit)
    tol = default_rtol(h) if rtol is None else float(rtol)
    rng = np.random.default_rng(seed)
    units, status = _candidates(h, d, seed, tol)
    perm_sc = Scorer(h, probes("S_d", d, seed=seed)[:3], tol)
    cur = _permuting_axes(h, units, perm_sc, _in_some_symmetry(h, units, _test_pairs(d, rng), tol))
    cur, blocks = _split(h, cur, perm_sc)
    res = sorted(cur)
    if not res:
        raise GaugeError(f"no axis of size d={d} permutes without changing fn's output; check d")
    group, signed, sign_probe = _signs(h, res, d, rng, tol)
    axes = _axes(h, res, signed)

    check = Scorer(h, probes(group, d, seed=seed + 1) + [(f"a random element of {group}", random_element(group, d, rng))
                                                          for _ in range(4)], tol)
    devs = check.deviations(axes)
    if max(devs) > tol:
        worst = int(np.argmax(devs))
        raise GaugeError(f"the inferred spec fails verification under '{check.probes[worst][0]}' by {devs[worst]:.2g}; "
                         "fn may not be invariant under a residual gauge (check d and out_axes)")
    evidence = _evidence(h, axes, res, signed, group, sign_probe, units, blocks, status, tol)
    return Inference(h.flat.spec(axes), group, evidence,
                     tuple(tuple(f"{h.flat.paths[i]}:{ax}" for i, ax in sorted(b)) for b in blocks),
                     tuple((label, dev) for (label, _), dev in zip(check.probes, devs)), h.calls)


def _candidates(h: Harness, d: int, seed: int, tol: float) -> tuple[list[Unit], dict[int, tuple[str, str]]]:
    """Step 1: the axes of size ``d`` to test, and ``(status, note)`` of the leaves left out."""
    units: list[Unit] = []
    status: dict[int, tuple[str, str]] = {}
    for i in range(len(h.flat)):
        cands = h.flat.candidates(i, d)
        if not cands:
            status[i] = ("no axis of size d", "") if is_float_array(h.flat.leaves[i]) else ("untouched", "not a float array")
        elif _unused(h, i, seed, tol):
            status[i] = ("unused", "fn's output does not depend on it")
        for ax in cands if i not in status else []:
            if _constant_along(h.host(i), ax):
                status[i] = ("undetermined", f"constant along axis {ax}: no test sees it move; use generic values "
                             "(gaugejax.testing.generic)")
            else:
                units.append((i, ax))
    if not units:
        raise GaugeError(f"no parameter has an axis of size d={d} that fn depends on; check d")
    return units, status


def _signs(h: Harness, res: list[Unit], d: int, rng: np.random.Generator, tol: float):
    """Step 4: the group and the sign placement: ``(group, {unit: signed}, the probe that decides it)``."""
    pref = {u: not nonnegative(h.flat.leaves[u[0]]) for u in res}
    i, j = sorted(rng.choice(d, 2, replace=False).tolist())
    glob = Scorer(h, [("flip every sign", sign_flip(d)),
                      ("swap and flip every sign", transposition(d, i, j, global_flip=True))], tol)
    coord = Scorer(h, [(f"flip coordinate {i}", sign_flip(d, i)), (f"flip coordinate {j}", sign_flip(d, j)),
                       ("a random element of B_d", random_element(Group.B_D, d, rng))], tol)
    signed = _placement(h, res, glob, pref)
    if signed is None:  # no sign flip leaves fn unchanged: permutations only
        return Group.S_D, {u: False for u in res}, None
    if coord.valid(_axes(h, res, signed)):
        return Group.B_D, signed, coord.probes[0][1]
    return Group.S_D_SIGN, signed, glob.probes[0][1]


def _evidence(h: Harness, axes: list[Axes], res: list[Unit], signed: dict[Unit, bool], group: Group, sign_probe,
              units: list[Unit], blocks: list[set[Unit]], status: dict[int, tuple[str, str]], tol: float
              ) -> tuple[LeafEvidence, ...]:
    """Per leaf, what the tests say: how far the output moves if its rule is dropped or its sign flipped."""
    flat = h.flat
    probe = transposition(sign_probe.d if sign_probe is not None else flat.shape(res[0][0])[res[0][1]], 0, 1)
    in_block = {u for b in blocks for u in b}
    out = []
    for i in range(len(flat)):
        mine = [u for u in res if u[0] == i]
        others = [u for u in units if u[0] == i and u not in res]
        if mine:
            dropped = list(axes)
            dropped[i] = Axes(*(None,) * len(axes[i].actions))
            st, note = "residual", f"if left untouched, the output moves by {h.gauge_deviation(dropped, probe):.2g}"
            if sign_probe is not None:
                flipped = list(axes)
                flipped[i] = _axes(h, mine, {u: not signed[u] for u in mine})[i]
                dev = h.gauge_deviation(flipped, sign_probe)
                which = "unsigned" if any(signed[u] for u in mine) else "signed"
                note += (f"; if {which}, by {dev:.2g}" if dev > tol
                         else f"; {which} it also passes (the sign can sit elsewhere): the convention's placement is kept")
        elif any(u in in_block for u in others):
            st, note = "other symmetry", "its axes of size d permute with a separate symmetry, not the residual stream"
        elif others:
            trial = list(axes)
            trial[i] = _axes(h, others)[i]
            st = "untouched"
            note = (f"axis {', '.join(str(ax) for _, ax in others)} has size d, but moving it moves the output by "
                    f"{h.gauge_deviation(trial, probe):.2g}")
        else:
            st, note = status.get(i, ("no axis of size d", ""))
        out.append(LeafEvidence(flat.paths[i], flat.shape(i), axes[i], st, note))
    return tuple(out)


def infer_spec(fn: Callable[[Any, Any], Any], params: Any, inputs: Any, d: int, **kwargs: Any) -> Any:
    """The inferred spec of ``params`` (a pytree of :class:`~gaugejax.spec.Axes`); see :func:`infer`.

    Example:
      >>> import numpy as np, gaugejax as gj
      >>> m = gj.random_model("gpt2", seed=0)
      >>> spec = infer_spec(lambda p, t: gj.forward(gj.Model(m.config, p), t), m.params, np.arange(8)[None], m.d)
      >>> spec["layers"]["attn_norm"], spec["layers"]["o_bias"]
      (Axes(None, residual:perm), Axes(None, residual))
    """
    return infer(fn, params, inputs, d, **kwargs).spec
