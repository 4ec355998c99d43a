"""The gauge group B_d: exact integer group laws, actions, files, validation."""

import numpy as np
import jax.numpy as jnp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gaugejax as gj
from gaugejax import GaugeError, SignedPermutation
from gaugejax.testing import signed_permutations

WIDTHS = st.integers(1, 12)  # numpy only (nothing compiles): every small width, d = 1 included


def signed_perms():
    return signed_permutations(d=WIDTHS)


@st.composite
def triples(draw):
    d = draw(WIDTHS)
    return tuple(draw(signed_permutations(d)) for _ in range(3))


def _matrix(g: SignedPermutation) -> np.ndarray:
    """The matrix Q with h_B = Q h_A."""
    q = np.zeros((g.d, g.d), np.int64)
    q[np.arange(g.d), g.perm] = g.signs
    return q


@given(triples())
def test_group_laws_exact(t):
    a, b, c = t
    e = SignedPermutation.identity(a.d)
    assert a.then(e) == a and e.then(a) == a
    assert a.then(a.inverse()) == e and a.inverse().then(a) == e
    assert a.then(b).then(c) == a.then(b.then(c))
    assert a.inverse().inverse() == a


@given(triples())
def test_composition_matches_matrices_and_actions(t):
    a, b, _ = t
    x = np.arange(1, a.d + 1, dtype=np.int64) * 7
    # a maps A→B, b maps B→C: a.then(b) maps A→C, i.e. applying a then b.
    np.testing.assert_array_equal(a.then(b).apply(x), b.apply(a.apply(x)))
    np.testing.assert_array_equal(_matrix(a.then(b)), _matrix(b) @ _matrix(a))
    np.testing.assert_array_equal(_matrix(a.inverse()), _matrix(a).T)


@given(signed_perms())
def test_apply_is_the_spec_convention(g):
    x = np.random.default_rng(0).normal(size=(3, g.d))
    y = g.apply(x)
    for j in range(g.d):  # h_B[j] = signs[j] * h_A[perm[j]]
        np.testing.assert_array_equal(y[:, j], g.signs[j] * x[:, g.perm[j]])
    np.testing.assert_array_equal(g.inverse().apply(y), x)


@given(signed_perms())
def test_apply_any_axis_numpy_and_jax(g):
    x = np.random.default_rng(1).normal(size=(g.d, 2, g.d)).astype(np.float32)
    for axis in (0, 2, -1):
        np_out = g.apply(x, axis=axis)
        jax_out = g.apply(jnp.asarray(x), axis=axis)
        ref = np.moveaxis(g.apply(np.moveaxis(x, axis, -1)), -1, axis)
        np.testing.assert_array_equal(np_out, ref)
        np.testing.assert_array_equal(np.asarray(jax_out), ref)
        assert np_out.dtype == x.dtype
    unsigned = g.apply(x, axis=0, signed=False)
    np.testing.assert_array_equal(unsigned, x[g.perm])


def test_apply_preserves_integer_and_bf16_dtypes():
    g = SignedPermutation([1, 0], [-1, 1])
    assert g.apply(np.array([3, 4], np.int8)).tolist() == [-4, 3]
    y = g.apply(jnp.array([3.0, 4.0], jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and y.tolist() == [-4.0, 3.0]


@given(signed_perms())
def test_map_index_moves_attributions(g):
    i = np.arange(g.d)
    j, s = g.map_index(i)
    e = np.eye(g.d)
    for k in range(g.d):  # the basis vector e_i lands on signs[j] e_j
        np.testing.assert_array_equal(g.apply(e[i[k]]), s[k] * e[j[k]])


def test_random_subgroups_and_fraction():
    g = SignedPermutation.random(0, 100, negative_fraction=0.25)
    assert int((g.signs < 0).sum()) == 25
    assert SignedPermutation.random(1, 50, signed=False).is_permutation
    h = SignedPermutation.random(2, 50, signed=False, global_sign=True)
    assert h.is_global_sign
    assert SignedPermutation.random(3, 16) == SignedPermutation.random(3, 16)  # seeded: reproducible


def test_agreement():
    g = SignedPermutation.random(0, 32)
    assert g.agreement(g) == {"perm": 1.0, "signed": 1.0, "sign_given_perm": 1.0}
    a = g.permutation_part().agreement(g)
    assert a["perm"] == 1.0 and a["signed"] == pytest.approx(1 - g.negative_fraction)


def test_save_load_roundtrip_with_metadata(tmp_path):
    g = SignedPermutation.random(5, 40)
    path = tmp_path / "g.npz"
    g.save(path, method="sign_marginalized", n_tokens=512, margin=np.linspace(0, 1, 40))
    h = SignedPermutation.load(path)
    assert h == g and h.perm.dtype == np.int64 and h.signs.dtype == np.int8
    meta = gj.load_gauge_metadata(path)
    assert str(meta["method"]) == "sign_marginalized" and int(meta["n_tokens"]) == 512
    with np.load(path, allow_pickle=False) as z:
        assert z["perm"].dtype == np.int64 and z["signs"].dtype == np.int8


@pytest.mark.parametrize(
    "perm, signs, match",
    [
        ([0, 0, 1], None, "repeated"),
        ([0, 1, 3], None, "outside"),
        ([[0, 1]], None, "1-D"),
        ([0, 1, 2], [1, 0, 1], r"\+1 or -1"),
        ([0, 1, 2], [1, 1], "shape"),
        ([0.5, 1, 2], None, "integers"),
    ],
)
def test_invalid_gauges_rejected(perm, signs, match):
    with pytest.raises(GaugeError, match=match):
        SignedPermutation(perm, signs)


def test_bad_files_rejected(tmp_path):
    with pytest.raises(GaugeError, match="does not exist"):
        SignedPermutation.load(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(GaugeError, match="cannot read"):
        SignedPermutation.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "nosigns.npz", perm=np.arange(3))
    with pytest.raises(GaugeError, match="lacks signs"):
        SignedPermutation.load(tmp_path / "nosigns.npz")
    np.savez(tmp_path / "pickled.npz", perm=np.arange(3), signs=np.array([1, "x", None], dtype=object))
    with pytest.raises(GaugeError, match="not a plain"):
        SignedPermutation.load(tmp_path / "pickled.npz")
    np.savez(tmp_path / "badperm.npz", perm=np.array([0, 0, 2]), signs=np.ones(3, np.int8))
    with pytest.raises(GaugeError, match="not a permutation"):
        SignedPermutation.load(tmp_path / "badperm.npz")
    with pytest.raises(GaugeError, match="reserved"):
        SignedPermutation.identity(3).save(tmp_path / "x.npz", perm=1)
    assert not (tmp_path / "x.npz").exists()


def test_apply_wrong_dimension():
    with pytest.raises(GaugeError, match="d=3"):
        SignedPermutation.identity(3).apply(np.zeros((2, 4)))
    with pytest.raises(GaugeError, match="cannot compose"):
        SignedPermutation.identity(3).then(SignedPermutation.identity(4))
