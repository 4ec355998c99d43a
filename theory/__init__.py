"""Executable theory of residual-stream gauges (see ``theory/README.md``).

Each proposition is a function returning a :class:`theory.proof.Proof` whose steps are sympy
assertions, exhaustive enumerations, or Monte Carlo runs of the library's own matcher:

* :mod:`theory.norm_charts`: which elements of ``B_d`` each norm chart admits (exhaustive, d ≤ 4);
* :mod:`theory.general_d`: the gauge groups for general ``d`` (derivations (a)-(d));
* :mod:`theory.blocks`: the library's own gauge spec through symbolic models of every family
  (:mod:`theory.families` writes each family's forward pass with :mod:`theory.stages` and
  :mod:`theory.symbolic`);
* :mod:`theory.optimizer`: AdamW covariance (signed ``mu``, permutation-only ``nu``);
* :mod:`theory.ceiling`: the ceiling theorem of raw signed matching and its finite-SNR behaviour.

Run everything with ``python -m theory`` from a checkout (``--json`` for machine-readable output).
This package is a repository feature: ``pip install gaugejax`` does not install it.
"""

from theory.proof import Proof, Step

__all__ = ["Proof", "Step"]
