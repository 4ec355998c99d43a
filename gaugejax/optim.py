"""Transport of optax optimizer states into a new residual chart (docs/conventions.md §3), field by field.

An optimizer state is a tree of ``NamedTuple`` states (tuples for ``optax.chain``). Each state type
has a rule per field:

* ``"signed"``: a params-shaped tree moved like the parameters (first moments: Adam's ``mu``,
  momentum ``trace``, Lion's ``mu``, accumulated gradients);
* ``"unsigned"``: a params-shaped tree moved by the permutation only (second moments: Adam's
  ``nu``; a sign would enter a square root);
* ``"keep"``: untouched (step counts, hyperparameters, RNG keys);
* ``"state"``: an inner state, transported recursively (``masked``, ``inject_hyperparams``,
  ``MultiSteps``, ``apply_if_finite``, ...).

A state type with no rule raises :class:`~gaugejax.errors.TransportError` rather than being moved
wrongly; :func:`register_state_rule` adds one. States with no fields (``EmptyState`` and its
aliases) carry nothing and pass through.

Example:
  >>> import jax.numpy as jnp, optax, gaugejax as gj
  >>> from gaugejax.optim import transport_opt_state
  >>> params = {"w": jnp.arange(3.0)}
  >>> spec = {"w": gj.Axes(gj.RESIDUAL)}
  >>> adam, empty = optax.adam(1e-3).init(params)
  >>> adam = adam._replace(mu={"w": jnp.array([1.0, 2.0, 3.0])}, nu={"w": jnp.array([1.0, 4.0, 9.0])})
  >>> g = gj.SignedPermutation([2, 0, 1], [1, -1, 1])
  >>> moved = transport_opt_state((adam, empty), g, spec)
  >>> moved[0].mu["w"].tolist(), moved[0].nu["w"].tolist()
  ([3.0, -1.0, 2.0], [9.0, 1.0, 4.0])
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import optax

from gaugejax.errors import TransportError
from gaugejax.gauge import SignedPermutation
from gaugejax.models import Model, gauge_spec
from gaugejax.models.base import ModelConfig
from gaugejax.spec import Axes, apply_axes

FIELD_RULES = ("signed", "unsigned", "keep", "state")

STATE_RULES: dict[type, dict[str, str]] = {}
"""state type → {field: rule}. Extend with :func:`register_state_rule`."""


def register_state_rule(state_type: type, rules: Mapping[str, str]) -> None:
    """Declares how each field of an optax state type is transported.

    Args:
      state_type: a ``NamedTuple`` class.
      rules: one of :data:`FIELD_RULES` for every field of the class.

    Example:
      >>> import typing
      >>> class MyState(typing.NamedTuple):
      ...     count: int
      ...     ema: dict
      >>> register_state_rule(MyState, {"count": "keep", "ema": "signed"})
    """
    fields = getattr(state_type, "_fields", None)
    if fields is None:
        raise TransportError(f"{state_type!r} is not a NamedTuple state type")
    missing = [f for f in fields if f not in rules]
    extra = [f for f in rules if f not in fields]
    bad = [r for r in rules.values() if r not in FIELD_RULES]
    if missing or extra or bad:
        raise TransportError(f"rules for {state_type.__name__}: missing {missing}, unknown fields {extra}, "
                             f"unknown rules {bad} (rules: {', '.join(FIELD_RULES)})")
    STATE_RULES[state_type] = dict(rules)


def _register_builtin() -> None:
    o = optax
    table = {
        "ScaleByAdamState": {"count": "keep", "mu": "signed", "nu": "unsigned"},
        "ScaleByAmsgradState": {"count": "keep", "mu": "signed", "nu": "unsigned", "nu_max": "unsigned"},
        "ScaleByBeliefState": {"count": "keep", "mu": "signed", "nu": "unsigned"},
        "ScaleByRStdDevState": {"mu": "signed", "nu": "unsigned"},
        "ScaleByRmsState": {"nu": "unsigned"},
        "ScaleByRssState": {"sum_of_squares": "unsigned"},
        "ScaleByLionState": {"count": "keep", "mu": "signed"},
        "ScaleByAdaDeltaState": {"e_g": "unsigned", "e_x": "unsigned"},
        "ScaleByRpropState": {"step_sizes": "unsigned", "prev_updates": "signed"},
        "ScaleByScheduleState": {"count": "keep"},
        "TraceState": {"trace": "signed"},
        "EmaState": {"count": "keep", "ema": "signed"},
        "AddNoiseState": {"count": "keep", "rng_key": "keep"},
        "MaskedState": {"inner_state": "state"},
        "InjectHyperparamsState": {"count": "keep", "hyperparams": "keep", "inner_state": "state"},
        "InjectStatefulHyperparamsState": {"count": "keep", "hyperparams": "keep", "hyperparams_states": "keep",
                                           "inner_state": "state"},
        "MultiStepsState": {"mini_step": "keep", "gradient_step": "keep", "inner_opt_state": "state",
                            "acc_grads": "signed", "skip_state": "state"},
        "ApplyIfFiniteState": {"notfinite_count": "keep", "last_finite": "keep", "total_notfinite": "keep",
                               "inner_state": "state"},
        "ConditionallyMaskState": {"step": "keep", "inner_state": "state"},
        "ConditionallyTransformState": {"inner_state": "state", "step": "keep"},
        "MultiTransformState": {"inner_states": "state"},
        "PartitionState": {"inner_states": "state"},
        "LookaheadState": {"fast_state": "state", "steps_since_sync": "keep"},
    }
    for name, rules in table.items():
        cls = getattr(o, name, None)
        if cls is not None and cls not in STATE_RULES:
            register_state_rule(cls, rules)


_register_builtin()


def _spec_of(spec: Any) -> Any:
    if isinstance(spec, Model):
        return gauge_spec(spec.config)
    if isinstance(spec, ModelConfig):
        return gauge_spec(spec)
    return spec


def _move_params_tree(tree: Any, spec: Any, gauge: SignedPermutation, signed: bool, where: str) -> Any:
    if isinstance(tree, Model):
        return Model(tree.config, _move_params_tree(tree.params, spec, gauge, signed, where))

    def move(axes: Axes, x: Any) -> Any:
        if isinstance(x, optax.MaskedNode) or x is None:
            return x
        return apply_axes(x, axes, gauge, signed=signed)

    try:
        return jax.tree.map(move, spec, tree, is_leaf=lambda a: isinstance(a, Axes))
    except ValueError as e:
        raise TransportError(f"{where}: optimizer state does not have the structure of the params spec "
                             f"({str(e).splitlines()[0]})") from None


def _walk(state: Any, spec: Any, gauge: SignedPermutation, moment_signs: bool, where: str) -> Any:
    if state is None or isinstance(state, optax.MaskedNode):
        return state
    fields = getattr(state, "_fields", None)
    if fields is not None:  # a NamedTuple state
        rules = STATE_RULES.get(type(state))
        if rules is None:
            if not fields:
                return state
            raise TransportError(
                f"{where}: no transport rule for optimizer state {type(state).__module__}.{type(state).__name__} "
                f"(fields {', '.join(fields)}); register one with gaugejax.optim.register_state_rule")
        out = {}
        for f in fields:
            value = getattr(state, f)
            rule = rules[f]
            sub = f"{where}.{f}"
            if rule == "keep":
                out[f] = value
            elif rule == "state":
                out[f] = _walk(value, spec, gauge, moment_signs, sub)
            else:
                out[f] = _move_params_tree(value, spec, gauge, rule == "signed" and moment_signs, sub)
        return type(state)(**out)
    if isinstance(state, (tuple, list)):
        items = [_walk(s, spec, gauge, moment_signs, f"{where}[{n}]") for n, s in enumerate(state)]
        return type(state)(items) if isinstance(state, list) else tuple(items)
    if isinstance(state, dict):  # named_chain / multi_transform: label → state
        return {k: _walk(v, spec, gauge, moment_signs, f"{where}[{k!r}]") for k, v in state.items()}
    raise TransportError(f"{where}: unexpected {type(state).__name__} where an optimizer state was expected")


def transport_opt_state(opt_state: Any, gauge: SignedPermutation, spec: Any, *,
                        group: str = "B_d", moment_signs: bool = True) -> Any:
    """Moves an optax state into the chart of ``gauge`` (parameters moved by ``apply_gauge``).

    Args:
      opt_state: the state returned by ``optimizer.init`` / ``update`` over the parameters.
      gauge: A→B.
      spec: the parameters' gauge spec, or a :class:`~gaugejax.models.Model` / config to take
        :func:`~gaugejax.gauge_spec` from.
      group: ``"B_d"`` (the gauge) or ``"S_d"`` (its permutation part, for comparison).
      moment_signs: ``False`` moves "signed" fields by the permutation only: the wrong transport
        kept for comparison (the resumed run then diverges).

    Returns:
      A state of the same structure and types. Integer parts (counts) are returned as they were.

    Raises:
      TransportError: a state type with no rule, or a state not shaped like the spec.
    """
    from gaugejax.transport import group_gauge

    return _walk(opt_state, _spec_of(spec), group_gauge(gauge, group), moment_signs, "opt_state")


# --------------------------------------------------------------------------- Orbax round trip
def save_train_state(directory: str | os.PathLike, params: Any, opt_state: Any) -> None:
    """Saves ``{"params", "opt_state"}`` with Orbax (``StandardCheckpointer``), atomically.

    Raises:
      TransportError: ``orbax-checkpoint`` is not installed.
    """
    ocp = _orbax()
    from gaugejax.atomic import atomic_path

    with atomic_path(directory, directory=True) as tmp:
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(os.path.abspath(tmp / "state"), {"params": params, "opt_state": opt_state})
        ckptr.wait_until_finished()


def restore_train_state(directory: str | os.PathLike, params_like: Any, opt_state_like: Any) -> tuple[Any, Any]:
    """Restores what :func:`save_train_state` wrote, with the structure (NamedTuple types) of the
    given templates (e.g. ``params`` and ``optimizer.init(params)``)."""
    ocp = _orbax()
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params_like, "opt_state": opt_state_like})
    ckptr = ocp.StandardCheckpointer()
    out = ckptr.restore(os.path.abspath(os.path.join(os.fspath(directory), "state")), target)
    return out["params"], out["opt_state"]


def _orbax():
    try:
        import orbax.checkpoint as ocp
    except ImportError:
        raise TransportError("Orbax checkpoints need `orbax-checkpoint` (pip install orbax-checkpoint)") from None
    return ocp
