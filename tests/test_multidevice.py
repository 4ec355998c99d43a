"""Data-parallel statistics on 8 forced host devices equal the single-device statistics.

XLA_FLAGS must be set before jax is imported, so the sharded run happens in a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jax
    from gaugejax import stats
    from gaugejax.matching import match_stats

    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((8,), ("data",))
    upd = stats.make_sharded_update(mesh)
    rng = np.random.default_rng(0)
    L, d = 3, 24
    mix = rng.normal(size=(d, d)).astype(np.float32)
    perm = rng.permutation(d); signs = np.where(rng.random(d) < 0.5, -1, 1).astype(np.float32)
    sharded = stats.init(d, n_layers=L)
    single = stats.init(d, n_layers=L)
    for step in range(4):
        x = (rng.normal(size=(L, 256, d)) @ mix + 10.0).astype(np.float32)
        y = (x[..., perm] * signs + 0.3 * rng.normal(size=x.shape)).astype(np.float32)
        xs, ys = stats.shard_tokens(x, mesh), stats.shard_tokens(y, mesh)
        assert len(xs.sharding.device_set) == 8
        sharded = upd(sharded, xs, ys)
        single = stats.update(single, x, y)
    a, b = stats.finalize(sharded), stats.finalize(single)
    ra, rb = match_stats(sharded, warn=False), match_stats(single, warn=False)
    print(json.dumps({
        "n": [int(a.n), int(b.n)],
        "corr": float(np.abs(np.asarray(a.corr) - np.asarray(b.corr)).max()),
        "mean": float(np.abs(np.asarray(a.mean_x) - np.asarray(b.mean_x)).max()),
        "std": float(np.abs(np.asarray(a.std_y) / np.asarray(b.std_y) - 1).max()),
        "same_gauge": bool(ra.gauge == rb.gauge),
        "true_gauge": bool(ra.gauge.perm.tolist() == perm.tolist()),
    }))
""")


def test_eight_host_devices_equal_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["n"] == [1024, 1024]
    # Same float32 arithmetic up to the order of the token reduction (8 partial sums merged with
    # Chan's formula vs one sum per batch): agreement to a few float32 ulps of O(1)/O(10) values.
    assert r["corr"] < 1e-5 and r["mean"] < 1e-4 and r["std"] < 1e-5
    assert r["same_gauge"] and r["true_gauge"]
