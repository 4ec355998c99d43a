"""Gauge groups as values: names and spellings, membership, projection, random elements, and one
vocabulary across matching, transport, merges, audits and the canonical gauge."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gaugejax as gj
from gaugejax import testing
from gaugejax.errors import GaugeError
from gaugejax.group import B_D, S_D, S_D_SIGN, Group


@pytest.mark.parametrize("name, group", [
    ("B_d", B_D), ("bd", B_D), ("signed_permutation", B_D), ("rmsnorm", B_D),
    ("S_d x ±1", S_D_SIGN), ("S_d x +-1", S_D_SIGN), ("S_d × {±1}", S_D_SIGN), ("S_d×{±1}", S_D_SIGN),
    ("s_d x {+-1}", S_D_SIGN), ("layernorm", S_D_SIGN), ("global_sign", S_D_SIGN), ("S_D_SIGN", S_D_SIGN),
    ("S_d", S_D), ("permutation", S_D), (" s_d ", S_D), (B_D, B_D),
])
def test_spellings(name, group):
    assert Group(name) is group


@pytest.mark.parametrize("bad", ["O(d)", "", "B_d x ±1", 3])
def test_unknown_names_refused(bad):
    with pytest.raises(GaugeError, match="unknown gauge group"):
        Group(bad)


def test_members_are_their_names():
    assert [str(g) for g in Group] == ["B_d", "S_d x ±1", "S_d"]
    assert B_D == "B_d" and {"S_d x ±1": 1}[S_D_SIGN] == 1 and {S_D: 2}["S_d"] == 2
    assert json.loads(json.dumps({"g": S_D_SIGN})) == {"g": "S_d x ±1"}
    assert f"{S_D_SIGN}" == "S_d x ±1" and str(np.asarray(B_D)) == "B_d"


@pytest.mark.parametrize("kind, group", [("llama", B_D), ("qwen2", B_D), ("mistral", B_D), ("gpt2", S_D_SIGN),
                                         ("neox", S_D_SIGN), ("bert", S_D_SIGN)])
def test_of_config_model_and_norm(kind, group):
    cfg = gj.tiny_config(kind)
    assert Group.of(cfg) is group and Group.of(cfg.norm) is group
    if kind in ("llama", "gpt2"):
        assert Group.of(gj.random_model(kind)) is group
    with pytest.raises(GaugeError, match="norm"):
        Group.of("batchnorm")


def test_subgroups():
    assert [[a.subgroup_of(b) for b in Group] for a in Group] == [[True, False, False], [True, True, False],
                                                                  [True, True, True]]


def gauges():
    """Elements of every group (gaugejax.testing's strategies), widths 1 to 16."""
    return st.sampled_from(list(Group)).flatmap(lambda grp: testing.gauges(grp, st.sampled_from([1, 2, 5, 16])))


@given(gauges())
def test_project_is_the_nearest_element(g):
    for grp in Group:
        p = grp.project(g)
        assert grp.contains(p)
        assert np.array_equal(p.perm, g.perm)
        if grp.contains(g):
            assert p == g  # projection fixes the group's own elements
        # nearest: among the group's elements with this permutation (B_d: g; S_d: all +1; S_d x ±1:
        # all +1 or all -1), none differs from g's signs in fewer coordinates
        neg = int((g.signs < 0).sum())
        best = {B_D: 0, S_D: neg, S_D_SIGN: min(neg, g.d - neg)}[grp]
        assert int((p.signs != g.signs).sum()) == best


def test_nearest_for_large_bd_is_itself():
    g = gj.SignedPermutation.random(0, 64)
    assert B_D.project(g) is g


def test_majority_sign_and_ties():
    g = gj.SignedPermutation(np.arange(4), [1, -1, -1, 1])
    assert S_D_SIGN.project(g).signs.tolist() == [1, 1, 1, 1]  # tie, no weights: +1
    assert S_D_SIGN.project(g, weights=[0.1, 0.9, 0.8, 0.2]).signs.tolist() == [-1] * 4
    assert S_D_SIGN.project(gj.SignedPermutation(np.arange(3), [-1, -1, 1]), weights=[0, 0, 9]).signs[0] == -1


@pytest.mark.parametrize("grp", list(Group))
def test_random_elements(grp):
    draws = [grp.random(s, 12) for s in range(20)]
    assert all(grp.contains(g) for g in draws)
    assert len(set(draws)) == 20  # not a constant
    if grp is not S_D:
        assert any(g.negative_fraction > 0 for g in draws)
    assert grp.random(7, 12) == grp.random(7, 12)
    # the same streams as SignedPermutation.random (gauge files drawn before keep their meaning)
    signed = grp is B_D
    assert grp.random(3, 12) == gj.SignedPermutation.random(3, 12, signed=signed, global_sign=grp is S_D_SIGN)


def test_check():
    g = gj.SignedPermutation([1, 0, 2], [-1, 1, 1])
    assert B_D.check(g, d=3) is g
    with pytest.raises(GaugeError, match="one global sign.*flips 1 of 3"):
        S_D_SIGN.check(g)
    with pytest.raises(GaugeError, match="d=3 but the model's residual width is 4"):
        B_D.check(g, d=4)


def test_one_vocabulary_across_modules():
    from gaugejax.matching import GROUPS, match
    from gaugejax.merge import into_chart
    from gaugejax.transport import group_gauge, transport_vector

    assert GROUPS == tuple(Group)
    X = np.random.default_rng(0).normal(size=(400, 8)).astype(np.float32)
    g = gj.SignedPermutation.random(1, 8, signed=False, global_sign=True)
    for spelling in ("S_d x +-1", S_D_SIGN, "S_d × {±1}", "layernorm"):
        r = match(X, g.apply(X), group=spelling, warn=False)
        assert r.group is S_D_SIGN and r.gauge == g
    assert match(X, g.apply(X), norm="layernorm", warn=False).group == "S_d x ±1"
    bd = gj.SignedPermutation.random(2, 8)
    assert group_gauge(bd, S_D) == bd.permutation_part() == group_gauge(bd, "permutation")
    v = np.arange(8.0)
    assert np.array_equal(transport_vector(v, bd, group=S_D), transport_vector(v, bd.permutation_part()))
    m = gj.random_model("llama", seed=0)
    bd = gj.SignedPermutation.random(2, m.d)
    back = into_chart(gj.apply_gauge(m, bd), bd, group=B_D)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(_leaves(back), _leaves(m)))


def _leaves(model):
    import jax

    return jax.tree.leaves(model.params)


def test_refusals_name_the_group():
    X = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    from gaugejax.matching import match

    with pytest.raises(GaugeError, match="only admits S_d x ±1"):
        match(X, X, group="B_d", norm="layernorm")
    with pytest.raises(ValueError, match="permutations"):
        match(X, X, "signed", group=S_D_SIGN)
