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


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny Llama-style Hugging Face checkpoint (d=16, one layer, vocab 64) shared by the CLI tests.

    Read-only by convention: tests that need to change it copy it first.
    """
    import gaugejax as gj

    cfg = gj.tiny_config("llama", d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32,
                         vocab_size=64)
    path = tmp_path_factory.mktemp("tiny") / "rms"
    gj.save_model(gj.random_model(cfg, 0), path)
    return path
