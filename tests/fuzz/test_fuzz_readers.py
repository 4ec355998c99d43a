"""Fuzzing every reader with mutated valid files (issue 25: hostile and broken files).

Each case copies a valid seed (:mod:`seeds`), mutates one file by its structure (:mod:`mutate`,
:mod:`gguf_codec`: truncation, size fields set to 0, -1, 2^31, 2^40, 2^63, swapped types, deep
nesting, non-UTF-8, duplicate keys, zip bombs, sparse files) and runs one reader on it in the
worker process (:mod:`worker`, address space and CPU capped). The rule: the reader succeeds or
raises one :class:`~gaugejax.errors.GaugeJaxError` line; never another exception, a hang (the
worker is killed after :data:`runner.HANG_SECONDS`), or a peak above :func:`runner.budget`.

CI runs :data:`CI_EXAMPLES` derandomized cases (fixed seed); ``GAUGEJAX_FUZZ=explore`` runs ten
times as many random ones. Cases the exploring runs found are pinned in :mod:`regressions`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import runner
from regressions import PINNED
from seeds import SEEDS
from strategies import cases, make_case

CI_EXAMPLES = {
    "config": 130, "st_header": 130, "st_index": 60, "gguf": 130, "gguf_tensors": 80, "gauge": 90, "tokens": 60,
    "vec_npy": 40, "vec_npz": 40, "vec_st": 40, "vec_gguf": 40, "sae_st": 30, "sae_npz": 30, "sae_dir": 30,
    "neurons_json": 50, "neurons_csv": 50,
}
"""Cases per seed under CI (1030 in all); the exploring profile runs ten times as many."""


def run_case(worker, root: Path, name: str, target: str, ops: list[tuple]) -> str | None:
    """Builds and runs one case; the rule it breaks, or ``None``."""
    seed = SEEDS[name]
    with tempfile.TemporaryDirectory(prefix="fuzz_") as tmp:
        entry = make_case(root, seed, ops, Path(tmp))
        out = Path(tmp) / "out"
        out.mkdir()
        answer = worker.run(target, str(entry), str(out))
        return runner.check(seed.reader, answer, runner.bytes_present(entry))


def _profile(name: str):
    return settings(max_examples=max(1, round(CI_EXAMPLES[name] * runner.SCALE)), derandomize=not runner.EXPLORE,
                    deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


def _fuzz_test(name: str):
    @_profile(name)
    @given(case=cases(name, SEEDS[name]))
    def test(fuzz_worker, fuzz_seeds, case):
        target, ops = case
        broken = run_case(fuzz_worker, fuzz_seeds, name, target, ops)
        assert broken is None, f"{SEEDS[name].reader} / {target} / {ops!r}: {broken}"

    test.__name__ = f"test_fuzz_{name}"
    test.__doc__ = f"Mutated {SEEDS[name].reader} files: read, or refused in one line, within budget."
    return test


for _name in SEEDS:
    globals()[f"test_fuzz_{_name}"] = _fuzz_test(_name)


@pytest.mark.parametrize("name,target", [(n, t) for n, s in SEEDS.items() for t in s.targets])
def test_seeds_are_accepted(fuzz_worker, fuzz_seeds, name, target):
    """Every unmutated seed is read: the harness also exercises the paths that accept a file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        src = Path(tmp) / "seed"
        shutil.copytree(fuzz_seeds, src)
        answer = fuzz_worker.run(target, str(src / SEEDS[name].entry), str(out))
    assert answer["outcome"] == "accepted", answer


@pytest.mark.parametrize("name,target,ops", PINNED, ids=[f"{n}-{t}-{i}" for i, (n, t, _) in enumerate(PINNED)])
def test_pinned_cases(fuzz_worker, fuzz_seeds, name, target, ops):
    """Cases the exploring profile found (each broke the rule before its fix)."""
    broken = run_case(fuzz_worker, fuzz_seeds, name, target, ops)
    assert broken is None, broken


@pytest.mark.parametrize("target,content,rule", [
    ("selftest_alloc", (2**30).to_bytes(8, "little"), "over the budget"),
    ("selftest_crash", b"", "traceback: KeyError"),
    ("selftest_multiline", b"", "traceback"),
    ("selftest_hang", b"", "hang"),
])
def test_harness_catches_each_breach(fuzz_worker, target, content, rule, monkeypatch):
    """The harness itself can fail: a reader that allocates what a size field says, raises a
    non-gaugejax exception, raises a two-line message, or hangs is reported."""
    monkeypatch.setattr(runner, "HANG_SECONDS", 5.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.bin"
        path.write_bytes(content)
        answer = fuzz_worker.run(target, str(path), tmp)
    broken = runner.check("harness self-test", answer, runner.bytes_present(path), tally=False)
    assert broken is not None and rule in broken, broken
