"""Mesh sharding on 8 forced host devices and across 2 jax.distributed processes.

XLA_FLAGS must be set before jax is imported, so every sharded run happens in a subprocess.
"""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest

from gaugejax.errors import GaugeJaxError
from gaugejax.sharding import parse_mesh

COMMON = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jax
    import gaugejax as gj
    from gaugejax import sharding

    def pair(root):
        # d_ff, heads and vocab divisible by 4: every large parameter can be split over model=4
        c = gj.tiny_config("llama", n_heads=4, n_kv_heads=4, head_dim=16, d_ff=128)
        m = gj.random_model(c, seed=0)
        g = gj.SignedPermutation.random(3, c.d_model)
        gj.save_model(m, root + "/a"); gj.save_model(gj.apply_gauge(m, g), root + "/b")
        return m, g

    def recorder(log):
        def wrap(read):
            def r(key, layer, index):
                a = read(key, layer, index)
                log.append([key, layer, int(a.size), repr(index)])
                return a
            return r
        return wrap
""")

SINGLE = COMMON + textwrap.dedent("""
    root = sys.argv[1]
    assert jax.device_count() == 8
    m, g = pair(root)
    mesh = sharding.make_mesh("data=2,model=4")
    log = []
    ms = sharding.load_sharded(root + "/a", mesh, reader=recorder(log))
    fracs = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(ms.params):
        name = jax.tree_util.keystr(path)
        fracs[name] = max(s.data.size for s in leaf.addressable_shards) / leaf.size
    t = np.random.default_rng(0).integers(0, 256, (4, 16))
    ref = np.asarray(gj.forward(m, t))
    out = np.asarray(gj.forward(ms, sharding.shard_rows(t, mesh)))
    mb = gj.load_model(root + "/b", mesh=mesh)
    tok = np.random.default_rng(1).integers(0, 256, (8, 64))
    r = gj.align(ms, mb, tok, mesh=mesh, warn=False)
    sizes = {k: int(np.prod(v.shape)) for k, v in jax.tree_util.tree_leaves_with_path(ms.params)
             for k in [jax.tree_util.keystr(k)]}
    print(json.dumps({"fracs": fracs, "sizes": sizes, "rel": float(np.abs(out - ref).max() / np.abs(ref).max()),
                      "gauge": bool(r.gauge == g), "reads": log}))
""")


def _env(n_devices):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}")
    return env


def test_parse_mesh():
    assert parse_mesh("data=2,model=4") == {"data": 2, "model": 4}
    assert parse_mesh("model=8") == {"data": 1, "model": 8}
    for bad in ("data=0", "pipe=2", "data=2,data=2", "model=x", ""):
        with pytest.raises(GaugeJaxError, match="--mesh"):
            parse_mesh(bad)


def test_make_mesh_refuses_other_axes_and_non_meshes_in_one_line():
    import jax
    from jax.sharding import Mesh

    from gaugejax.sharding import make_mesh

    one = Mesh(jax.devices()[:1], ("data",))
    for bad, says in (({"pipe": 1}, "--mesh must look like"), (8, "got a value of type int"),
                      (one.abstract_mesh, "got a value of type AbstractMesh"),
                      (Mesh(jax.devices()[:1], ("batch",)), "needs axes named 'data' (token rows) and/or 'model'")):
        with pytest.raises(GaugeJaxError, match=re.escape(says)) as e:
            make_mesh(bad)
        assert "\n" not in str(e.value)


def test_without_current_mesh_sets_the_callers_mesh_aside_only_inside_its_block():
    import jax
    from jax.sharding import AxisType, Mesh, get_abstract_mesh

    from gaugejax.sharding import without_current_mesh

    explicit = Mesh(jax.devices()[:1], ("data",), axis_types=(AxisType.Explicit,))
    with jax.set_mesh(explicit):
        block = without_current_mesh()  # made, not yet entered: the caller's mesh stays current
        assert get_abstract_mesh().axis_types == (AxisType.Explicit,)
        with block:
            assert get_abstract_mesh().empty
        assert get_abstract_mesh().axis_types == (AxisType.Explicit,)


@pytest.mark.slow
def test_eight_devices_data2_model4(tmp_path):
    out = subprocess.run([sys.executable, "-c", SINGLE, str(tmp_path)], env=_env(8), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    large = [k for k, n in r["sizes"].items() if n >= 64 * 64]
    assert large and all(r["fracs"][k] <= 0.25 for k in large), r["fracs"]
    # one device's slice of a split parameter is a quarter of it; the reader never read more at once
    for key, layer, size, _ in r["reads"]:
        name = f"['{key}']" if layer is None else f"['layers']['{key}']"
        if name in large:
            per = r["sizes"][name] // (1 if layer is None else 2)
            assert size <= per // 4, (key, layer, size)
    # Same float32 ops with the reductions split over 4 devices: agreement to float32 rounding.
    assert r["rel"] <= 1e-5
    assert r["gauge"]


WORKER = COMMON + textwrap.dedent("""
    from jax.sharding import AxisType, Mesh
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, port, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=120)
    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    m, g = pair(root + f"/p{pid}")  # each process writes the same checkpoints (same seeds)
    devs = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    # model axis across the two processes: each holds 2 of the 4 model shards of every split parameter
    grid = np.array([[devs[0], devs[1], devs[4], devs[5]], [devs[2], devs[3], devs[6], devs[7]]])
    # Explicit axes, as jax.make_mesh gives by default: gaugejax runs them as Auto (sharding.make_mesh)
    mesh = Mesh(grid, sharding.AXES, axis_types=(AxisType.Explicit, AxisType.Explicit))
    log = []
    ma = sharding.load_sharded(root + f"/p{pid}/a", mesh, reader=recorder(log))
    mb = sharding.load_sharded(root + f"/p{pid}/b", mesh)
    tok = np.random.default_rng(1).integers(0, 256, (8, 64))
    r = gj.align(ma, mb, tok, mesh=mesh, warn=False)
    sizes = {k: int(np.prod(v.shape)) for k, v in jax.tree_util.tree_leaves_with_path(ma.params)
             for k in [jax.tree_util.keystr(k)]}
    with open(root + f"/out{pid}.json", "w") as f:
        json.dump({"perm": np.asarray(r.gauge.perm).tolist(), "signs": np.asarray(r.gauge.signs).tolist(),
                   "true": bool(r.gauge == g), "reads": log, "sizes": sizes}, f)
    jax.distributed.shutdown()
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_read_only_their_slices(tmp_path):
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(pid), str(port), str(tmp_path)], env=_env(4),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    res = [json.loads((tmp_path / f"out{pid}.json").read_text()) for pid in (0, 1)]
    assert res[0]["true"] and res[1]["true"] and res[0]["perm"] == res[1]["perm"]
    sizes = res[0]["sizes"]
    for r in res:
        read: dict[str, int] = {}
        for key, layer, size, index in {tuple(x) for x in r["reads"]}:  # distinct slices (replicas read the same)
            name = f"['{key}']" if layer is None else f"['layers']['{key}']"
            read[name] = read.get(name, 0) + size
        split = [k for k, n in sizes.items() if n >= 64 * 64]
        assert split
        for k in split:
            # this process's devices hold 2 of the 4 model shards: exactly half of the parameter is read
            assert read[k] == sizes[k] // 2, (k, read[k], sizes[k])
        for k in set(sizes) - set(split):  # small replicated parameters (norm gains) are read whole
            assert read[k] == sizes[k], k
