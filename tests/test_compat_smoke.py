"""Smoke test of a user's path on three families, at whatever library versions are installed.

``.ci/run`` runs the whole suite at the pinned versions (``.ci/constraints.txt``), then this file
alone in two more virtual environments: the minimum versions ``pyproject.toml`` declares
(``.ci/constraints-min.txt``, checked against ``pyproject.toml`` by ``test_dependency_ranges.py``)
and the newest versions available at CI time. Each family — Llama (RMSNorm, ``B_d``, grouped
queries, untied head), GPT-2 (LayerNorm, ``S_d × {±1}``, biases, tied head) and Gemma 2 (``(1 + w)``
gains, sandwich norms, soft-caps, a sliding window) — goes through:

* **load + parity**: ``save_pretrained`` by transformers, ``gj.load_model``; logits and every
  hidden state equal transformers';
* **apply**: a random gauge of the family's group, written by ``gj.save_model`` and by the
  streaming ``apply_gauge_to_checkpoint``, runs in transformers with the same logits and hidden
  states ``h[..., perm] * signs``;
* **align**: ``gj.align`` recovers a hidden gauge from activations;
* **transport**: a steering vector moved by ``gj.transport_vector`` steers the gauged model exactly
  as the original steers the original, and an optax AdamW state moved by
  ``gj.transport_opt_state`` continues the gauged run step for step;
* **mesh** (Llama only, 4 forced host devices in a subprocess, since XLA_FLAGS must be set before
  jax starts): ``load_model(mesh="data=2,model=2")`` and, where JAX has it, a ``jax.make_mesh`` mesh
  with JAX's default axis types give the unsharded logits, and ``gj.align`` over the mesh recovers
  the gauge.

Tolerances: parity and apply use ``family_helpers.RTOL`` (1e-4 of the reference's scale: both
sides compute in float32 in different summation orders, a few ulps per layer, while a real bug
shows at 1e-3 or more). Transport compares two float32 runs of our own code that sum the same
products in a permuted order: 1e-5 of the logits' / parameters' scale (measured ≲ 1e-6); the
mesh check compares sharded and unsharded float32 runs of our code (partial sums over shards): the
same 1e-5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import jax  # noqa: E402
import optax  # noqa: E402

import gaugejax as gj  # noqa: E402
from gaugejax import train  # noqa: E402
from gaugejax.audit import Claim, audit, plot_audit  # noqa: E402
from gaugejax.cli import main  # noqa: E402
from gaugejax.io import load_model  # noqa: E402
import family_helpers as F  # noqa: E402
from helpers_hf import hf_reference, rel_err  # noqa: E402

VOCAB = 97
TRANSPORT_RTOL = 1e-5
"""Relative tolerance of the transport checks (our float32 code against itself, permuted sums)."""

_DENSE = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64)
CASES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(_DENSE, tie_word_embeddings=False)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             dict(vocab_size=VOCAB, n_embd=48, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)),
    # layer 0 slides (window 5 < 12 tokens); caps low enough to bite (initializer 5× the default)
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               dict(_DENSE, head_dim=12, sliding_window=5, query_pre_attn_scalar=12, final_logit_softcapping=5.0,
                    attn_logit_softcapping=3.0, initializer_range=0.1, tie_word_embeddings=False)),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """case → (directory, tokens, transformers logits, transformers hidden states)."""
    root = tmp_path_factory.mktemp("compat")
    toks = F.tokens(VOCAB)
    out = {}
    for name, (config_cls, model_cls, kwargs) in CASES.items():
        d = F.build(config_cls, model_cls, kwargs, root / name)
        out[name] = (d, toks, *hf_reference(d, toks))
    return out


def test_versions_in_use(capsys):
    """Prints the versions this run tested (the CI log then says which set a lane really had)."""
    from importlib.metadata import version

    names = ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "safetensors", "transformers", "tokenizers", "torch")
    with capsys.disabled():
        print("\ncompat smoke versions: " + ", ".join(f"{n} {version(n)}" for n in names))
    assert jax.__version__ == version("jax")


@pytest.mark.parametrize("case", list(CASES))
def test_load_and_parity(ckpts, case):
    d, toks, logits, hidden = ckpts[case]
    F.assert_parity(load_model(d), toks, logits, hidden)


@pytest.mark.parametrize("case", list(CASES))
def test_apply_round_trips_through_transformers(ckpts, case, tmp_path):
    d, toks, logits, hidden = ckpts[case]
    F.assert_gauge_round_trip(d, toks, logits, hidden, tmp_path)


@pytest.mark.parametrize("case", list(CASES))
def test_align_recovers_the_gauge(ckpts, case):
    F.assert_align(load_model(ckpts[case][0]))


@pytest.mark.parametrize("case", list(CASES))
def test_transported_steering_vector_steers_alike(ckpts, case):
    d, toks, _, _ = ckpts[case]
    model = load_model(d)
    g = F.family_gauge(model)
    v = np.random.default_rng(5).normal(size=model.config.d_model).astype(np.float32)
    ref = np.asarray(gj.forward_with_steering(model, toks, 1, v, 4.0))
    moved = np.asarray(gj.forward_with_steering(gj.apply_gauge(model, g), toks, 1,
                                                gj.transport_vector(v, g), 4.0))
    assert rel_err(ref, np.asarray(gj.forward(model, toks))) > 1e-2  # the vector really steers
    assert rel_err(moved, ref) < TRANSPORT_RTOL


@pytest.mark.parametrize("case", list(CASES))
def test_transported_adamw_state_continues_the_run(ckpts, case):
    """Three AdamW steps on A, then two more on A and on (gauged params, transported state)."""
    model = load_model(ckpts[case][0])
    cfg, spec = model.config, gj.gauge_spec(model.config)
    g = F.family_gauge(model)
    opt = optax.adamw(1e-2, weight_decay=0.1)
    step = train.make_step(cfg, opt)
    batches = train.markov_batches(0, cfg.vocab_size, steps=5, batch=2, seq=12)
    params, state = model.params, opt.init(model.params)
    for b in batches[:3]:
        params, state, _ = step(params, state, b)
    moved = (gj.apply_spec(params, spec, g), gj.transport_opt_state(state, g, cfg))
    for b in batches[3:]:
        params, state, _ = step(params, state, b)
        moved = step(*moved, b)[:2]
    scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(params))
    gap = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
              for a, b in zip(jax.tree.leaves(gj.apply_spec(params, spec, g)), jax.tree.leaves(moved[0])))
    assert gap <= TRANSPORT_RTOL * scale, gap


MESH_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jax
    import gaugejax as gj

    directory, toks = sys.argv[1], np.asarray(json.loads(sys.argv[2]))
    assert jax.device_count() == 4, jax.devices()
    plain = gj.load_model(directory)
    ref = np.asarray(gj.forward(plain, toks))
    meshes = {"spec": "data=2,model=2"}
    if hasattr(jax, "make_mesh"):  # JAX >= 0.4.32; default axis types (Explicit since JAX 0.9)
        meshes["make_mesh"] = jax.make_mesh((2, 2), ("data", "model"))
    out = {}
    for name, mesh in meshes.items():
        logits = np.asarray(gj.forward(gj.load_model(directory, mesh=mesh), toks))
        out[name] = float(np.abs(logits - ref).max() / np.abs(ref).max())
    g = gj.SignedPermutation.random(3, plain.config.d_model)
    rows = np.random.default_rng(11).integers(0, plain.config.vocab_size, (48, 12))
    r = gj.align(plain, gj.apply_gauge(plain, g), rows, mesh="data=2,model=2", warn=False)
    out["align"] = r.gauge == g
    print(json.dumps(out))
""")


def test_mesh_load_forward_and_align(ckpts, tmp_path):
    d, toks, _, _ = ckpts["llama"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", MESH_SCRIPT, str(d), json.dumps(toks.tolist())], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("align") is True
    assert "spec" in out and all(err < TRANSPORT_RTOL for err in out.values()), out


def test_cli_apply_align_info(ckpts, tmp_path, capsys):
    """``gaugejax apply`` hides a random gauge, ``gaugejax align`` finds it, ``gaugejax info`` prints its table."""
    src, gauged, gfile, found = (str(ckpts["gemma2"][0]), str(tmp_path / "gauged"), str(tmp_path / "g.npz"),
                                 str(tmp_path / "found.npz"))
    assert main(["apply", src, "--random-gauge", "7", "--save-gauge", gfile, "-o", gauged]) == 0
    assert main(["align", src, gauged, "-o", found, "--min-tokens", "256", "--max-tokens", "1024",
                 "--seq-len", "12"]) == 0
    assert gj.SignedPermutation.load(found) == gj.SignedPermutation.load(gfile)
    capsys.readouterr()
    assert main(["info", src]) == 0
    assert "B_d" in capsys.readouterr().out


def test_audit_chart_and_flax_spec(ckpts, tmp_path):
    model = load_model(ckpts["llama"][0])
    r = audit(model, Claim("first coordinate", lambda m, t: ([0], None), signed=False), ckpts["llama"][1], k=3)
    plot_audit(r, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import flax.linen as nn

    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    params = nn.Dense(3).init(jax.random.key(0), x)
    g = gj.SignedPermutation.random(2, 6)
    moved = gj.apply_spec(params, {"params": {"kernel": gj.Axes(gj.RESIDUAL, None), "bias": gj.Axes(None)}}, g)
    # float32 products summed in a permuted order: a few ulps
    np.testing.assert_allclose(nn.Dense(3).apply(moved, g.apply(x)), nn.Dense(3).apply(params, x), rtol=1e-5,
                               atol=1e-6)


def test_host_assignment_solvers_agree():
    """``lap``'s Jonker-Volgenant and scipy's solver find the same (unique, random) optimum."""
    score = np.random.default_rng(0).normal(size=(40, 40))
    a, b = gj.assignment.solve(score, method="lapjv"), gj.assignment.solve(score, method="scipy")
    assert (a.solver, b.solver) == ("lapjv", "scipy")
    np.testing.assert_array_equal(a.cols, b.cols)
