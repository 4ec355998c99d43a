"""Test configuration: Hypothesis profiles, strict JAX settings, shared fixtures.

Profiles: ``ci`` (derandomized, deadline=None: jit compiles on first call) is used when the CI
environment variable is set, ``dev`` otherwise; override with HYPOTHESIS_PROFILE. They are the
profiles gaugejax.testing registers for its users (``gaugejax-ci``, ``gaugejax-dev``).
"""

import os

import jax
from hypothesis import settings

from gaugejax.testing import CI_PROFILE, DEV_PROFILE

settings.register_profile("ci", settings.get_profile(CI_PROFILE))
settings.register_profile("dev", settings.get_profile(DEV_PROFILE))
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
