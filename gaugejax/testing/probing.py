"""Probe gauges: the few group elements that test a rule, and how a gauge is named in a message.

A wrong rule shows under the smallest elements that touch it: a single transposition catches a
parameter that is not permuted (or permuted on the wrong axis), a single sign flip one that is
signed when it must not be (or the reverse), the global flip a LayerNorm bias left unsigned. A
random element of the group guards against anything the small ones miss.

Example:
  >>> [label for label, _ in probes("S_d x ±1", 8, seed=0)]
  ['swap 2 and 6', 'swap 0 and 5', 'a random permutation', 'flip every sign', 'swap 4 and 5 and flip every sign']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gaugejax.gauge import SignedPermutation
from gaugejax.group import Group


def as_group(group: Any) -> Group:
    """A :class:`~gaugejax.group.Group` from itself or a name (``"B_d"``, ``"S_d x ±1"``, ``"S_d"``)."""
    return group if isinstance(group, Group) else Group(group)


def signs_act(group: Any) -> bool:
    """Whether some element of the group flips a sign."""
    return as_group(group) is not Group.S_D


def transposition(d: int, i: int, j: int, *, global_flip: bool = False) -> SignedPermutation:
    """Swaps coordinates ``i`` and ``j`` (and negates every coordinate if ``global_flip``)."""
    perm = np.arange(d)
    perm[[i, j]] = perm[[j, i]]
    return SignedPermutation(perm, -np.ones(d, np.int8) if global_flip else None)


def sign_flip(d: int, i: int | None = None) -> SignedPermutation:
    """Negates coordinate ``i`` (every coordinate if ``i`` is ``None``)."""
    signs = np.ones(d, np.int8)
    if i is None:
        signs[:] = -1
    else:
        signs[i] = -1
    return SignedPermutation(np.arange(d), signs)


def describe(g: SignedPermutation) -> str:
    """A gauge in words: ``"swap 3 and 17"``, ``"flip the sign of coordinate 5"``, ...

    Example:
      >>> describe(transposition(8, 2, 5)), describe(sign_flip(8, 4)), describe(sign_flip(8))
      ('swap 2 and 5', 'flip the sign of coordinate 4', 'flip every sign')
    """
    moved = np.flatnonzero(g.perm != np.arange(g.d))
    neg = np.flatnonzero(g.signs < 0)
    if len(neg) == g.d and g.d > 1:
        flips = "flip every sign"
    elif len(neg) == 1:
        flips = f"flip the sign of coordinate {neg[0]}"
    elif len(neg):
        flips = f"flip the signs of {len(neg)} coordinates"
    else:
        flips = ""
    if len(moved) == 0:
        return flips or "the identity"
    perm = f"swap {moved[0]} and {moved[1]}" if len(moved) == 2 else f"a permutation moving {len(moved)} coordinates"
    return f"{perm} and {flips}" if flips else perm


def probes(group: Any, d: int, *, seed: int = 0) -> list[tuple[str, SignedPermutation]]:
    """Labelled probe gauges of a group: transpositions, sign flips, random elements.

    Args:
      group: a :class:`~gaugejax.group.Group` or its name.
      d: the residual width (at least 2).
      seed: chooses the coordinates and the random elements (``numpy.random.default_rng([seed, d])``).

    Returns:
      ``[(label, gauge), ...]``: two random transpositions and a random permutation; then, if the
      group has signs, the global flip and a transposition with it; for ``B_d`` two single sign
      flips and two random elements.
    """
    grp = as_group(group)
    rng = np.random.default_rng([seed, d])
    pair = lambda: sorted(rng.choice(d, 2, replace=False).tolist())  # noqa: E731
    out = [(describe(g), g) for g in (transposition(d, *pair()), transposition(d, *pair()))]
    out.append(("a random permutation", SignedPermutation(rng.permutation(d))))
    if grp is not Group.S_D:
        out += [(describe(g), g) for g in (sign_flip(d), transposition(d, *pair(), global_flip=True))]
    if grp is Group.B_D:
        out += [(describe(g), g) for g in (sign_flip(d, i) for i in pair())]
        out += [("a random element of B_d", random_element(grp, d, rng)) for _ in range(2)]
    return out


def random_element(group: Any, d: int, rng: np.random.Generator) -> SignedPermutation:
    """A uniformly random element of ``group`` from a numpy generator (nothing to compile)."""
    grp = as_group(group)
    perm = rng.permutation(d)
    if grp is Group.B_D:
        return SignedPermutation(perm, rng.choice(np.array([-1, 1], np.int8), d))
    if grp is Group.S_D_SIGN:
        return SignedPermutation(perm, np.full(d, rng.choice([-1, 1]), np.int8))
    return SignedPermutation(perm)
