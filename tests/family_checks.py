"""The checks each dense-family parity test runs, against tiny random ``transformers`` checkpoints.

Import only after ``pytest.importorskip("torch")`` and ``pytest.importorskip("transformers")``.
A family test builds its checkpoints with :func:`build` (norm gains randomised so they are
pairwise distinct, biases non-zero: see ``helpers_hf.randomize_norms``) and then calls:

* :func:`assert_parity`: our logits and every hidden state equal transformers';
* :func:`assert_gauge_round_trip`: ``gj.apply_gauge`` + ``gj.save_model`` reloads in transformers
  with the same logits and hidden states ``h[..., perm] * signs``, and ``gaugejax apply``'s
  streaming rewrite writes the same tensors;
* :func:`assert_group`: ``Group.of`` and ``gaugejax info`` report ``B_d``;
* :func:`assert_align`: ``gj.align`` recovers a hidden gauge;
* :func:`assert_changes_logits`: a config feature (or a wrong gauge role) changes the logits, so
  the parity and round-trip tests really cover it.

Tolerance (shared with ``family_helpers``, which also provides :func:`tokens` and
:func:`assert_changes_logits`): :data:`RTOL` = 1e-4 of the reference's max |value|, per tensor. Both sides compute in
float32 with different summation orders (XLA einsum vs torch matmul), a few ulps per layer: the
families measured here stay below 4e-6 (Gemma 3 the largest), while a real bug (a missing soft-cap, a wrong norm role,
RoPE on the wrong layers) shows at 1e-3 or more, which :func:`assert_changes_logits` checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

import gaugejax as gj
from gaugejax.group import Group
from gaugejax.info import describe
from gaugejax.io import apply_gauge_to_checkpoint, load_model, save_model
from family_helpers import FEATURE_MIN, RTOL, assert_changes_logits, tokens  # noqa: F401 (re-exported)
from helpers_hf import hf_reference, randomize_norms, rel_err

def build(config_cls: str, model_cls: str, kwargs: dict[str, Any], directory: Path, seed: int = 0) -> Path:
    """A tiny random transformers model (norm gains and biases randomised) ``save_pretrained`` to ``directory``."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kwargs)).eval()
    randomize_norms(model, seed)
    model.save_pretrained(directory)
    return Path(directory)


def assert_parity(model: gj.Model, toks: np.ndarray, ref_logits: np.ndarray, ref_hidden: np.ndarray) -> float:
    """Logits and every hidden state within :data:`RTOL`; returns the logits' relative error."""
    logits = np.asarray(gj.forward(model, toks))
    hidden = np.asarray(gj.residual_stream(model, toks))
    assert logits.shape == ref_logits.shape
    assert hidden.shape == ref_hidden.shape == (model.config.n_layers + 1, *toks.shape, model.config.d_model)
    err = rel_err(logits, ref_logits)
    assert err < RTOL, f"logits off by {err:.2e}"
    for i in range(len(hidden)):
        err_i = rel_err(hidden[i], ref_hidden[i])
        assert err_i < RTOL, f"hidden state {i} off by {err_i:.2e}"
    return err


def assert_gauge_round_trip(directory: Path, toks: np.ndarray, ref_logits: np.ndarray, ref_hidden: np.ndarray,
                            tmp: Path, seed: int = 3) -> gj.SignedPermutation:
    """The gauged model written by ``gj.save_model`` runs in transformers with unchanged logits and
    hidden states ``h[..., perm] * signs``; ``apply_gauge_to_checkpoint`` writes the same tensors."""
    model = load_model(directory)
    g = gj.SignedPermutation.random(seed, model.config.d_model)
    assert (g.signs < 0).any() and (g.perm != np.arange(g.d)).any()
    moved = gj.apply_gauge(model, g)
    out = save_model(moved, tmp / "gauged")
    logits, hidden = hf_reference(out, toks)
    assert rel_err(logits, ref_logits) < RTOL
    for i in range(len(hidden)):
        assert rel_err(hidden[i], g.apply(ref_hidden[i])) < RTOL, f"hidden state {i}"
    assert rel_err(hidden[1], ref_hidden[1]) > 0.1  # the chart really changed
    streamed = load_model(apply_gauge_to_checkpoint(directory, tmp / "streamed", g))
    for a, b in zip(jax.tree.leaves(streamed.params), jax.tree.leaves(moved.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    return g


def assert_group(directory: Path) -> None:
    """``Group.of`` and ``info`` give the signed-permutation group B_d."""
    model = load_model(directory)
    assert Group.of(model) is Group.B_D
    info = describe(directory)
    assert info["gauge_group"] == Group.of(model).description and info["norm"] == "rmsnorm"
    assert info["model_type"] == model.config.model_type and info["family"] == model.config.family


def assert_align(model: gj.Model, seed: int = 11) -> None:
    """``gj.align`` recovers a random hidden gauge between the model and its gauged copy.

    Batches of 2 rows of 12 tokens: the shape :func:`assert_parity` already compiled.
    """
    g = gj.SignedPermutation.random(seed, model.config.d_model)
    toks = tokens(model.config.vocab_size, batch=48, seq=12, seed=seed)
    r = gj.align(model, gj.apply_gauge(model, g), toks, batch_rows=2)
    assert r.gauge == g and r.group == "B_d"


def assert_wrong_role_breaks(model: gj.Model, g: gj.SignedPermutation, key: str, toks: np.ndarray,
                             ref_logits: np.ndarray, wrong: str = "gain") -> float:
    """Moving ``params["layers"][key]`` by a wrong rule (everything else by the right one) changes
    the logits: the role the table gives it is the one that keeps the function.

    Args:
      wrong: ``"gain"``: ``w[..., perm]`` (for a NONE tensor of length d that looks like a gain);
        ``"vector"``: ``w[..., perm] * signs`` (for a gain mistaken for a vector written into the stream).
    """
    w = model.params["layers"][key]
    assert w.shape[-1] == model.config.d_model, "the trap needs a length-d tensor"
    w = w[..., g.perm] * (g.signs if wrong == "vector" else 1)
    moved = gj.apply_gauge(model, g)
    params = {**moved.params, "layers": {**moved.params["layers"], key: w}}
    err = rel_err(np.asarray(gj.forward(gj.Model(model.config, params), toks)), ref_logits)
    assert err > FEATURE_MIN, f"moving {key} as a {wrong} changes the logits by only {err:.1e}"
    return err


def build_cases(root: Path, cases: dict[str, tuple[str, str, dict[str, Any]]], vocab: int,
                builder=None) -> dict[str, tuple]:
    """Every case ``name → (config class, model class, kwargs)`` saved under ``root`` with its reference.

    ``builder`` makes one checkpoint (default :func:`build`; the MoE, Phi-3 and LayerNorm families
    pass ``family_helpers.build``, which randomises every parameter).
    Returns ``name → (directory, tokens, transformers logits, transformers hidden states)``.
    """
    builder = builder or build
    toks = tokens(vocab)
    out = {}
    for name, (config_cls, model_cls, kwargs) in cases.items():
        d = builder(config_cls, model_cls, kwargs, root / name)
        out[name] = (d, toks, *hf_reference(d, toks))
    return out


def check_parity(entry: tuple) -> None:
    """:func:`assert_parity` of one :func:`build_cases` entry, loaded by gaugejax."""
    d, toks, logits, hidden = entry
    assert_parity(load_model(d), toks, logits, hidden)


def check_round_trip(entry: tuple, tmp_path: Path) -> None:
    """:func:`assert_gauge_round_trip` of one :func:`build_cases` entry."""
    d, toks, logits, hidden = entry
    assert_gauge_round_trip(d, toks, logits, hidden, tmp_path)


def check_group_and_align(directory: Path) -> None:
    """:func:`assert_group` of a checkpoint and :func:`assert_align` of its model."""
    assert_group(directory)
    assert_align(load_model(directory))


def standard_tests(family: str, config_cls: str, model_cls: str, cases: dict[str, dict[str, Any]], vocab: int,
                   align_case: str) -> tuple:
    """The ``ckpts`` fixture and the three standard tests of a dense family, for its test module.

    Usage (module level): ``ckpts, test_parity, test_gauge_round_trip, test_group_info_and_align =
    standard_tests("granite", "GraniteConfig", "GraniteForCausalLM", CASES, VOCAB, align_case="bias")``.
    ``ckpts`` maps case → (directory, tokens, transformers logits, transformers hidden states), built
    once per module; the family's own tests can use it too.
    """
    import pytest

    @pytest.fixture(scope="module", name="ckpts")
    def ckpts(tmp_path_factory):
        return build_cases(tmp_path_factory.mktemp(family),
                           {n: (config_cls, model_cls, kw) for n, kw in cases.items()}, vocab)

    @pytest.mark.parametrize("case", list(cases))
    def test_parity(ckpts, case):
        check_parity(ckpts[case])

    @pytest.mark.parametrize("case", list(cases))
    def test_gauge_round_trip(ckpts, case, tmp_path):
        check_round_trip(ckpts[case], tmp_path)

    def test_group_info_and_align(ckpts):
        check_group_and_align(ckpts[align_case][0])

    return ckpts, test_parity, test_gauge_round_trip, test_group_info_and_align
