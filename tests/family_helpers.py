"""Checks shared by the MoE, Phi-3 and LayerNorm family tests, for either gauge group.

Import only after ``pytest.importorskip("torch")`` and ``pytest.importorskip("transformers")``.
A family test builds tiny random checkpoints with :func:`build` (every norm weight, of any shape,
randomised so gains are pairwise distinct; every bias non-zero) and then calls:

* :func:`assert_parity`: our logits and every hidden state equal transformers';
* :func:`assert_gauge_round_trip`: a random gauge of the model's group (:func:`family_gauge`:
  ``B_d`` for RMSNorm; for LayerNorm a permutation with global sign -1, so the sign rule is
  exercised) applied with ``gj.apply_gauge`` + ``gj.save_model`` reloads in transformers with the
  same logits and hidden states ``h[..., perm] * signs``, and ``gaugejax apply``'s streaming
  rewrite (``apply_gauge_to_checkpoint``) writes the same tensors;
* :func:`assert_group`: ``Group.of`` and ``gaugejax info`` report the family's group;
* :func:`assert_align`: ``gj.align`` recovers a hidden gauge;
* :func:`assert_changes_logits` / :func:`assert_wrong_role_breaks`: a config feature, or a wrong
  gauge role, changes the logits, so the tests above really cover it.

Tolerance: :data:`RTOL` = 1e-4 of the reference's max |value|, per tensor. Both sides compute in
float32 with different summation orders (a few ulps per layer; ≲ 2e-6 measured here), while a
real bug (wrong rotary layout, bias, sign or routing) shows at 1e-3 or more.
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
from helpers_hf import hf_reference, rel_err

RTOL = 1e-4
"""Parity tolerance relative to the reference's scale (see the module docstring)."""

FEATURE_MIN = 1e-3
"""A feature "matters" when dropping it moves the logits by more than this (relative)."""


def build(config_cls: str, model_cls: str, kwargs: dict[str, Any], directory: Path, seed: int = 0) -> Path:
    """A tiny random transformers model (:func:`randomize`\\ d) ``save_pretrained`` to ``directory``."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kwargs)).eval()
    randomize(model, seed)
    model.save_pretrained(directory)
    return Path(directory)


def randomize(model, seed: int = 0) -> None:
    """In place: every norm weight of any shape (per-head ``(heads, head_dim)`` ones too) becomes
    ``1 + 0.3·N(0,1)`` and every bias ``0.3·N(0,1)``."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            module = name.rsplit(".", 2)[-2] if name.count(".") > 1 else name
            if name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "norm" in name or module.startswith("ln_"):  # also per-head ``q_layernorm.norms.{h}``
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))


def tokens(vocab: int, batch: int = 2, seq: int = 12, seed: int = 0) -> np.ndarray:
    """Random ids ``(batch, seq)``; ``seq=12`` exceeds the tiny sliding windows used in the tests."""
    return np.random.default_rng(seed).integers(0, vocab, (batch, seq))


def family_gauge(model: gj.Model, seed: int = 3) -> gj.SignedPermutation:
    """A random element of the model's group; a LayerNorm model gets global sign -1."""
    d = model.config.d_model
    if Group.of(model) == Group.B_D:
        g = gj.SignedPermutation.random(seed, d)
        assert (g.signs < 0).any() and (g.signs > 0).any()
        return g
    return gj.SignedPermutation(gj.SignedPermutation.random(seed, d, signed=False).perm, -np.ones(d, np.int8))


def assert_parity(model: gj.Model, toks: np.ndarray, ref_logits: np.ndarray, ref_hidden: np.ndarray
                  ) -> tuple[float, float]:
    """Logits and every hidden state within :data:`RTOL`; returns ``(logit error, worst hidden error)``."""
    logits = np.asarray(gj.forward(model, toks))
    hidden = np.asarray(gj.residual_stream(model, toks))
    assert logits.shape == ref_logits.shape
    assert hidden.shape == ref_hidden.shape == (model.config.n_layers + 1, *toks.shape, model.config.d_model)
    err = rel_err(logits, ref_logits)
    assert err < RTOL, f"logits off by {err:.2e}"
    errs = [rel_err(h, r) for h, r in zip(hidden, ref_hidden)]
    for i, e in enumerate(errs):
        assert e < RTOL, f"hidden state {i} off by {e:.2e}"
    return err, max(errs)


def assert_gauge_round_trip(directory: Path, toks: np.ndarray, ref_logits: np.ndarray, ref_hidden: np.ndarray,
                            tmp: Path, seed: int = 3) -> gj.SignedPermutation:
    """The gauged model written by ``gj.save_model`` runs in transformers with unchanged logits and
    hidden states ``h[..., perm] * signs``; ``apply_gauge_to_checkpoint`` writes the same tensors.
    The gauged checkpoint is left in ``tmp / "gauged"``."""
    model = load_model(directory)
    g = family_gauge(model, seed)
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


def assert_group(directory: Path, group: Group) -> None:
    """``Group.of`` and ``info`` give ``group`` (and the right family and model type)."""
    model = load_model(directory)
    assert Group.of(model) == group
    info = describe(directory)
    assert info["gauge_group"] == group.description
    assert info["norm"] == model.config.norm == ("rmsnorm" if group == Group.B_D else "layernorm")
    assert info["model_type"] == model.config.model_type and info["family"] == model.config.family


def assert_align(model: gj.Model, seed: int = 11) -> None:
    """``gj.align`` recovers a random hidden gauge of the model's group."""
    g = family_gauge(model, seed)
    toks = tokens(model.config.vocab_size, batch=16, seq=32, seed=seed)
    r = gj.align(model, gj.apply_gauge(model, g), toks, warn=False)
    assert r.gauge == g and r.group == Group.of(model)


def assert_changes_logits(model: gj.Model, toks: np.ndarray, ref_logits: np.ndarray, **changes: Any) -> float:
    """The model with ``changes`` to its config is off the reference by more than :data:`FEATURE_MIN`."""
    other = gj.Model(model.config.replace(**changes), model.params)
    err = rel_err(np.asarray(gj.forward(other, toks)), ref_logits)
    assert err > FEATURE_MIN, f"{changes} changes the logits by only {err:.1e}"
    return err


def assert_wrong_role_breaks(model: gj.Model, g: gj.SignedPermutation, key: str, toks: np.ndarray,
                             ref_logits: np.ndarray, signed: bool = False) -> float:
    """Treating ``params["layers"][key]`` as a residual gain (permuted; ``signed``: also signed) on
    top of the correct gauge changes the logits: the role the table gives it is the one that works."""
    moved = gj.apply_gauge(model, g)
    w = moved.params["layers"][key]
    assert w.shape[-1] == model.config.d_model, "the trap needs a length-d tensor"
    w = w[..., g.perm] * (g.signs if signed else 1)
    params = {**moved.params, "layers": {**moved.params["layers"], key: w}}
    err = rel_err(np.asarray(gj.forward(gj.Model(model.config, params), toks)), ref_logits)
    assert err > FEATURE_MIN, f"permuting {key} changes the logits by only {err:.1e}"
    return err
