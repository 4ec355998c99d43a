"""The ``gaugejax`` command's caches (issue 27 item 5; :mod:`gaugejax.cache`): JAX's persistent
compilation cache and the corpus ids of a checkpoint's tokenizer.

Each run is a fresh process (the caches only matter across processes). JAX's own monitoring events
count what it compiled and what it loaded from the cache: the second run of the same command
must load every program its first run compiled, and compile none; and it must not build the
tokenizer again (``load_tokenizer`` calls are counted) yet use the same ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gaugejax as gj
from gaugejax.cache import cache_dir

_RUN = """
import json, sys
import jax.monitoring as monitoring
counts = {"/jax/compilation_cache/cache_hits": 0, "/jax/compilation_cache/compile_requests_use_cache": 0}
monitoring.register_event_listener(lambda event, **kw: counts.__setitem__(event, counts[event] + 1)
                                   if event in counts else None)
import gaugejax.io as io
built = []
real = io.load_tokenizer
io.load_tokenizer = lambda path: built.append(str(path)) or real(path)
from gaugejax.cli import main
code = main(sys.argv[1:])
import jax
print(json.dumps({"code": code, "hits": counts["/jax/compilation_cache/cache_hits"],
                  "cached_requests": counts["/jax/compilation_cache/compile_requests_use_cache"],
                  "dir": jax.config.jax_compilation_cache_dir, "tokenizers_built": len(built)}))
"""


def run_cli(argv: list[str], **env: str) -> dict:
    """Runs ``gaugejax ARGV`` in a fresh process; its exit code, cache hits and cache folder."""
    environ = {k: v for k, v in os.environ.items() if k not in ("GAUGEJAX_NO_CACHE", "GAUGEJAX_CACHE_DIR",
                                                                "JAX_COMPILATION_CACHE_DIR")}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", _RUN, *map(str, argv)], capture_output=True, text=True, env=environ,
                         cwd=Path(__file__).parents[1], timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    cfg = gj.tiny_config("llama", d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32,
                         vocab_size=64)
    root = tmp_path_factory.mktemp("cache_pair")
    model = gj.random_model(cfg, 0)
    gj.save_model(model, root / "a")
    gj.save_model(gj.apply_gauge(model, gj.SignedPermutation.random(1, 16)), root / "b")
    return root


def test_second_run_loads_every_program_from_the_cache(pair, tmp_path):
    cache = tmp_path / "cc"
    argv = ["align", pair / "a", pair / "b", "-o", tmp_path / "g.npz", "--overwrite", "--max-tokens", "512"]
    first = run_cli(argv, GAUGEJAX_CACHE_DIR=str(cache))
    entries = sorted(p.name for p in (cache / "jax").iterdir())
    assert first["code"] == 0 and first["dir"] == str(cache / "jax")
    assert first["hits"] == 0 and first["cached_requests"] > 0 and entries
    second = run_cli(argv, GAUGEJAX_CACHE_DIR=str(cache))
    assert second["code"] == 0
    assert second["hits"] == second["cached_requests"] == first["cached_requests"], (first, second)
    assert sorted(p.name for p in (cache / "jax").iterdir()) == entries  # nothing compiled again


def test_second_run_reuses_the_corpus_ids_of_the_tokenizer(pair, tmp_path):
    """The corpus ids of ``a``'s tokenizer.json are kept: the second run builds no tokenizer and
    aligns on the same ids (same gauge file); a changed tokenizer.json is built again."""
    import shutil
    from collections import Counter

    from tokenizers import Tokenizer, models, pre_tokenizers

    from gaugejax.corpus import corpus_text

    split = pre_tokenizers.Whitespace()
    common = Counter(w for w, _ in split.pre_tokenize_str(corpus_text(50000))).most_common(63)
    tok = Tokenizer(models.WordLevel({w: i + 1 for i, (w, _) in enumerate(common)} | {"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = split

    shutil.copytree(pair / "a", tmp_path / "a")
    tok.save(str(tmp_path / "a" / "tokenizer.json"))
    env = {"GAUGEJAX_CACHE_DIR": str(tmp_path / "cc")}
    argv = ["align", tmp_path / "a", pair / "b", "-o", tmp_path / "g.npz", "--overwrite", "--max-tokens", "512"]
    first = run_cli(argv, **env)
    gauge = (tmp_path / "g.npz").read_bytes()
    second = run_cli(argv, **env)
    assert (first["code"], second["code"]) == (0, 0)
    assert (first["tokenizers_built"], second["tokenizers_built"]) == (1, 0)
    assert (tmp_path / "g.npz").read_bytes() == gauge
    assert len(list((tmp_path / "cc" / "tokens").glob("*.npy"))) == 1
    tok.save(str(tmp_path / "a" / "tokenizer.json"), pretty=False)  # another file: built again
    assert run_cli(argv, **env)["tokenizers_built"] == 1


def test_default_folder_and_off_switch(pair, tmp_path):
    argv = ["verify", pair / "a", pair / "a", "--gauge", tmp_path / "id.npz", "--n-tokens", "32", "--seq-len", "16"]
    gj.SignedPermutation.identity(16).save(tmp_path / "id.npz")
    home = run_cli(argv, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert home["dir"] == str(tmp_path / "xdg" / "gaugejax" / "jax") and any((tmp_path / "xdg").rglob("*-cache*"))
    off = run_cli(argv, XDG_CACHE_HOME=str(tmp_path / "xdg2"), GAUGEJAX_NO_CACHE="1")
    assert off["dir"] is None and not (tmp_path / "xdg2").exists()


def test_unwritable_folder_runs_uncached(pair, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    argv = ["verify", pair / "a", pair / "a", "--gauge", tmp_path / "id.npz", "--n-tokens", "32", "--seq-len", "16"]
    gj.SignedPermutation.identity(16).save(tmp_path / "id.npz")
    r = run_cli(argv, GAUGEJAX_CACHE_DIR=str(blocker / "cc"))
    assert r["code"] == 0 and r["dir"] is None


def test_cache_dir_rules():
    assert cache_dir({"GAUGEJAX_NO_CACHE": "yes", "XDG_CACHE_HOME": "/x"}) is None
    assert cache_dir({"GAUGEJAX_NO_CACHE": "0", "XDG_CACHE_HOME": "/x"}) == Path("/x/gaugejax/jax")
    assert cache_dir({"GAUGEJAX_CACHE_DIR": "~/cc", "HOME": "/h"}).parent.name == "cc"
