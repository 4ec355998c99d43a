"""Whole models, symbolically, with every parameter moved by the library's own gauge spec.

For each model family the library registers, a tiny config (``d = 3``, one block, two tokens) is
built with ``gaugejax.tiny_config`` (or ``gaugejax.models.config_from_hf``); its parameters become free sympy symbols with the library's
shapes; chart B's parameters are ``gaugejax.apply_spec(params, gaugejax.models.gauge_spec(config),
gauge)``, i.e. exactly what ``apply_gauge`` does. Nothing here says how a parameter moves, so a
wrong rule in the library makes this check fail. The forward pass is the family's list of
:class:`theory.families.Stage` (embedding, one block, head). For a gauge ``G`` each stage must map
``G``-moved inputs to the ``G``-moved output (or to the same output, for logits and the pooler):

    stage_B(G x, G n, ...) = G stage_A(x, n, ...)    as an exact identity in every symbol.

Every stage holds ⇒ the residual stream of B is ``G`` of A's at every layer (each layer has the
same stages with its own parameters) and the outputs agree.

*The whole group from its generators.* The stages are proved for the generators of the family's
group (``B_3``: a 3-cycle, a transposition, one sign flip; ``S_3 × {±1}``: the same with the
global flip). The parameter action is a group action, checked exactly for every element ``w`` and
generator ``s``: ``apply_spec(apply_spec(θ, w), s) = apply_spec(θ, w.then(s))``, and the same for
streams. Then ``w`` and ``s`` equivariant imply ``w.then(s)`` equivariant, and the generators are
checked to generate the whole group (closure of 48, resp. 12, elements).

*Deciding an identity.* A numeric witness first: every symbol at a random rational point in
(0, 1), undefined activations replaced by concrete ones, evaluated to 30 digits; ``|value| >
1e-10`` certifies a failure. Otherwise the difference is expanded and must be exactly 0 (a pass
is a proof; nothing passes without expanding to 0).

*Coverage.* Every parameter of the library's pytree must be read by some stage; a parameter the
symbolic model ignores (a new one in the library) fails the check.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from math import factorial
from typing import Any, Callable

import jax
import numpy as np
import sympy as sp
from sympy.core.function import AppliedUndef

import gaugejax
from gaugejax.errors import GaugeError
from gaugejax.gauge import SignedPermutation
from theory import families as fam
from theory.symbolic import ACT, expand, syms

D = 3  # residual width of every symbolic config


# ---------------------------------------------------------------------------------------- params
def library_spec(config) -> Any:
    """The gauge spec the library applies (looked up at call time, so a patched library is seen)."""
    return gaugejax.models.gauge_spec(config)


def library_families() -> tuple[str, ...]:
    """Model families the library registers."""
    return tuple(getattr(gaugejax.models, "FAMILIES", {"llama": None, "gpt2": None, "neox": None, "bert": None}))


def symbolic_params(config) -> Any:
    """The library's parameter pytree for ``config`` with every entry a free real symbol."""
    shapes = jax.eval_shape(lambda: gaugejax.random_model(config, seed=0).params)

    def leaf(path, x):
        name = "_".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        return syms(name, tuple(x.shape))

    return jax.tree_util.tree_map_with_path(leaf, shapes)


class _Seen(dict):
    """A dict that records which keys were read."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.seen: set[str] = set()

    def __getitem__(self, key):
        self.seen.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in self:
            return self[key]
        return default


def _split(params: dict) -> tuple[_Seen, _Seen]:
    g = _Seen({k: v for k, v in params.items() if k != "layers"})
    l = _Seen({k: v[0] for k, v in params.get("layers", {}).items()})  # the single block
    return g, l


# ---------------------------------------------------------------------------------------- decide
def _concrete(e):
    """A concrete stand-in for an undefined function application: SiLU for the activation, else a
    smooth function of all arguments (e.g. MoE routing weights)."""
    if e.func == ACT:
        z = e.args[0]
        return z / (1 + sp.exp(-z))
    return sp.tanh(sum((i + 2) * a for i, a in enumerate(e.args)) / (len(e.args) + 1)) + 1


def _certainly_nonzero(a: np.ndarray, seed: int = 0) -> bool:
    """A numeric certificate of *failure*: some entry is far from 0 at a random rational point.

    Undefined functions (activation, routing) are replaced by concrete ones first (an identity that
    fails for one choice is not an identity for all). 30 significant digits; only ``|value| >
    1e-10`` counts, so rounding never produces a false failure.
    """
    entries = [sp.sympify(v) for v in np.asarray(a, dtype=object).ravel()]
    free = sorted(set().union(*(v.free_symbols for v in entries)), key=str)
    rng = np.random.default_rng(seed)
    point = {s: sp.Rational(int(rng.integers(1, 10)), int(rng.integers(10, 14))) for s in free}
    for v in entries:
        v = v.replace(lambda e: isinstance(e, AppliedUndef), _concrete)
        val = sp.N(v.xreplace(point), 30)
        if val.is_number and abs(val) > 1e-10:
            return True
    return False


def is_zero(a: np.ndarray) -> bool:
    """True iff every entry of ``a`` expands to exactly 0.

    ``True`` is a proof. ``False`` is certified by a numeric witness when it has one; otherwise it
    only says that expansion did not show the identity (never a false pass).
    """
    if _certainly_nonzero(a):
        return False
    return all(v == 0 for v in expand(np.asarray(a, dtype=object)).ravel())


# ---------------------------------------------------------------------------------------- group
def generators(norm: str, d: int = D) -> dict[str, SignedPermutation]:
    """Generators of the family's gauge group: ``B_d`` (RMSNorm) or ``S_d × {±1}`` (LayerNorm)."""
    ident = np.arange(d)
    flip = np.ones(d, np.int8)
    flip[0] = -1
    return {
        "3-cycle": SignedPermutation(np.roll(ident, -1)),
        "transposition": SignedPermutation(np.r_[1, 0, ident[2:]]),
        "sign flip": SignedPermutation(ident, flip) if norm == "rmsnorm" else
        SignedPermutation(ident, -np.ones(d, np.int8)),
    }


def group_order(norm: str, d: int = D) -> int:
    """``|B_d| = 2^d d!`` or ``|S_d × {±1}| = 2 d!``."""
    return (2**d if norm == "rmsnorm" else 2) * factorial(d)


def closure(gens) -> list[SignedPermutation]:
    """Every element generated by ``gens`` (breadth-first words ``w.then(s)``)."""
    gens = list(gens)
    start = SignedPermutation.identity(gens[0].d)
    seen, out, todo = {start}, [start], deque([start])
    while todo:
        w = todo.popleft()
        for s in gens:
            ws = w.then(s)
            if ws not in seen:
                seen.add(ws)
                out.append(ws)
                todo.append(ws)
    return out


def _same(a: Any, b: Any) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(x.shape == y.shape and bool(np.all(x == y)) for x, y in zip(la, lb))


def action_law(params: Any, spec: Any, elements, gens) -> bool:
    """``ρ(w.then(s)) = ρ(s)∘ρ(w)`` on the parameters and on a stream, for every ``w`` and generator ``s``."""
    h = syms("h", (2, D))
    for w in elements:
        pw = gaugejax.apply_spec(params, spec, w)
        for s in gens:
            ws = w.then(s)
            if not _same(gaugejax.apply_spec(pw, spec, s), gaugejax.apply_spec(params, spec, ws)):
                return False
            if not _same(s.apply(w.apply(h)), ws.apply(h)):
                return False
    return True


# ---------------------------------------------------------------------------------------- checks
@dataclass
class ConfigCheck:
    """The symbolic check of one config.

    Attributes:
      label, family: what was checked.
      stages: stage name → {gauge name → identity holds}.
      uncovered: parameters of the library's pytree no stage reads.
      action_law: the parameter action composes as the group does.
      generated: the generators generate the whole group (its order).
      control: for LayerNorm families, stage name → holds under a single sign flip (must fail somewhere).
    """

    label: str
    family: str
    norm: str
    stages: dict[str, dict[str, bool]] = field(default_factory=dict)
    uncovered: list[str] = field(default_factory=list)
    action_law: bool = False
    generated: int = 0
    control: dict[str, bool] = field(default_factory=dict)

    @property
    def equivariant(self) -> bool:
        """Every stage holds for every generator."""
        return bool(self.stages) and all(all(v.values()) for v in self.stages.values())

    @property
    def passed(self) -> bool:
        """Equivariant, fully covered, a group action over the whole group, and the control rejected."""
        ok = self.equivariant and not self.uncovered and self.action_law
        ok &= self.generated == group_order(self.norm)
        if self.norm == "layernorm":
            ok &= bool(self.control) and not all(self.control.values())
        return ok

    def failures(self) -> list[str]:
        """Readable list of what failed."""
        out = [f"{st} under {g}" for st, by in self.stages.items() for g, ok in by.items() if not ok]
        out += [f"parameter {p} not used by the symbolic model" for p in self.uncovered]
        if not self.action_law:
            out.append("parameter action is not a group action")
        if self.generated != group_order(self.norm):
            out.append(f"generators give {self.generated} elements, not {group_order(self.norm)}")
        if self.norm == "layernorm" and self.control and all(self.control.values()):
            out.append("a single sign flip passed every stage of a LayerNorm model")
        return out


def check_stages(stages: list[fam.Stage], config, pa: Any, pb: Any, gauge: SignedPermutation,
                 seen: tuple[set, set] | None = None) -> dict[str, bool]:
    """Each stage's identity under ``gauge`` (``pa`` in chart A, ``pb`` its move to chart B)."""
    ga, la = _split(pa)
    gb, lb = _split(pb)
    out = {}
    for st in stages:
        ins_a = {n: syms(f"in_{n}", (len(fam.TOKENS), config.d_model)) for n in st.inputs}
        ins_b = {n: gauge.apply(v) for n, v in ins_a.items()}
        try:
            ya = np.asarray(st.fn(config, ga, la, **ins_a), dtype=object)
            yb = np.asarray(st.fn(config, gb, lb, **ins_b), dtype=object)
        except KeyError as e:  # the symbolic model names a parameter the library does not have
            out[f"{st.name} (missing parameter {e})"] = False
            continue
        want = gauge.apply(ya) if st.output is not None else ya
        out[st.name] = yb.shape == want.shape and is_zero(yb - want)
    if seen is not None:
        seen[0].update(ga.seen)
        seen[1].update(la.seen)
    return out


def check_config(label: str, make_config: Callable, *, spec_fn: Callable | None = None) -> ConfigCheck:
    """The symbolic check of one tiny config (see the module docstring).

    Args:
      label: description for the report.
      make_config: ``() -> config`` (``d_model = 3``, one layer; :data:`theory.families.CONFIGS`).
      spec_fn: ``config -> spec`` (default: the library's, :func:`library_spec`); tests pass a
        mutated one.
    """
    config = make_config()
    spec = (spec_fn or library_spec)(config)
    norm = config.norm
    res = ConfigCheck(label, config.family, norm)
    stage_fn = fam.FAMILIES.get(config.family)
    if stage_fn is None:
        res.stages["symbolic model"] = {"-": False}
        return res
    stages = stage_fn(config)
    pa = symbolic_params(config)
    gens = generators(norm, config.d_model)
    seen: tuple[set, set] = (set(), set())
    for gname, g in gens.items():
        try:
            pb = gaugejax.apply_spec(pa, spec, g)
        except GaugeError as e:  # the spec does not even fit the parameters
            res.stages.setdefault(f"moving the parameters ({e})", {})[gname] = False
            continue
        for st, ok in check_stages(stages, config, pa, pb, g, seen).items():
            res.stages.setdefault(st, {})[gname] = ok
    if any(k.startswith("moving the parameters") for k in res.stages):
        return res
    res.uncovered = [k for k in pa if k != "layers" and k not in seen[0]]
    res.uncovered += [f"layers.{k}" for k in pa.get("layers", {}) if k not in seen[1]]
    elements = closure(gens.values())
    res.generated = len(elements)
    res.action_law = action_law(pa, spec, elements, list(gens.values()))
    if norm == "layernorm":
        flip = np.ones(config.d_model, np.int8)
        flip[0] = -1
        bad = SignedPermutation(np.arange(config.d_model), flip)
        res.control = check_stages(stages, config, pa, gaugejax.apply_spec(pa, spec, bad), bad)
    return res


def check_library(*, spec_fn: Callable | None = None) -> tuple[list[ConfigCheck], list[str]]:
    """Checks the configs of :data:`theory.families.CONFIGS` of every family the library registers;
    returns the checks and the library families that have no symbolic model or config (each is a
    failure of the proposition)."""
    registered = library_families()
    checks = [check_config(label, make, spec_fn=spec_fn)
              for family in registered if family in fam.CONFIGS for label, make in fam.CONFIGS[family]]
    missing = [f for f in registered if f not in fam.FAMILIES or f not in fam.CONFIGS]
    return checks, missing


MUTATIONS: tuple[tuple[str, str, tuple[str, ...], Callable], ...] = (
    ("signed RMSNorm gain (attention norm)", "llama", ("layers", "attn_norm"), lambda a: _signed(a, True)),
    ("writing matrix o_proj moved without its sign", "llama", ("layers", "o"), lambda a: _signed(a, False)),
    ("LayerNorm bias moved without its sign", "gpt2", ("layers", "attn_norm_bias"), lambda a: _signed(a, False)),
    ("lm_head left unmoved", "llama", ("lm_head",), lambda a: gaugejax.Axes(*(None,) * len(a.actions))),
)
"""Deliberately wrong rules ``(what, family, spec path, old axes -> new axes)``: each must be rejected."""


def _signed(axes, signed: bool):
    return gaugejax.Axes(*(None if a is None else type(a)(a.group, signed) for a in axes.actions))


def mutated_spec(path: tuple[str, ...], axes) -> Callable:
    """A ``spec_fn`` that returns the library's spec with the entry at ``path`` replaced by ``axes``
    (``axes`` may be a function of the old entry); entries that do not exist are left alone."""

    def spec_fn(config):
        spec = library_spec(config)
        spec = jax.tree.map(lambda a: a, spec, is_leaf=lambda a: isinstance(a, gaugejax.Axes))  # a copy
        node = spec
        for k in path[:-1]:
            if k not in node:
                return spec
            node = node[k]
        if path[-1] in node:
            node[path[-1]] = axes(node[path[-1]]) if callable(axes) else axes
        return spec

    return spec_fn

