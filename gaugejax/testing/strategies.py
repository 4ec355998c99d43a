"""Hypothesis strategies for gauge tests: group elements, tiny models of every family, generic params.

Widths come from a small :data:`DIMS` set (``sampled_from``) so jit-compiled functions recompile
only a few times. Gauges are drawn so that Hypothesis shrinks a failure towards the identity: a
failing example ends as a single transposition, a single sign flip or the global flip.

Two settings profiles are registered on import: ``"gaugejax-ci"`` (derandomized: the same examples
on every run; no example database; ``deadline=None`` because the first call of a jit-compiled
function compiles it) and ``"gaugejax-dev"`` (random examples). Load one in a ``conftest.py``::

    from hypothesis import settings
    import gaugejax.testing
    settings.load_profile("gaugejax-ci")

Example:
  >>> from hypothesis import given
  >>> @given(gauges("S_d x ±1", d=8))
  ... def test_global_sign(g):
  ...     assert g.is_global_sign and g.d == 8
  >>> test_global_sign()
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from gaugejax.gauge import SignedPermutation
from gaugejax.group import Group
from gaugejax.testing.flat import is_float_array
from gaugejax.testing.probing import as_group

__all__ = [
    "DIMS", "CI_PROFILE", "DEV_PROFILE", "dims", "gauges", "small_gauges", "signed_permutations", "global_sign_permutations",
    "permutations", "families", "tiny_configs", "tiny_models", "generic", "generic_params",
]

DIMS: tuple[int, ...] = (3, 8, 17)
"""Residual widths drawn when none is given: small, odd and even, few enough to keep recompiles rare."""

CI_PROFILE = "gaugejax-ci"
DEV_PROFILE = "gaugejax-dev"
settings.register_profile(CI_PROFILE, derandomize=True, deadline=None, max_examples=25, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(DEV_PROFILE, deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])


def dims() -> st.SearchStrategy[int]:
    """A residual width from :data:`DIMS`."""
    return st.sampled_from(DIMS)


def _width(draw, d: int | st.SearchStrategy[int] | None) -> int:
    if d is None:
        return draw(dims())
    return draw(d) if isinstance(d, st.SearchStrategy) else int(d)


@st.composite
def gauges(draw, group: Any = "B_d", d: int | st.SearchStrategy[int] | None = None) -> SignedPermutation:
    """An element of a gauge group.

    Args:
      group: a :class:`~gaugejax.group.Group` or its name: ``"B_d"`` (independent signs),
        ``"S_d x ±1"`` (one global sign), ``"S_d"`` (no signs).
      d: the width: an int, a strategy, or ``None`` for one of :data:`DIMS`.

    Shrinks towards the identity: a permutation with fewer swaps, fewer negative signs.
    """
    grp = as_group(group)
    n = _width(draw, d)
    perm = draw(st.permutations(range(n)))
    if grp is Group.B_D:
        signs = [-1 if neg else 1 for neg in draw(st.lists(st.booleans(), min_size=n, max_size=n))]
    elif grp is Group.S_D_SIGN:
        signs = [-1 if draw(st.booleans()) else 1] * n
    else:
        signs = None
    return SignedPermutation(perm, signs)


@st.composite
def _moves(draw, grp: Group, d: int, max_moves: int) -> SignedPermutation:
    perm, signs = np.arange(d), np.ones(d, np.int8)
    index = st.integers(0, d - 1)
    for i, j in draw(st.lists(st.tuples(index, index), max_size=max_moves)):
        perm[[i, j]] = perm[[j, i]]
    if grp is Group.B_D:
        for i in draw(st.lists(index, max_size=max_moves)):
            signs[i] = -signs[i]
    elif grp is Group.S_D_SIGN and draw(st.booleans()):
        signs[:] = -1
    return SignedPermutation(perm, signs)


def small_gauges(group: Any = "B_d", d: int | st.SearchStrategy[int] | None = None, *,
                 max_moves: int = 8) -> st.SearchStrategy[SignedPermutation]:
    """Products of a few transpositions and sign flips: cheap to draw and to shrink at any ``d``.

    Up to ``max_moves`` random transpositions, then up to ``max_moves`` single sign flips
    (``B_d``) or the global flip (``S_d × {±1}``). A failure shrinks to a single transposition or
    a single sign flip. (:func:`gauges` draws uniform elements, one choice per coordinate, which
    makes Hypothesis slow when ``d`` is in the hundreds.)
    """
    grp = as_group(group)

    @st.composite
    def build(draw):
        return draw(_moves(grp, _width(draw, d), max_moves))

    return build()


def signed_permutations(d: int | st.SearchStrategy[int] | None = None) -> st.SearchStrategy[SignedPermutation]:
    """Elements of ``B_d`` (RMSNorm models)."""
    return gauges(Group.B_D, d)


def global_sign_permutations(d: int | st.SearchStrategy[int] | None = None) -> st.SearchStrategy[SignedPermutation]:
    """Elements of ``S_d × {±1}`` (LayerNorm models)."""
    return gauges(Group.S_D_SIGN, d)


def permutations(d: int | st.SearchStrategy[int] | None = None) -> st.SearchStrategy[SignedPermutation]:
    """Elements of ``S_d`` (signs all +1)."""
    return gauges(Group.S_D, d)


@functools.cache
def families() -> tuple[str, ...]:
    """Every kind :func:`gaugejax.models.tiny_config` builds: each family and each HF model type.

    Read from the model registry, so a new family is covered without changing the tests.
    """
    from gaugejax import models

    kinds = list(dict.fromkeys([*models.FAMILIES, *models.MODEL_TYPES]))
    ok, seen = [], set()
    for kind in kinds:
        try:
            cfg = models.tiny_config(kind)
        except Exception:  # a model type tiny_config does not know by that name (e.g. gpt_neox)
            continue
        if cfg not in seen:
            seen.add(cfg)
            ok.append(kind)
    return tuple(ok)


def _supports(cfg: Any, **change: Any) -> bool:
    """Whether the family's parameters depend on the changed fields (e.g. tied embeddings)."""
    from gaugejax import models

    try:
        return models.gauge_spec(cfg) != models.gauge_spec(cfg.replace(**change))
    except Exception:
        return False


def _layouts_holding(cfg: Any, change: dict[str, Any]) -> list[str]:
    """The layouts a config (Falcon) accepts with ``change``, its own layout first (so examples shrink to it)."""
    from gaugejax.errors import GaugeJaxError
    from gaugejax.models.falcon import LAYOUTS

    ok = []
    for layout in dict.fromkeys([cfg.layout, *LAYOUTS]):
        try:
            cfg.replace(**change, layout=layout)
        except GaugeJaxError:
            continue
        ok.append(layout)
    return ok


@st.composite
def tiny_configs(draw, kinds: Sequence[str] | None = None) -> Any:
    """A tiny config of a family: 1 or 2 layers and, where the family has them, GQA head counts (with
    a Falcon layout that holds them), tied embeddings and parallel residuals.

    Args:
      kinds: family names or HF model types; default :func:`families` (every supported one).
    """
    from gaugejax import models

    cfg = models.tiny_config(draw(st.sampled_from(tuple(kinds or families()))))
    change: dict[str, Any] = {"n_layers": draw(st.sampled_from([1, 2]))}
    fields = {f.name for f in dataclasses.fields(cfg)}
    if "n_kv_heads" in fields:
        change["n_kv_heads"] = draw(st.sampled_from([k for k in (1, 2, 4) if cfg.n_heads % k == 0]))
    if "layout" in fields:  # Falcon: only some fused query_key_value layouts hold the drawn key/value heads
        change["layout"] = draw(st.sampled_from(_layouts_holding(cfg, change)))
    if "parallel_residual" in fields:
        change["parallel_residual"] = draw(st.booleans())
    if "tie_embeddings" in fields and _supports(cfg, tie_embeddings=not cfg.tie_embeddings):
        change["tie_embeddings"] = draw(st.booleans())
    return cfg.replace(**change)


@st.composite
def tiny_models(draw, kinds: Sequence[str] | None = None) -> Any:
    """A :class:`~gaugejax.models.Model` of a :func:`tiny_configs` config with random generic params."""
    from gaugejax import models

    return models.random_model(draw(tiny_configs(kinds)), seed=draw(st.integers(0, 2**16)))


def generic(params: Any, key: Any = 0) -> Any:
    """The same pytree with generic values: what invariance tests need to say anything.

    Leaves with non-negative values (norm gains, ones at initialisation, Adam's ``nu``) become
    ``mean · U(0.5, 1.5)`` (pairwise distinct, positive); other floating leaves ``std · N(0, 1)``
    (zeros, e.g. biases at initialisation: ``0.1 · N(0, 1)``). Tied gains would make the symmetry
    group larger than ``B_d`` and zero biases make any rule look right. Non-float leaves are kept.

    Args:
      params: any pytree.
      key: an int seed or a ``jax.random.key`` (values from ``numpy.random.default_rng([seed, leaf index])``).

    Example:
      >>> import numpy as np
      >>> p = generic({"scale": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)}, 0)
      >>> len(set(p["scale"].tolist())), bool((p["scale"] > 0).all()), bool((p["bias"] != 0).all())
      (4, True, True)
    """
    seed = int(key) if isinstance(key, (int, np.integer)) else int(np.asarray(jax.random.key_data(key)).ravel()[-1])
    leaves, treedef = jax.tree.flatten(params)
    out = []
    for i, x in enumerate(leaves):
        if not is_float_array(x) or not np.size(x):
            out.append(x)
            continue
        rng = np.random.default_rng([seed, i])  # one stream per leaf: adding a leaf changes no other
        a = np.asarray(x, np.float64)
        if a.min() >= 0 and a.max() > 0:
            new = a.mean() * rng.uniform(0.5, 1.5, a.shape)
        else:
            new = (a.std() or 0.1) * rng.normal(size=a.shape)
        new = np.asarray(new).astype(np.dtype(x.dtype))
        out.append(jnp.asarray(new) if isinstance(x, jax.Array) else new)
    return jax.tree.unflatten(treedef, out)


def generic_params(template: Any) -> st.SearchStrategy[Any]:
    """Generic values (see :func:`generic`) for a parameter pytree, one per drawn seed."""
    return st.integers(0, 2**31 - 1).map(lambda seed: generic(template, seed))
