"""Coordinate-preserving merges: with the true gauge known, the B_d merge equals the merge of the
models in one chart (bit for bit); the S_d merge breaks it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaugejax as gj
from gaugejax.cli import main
from gaugejax.errors import GaugeError
from gaugejax.merge import interpolate, merge, merge_checkpoints, task_arithmetic


def _finetune(model, seed, size=0.05):
    """A stand-in for a fine-tune: the same chart, every parameter moved by ~5 % of its scale."""
    leaves, tree = jax.tree.flatten(model.params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    moved = [x + size * jnp.std(x) * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return gj.Model(model.config, jax.tree.unflatten(tree, moved))


def _equal(a, b):
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)))


def _kl(ma, mb, tokens):
    la = jax.nn.log_softmax(gj.forward(ma, tokens), -1)
    lb = jax.nn.log_softmax(gj.forward(mb, tokens), -1)
    return float((jnp.exp(la) * (la - lb)).sum(-1).mean())


@pytest.fixture(scope="module")
def setup():
    a = gj.random_model("llama", seed=0)
    ft = _finetune(a, 1)
    g = gj.SignedPermutation.random(7, a.d)
    tokens = np.random.default_rng(0).integers(0, 256, (4, 32))
    return a, ft, g, gj.apply_gauge(ft, g), tokens


def test_bd_merge_is_the_one_chart_merge(setup):
    a, ft, g, b, tokens = setup
    ideal = interpolate(a, ft, 0.5)
    assert _equal(merge(a, b, g, alpha=0.5), ideal)          # exact: the gauge's inverse undoes it bit for bit
    assert _equal(merge(a, b, g, alpha=0.0), a) and _equal(merge(a, b, g, alpha=1.0), ft)


def test_sd_merge_breaks(setup):
    a, ft, g, b, tokens = setup
    ideal = interpolate(a, ft, 0.5)
    kl_bd = _kl(ideal, merge(a, b, g, alpha=0.5), tokens)
    kl_sd = _kl(ideal, merge(a, b, g, alpha=0.5, group="S_d"), tokens)
    kl_ft = _kl(ideal, ft, tokens)  # the scale of a legitimate difference: the parent itself
    assert kl_bd == 0.0
    # Measured: KL(ideal ‖ S_d merge) ≈ 100x KL(ideal ‖ parent): flipped coordinates cancel in the average.
    assert kl_sd > 10 * kl_ft


def test_task_arithmetic_in_one_chart(setup):
    a, ft, g, b, tokens = setup
    ft2 = _finetune(a, 2)
    g2 = gj.SignedPermutation.random(8, a.d)
    b2 = gj.apply_gauge(ft2, g2)
    ideal = task_arithmetic(a, [ft, ft2], [0.7, 0.3])
    got = task_arithmetic(a, [b, b2], [0.7, 0.3], [g, g2])
    assert _equal(got, ideal)
    # base + 1·(θ − base) is θ up to float32 rounding
    one = task_arithmetic(a, [b], 1.0, [g])
    for x, y in zip(jax.tree.leaves(one.params), jax.tree.leaves(ft.params)):
        np.testing.assert_allclose(x, y, rtol=0, atol=4 * float(jnp.finfo(jnp.float32).eps) * float(jnp.abs(y).max()))
    bad = task_arithmetic(a, [b, b2], [0.7, 0.3], [g, g2], group="S_d")
    assert _kl(ideal, bad, tokens) > 10 * _kl(ideal, ft, tokens)


def test_merge_refusals(setup):
    a, ft, g, b, tokens = setup
    with pytest.raises(GaugeError, match="alpha"):
        merge(a, b, g, alpha=1.5)
    with pytest.raises(GaugeError, match="d=32|residual width"):
        merge(a, b, gj.SignedPermutation.random(0, 32))
    other = gj.random_model(gj.tiny_config("llama", d_ff=96), seed=0)
    with pytest.raises(GaugeError, match="different configs"):
        merge(a, other)
    ln = gj.random_model("gpt2", seed=0)
    with pytest.raises(GaugeError, match="LayerNorm"):
        merge(ln, ln, gj.SignedPermutation.random(0, ln.d))
    with pytest.raises(GaugeError, match="lambdas"):
        task_arithmetic(a, [b], [0.5, 0.5], [g])


def test_merge_checkpoints(setup, tmp_path):
    a, ft, g, b, tokens = setup
    gj.save_model(a, tmp_path / "a")
    gj.save_model(b, tmp_path / "b")
    g.save(tmp_path / "g.npz")
    r = merge_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "m", [tmp_path / "g.npz"], alpha=0.25)
    assert r.describe() == "interpolation, alpha = 0.25, group B_d"
    assert _equal(gj.load_model(tmp_path / "m"), interpolate(a, ft, 0.25))
    r = merge_checkpoints([tmp_path / "a", tmp_path / "b", tmp_path / "b"], tmp_path / "t", [g, g],
                          mode="task_arithmetic", group="S_d")
    assert r.weights == (0.5, 0.5) and r.group == "S_d"
    assert _equal(gj.load_model(tmp_path / "t"), task_arithmetic(a, [b, b], 0.5, [g, g], group="S_d"))
    # argument errors come before anything is loaded (the paths below do not exist)
    missing = [tmp_path / "x", tmp_path / "y", tmp_path / "z"]
    for kwargs, reason in [(dict(), "exactly two"), (dict(mode="task_arithmetic", lambdas=[1, 2, 3]), "3 lambdas"),
                           (dict(mode="task_arithmetic", gauges=[None]), "1 gauge"),
                           (dict(mode="mean"), "unknown merge mode")]:
        with pytest.raises(GaugeError, match=reason):
            merge_checkpoints(missing, tmp_path / "o", **kwargs)
    with pytest.raises(GaugeError, match="lambdas go with task arithmetic"):
        merge_checkpoints(missing[:2], tmp_path / "o", lambdas=1.0)
    with pytest.raises(GaugeError, match="differ from every input"):
        merge_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "a")
    assert not (tmp_path / "o").exists()


def test_layernorm_merge_with_global_sign():
    a = gj.random_model("gpt2", seed=0)
    ft = _finetune(a, 3)
    g = gj.SignedPermutation.random(1, a.d, signed=False, global_sign=True)
    g = gj.SignedPermutation(g.perm, -np.ones(a.d, np.int8))  # make the global flip certain
    b = gj.apply_gauge(ft, g)
    assert _equal(merge(a, b, g), interpolate(a, ft, 0.5))
    tokens = np.random.default_rng(1).integers(0, 256, (2, 16))
    assert _kl(interpolate(a, ft, 0.5), merge(a, b, g, group="S_d"), tokens) > 10 * _kl(interpolate(a, ft, 0.5), ft, tokens)


def test_cli_merge(setup, tmp_path, capsys):
    a, ft, g, b, tokens = setup
    gj.save_model(a, tmp_path / "a")
    gj.save_model(b, tmp_path / "b")
    g.save(tmp_path / "g.npz")
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--gauge", str(tmp_path / "g.npz"),
                 "--alpha", "0.5", "-o", str(tmp_path / "m")]) == 0
    assert _equal(gj.load_model(tmp_path / "m"), interpolate(a, ft, 0.5))
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--gauge", str(tmp_path / "g.npz"),
                 "--task-arithmetic", "--lambdas", "1.0", "-o", str(tmp_path / "t")]) == 0
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "a"), "--gauge",
                 str(tmp_path / "g.npz"), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "x").exists()
