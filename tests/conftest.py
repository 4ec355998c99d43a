"""Test configuration: Hypothesis profiles, strict JAX settings, shared fixtures.

Profiles: ``ci`` (derandomized, deadline=None: jit compiles on first call) is used when the CI
environment variable is set, ``dev`` otherwise; override with HYPOTHESIS_PROFILE.
"""

import os

import jax
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

jax.config.update("jax_enable_x64", False)
