"""Meshes of either axis type, wherever ``mesh=`` is taken (issue 18 item 3).

``jax.make_mesh`` gives ``Explicit`` axes by default since JAX 0.9; a hand-made ``Mesh`` has ``Auto``
ones. Every entry point that takes a mesh (``load_model``, ``align``, ``sharding.shard_model`` /
``shard_rows`` / ``load_sharded``, ``stats.make_sharded_update`` / ``shard_tokens``, the CLI's
``--mesh``) must give the unsharded result on 2-D meshes of Auto, Explicit and mixed axes and on
1-D ``("data",)`` / ``("model",)`` meshes, keep the parameters split as the mesh asks, and refuse
other axis names with one line.

XLA_FLAGS must be set before jax is imported, so the 8-device runs happen in one subprocess whose
results (one JSON record per mesh and entry point) the parametrized tests below read.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys, traceback
    import numpy as np
    import jax
    from jax.sharding import AxisType, Mesh
    import gaugejax as gj
    from gaugejax import sharding, stats

    root = sys.argv[1]
    assert jax.device_count() == 8, jax.devices()
    E, A = AxisType.Explicit, AxisType.Auto
    MESHES = {
        "auto": lambda: jax.make_mesh((2, 4), ("data", "model"), axis_types=(A, A)),
        "explicit": lambda: jax.make_mesh((2, 4), ("data", "model"), axis_types=(E, E)),
        "mixed": lambda: jax.make_mesh((2, 4), ("data", "model"), axis_types=(E, A)),
        "default": lambda: jax.make_mesh((2, 4), ("data", "model")),  # what users write
        "data-only": lambda: jax.make_mesh((8,), ("data",), axis_types=(E,)),
        "model-data": lambda: jax.make_mesh((4, 2), ("model", "data"), axis_types=(E, E)),
    }
    BAD = {"xy": lambda: jax.make_mesh((2, 4), ("x", "y")),
           "batch": lambda: jax.make_mesh((8,), ("batch",)),
           "extra": lambda: jax.make_mesh((2, 2, 2), ("data", "model", "pipe"))}

    # d_ff, heads and vocab divisible by 4 and 8: the large parameters split over model=4 or 8
    c = gj.tiny_config("llama", n_heads=8, n_kv_heads=8, head_dim=8, d_ff=128)
    m = gj.random_model(c, seed=0)
    g = gj.SignedPermutation.random(3, c.d_model)
    mb = gj.apply_gauge(m, g)
    gj.save_model(m, root + "/a"); gj.save_model(mb, root + "/b")
    t = np.random.default_rng(0).integers(0, c.vocab_size, (4, 16))
    tok = np.random.default_rng(1).integers(0, c.vocab_size, (8, 64))
    ref = np.asarray(gj.forward(m, t))
    ref_align = gj.align(m, mb, tok, warn=False)
    xs = np.random.default_rng(2).normal(size=(2, 64, 24)).astype(np.float32) + 3.0
    ys = xs[..., ::-1] * 2.0 - 1.0
    ref_stats = stats.finalize(stats.update(stats.init(24, n_layers=2), xs, ys))

    def layout(mesh, model):
        # the user's devices and axis names, and each parameter's largest per-device fraction
        leaves = jax.tree_util.tree_leaves_with_path(model.params)
        frac = {jax.tree_util.keystr(k): max(s.data.size for s in a.addressable_shards) / a.size for k, a in leaves}
        meshes = {(tuple(d.id for d in a.sharding.mesh.devices.flat), a.sharding.mesh.axis_names) for _, a in leaves}
        want = (tuple(d.id for d in mesh.devices.flat), mesh.axis_names)
        return {"frac": frac, "same_devices": meshes == {want}}

    def rel(out):
        return float(np.abs(np.asarray(out) - ref).max() / np.abs(ref).max())

    def load_model(mesh):
        ms = gj.load_model(root + "/a", mesh=mesh)
        with jax.set_mesh(mesh), sharding.without_current_mesh():  # the documented way inside a caller's mesh
            in_context = rel(gj.forward(ms, t))
        return {"rel": rel(gj.forward(ms, t)), "rel_in_context": in_context, **layout(mesh, ms)}

    def shard_model(mesh):
        ms = sharding.shard_model(m, mesh)
        rows = sharding.shard_rows(t, mesh)
        return {"rel": rel(gj.forward(ms, rows)), "row_devices": len(rows.sharding.device_set), **layout(mesh, ms)}

    def compare(r):
        return {"same_gauge": bool(r.gauge == ref_align.gauge), "true_gauge": bool(r.gauge == g),
                "n_tokens": [r.n_tokens, ref_align.n_tokens],
                "corr": float(np.abs(np.asarray(r.matched_corr) - np.asarray(ref_align.matched_corr)).max())}

    def align(mesh):
        return compare(gj.align(gj.load_model(root + "/a", mesh=mesh), gj.load_model(root + "/b", mesh=mesh),
                                tok, mesh=mesh, warn=False))

    def align_in_context(mesh):  # the caller did jax.set_mesh(mesh), as JAX's sharding guide shows
        with jax.set_mesh(mesh):
            return align(mesh)

    def sharded_stats(mesh):
        out = {}
        upd = stats.make_sharded_update(mesh, "data")
        for inp in ("shard_tokens", "numpy"):
            place = (lambda a: stats.shard_tokens(a, mesh, "data")) if inp != "numpy" else (lambda a: a)
            s = stats.init(24, n_layers=2)
            for half in (slice(0, 32), slice(32, 64)):  # the second update takes the state the first returned
                s = upd(s, place(xs[:, half]), place(ys[:, half]))
            s = stats.finalize(s)
            out[inp] = {"n": int(s.n), "corr": float(np.abs(np.asarray(s.corr) - np.asarray(ref_stats.corr)).max())}
        return out

    def sharded_stats_in_context(mesh):
        with jax.set_mesh(mesh):
            return sharded_stats(mesh)

    def run(fn, *args):
        try:
            return fn(*args)
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-1500:]}

    res = {}
    for kind, make in MESHES.items():
        mesh = make()
        res[kind] = {"types": [x.name for x in mesh.axis_types]}
        for fn in (load_model, shard_model, align, align_in_context, sharded_stats, sharded_stats_in_context):
            res[kind][fn.__name__] = run(fn, mesh)

    def refusal(fn):
        try:
            fn()
        except Exception as e:
            return {"type": type(e).__name__, "gaugejax": isinstance(e, gj.GaugeJaxError), "msg": str(e)}
        return {"type": None}

    for kind, make in BAD.items():
        mesh = make()
        res["bad-" + kind] = {
            "load_model": refusal(lambda: gj.load_model(root + "/a", mesh=mesh)),
            "align": refusal(lambda: gj.align(m, mb, tok, mesh=mesh, warn=False)),
            "shard_model": refusal(lambda: sharding.shard_model(m, mesh)),
            "shard_rows": refusal(lambda: sharding.shard_rows(t, mesh)),
            "make_mesh": refusal(lambda: sharding.make_mesh(mesh)),
        }
    data_mesh = MESHES["data-only"]()
    res["bad-stats-axis"] = {"make_sharded_update": refusal(lambda: stats.make_sharded_update(data_mesh, "rows")),
                             "shard_tokens": refusal(lambda: stats.shard_tokens(xs, data_mesh, "rows"))}

    from gaugejax.cli import main
    cli = {}
    for name, extra in (("plain", []), ("mesh", ["--mesh", "data=2,model=4"])):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(["align", root + "/a", root + "/b", "-o", f"{root}/{name}.npz", "--seq-len", "64",
                         "--min-tokens", "512", "--max-tokens", "512", *extra])
        cli[name] = {"code": code, "out": out.getvalue()[-2000:]}
    plain, meshed = (gj.SignedPermutation.load(f"{root}/{name}.npz") for name in ("plain", "mesh"))
    cli["same_gauge"] = bool(plain == meshed)
    res["cli"] = cli
    print(json.dumps(res))
""")

KINDS = ("auto", "explicit", "mixed", "default", "data-only", "model-data")
MODEL_SIZE = {"auto": 4, "explicit": 4, "mixed": 4, "default": 4, "data-only": 1, "model-data": 4}
BAD = ("bad-xy", "bad-batch", "bad-extra")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8", COLUMNS="300")
    root = tmp_path_factory.mktemp("meshes")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(root)], env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ok(record):
    assert "error" not in record, record.get("trace", record)
    return record


@pytest.mark.slow
def test_the_default_mesh_is_explicit_on_this_jax(runs):
    # Guards the premise: jax.make_mesh without axis_types gives Explicit axes (JAX >= 0.9).
    import jax

    if tuple(int(p) for p in jax.__version__.split(".")[:2]) >= (0, 9):
        assert runs["default"]["types"] == ["Explicit", "Explicit"]
    assert runs["mixed"]["types"] == ["Explicit", "Auto"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", ["load_model", "shard_model"])
def test_forward_on_a_loaded_or_placed_model_equals_unsharded(runs, kind, entry):
    r = _ok(runs[kind][entry])
    # Same float32 ops with the contractions split over up to 4 devices: agreement to float32 rounding.
    assert r["rel"] <= 1e-5
    if entry == "load_model":
        assert r["rel_in_context"] <= 1e-5
    # Placed on the user's devices under the user's axis names, split as the mesh asks: every
    # parameter with a model axis that divides is cut into MODEL_SIZE equal pieces (norm gains are
    # replicated).
    assert r["same_devices"]
    fracs = r["frac"]
    for name in ("['embed']", "['lm_head']", "['layers']['up']", "['layers']['down']", "['layers']['q']"):
        assert fracs[name] == pytest.approx(1 / MODEL_SIZE[kind]), (name, fracs)
    assert fracs["['final_norm']"] == 1.0
    if entry == "shard_model":
        assert r["row_devices"] == 8  # rows over data, replicated over model: every device holds rows


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", ["align", "align_in_context"])
def test_align_on_a_mesh_equals_unsharded(runs, kind, entry):
    r = _ok(runs[kind][entry])
    assert r["same_gauge"] and r["true_gauge"]
    assert r["n_tokens"][0] == r["n_tokens"][1]
    # Correlations in [-1, 1] from the same float32 activations up to the order of the sharded
    # contractions: agreement to a few float32 ulps.
    assert r["corr"] <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", ["sharded_stats", "sharded_stats_in_context"])
def test_sharded_statistics_equal_single_device(runs, kind, entry):
    r = _ok(runs[kind][entry])
    for inp in ("shard_tokens", "numpy"):
        assert r[inp]["n"] == 64
        # Per-device centered moments merged with Chan's formula vs one batch: float32 rounding.
        assert r[inp]["corr"] <= 1e-5, (inp, r[inp])


@pytest.mark.slow
@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("entry", ["load_model", "align", "shard_model", "shard_rows", "make_mesh"])
def test_other_axis_names_are_refused_in_one_line(runs, kind, entry):
    r = runs[kind][entry]
    assert r["gaugejax"], r
    assert "\n" not in r["msg"] and "'data'" in r["msg"] and "'model'" in r["msg"], r["msg"]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["make_sharded_update", "shard_tokens"])
def test_stats_refuses_a_missing_axis_in_one_line(runs, entry):
    r = runs["bad-stats-axis"][entry]
    assert r["gaugejax"] and "\n" not in r["msg"] and "'rows'" in r["msg"] and "'data'" in r["msg"], r


@pytest.mark.slow
def test_cli_mesh_gives_the_unsharded_gauge(runs):
    cli = runs["cli"]
    assert cli["plain"]["code"] == 0 and cli["mesh"]["code"] == 0, cli
    assert "mesh data=2,model=4" in cli["mesh"]["out"]
    assert cli["same_gauge"]


@pytest.mark.parametrize("spec, says", [("x=8", "--mesh must look like data=N,model=M"),
                                        ("data=3,model=4", "needs 12 devices")])
def test_cli_refuses_a_bad_mesh_in_one_line(tiny_checkpoint, tmp_path, capsys, spec, says):
    from gaugejax.cli import main

    code = main(["align", str(tiny_checkpoint), str(tiny_checkpoint), "-o", str(tmp_path / "g.npz"),
                 "--mesh", spec, "--max-tokens", "64", "--seq-len", "16"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("error: ") and says in err and "\n" not in err, err
