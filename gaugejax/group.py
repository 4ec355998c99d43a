"""Gauge groups as values: ``B_d``, ``S_d × {±1}`` and ``S_d``.

A model's *gauge group* is the set of residual chart changes (signed permutations) that keep every
layer in its own parametric form (see ``docs/conventions.md``):

* :attr:`Group.B_D` ``"B_d"``: all signed permutations, ``2^d · d!`` elements. RMSNorm models
  (Llama, Qwen2, Mistral, SmolLM, ...).
* :attr:`Group.S_D_SIGN` ``"S_d x ±1"``: permutations with one *global* sign, ``2 · d!``
  elements. LayerNorm models (GPT-2, GPT-NeoX, BERT): mean subtraction only commutes with
  ``±1`` times a permutation.
* :attr:`Group.S_D` ``"S_d"``: permutations only, ``d!`` elements. What permutation-only
  alignment (and transport) can express; symmetry-incomplete for both norms.

``S_d ⊂ S_d × {±1} ⊂ B_d``. Every element is a :class:`~gaugejax.gauge.SignedPermutation`; a
group only says which of them are allowed. :class:`Group` is a ``str`` enum, so a member equals its
name (``Group.B_D == "B_d"``) and prints, hashes and serialises as it. ``Group(name)`` also accepts
the spellings ``"S_d x +-1"``, ``"S_d × {±1}"``, ``"bd"``, ``"permutation"``, ``"layernorm"``, ...

Not to be confused with the *space* an :class:`~gaugejax.spec.AxisAction` names (``"residual"``,
``"neurons"``, ...): that says *which* gauge acts on an axis; a :class:`Group` says which gauges
are symmetries.

Example:
  >>> import gaugejax as gj
  >>> from gaugejax.group import Group
  >>> grp = Group.of(gj.tiny_config("gpt2"))
  >>> grp, Group("S_d x +-1") is grp
  (<Group.S_D_SIGN: 'S_d x ±1'>, True)
  >>> g = gj.SignedPermutation([1, 0, 2], [-1, -1, 1])
  >>> grp.contains(g), grp.project(g).signs.tolist()
  (False, [-1, -1, -1])
  >>> Group.S_D.project(g).signs.tolist()
  [1, 1, 1]
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

from gaugejax.errors import GaugeError
from gaugejax.gauge import SignedPermutation

__all__ = ["Group", "B_D", "S_D_SIGN", "S_D"]


def _key(name: str) -> str:
    """Spelling-insensitive key: lower case, no spaces or braces, ``×`` → ``x``, ``+-`` → ``±``."""
    k = name.strip().lower().replace(" ", "").replace("×", "x").replace("{", "").replace("}", "")
    return k.replace("+-", "±").replace("+/-", "±")


class Group(str, enum.Enum):
    """A gauge group; members are their names (``str``)."""

    B_D = "B_d"
    S_D_SIGN = "S_d x ±1"
    S_D = "S_d"

    def __str__(self) -> str:
        return self.value

    __hash__ = str.__hash__  # Group.B_D and "B_d" are the same dict key

    @classmethod
    def _missing_(cls, value: object) -> "Group":
        if isinstance(value, str):
            found = _ALIASES.get(_key(value))
            if found is not None:
                return cls(found)
        raise GaugeError(f"unknown gauge group {value!r}; use one of {', '.join(g.value for g in cls)}")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def of(cls, config: Any) -> "Group":
        """The gauge group of a model, from its norm.

        Args:
          config: a model config (anything with ``.norm``), a :class:`~gaugejax.models.Model`
            (``.config.norm``), or the norm itself (``"rmsnorm"`` / ``"layernorm"``).

        Raises:
          GaugeError: an unknown norm.

        Example:
          >>> import gaugejax as gj
          >>> Group.of(gj.random_model("llama")), Group.of("layernorm")
          (<Group.B_D: 'B_d'>, <Group.S_D_SIGN: 'S_d x ±1'>)
        """
        norm = config if isinstance(config, str) else getattr(getattr(config, "config", config), "norm", None)
        if norm == "rmsnorm":
            return cls.B_D
        if norm == "layernorm":
            return cls.S_D_SIGN
        raise GaugeError(f"no gauge group known for norm {norm!r} (expected 'rmsnorm' or 'layernorm')")

    # ------------------------------------------------------------------ properties
    @property
    def description(self) -> str:
        """One line for tables: ``"B_d (signed permutations)"``, ..."""
        return {"B_d": "B_d (signed permutations)", "S_d x ±1": "S_d × {±1} (permutations, one global sign)",
                "S_d": "S_d (permutations)"}[self.value]

    def subgroup_of(self, other: "Group | str") -> bool:
        """``True`` when every element of ``self`` is in ``other`` (``S_d ⊂ S_d × {±1} ⊂ B_d``).

        Example:
          >>> Group.S_D.subgroup_of("B_d"), Group.B_D.subgroup_of(Group.S_D_SIGN)
          (True, False)
        """
        order = (Group.S_D, Group.S_D_SIGN, Group.B_D)
        return order.index(self) <= order.index(Group(other))

    # ------------------------------------------------------------------ elements
    def contains(self, gauge: SignedPermutation) -> bool:
        """Whether ``gauge`` is an element of this group.

        Example:
          >>> g = SignedPermutation([1, 0], [-1, -1])
          >>> [grp.contains(g) for grp in Group]
          [True, True, False]
        """
        if self is Group.B_D:
            return True
        if self is Group.S_D_SIGN:
            return gauge.is_global_sign
        return gauge.is_permutation

    def check(self, gauge: SignedPermutation, d: int | None = None) -> SignedPermutation:
        """Returns ``gauge`` if it is an element (of width ``d`` if given), else raises.

        Raises:
          GaugeError: a wrong width, or an element outside the group (the message names the fix).
        """
        if d is not None and gauge.d != d:
            raise GaugeError(f"gauge has d={gauge.d} but the model's residual width is {d}")
        if not self.contains(gauge):
            n_neg = int((gauge.signs < 0).sum())
            what = "permutations with one global sign" if self is Group.S_D_SIGN else "permutations"
            raise GaugeError(f"{self} only contains {what}; this gauge flips {n_neg} of {gauge.d} coordinates. "
                             f"Use Group({self.value!r}).project(gauge) or match with this group")
        return gauge

    def project(self, gauge: SignedPermutation, weights: Any = None) -> SignedPermutation:
        """The element of this group nearest to ``gauge`` (same permutation; signs adjusted).

        ``B_d``: ``gauge`` itself. ``S_d``: its signs dropped. ``S_d × {±1}``: every sign set to
        the majority sign (as signed permutation matrices, the nearest global-sign element);
        a tie goes to the sign of ``Σ_j weights[j] · signs[j]``, then to ``+1``.

        Args:
          gauge: any signed permutation.
          weights: ``(d,)`` non-negative tie-breaking weights (e.g. ``|matched correlation|``).

        Example:
          >>> g = SignedPermutation([0, 1, 2, 3], [1, -1, -1, 1])
          >>> Group.S_D_SIGN.project(g, weights=[0.1, 0.9, 0.9, 0.1]).signs.tolist()
          [-1, -1, -1, -1]
        """
        if self is Group.B_D:
            return gauge
        if self is Group.S_D:
            return gauge.permutation_part()
        return SignedPermutation(gauge.perm, np.full(gauge.d, self.majority_sign(gauge.signs, weights), np.int8))

    @staticmethod
    def majority_sign(signs: Any, weights: Any = None) -> int:
        """``+1`` or ``-1``: the majority of ``signs``; ties by ``Σ weights · signs``, then ``+1``."""
        s = np.asarray(signs)
        neg = int((s < 0).sum())
        if 2 * neg != s.size:
            return -1 if 2 * neg > s.size else 1
        if weights is not None and float(np.sum(np.asarray(weights, np.float64) * s)) < 0:
            return -1
        return 1

    def random(self, key_or_seed: Any, d: int) -> SignedPermutation:
        """A uniformly random element (``jax.random.key`` or integer seed).

        Example:
          >>> Group.S_D_SIGN.random(0, 8).is_global_sign
          True
        """
        if self is Group.B_D:
            return SignedPermutation.random(key_or_seed, d)
        return SignedPermutation.random(key_or_seed, d, signed=False, global_sign=self is Group.S_D_SIGN)


_ALIASES = {
    "b_d": "B_d", "bd": "B_d", "b_d_sign": "B_d", "signed_permutation": "B_d", "rmsnorm": "B_d",
    "s_dx±1": "S_d x ±1", "s_d_sign": "S_d x ±1", "sdx±1": "S_d x ±1", "global_sign": "S_d x ±1",
    "layernorm": "S_d x ±1",
    "s_d": "S_d", "sd": "S_d", "permutation": "S_d",
}

B_D = Group.B_D
S_D_SIGN = Group.S_D_SIGN
S_D = Group.S_D
