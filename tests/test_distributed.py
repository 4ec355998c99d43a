"""Data-parallel statistics across 2 processes (jax.distributed, gloo CPU collectives) equal the
single-process statistics."""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

from gaugejax import stats

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=120)
    from gaugejax import stats
    assert jax.process_count() == 2 and jax.device_count() == 2
    mesh = jax.make_mesh((2,), ("data",))
    upd = stats.make_sharded_update(mesh)
    data = np.load(out + ".in.npz")
    x, y = data["x"], data["y"]
    s = stats.init(x.shape[-1], n_layers=x.shape[0])
    for k in range(0, x.shape[1], 128):
        xb, yb = x[:, k:k + 128], y[:, k:k + 128]
        half = slice(64 * pid, 64 * (pid + 1))  # this process's tokens of the batch
        s = upd(s, stats.shard_tokens(xb[:, half], mesh), stats.shard_tokens(yb[:, half], mesh))
    c = stats.finalize(s)
    np.savez(out + f".{pid}.npz", corr=np.asarray(c.corr), mean_x=np.asarray(c.mean_x), n=np.asarray(c.n))
    jax.distributed.shutdown()
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _data():
    rng = np.random.default_rng(0)
    L, n, d = 2, 512, 16
    x = (rng.normal(size=(L, n, d)) * rng.uniform(0.5, 4, d) - 3.0).astype(np.float32)
    y = (x[..., ::-1] + 0.5 * rng.normal(size=x.shape)).astype(np.float32)
    return x, y


def test_two_processes_equal_single_process(tmp_path):
    x, y = _data()
    base = str(tmp_path / "run")
    np.savez(base + ".in.npz", x=x, y=y)
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(pid), str(port), base], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    ref = stats.init(16, n_layers=2)
    for k in range(0, 512, 128):
        ref = stats.update(ref, x[:, k:k + 128], y[:, k:k + 128])
    ref = stats.finalize(ref)
    for pid in (0, 1):
        got = np.load(base + f".{pid}.npz")
        assert int(got["n"]) == 512
        # Same float32 arithmetic up to reduction order (2 shards merged by Chan's formula): a few ulps.
        np.testing.assert_allclose(got["corr"], np.asarray(ref.corr), atol=1e-5)
        np.testing.assert_allclose(got["mean_x"], np.asarray(ref.mean_x), atol=1e-5)
