"""Model-level alignment, the token budget, the built-in corpus and the align/compose commands."""

import warnings

import jax
import numpy as np
import pytest

import gaugejax as gj
from gaugejax import corpus
from gaugejax.align import align, align_activations, check_pair, default_layers
from gaugejax.cli import main
from gaugejax.errors import CheckpointError
from gaugejax.gauge import SignedPermutation, load_gauge_metadata
from gaugejax.matching import AmbiguousMatchWarning
from gaugejax.models import Model, apply_gauge, random_model, tiny_config


@pytest.fixture(scope="module")
def llama():
    return random_model("llama", seed=0)


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(0, 256, (32, 128)).astype(np.int32)


def _perturbed(model, scale, seed=0):
    leaves, tree = jax.tree.flatten(model.params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [x + scale * x.std() * jax.random.normal(k, x.shape, x.dtype) if x.ndim >= 2 else x
             for x, k in zip(leaves, keys)]
    return Model(model.config, jax.tree.unflatten(tree, noisy))


def test_exact_copy_certified_within_1024_tokens(llama, tokens):
    g = SignedPermutation.random(11, llama.config.d_model)
    seen = []
    r = align(llama, apply_gauge(llama, g), tokens, progress=lambda done, total: seen.append((done, total)))
    assert r.gauge == g and r.certified and r.group == "B_d"
    # progress in tokens of the budget min(tokens available, max_tokens); stops early once certified
    assert seen[0] == (256, 4096) and seen[-1] == (r.n_tokens, 4096)
    assert r.n_tokens <= 1024
    assert r.layers == default_layers(llama.config.n_layers)


def test_signed_method_recovers_positive_fraction(llama, tokens):
    g = SignedPermutation.random(12, llama.config.d_model, negative_fraction=0.5)
    r = align(llama, apply_gauge(llama, g), tokens, method="signed", max_tokens=1024, warn=False)
    assert r.gauge.agreement(g)["perm"] == pytest.approx(0.5)


def test_drifted_copy_uses_more_tokens(llama, tokens):
    g = SignedPermutation.random(13, llama.config.d_model)
    exact = align(llama, apply_gauge(llama, g), tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AmbiguousMatchWarning)
        drift = align(llama, apply_gauge(_perturbed(llama, 0.3), g), tokens, max_tokens=4096)
    assert drift.n_tokens > exact.n_tokens
    assert drift.gauge.agreement(g)["signed"] >= 0.9
    assert (drift.gauge.perm == g.perm)[~drift.ambiguous].all()  # certified coordinates are right


def test_layernorm_model_global_sign(tokens):
    m = random_model("gpt2", seed=1)
    g = SignedPermutation.random(14, m.config.d_model, signed=False, global_sign=True)
    g = SignedPermutation(g.perm, -np.ones(g.d))  # make sure the global flip is exercised
    r = align(m, apply_gauge(m, g), tokens[:, :64])
    assert r.group == "S_d x ±1" and r.gauge == g and r.certified


def test_layernorm_bd_result_flagged():
    # Activations related by a per-coordinate sign flip are not a LayerNorm symmetry: flagged.
    x = np.random.default_rng(2).normal(size=(2, 512, 16)).astype(np.float32)
    g = SignedPermutation.random(15, 16, negative_fraction=0.25)
    batches = ((x[:, i:i + 128], g.apply(x[:, i:i + 128])) for i in range(0, 512, 128))
    with pytest.warns(AmbiguousMatchWarning):
        r = align_activations(batches, norm="layernorm", max_tokens=512)
    assert r.gauge.is_global_sign and r.sign_conflict.sum() == 4 and not r.certified


def test_pair_checks(llama, tokens):
    with pytest.raises(CheckpointError, match="architectures"):
        align(llama, random_model("gpt2"), tokens)
    with pytest.raises(CheckpointError, match="d=64"):
        check_pair(llama.config, tiny_config("llama", d_model=32, head_dim=8))
    with pytest.raises(gj.GaugeError, match="layers"):
        align(llama, llama, tokens, layers=[5])


def test_corpus_deterministic_and_tokens():
    a, b = list(zip(range(20), corpus.iter_texts())), list(zip(range(20), corpus.iter_texts()))
    assert a == b and all(len(t) > 0 for _, t in a)
    byte_tok = lambda s: np.frombuffer(s.encode(), np.uint8).astype(np.int32)  # noqa: E731
    ids = corpus.corpus_tokens(byte_tok, 5000)
    assert ids.shape == (5000,) and ids.dtype == np.int32
    assert corpus.to_rows(ids, 128).shape == (39, 128)
    r = corpus.random_tokens(100, 64, seed=3)
    assert r.min() >= 0 and r.max() < 100 and (r == corpus.random_tokens(100, 64, seed=3)).all()


def test_probe_tokens_one_rule():
    byte_tok = lambda s: np.frombuffer(s.encode(), np.uint8).astype(np.int32)  # noqa: E731
    ids, src = corpus.probe_tokens(256, 3, ids=np.array([[5, 6], [7, 8]]), text="ignored", tokenizer=byte_tok)
    assert ids.tolist() == [5, 6, 7] and src == "tokens"
    ids, src = corpus.probe_tokens(256, 100, text="abc", tokenizer=byte_tok, source="text:a.txt")
    assert ids.tolist() == [97, 98, 99] and src == "text:a.txt"
    ids, src = corpus.probe_tokens(256, 300, tokenizer=byte_tok)
    assert src == corpus.CORPUS_SOURCE and np.array_equal(ids, corpus.corpus_tokens(byte_tok, 300))
    ids, src = corpus.probe_tokens(50, 64, seed=3)
    assert src == "random:seed=3" and np.array_equal(ids, corpus.random_tokens(50, 64, seed=3))
    for kwargs, reason in [(dict(ids=[1, 300]), r"\[0, 256\)"), (dict(ids=[]), "no tokens"),
                           (dict(text="abc"), "needs a tokenizer"), (dict(ids=[1.5]), "integers")]:
        with pytest.raises(gj.GaugeError, match=reason):
            corpus.probe_tokens(256, 10, **kwargs)


# ----------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, llama):
    d = tmp_path_factory.mktemp("ckpt")
    g = SignedPermutation.random(21, llama.config.d_model)
    gj.save_model(llama, d / "a")
    gj.save_model(apply_gauge(llama, g), d / "b")
    gj.save_model(random_model("gpt2"), d / "c")
    np.save(d / "tok.npy", np.random.default_rng(1).integers(0, 256, 2048))
    return d, g


def test_cli_align_writes_gauge_with_metadata(ckpts, capsys):
    d, g = ckpts
    out = d / "g.npz"
    assert main(["align", str(d / "a"), str(d / "b"), "-o", str(out), "--tokens", str(d / "tok.npy")]) == 0
    assert SignedPermutation.load(out) == g
    meta = load_gauge_metadata(out)
    for key in ("method", "n_tokens", "layers", "margin", "ambiguous", "src_fingerprint", "dst_fingerprint"):
        assert key in meta
    assert int(meta["n_tokens"]) <= 1024 and str(meta["token_source"]).startswith("tokens:")
    text = capsys.readouterr().out
    assert "confident coordinates" in text and "64/64" in text


@pytest.mark.parametrize("dst, reason", [("c", "architectures"), ("missing", "does not exist")])
def test_cli_align_bad_pair_writes_nothing(ckpts, capsys, dst, reason):
    d, _ = ckpts
    out = d / f"bad_{dst}.npz"
    assert main(["align", str(d / "a"), str(d / dst), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and reason in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(d.glob(f".bad_{dst}*"))


def test_cli_compose(tmp_path, capsys):
    g1, g2, g3 = (SignedPermutation.random(s, 10) for s in (1, 2, 3))
    amb1 = np.zeros(10, bool)
    amb1[4] = True
    g1.save(tmp_path / "1.npz", ambiguous=amb1)
    g2.save(tmp_path / "2.npz", ambiguous=np.zeros(10, bool))
    g3.save(tmp_path / "3.npz", ambiguous=np.zeros(10, bool))
    out = tmp_path / "c.npz"
    assert main(["compose", str(tmp_path / "1.npz"), str(tmp_path / "2.npz"), str(tmp_path / "3.npz"), "-o", str(out)]) == 0
    c = SignedPermutation.load(out)
    assert c == g1.then(g2).then(g3)
    amb = load_gauge_metadata(out)["ambiguous"]
    # flags are indexed by the target chart: B's flagged coordinate 4 lands where G2·G3 sends it
    assert amb.sum() == 1 and g2.then(g3).perm[amb][0] == 4
    SignedPermutation.random(4, 12).save(tmp_path / "12.npz")
    bad = tmp_path / "bad.npz"
    assert main(["compose", str(tmp_path / "1.npz"), str(tmp_path / "12.npz"), "-o", str(bad)]) == 2
    assert "d=12" in capsys.readouterr().err and not bad.exists()
    assert main(["compose", str(tmp_path / "nope.npz"), "-o", str(bad)]) == 2 and not bad.exists()
