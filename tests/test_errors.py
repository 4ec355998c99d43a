"""Every error gaugejax raises on bad input is a ``GaugeJaxError`` (issue 18 item 7).

Two halves: a static check that walks the AST of every module under ``gaugejax/`` and fails on any
builtin exception class raised directly (``raise ValueError(...)`` and the like), against a short
allow-list of internal cases, each with its reason; and representative bad inputs, each of which
must raise a one-line ``GaugeJaxError`` that is still the builtin a caller would expect.
"""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import numpy as np
import pytest

import gaugejax as gj
from gaugejax import assignment, assignment_device, errors, simulate, stats, wishart
from gaugejax.errors import GaugeJaxError, InputError, InputTypeError
from gaugejax.models import layers

PACKAGE = Path(gj.__file__).parent

# --------------------------------------------------------------------------- the static check
BUILTIN_ERRORS = {name for name, obj in vars(builtins).items()
                  if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning)}
"""Every builtin exception class (``ValueError``, ``TypeError``, ``RuntimeError``, ``KeyError``,
``Exception``, ``OSError``, ...): none may be raised directly outside the allow-lists below."""

PROTOCOL = {
    ("__getattr__", "AttributeError"): "attribute lookup (a module's lazy __getattr__) must raise AttributeError",
    ("__getitem__", "KeyError"): "the Mapping protocol: .get() and `in` rely on KeyError",
    ("__getitem__", "IndexError"): "the sequence protocol: iteration relies on IndexError",
}
"""(method name, exception): raises the Python data model requires of that special method."""

ALLOWED = {
    ("models/base.py", "ModelConfig.norm", "NotImplementedError"):
        "abstract property: every family's config overrides it; reaching it is a gaugejax bug",
    ("models/table.py", "hf_axes", "ValueError"):
        "parameter tables are gaugejax's own code, not user input: a malformed one is a bug (see check_table)",
    ("models/table.py", "check_table", "ValueError"):
        "the self-check of gaugejax's own parameter tables (tests/test_models.py runs it on every family)",
    ("testing/__init__.py", "<module>", "ImportError"):
        "the optional Hypothesis dependency is missing: an environment problem, reported the standard way",
    ("testing/assertions.py", "_check", "AssertionError"):
        "gaugejax.testing's assert_* helpers report a failed property to pytest, as assertions do",
    ("testing/assertions.py", "_check.check", "AssertionError"):
        "as above (the inner check of the shrinking loop)",
}
"""(path under gaugejax/, enclosing function, exception) → why it is not a GaugeJaxError."""

def builtin_raises(path: Path) -> list[tuple[str, str, int]]:
    """``(enclosing function, exception name, line)`` of each ``raise Builtin(...)`` / ``raise Builtin`` in a file."""
    found = []

    def walk(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                walk(child, (*scope, child.name))
                continue
            if isinstance(child, ast.Raise) and child.exc is not None:
                target = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                if isinstance(target, ast.Name) and target.id in BUILTIN_ERRORS:
                    found.append((".".join(scope) or "<module>", target.id, child.lineno))
            walk(child, scope)

    walk(ast.parse(path.read_text(), filename=str(path)), ())
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _offenders() -> list[str]:
    out = []
    for path in _modules():
        rel = path.relative_to(PACKAGE).as_posix()
        for scope, name, line in builtin_raises(path):
            if (rel, scope, name) in ALLOWED or (scope.rsplit(".", 1)[-1], name) in PROTOCOL:
                continue
            out.append(f"gaugejax/{rel}:{line} ({scope}) raises {name}")
    return out


def test_no_builtin_exception_is_raised_directly():
    """Bad input raises a GaugeJaxError subclass (errors.py), never a bare builtin."""
    offenders = _offenders()
    assert not offenders, ("raise a gaugejax.errors class instead (InputError for argument checks), or add the "
                           "site to ALLOWED with its reason:\n" + "\n".join(offenders))


def test_allow_list_is_current():
    """Every allow-listed site still exists: an entry must not outlive its reason."""
    present = {(p.relative_to(PACKAGE).as_posix(), scope, name) for p in _modules() for scope, name, _ in
               builtin_raises(p)}
    assert not set(ALLOWED) - present, sorted(set(ALLOWED) - present)


def test_the_scan_sees_what_it_must_refuse(tmp_path):
    """The walker finds each builtin the issue names, bare or called, in functions, methods and modules."""
    src = ("def f():\n    raise ValueError('a')\n"
           "class C:\n    def g(self):\n        raise TypeError\n"
           "    def h(self):\n        raise RuntimeError('b') from None\n"
           "raise KeyError('k')\nraise Exception('e')\n"
           "def ok():\n    raise errors.InputError('fine')\n")
    (tmp_path / "m.py").write_text(src)
    assert [(s, n) for s, n, _ in builtin_raises(tmp_path / "m.py")] == [
        ("f", "ValueError"), ("C.g", "TypeError"), ("C.h", "RuntimeError"), ("<module>", "KeyError"),
        ("<module>", "Exception")]


# --------------------------------------------------------------------------- the hierarchy
def test_every_error_class_is_a_documented_gaugejax_error():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    for cls in classes:
        assert issubclass(cls, GaugeJaxError), cls
        assert cls is GaugeJaxError or issubclass(cls, (ValueError, TypeError)), cls  # old `except ValueError` works
        assert cls.__name__ in errors.__doc__, f"{cls.__name__} missing from the hierarchy in errors.py's docstring"
        assert cls.__doc__, cls
    assert issubclass(InputTypeError, TypeError) and issubclass(InputTypeError, InputError)
    assert gj.InputError is InputError and gj.InputTypeError is InputTypeError


# --------------------------------------------------------------------------- representative bad inputs
def _x(n=40, d=4, layers=None, seed=0):
    shape = (n, d) if layers is None else (layers, n, d)
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _stats_2d():
    x = _x()
    return stats.update(stats.init(4), x, x)


def _key():
    import jax

    return jax.random.key(0)


def _ceiling(**kw):
    return simulate.ceiling(_key(), **{"positive_fraction": 0.5, "trials": 1, **kw})


BAD_INPUTS = {
    # matching
    "match: token counts differ": lambda: gj.match(_x(40), _x(41)),
    "match: ranks differ": lambda: gj.match(_x(40), _x(40, layers=2)),
    "match: 1-D activations": lambda: gj.match(np.zeros(4), np.zeros(4)),
    "match: widths differ": lambda: gj.match(_x(40, 4), _x(40, 5)),
    "match: unknown method": lambda: gj.match(_x(), _x(), "hungarian"),
    "match: unknown group": lambda: gj.match(_x(), _x(), group="O_d"),
    "match: permutation method with a signed group": lambda: gj.match(_x(), _x(), "permutation", group="B_d"),
    "match: group S_d with the sign-marginalized method": lambda: gj.match(_x(), _x(), group="S_d"),
    "match: unknown norm": lambda: gj.match(_x(), _x(), norm="batchnorm"),
    "match: layers out of range": lambda: gj.match(_x(layers=2), _x(layers=2), layers=[5]),
    "match_correlation: 1-D corr": lambda: gj.match_correlation(np.zeros(4)),
    "match_stats: layers= without a layer axis": lambda: gj.match_stats(_stats_2d(), layers=[0]),
    # assignment
    "assignment: unknown method": lambda: assignment.solve(np.eye(3), method="simplex"),
    "assignment: 1-D score": lambda: assignment.solve(np.zeros(3)),
    "assignment: complex score": lambda: assignment.solve(np.eye(2) + 1j),
    "assignment: NaN score (scipy)": lambda: assignment.solve([[np.nan, 1.0], [1.0, 0.0]], method="scipy"),
    "assignment: NaN score (auto)": lambda: assignment.solve([[np.nan, 1.0], [1.0, 0.0]]),
    "assignment_device: 1-D score": lambda: assignment_device.solve(np.zeros(3, np.float32)),
    # gauges
    "gauge: perm not a permutation": lambda: gj.SignedPermutation(np.array([0, 0, 1]), np.ones(3)),
    "gauge: signs not ±1": lambda: gj.SignedPermutation(np.arange(3), np.array([1.0, 2.0, 1.0])),
    "gauge: signs of another length": lambda: gj.SignedPermutation(np.arange(3), np.ones(2)),
    # simulation
    "simulate: unknown structure": lambda: simulate.parse_structure("spiral:0.5"),
    "simulate: unparsable strength": lambda: simulate.parse_structure("ar1:strong"),
    "simulate: strength out of range": lambda: simulate.Structure("ar1", 1.5),
    "simulate: block size 0": lambda: simulate.Structure("block", 0.3, block=0),
    "simulate: unknown structure field": lambda: simulate.parse_structure({"kind": "ar1", "phi": 0.5}),
    "simulate: unknown method": lambda: _ceiling(d=4, n=16, rho=0.9, methods=("magic",)),
    "simulate: n too small": lambda: _ceiling(d=4, n=2, rho=0.9),
    "simulate: rho above 1": lambda: _ceiling(d=4, n=16, rho=1.5),
    "simulate: unknown sampler": lambda: _ceiling(d=4, n=16, rho=0.9, sampler="mcmc"),
    "simulate: wishart with n <= d": lambda: _ceiling(d=8, n=8, rho=0.9, sampler="wishart"),
    "wishart: n <= d": lambda: wishart.wishart_correlation(_key(), d=8, n=8, rho=0.5, perm=np.arange(8),
                                                           signs=np.ones(8)),
    # models
    "model: unknown activation": lambda: layers.activation("swishy"),
    "model: dynamic RoPE without max_positions": lambda: layers.rope_cos_sin(
        np.arange(4), 8, 10000.0, {"rope_type": "dynamic", "factor": 2.0}),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_raises_a_one_line_gaugejax_error(name):
    with pytest.raises(GaugeJaxError) as e:
        BAD_INPUTS[name]()
    assert isinstance(e.value, ValueError), type(e.value)  # code written against the old ValueErrors still works
    message = str(e.value)
    assert message and "\n" not in message, message


def test_a_spec_of_the_wrong_type_is_an_input_type_error():
    with pytest.raises(InputTypeError, match="RESIDUAL") as e:
        gj.Axes(None, "residual")
    assert isinstance(e.value, TypeError) and isinstance(e.value, GaugeJaxError)


def test_a_state_file_of_another_format_is_one_gaugejax_error(tmp_path):
    from gaugejax.runstate import load_state

    np.savez(tmp_path / "s.npz", format=np.asarray("something else"), key=np.asarray("k"))
    with pytest.raises(GaugeJaxError, match="not a gaugejax align state file"):
        load_state(tmp_path / "s.npz", "k")
