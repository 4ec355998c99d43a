"""Property-based verification of gauge invariance, for gaugejax's models and for yours.

Import it to test a model gaugejax does not know (a Flax or Equinox transformer, a new norm layer,
a merge or an optimizer step) under the residual gauge groups. Needs ``hypothesis``.

* Strategies: :func:`gauges` (elements of ``B_d``, ``S_d × {±1}``, ``S_d``), :func:`tiny_configs` /
  :func:`tiny_models` (every supported family), :func:`generic_params` / :func:`generic` (distinct
  gains, non-zero biases), and the settings profile ``"gaugejax-ci"`` (derandomized).
* Assertions: :func:`assert_invariant`, :func:`assert_equivariant`, :func:`deviation`: a failure
  is shrunk to a single transposition or sign flip, named with the measured deviation.
* Diagnosis: :func:`diagnose_spec` names the leaves whose rule is wrong and the rule that works.
* Inference: :func:`infer_spec` / :func:`infer` propose and verify a spec for any pytree model.

``fn(params, inputs)`` returns an array; ``group`` is a :class:`~gaugejax.group.Group` or its name
(``"B_d"``, ``"S_d x ±1"``, ``"S_d"``). The conventions are in ``docs/conventions.md``.

Example:
  >>> import numpy as np, gaugejax as gj, gaugejax.testing as gt
  >>> m = gj.random_model("llama", seed=0)
  >>> fn = lambda p, t: gj.forward(gj.Model(m.config, p), t)
  >>> tokens = np.arange(16).reshape(2, 8)
  >>> spec = gt.infer_spec(fn, m.params, tokens, m.d)
  >>> gt.assert_invariant(fn, m.params, spec, group="B_d", inputs=tokens)
  >>> wrong = {**spec, "final_norm": gj.Axes(gj.RESIDUAL)}         # a signed gain
  >>> [f.message for f in gt.diagnose_spec(fn, m.params, wrong, tokens, group="B_d")]
  ['final_norm: permute only, do not sign']
"""

try:
    import hypothesis  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("gaugejax.testing needs Hypothesis: pip install 'gaugejax[testing]'") from e

from gaugejax.testing.assertions import assert_equivariant, assert_invariant, default_rtol, deviation
from gaugejax.testing.diagnose import Finding, diagnose_spec
from gaugejax.testing.inference import Inference, LeafEvidence, infer, infer_spec
from gaugejax.testing.probing import describe, probes
from gaugejax.testing.strategies import (
    CI_PROFILE,
    DEV_PROFILE,
    DIMS,
    dims,
    families,
    gauges,
    generic,
    generic_params,
    global_sign_permutations,
    permutations,
    signed_permutations,
    small_gauges,
    tiny_configs,
    tiny_models,
)

__all__ = [
    "assert_invariant", "assert_equivariant", "deviation", "default_rtol", "diagnose_spec", "Finding",
    "infer", "infer_spec", "Inference", "LeafEvidence", "describe", "probes",
    "CI_PROFILE", "DEV_PROFILE", "DIMS", "dims", "families", "gauges", "generic", "generic_params",
    "global_sign_permutations", "permutations", "signed_permutations", "small_gauges", "tiny_configs", "tiny_models",
]
