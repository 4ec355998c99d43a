"""verify as a library function, and the non-finite rule everywhere activations are read.

Defects reproduced here (each test failed on the code before this change):
* a model with a NaN weight "verified" against itself (exit 0): Python's max() skipped the NaN;
* BERT failed verification with its correct gauge: its output is a hidden state in the residual
  chart and was compared ungauged;
* audit on a NaN model exited 0 with inverted figures; align on one raised a traceback.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import gaugejax as gj
from gaugejax.cli import main
from gaugejax.errors import CheckpointError, GaugeError, NonFiniteError
from gaugejax.group import Group
from gaugejax.verify import DEFAULT_TOL, check_finite, first_nonfinite, output_deviation, verify

TOKENS = np.random.default_rng(0).integers(0, 256, (4, 32))


def _poisoned(model, block=1, value=jnp.nan):
    """``model`` with one weight of block ``block``'s attention output set to ``value``: the stream is
    finite up to ``h[block]`` and not from ``h[block + 1]`` on."""
    params = dict(model.params)
    layers = dict(params["layers"])
    layers["o"] = layers["o"].at[block, 0, 0].set(value)
    params["layers"] = layers
    return gj.Model(model.config, params)


@pytest.fixture(scope="module")
def llama3():
    return gj.random_model(gj.tiny_config("llama", n_layers=3), seed=0)


def test_verify_exact_copy_and_wrong_gauge(llama3):
    g = gj.SignedPermutation.random(1, llama3.d)
    moved = gj.apply_gauge(llama3, g)
    seen = []
    r = verify(llama3, moved, g, TOKENS, batch_rows=2, progress=lambda done, total: seen.append((done, total)))
    assert r.ok and r.nonfinite is None and r.n_tokens == TOKENS.size
    assert len(r.layers) == llama3.config.n_layers + 1
    # float32 forward passes of the same function: well inside the 1e-4 tolerance
    assert max(r.layers) < 1e-5 and r.logits < 1e-5
    assert seen == [(2, 4), (4, 4)]
    bad = verify(llama3, moved, g.permutation_part(), TOKENS)
    assert not bad.ok and bad.nonfinite is None
    assert bad.logits < 1e-5 and bad.layers[0] > 0.1  # same function, wrong chart
    assert [ok for _, _, ok in bad.rows()][:2] == [True, False]


@pytest.mark.parametrize("value", [jnp.nan, jnp.inf])
@pytest.mark.parametrize("gauge", ["identity", "random"])
def test_nonfinite_model_never_verifies(llama3, value, gauge):
    bad = _poisoned(llama3, block=1, value=value)
    g = gj.SignedPermutation.identity(bad.d) if gauge == "identity" else gj.SignedPermutation.random(3, bad.d)
    r = verify(bad, bad, g, TOKENS)
    assert not r.ok
    assert r.nonfinite == "h[2] of model A"
    assert all(np.isnan(v) for v in r.layers[2:])


def test_nonfinite_only_in_b_or_only_in_logits(llama3):
    r = verify(llama3, _poisoned(llama3, block=0), gj.SignedPermutation.identity(llama3.d), TOKENS)
    assert not r.ok and r.nonfinite == "h[1] of model B"
    params = dict(llama3.params)
    params["lm_head"] = params["lm_head"].at[5, 0].set(jnp.nan)
    broken_head = gj.Model(llama3.config, params)
    r = verify(llama3, broken_head, gj.SignedPermutation.identity(llama3.d), TOKENS)
    assert r.nonfinite == "logits of model B" and not r.ok
    assert all(v == 0.0 for v in r.layers)  # the stream itself is untouched
    assert r.summary()["logits"] is None and r.summary()["ok"] is False


def test_bert_verifies_with_its_correct_gauge():
    bert = gj.random_model("bert", seed=0)
    g = gj.SignedPermutation(Group.of(bert.config).random(1, bert.d).perm, -np.ones(bert.d))
    assert Group.of(bert.config).contains(g)  # permuted and negated: an ungauged comparison would fail
    r = verify(bert, gj.apply_gauge(bert, g), g, TOKENS)
    assert r.ok and r.output_in_residual_chart
    assert r.logits < 1e-5
    assert r.rows()[0][0] == "output"
    wrong = g.then(gj.SignedPermutation(np.roll(np.arange(bert.d), 1)))
    assert not verify(bert, gj.apply_gauge(bert, g), wrong, TOKENS).ok


def test_refusals(llama3):
    ln = gj.random_model("gpt2", seed=0)
    with pytest.raises(GaugeError, match="one global sign"):
        verify(ln, ln, gj.SignedPermutation.random(0, ln.d, negative_fraction=0.5), TOKENS)
    with pytest.raises(GaugeError, match="d=8"):
        verify(llama3, llama3, gj.SignedPermutation.identity(8), TOKENS)
    with pytest.raises(CheckpointError, match="architectures"):
        verify(llama3, ln, gj.SignedPermutation.identity(64), TOKENS)
    with pytest.raises(CheckpointError, match="vocabularies"):
        other = gj.random_model(gj.tiny_config("llama", n_layers=3, vocab_size=300), seed=0)
        verify(llama3, other, gj.SignedPermutation.identity(64), TOKENS)
    with pytest.raises(GaugeError, match="integer"):
        verify(llama3, llama3, gj.SignedPermutation.identity(64), TOKENS.astype(float))


def test_output_deviation():
    m = gj.random_model("llama", seed=0)
    assert output_deviation(m, m, TOKENS) == 0.0
    assert np.isnan(output_deviation(m, _poisoned(m, block=0), TOKENS))
    # a chart change that is not a symmetry (signed RMSNorm gains) changes the function
    assert output_deviation(gj.random_model("llama", seed=0), gj.random_model("llama", seed=1), TOKENS) > DEFAULT_TOL


def test_first_nonfinite_and_check_finite():
    h = np.zeros((4, 3, 2), np.float32)
    assert first_nonfinite(h) is None and first_nonfinite(jnp.asarray(h)) is None
    h[3, 0, 1] = -np.inf
    h[2, 2, 0] = np.nan
    assert first_nonfinite(h) == 2 and first_nonfinite(jnp.asarray(h)) == 2
    check_finite(h[:2])
    with pytest.raises(NonFiniteError, match=r"model B has NaN or infinite activations at h\[7\]"):
        check_finite(h, labels=[1, 4, 7, 9], what="model B")
    assert issubclass(NonFiniteError, CheckpointError)


# --------------------------------------------------------------------------- the rule elsewhere
def test_align_and_audit_name_the_layer(llama3):
    from gaugejax.audit import audit, mean_activation_claim

    bad = _poisoned(llama3, block=1)
    with pytest.raises(NonFiniteError, match=r"model B has NaN or infinite activations at h\[2\]"):
        gj.align(llama3, bad, TOKENS, layers=[1, 2, 3])
    with pytest.raises(NonFiniteError, match=r"model A .* at h\[2\]"):
        gj.align(bad, llama3, TOKENS)  # default layers (1, 2, 3)
    with pytest.raises(NonFiniteError, match=r"at h\[2\]"):
        audit(bad, mean_activation_claim(3), TOKENS, k=2)
    # a claim at a layer before the NaN is still computed (the model is finite there)
    assert audit(bad, mean_activation_claim(1), TOKENS, k=2).rate("B_d", "bd_relative_signed") == 1.0
    with pytest.raises(GaugeError, match="not finite"):
        X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
        X[3, 1] = np.nan
        gj.match(X, X)


def test_align_path_names_the_checkpoint(llama3, tmp_path):
    from gaugejax.trajectory import align_path

    bad = _poisoned(llama3, block=1)
    with pytest.raises(NonFiniteError, match=r"#2 has NaN or infinite activations at h\[2\]"):
        align_path([llama3, llama3, bad], TOKENS)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, llama3):
    root = tmp_path_factory.mktemp("verify")
    gj.save_model(llama3, root / "ok")
    gj.save_model(_poisoned(llama3, block=1), root / "nan")
    gj.SignedPermutation.identity(llama3.d).save(root / "id.npz")
    bert = gj.random_model("bert", seed=0)
    g = gj.SignedPermutation(Group.of(bert.config).random(1, bert.d).perm, -np.ones(bert.d))
    gj.save_model(bert, root / "bert")
    gj.save_model(gj.apply_gauge(bert, g), root / "bert_g")
    g.save(root / "bert_g.npz")
    return root


def test_cli_verify_nan_model_exits_1_naming_the_layer(saved, capsys):
    r = saved
    assert main(["verify", str(r / "nan"), str(r / "nan"), "--gauge", str(r / "id.npz"), "--n-tokens", "64"]) == 1
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "h[2] of model A" in err[0]
    assert "NOT verified" in out.out and "FAIL" in out.out


def test_cli_verify_bert_with_correct_gauge(saved, capsys):
    r = saved
    assert main(["verify", str(r / "bert"), str(r / "bert_g"), "--gauge", str(r / "bert_g.npz"),
                 "--n-tokens", "64", "--seq-len", "32"]) == 0
    assert "verified" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["align", "{nan}", "{ok}", "-o", "{tmp}/g.npz", "--max-tokens", "256"],
    ["audit", "{nan}", "-k", "2", "--n-tokens", "256", "--layer", "3"],
])
def test_cli_align_and_audit_one_line_error(saved, tmp_path, capsys, argv):
    argv = [a.format(nan=saved / "nan", ok=saved / "ok", tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "h[2]" in err
    assert not (tmp_path / "g.npz").exists()
