"""The dependency ranges ``pyproject.toml`` declares are the ones CI tests (issue 18 items 4 and 6).

``.ci/run`` runs the README's test command at the pinned versions of ``.ci/constraints.txt``, then
``tests/test_compat_smoke.py`` in a fresh environment built with ``.ci/constraints-min.txt`` (every
declared lower bound, installed exactly) and in one with the newest releases. These tests keep the
three files from drifting apart: a floor raised or lowered in ``pyproject.toml`` without the
minimum lane following, a pin outside the declared range, a declared dependency left unpinned, or a
README test command that ``.ci/run`` does not run verbatim each fail here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, Requirement]:
    """Every requirement of ``[project] dependencies`` and of each optional-dependency group, by name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"]) + [r for group in project["optional-dependencies"].values() for r in group]
    reqs: dict[str, Requirement] = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert reqs.get(name, req).specifier == req.specifier, f"{name} is declared with two ranges"
        reqs[name] = req
    return reqs


def pins(path: Path) -> dict[str, Version]:
    """``name -> version`` of every ``name==version`` line of a constraints file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
            out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def floor(req: Requirement) -> Version:
    """The lower bound of a ``>=`` range (every declared range has exactly one)."""
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    assert len(floors) == 1, f"{req} needs exactly one lower bound (>=)"
    return floors[0]


def test_minimum_lane_installs_every_declared_floor_exactly():
    minimum = pins(ROOT / ".ci" / "constraints-min.txt")
    wrong = {name: (str(floor(req)), str(minimum.get(name))) for name, req in declared().items()
             if minimum.get(name) != floor(req)}
    assert not wrong, f"declared floor vs .ci/constraints-min.txt: {wrong}"


def test_minimum_lane_pins_jaxlib_with_jax():
    minimum = pins(ROOT / ".ci" / "constraints-min.txt")
    assert minimum["jaxlib"] == minimum["jax"]


def test_pinned_versions_lie_in_the_declared_ranges():
    pinned = pins(ROOT / ".ci" / "constraints.txt")
    reqs = declared()
    assert not set(reqs) - set(pinned), f"declared but not pinned: {sorted(set(reqs) - set(pinned))}"
    outside = {n: (str(r.specifier), str(pinned[n])) for n, r in reqs.items()
               if not r.specifier.contains(pinned[n], prereleases=True)}
    assert not outside, f"pins outside the declared range: {outside}"


def readme_test_command() -> str:
    """The one ``pip install ... && python -m pytest ...`` line of the README."""
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines()
             if ln.startswith("pip install") and "python -m pytest" in ln]
    assert len(lines) == 1, lines
    return lines[0]


def test_ci_runs_the_readme_test_command_verbatim_with_the_pins():
    command = readme_test_command()
    assert "-c .ci/constraints.txt" in command
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize("lane", ["min", "newest"])
def test_ci_runs_both_compatibility_lanes(lane):
    run = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^\.ci/compat-lane {lane}\b", run, re.M), f".ci/run does not run the {lane} lane"
