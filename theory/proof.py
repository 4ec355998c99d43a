"""A tiny proof recorder: named steps, each closed by a sympy (or exact) assertion.

Library code never prints; a :class:`Proof` only collects steps. A step that does not hold does
not raise, it is recorded as failed so the report can show which step broke.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy as sp


@dataclass
class Step:
    """One checked step of a derivation."""

    claim: str
    passed: bool
    detail: str = ""


@dataclass
class Proof:
    """An ordered list of checked steps.

    Attributes:
      name: short identifier of the proposition.
      statement: the proposition in words.
      status: how it is established (``"proved symbolically"``, ``"exhaustive to d = 4"``,
        ``"Monte Carlo"``, ...).
      steps: the checked steps.
      data: any numbers worth reporting (JSON-serialisable).
    """

    name: str
    statement: str
    status: str = "proved symbolically"
    steps: list[Step] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def check(self, claim: str, condition: Any, detail: str = "") -> bool:
        """Records ``claim`` as passed iff ``condition`` is exactly ``True`` (sympy or Python)."""
        ok = condition is True or condition is sp.true or (
            isinstance(condition, (bool,)) and condition) or _np_true(condition)
        self.steps.append(Step(claim, bool(ok), detail))
        return bool(ok)

    def note(self, claim: str) -> None:
        """Records a reasoning step that needs no computation (shown, never failing)."""
        self.steps.append(Step(claim, True, "reasoning"))

    @property
    def passed(self) -> bool:
        """All steps passed (and there is at least one)."""
        return bool(self.steps) and all(s.passed for s in self.steps)

    def failed_steps(self) -> list[str]:
        """Claims of the steps that failed."""
        return [s.claim for s in self.steps if not s.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "name": self.name,
            "statement": self.statement,
            "status": self.status,
            "passed": self.passed,
            "steps": [{"claim": s.claim, "passed": s.passed, **({"detail": s.detail} if s.detail else {})}
                      for s in self.steps],
            **({"data": self.data} if self.data else {}),
        }


def _np_true(condition: Any) -> bool:
    try:
        import numpy as np

        return isinstance(condition, np.bool_) and bool(condition)
    except Exception:  # pragma: no cover
        return False


def is_zero(expr: Any) -> bool:
    """True iff ``expr`` (scalar or matrix) expands to exactly zero."""
    if isinstance(expr, sp.MatrixBase):
        return all(is_zero(e) for e in expr)
    e = sp.expand(expr)
    if e == 0:
        return True
    if e.has(sp.Sum):  # combine sums over the same index before deciding
        return sp.simplify(sp.expand(sp.simplify(e))) == 0
    return False


def resolve_ranges(expr: sp.Expr, d: sp.Symbol) -> sp.Expr:
    """Removes the ``Piecewise`` range guards that ``Sum(KroneckerDelta ...).doit()`` leaves.

    ``sympy`` returns e.g. ``Piecewise((Q[i, j] g'[i], d >= i + 1), (0, True))`` for an index
    ``i = Idx('i', d)``. Each guard is checked (not assumed): it must become ``True`` once ``d`` is
    written as ``idx + 1 + w`` with ``w ≥ 0`` for the index it mentions, i.e. it only restates
    ``idx ≤ d - 1``. Guards that are not of this kind are left in place (and then the caller's
    assertion fails).
    """
    w = sp.Symbol("w_slack", integer=True, nonnegative=True)

    def guard_true(cond) -> bool:
        plain = {s: sp.Symbol(str(s), integer=True, nonnegative=True)
                 for s in cond.atoms(sp.Idx)}
        cond = cond.xreplace(plain)
        for idx in cond.free_symbols - {d}:
            if cond.xreplace({d: idx + 1 + w}) is sp.true:
                return True
        return False

    def visit(e):
        if isinstance(e, sp.Piecewise):
            val, cond = e.args[0]
            if cond is sp.true or guard_true(cond):
                return visit(val)
            return e  # an unproven guard stays, so the caller's assertion fails
        if e.args:
            return e.func(*[visit(a) for a in e.args])
        return e

    return visit(expr)
