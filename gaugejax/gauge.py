"""The gauge group: signed permutations ``B_d = S_d ⋉ {±1}^d`` and its subgroups.

Convention (fixed; docs/conventions.md): a gauge ``G = (perm, signs)`` from model A to model B means that, for
the same input, ``h_B = h_A[..., perm] * signs``, i.e. ``h_B[j] = signs[j] * h_A[perm[j]]``.

Group laws are exact integer arithmetic: ``G1.then(G2)`` maps A→C when ``G1`` maps A→B and ``G2``
maps B→C.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from gaugejax.atomic import atomic_path
from gaugejax.errors import GaugeError


def _real(a: np.ndarray, name: str) -> None:
    """Refuses dtypes that are not real numbers (strings, complex, objects, booleans, raw bytes)."""
    if a.dtype.kind not in "iuf":
        raise GaugeError(f"{name} must hold real numbers, got dtype {a.dtype}")


def _as_perm(perm: Any) -> np.ndarray:
    p = np.asarray(perm)
    if p.ndim != 1:
        raise GaugeError(f"perm must be 1-D, got shape {p.shape}")
    if p.size == 0:
        p = p.astype(np.int64) if p.dtype.kind in "iufb" else p
    _real(p, "perm")
    if p.size and p.dtype.kind == "f" and not np.all(np.isfinite(p) & (np.mod(p, 1) == 0)):
        raise GaugeError("perm must hold integers")
    d = p.shape[0]
    if d and (p.min() < 0 or p.max() >= d):  # before the cast: 1e300 or 2**64-1 would wrap
        raise GaugeError(f"perm is not a permutation of range({d}): values outside [0, {d})")
    p = p.astype(np.int64)
    seen = np.zeros(d, dtype=bool)
    seen[p] = True
    if not seen.all():
        raise GaugeError(f"perm is not a permutation of range({d}): {d - int(seen.sum())} repeated values")
    return p


def _as_signs(signs: Any, d: int) -> np.ndarray:
    s = np.asarray(signs)
    if s.shape != (d,):
        raise GaugeError(f"signs must have shape ({d},) like perm, got {s.shape}")
    if s.size:
        _real(s, "signs")
    if not np.all((s == 1) | (s == -1)):
        raise GaugeError("signs must be +1 or -1 everywhere")
    return s.astype(np.int8)


@dataclass(frozen=True, eq=False)
class SignedPermutation:
    """An element of the hyperoctahedral group ``B_d`` acting on a residual axis.

    Args:
      perm: a permutation of ``range(d)`` (int64 after validation).
      signs: ``(d,)`` values in ``{+1, -1}`` (int8 after validation); default all +1.

    Example:
      >>> import numpy as np, gaugejax as gj
      >>> g = gj.SignedPermutation([2, 0, 1], [1, -1, 1])
      >>> g.apply(np.array([10.0, 20.0, 30.0]))
      array([ 30., -10.,  20.])
      >>> g.then(g.inverse()) == gj.SignedPermutation.identity(3)
      True
    """

    perm: np.ndarray
    signs: np.ndarray

    def __init__(self, perm: Any, signs: Any = None):
        p = _as_perm(perm)
        s = np.ones(p.shape[0], np.int8) if signs is None else _as_signs(signs, p.shape[0])
        p.setflags(write=False)
        s.setflags(write=False)
        object.__setattr__(self, "perm", p)
        object.__setattr__(self, "signs", s)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def identity(cls, d: int) -> "SignedPermutation":
        """The identity of ``B_d``."""
        return cls(np.arange(d), np.ones(d, np.int8))

    @classmethod
    def random(cls, key_or_seed: Any, d: int, *, signed: bool = True, global_sign: bool = False,
               negative_fraction: float | None = None) -> "SignedPermutation":
        """A uniformly random element of ``B_d`` (or of a subgroup).

        Args:
          key_or_seed: a ``jax.random.key`` or an integer seed.
          d: dimension.
          signed: draw independent signs (``B_d``); ``False`` gives a permutation (``S_d``).
          global_sign: with ``signed=False``, also draw one global sign (``S_d × {±1}``).
          negative_fraction: if given, exactly ``round(negative_fraction * d)`` signs are -1.

        Example:
          >>> g = SignedPermutation.random(0, 8)
          >>> g.d
          8
        """
        import jax

        key = jax.random.key(key_or_seed) if isinstance(key_or_seed, (int, np.integer)) else key_or_seed
        kp, ks = jax.random.split(key)
        perm = np.asarray(jax.random.permutation(kp, d))
        if negative_fraction is not None:
            m = int(round(negative_fraction * d))
            signs = np.ones(d, np.int8)
            signs[np.asarray(jax.random.permutation(ks, d))[:m]] = -1
        elif signed:
            signs = np.asarray(jax.random.rademacher(ks, (d,), dtype=np.int8))
        elif global_sign:
            signs = np.full(d, int(jax.random.rademacher(ks, (), dtype=np.int8)), np.int8)
        else:
            signs = np.ones(d, np.int8)
        return cls(perm, signs)

    # ----------------------------------------------------------------- properties
    @property
    def d(self) -> int:
        """The dimension the gauge acts on."""
        return int(self.perm.shape[0])

    @property
    def is_permutation(self) -> bool:
        """True when every sign is +1 (an element of ``S_d``)."""
        return bool(np.all(self.signs == 1))

    @property
    def is_global_sign(self) -> bool:
        """True when all signs are equal (an element of ``S_d × {±1}``, a LayerNorm symmetry)."""
        return bool(self.d == 0 or np.all(self.signs == self.signs[0]))

    @property
    def negative_fraction(self) -> float:
        """Fraction of coordinates whose sign is -1."""
        return float(np.mean(self.signs == -1)) if self.d else 0.0

    # ----------------------------------------------------------------- group laws
    def inverse(self) -> "SignedPermutation":
        """The gauge B→A: ``perm_inv[perm] = arange(d)``, ``signs_inv = signs[perm_inv]``."""
        inv = np.empty_like(self.perm)
        inv[self.perm] = np.arange(self.d)
        return SignedPermutation(inv, self.signs[inv])

    def then(self, other: "SignedPermutation") -> "SignedPermutation":
        """Composition: ``self`` maps A→B, ``other`` maps B→C; the result maps A→C."""
        if other.d != self.d:
            raise GaugeError(f"cannot compose gauges of dimension {self.d} and {other.d}")
        return SignedPermutation(self.perm[other.perm], other.signs * self.signs[other.perm])

    def permutation_part(self) -> "SignedPermutation":
        """The same permutation with every sign +1 (what ``S_d`` alignment keeps)."""
        return SignedPermutation(self.perm, np.ones(self.d, np.int8))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SignedPermutation):
            return NotImplemented
        return bool(np.array_equal(self.perm, other.perm) and np.array_equal(self.signs, other.signs))

    def __hash__(self) -> int:
        return hash((self.perm.tobytes(), self.signs.tobytes()))

    def __repr__(self) -> str:
        head = ", ".join(f"{'-' if s < 0 else '+'}{p}" for p, s in zip(self.perm[:6], self.signs[:6]))
        more = ", ..." if self.d > 6 else ""
        return f"SignedPermutation(d={self.d}, [{head}{more}], negative={int((self.signs < 0).sum())})"

    # ----------------------------------------------------------------- actions
    def apply(self, x: Any, axis: int = -1, *, signed: bool = True) -> Any:
        """Moves ``x`` from A's chart to B's along ``axis``: ``x[..., perm] * signs``.

        Works on numpy and JAX arrays (also inside ``jit``); dtype is preserved and the sign flip
        is an exact negation.

        Args:
          x: array with ``x.shape[axis] == d``.
          axis: the residual axis.
          signed: apply the signs (``False``: permutation only, e.g. RMSNorm gains, Adam ``nu``).
        """
        shape = getattr(x, "shape", None)
        if shape is None:
            raise GaugeError(f"expected an array, got {type(x).__name__}")
        ndim = len(shape)
        if not -ndim <= axis < ndim:
            raise GaugeError(f"axis {axis} out of range for an array of rank {ndim}")
        axis = axis % ndim
        if shape[axis] != self.d:
            raise GaugeError(f"gauge has d={self.d} but axis {axis} of the array has size {shape[axis]}")
        if isinstance(x, np.ndarray):
            return _apply_numpy(x, self.perm, self.signs if signed and not self.is_permutation else None, axis)
        jnp = _jnp()
        out = jnp.take(x, self.perm, axis=axis)
        if signed and not self.is_permutation:
            neg = (self.signs < 0).reshape((-1,) + (1,) * (ndim - axis - 1))
            out = jnp.where(neg, -out, out)
        return out

    def map_index(self, i: Any) -> Any:
        """Where A's coordinate ``i`` lands in B: the ``j`` with ``perm[j] == i`` (and its sign)."""
        inv = self.inverse()
        i = np.asarray(i)
        return inv.perm[i], self.signs[inv.perm[i]]

    def agreement(self, truth: "SignedPermutation") -> dict[str, float]:
        """Per-coordinate recovery against a known true gauge.

        Returns:
          ``perm``: fraction of ``j`` with the right source coordinate; ``signed``: right source and
          right sign; ``sign_given_perm``: right sign among the right sources.
        """
        if truth.d != self.d:
            raise GaugeError(f"cannot compare gauges of dimension {self.d} and {truth.d}")
        p_ok = self.perm == truth.perm
        s_ok = p_ok & (self.signs == truth.signs)
        return {
            "perm": float(p_ok.mean()),
            "signed": float(s_ok.mean()),
            "sign_given_perm": float(s_ok.sum() / max(int(p_ok.sum()), 1)),
        }

    # ----------------------------------------------------------------- files
    def save(self, path: str | os.PathLike, **metadata: Any) -> None:
        """Writes the gauge file (``.npz``: ``perm`` int64, ``signs`` int8, plus metadata arrays).

        Metadata values must be numpy-representable without pickling (numbers, strings, arrays).
        The write is atomic.
        """
        arrays = {"perm": self.perm, "signs": self.signs}
        for k, v in metadata.items():
            if k in arrays:
                raise GaugeError(f"metadata key {k!r} is reserved")
            a = np.asarray(v)
            if a.dtype == object:
                raise GaugeError(f"metadata {k!r} is not a plain array (object dtype would need pickle)")
            arrays[k] = a
        path = os.fspath(path)
        if not path.endswith(".npz"):
            raise GaugeError(f"gauge files end in .npz, got {path!r}")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SignedPermutation":
        """Reads a gauge file written by :meth:`save` (``allow_pickle=False``), validating it."""
        return cls(*_read_gauge_arrays(path)[:2])


def load_gauge_metadata(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The metadata arrays stored in a gauge file (everything but ``perm`` and ``signs``)."""
    return _read_gauge_arrays(path, metadata=True)[2]


def _read_gauge_arrays(path, metadata: bool = False):
    """``(perm, signs, metadata arrays)``; only ``perm`` and ``signs`` are read unless ``metadata``.
    Each member's declared size is checked before it is read (:mod:`gaugejax.io.npy_bounded`)."""
    from gaugejax.io.npy_bounded import npz_members, read_npz

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise GaugeError(f"gauge file {path!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise GaugeError(f"cannot read gauge file {path!r}: not an .npz archive")
    label = f"gauge file {path!r}"
    members = npz_members(path, error=GaugeError, label=label)
    names = {m[:-4] if m.endswith(".npy") else m for m in members}
    missing = [k for k in ("perm", "signs") if k not in names]
    if missing:
        raise GaugeError(f"gauge file {path!r} lacks {', '.join(missing)}")
    raw = sorted(m for m in members if not m.endswith(".npy"))  # np.savez writes every array as NAME.npy
    if raw:
        raise GaugeError(f"gauge file {path!r}: member {raw[0]} is not .npy array data; write gauges with "
                         "SignedPermutation.save (or np.savez)")
    arrays = read_npz(path, None if metadata else ("perm", "signs"), error=GaugeError, label=label)
    perm, signs = arrays.pop("perm"), arrays.pop("signs")
    return perm, signs, arrays


def _apply_numpy(x: np.ndarray, perm: np.ndarray, signs: np.ndarray | None, axis: int) -> np.ndarray:
    """``take`` then an exact in-place sign flip (floats: XOR of the sign bit, no temporaries)."""
    out = np.take(x, perm, axis=axis)
    if signs is None:
        return out
    shape = (-1,) + (1,) * (x.ndim - axis - 1)
    neg = (signs < 0).reshape(shape)
    if out.dtype.kind == "f" or out.dtype.name == "bfloat16":
        bits = out.view(np.dtype(f"u{out.dtype.itemsize}"))
        sign_bit = np.array(1 << (8 * out.dtype.itemsize - 1), bits.dtype)
        np.bitwise_xor(bits, neg * sign_bit, out=bits)
        return out
    return np.where(neg, -out, out)


def _jnp():
    import jax.numpy as jnp

    return jnp
