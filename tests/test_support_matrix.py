"""The README's support matrix is generated from the registry and the tests, and checked here.

Rows: every Hugging Face ``model_type`` of ``gaugejax.models.MODEL_TYPES``. Columns:

* family module, and norm / gauge group (``Group.of`` of the config transformers' defaults give);
* load / apply / align: a test exists, found by collecting the test suite (``pytest
  --collect-only``): a test whose name says parity with transformers (``parity``,
  ``matches_transformers``), a gauge round trip through a saved checkpoint (``gauge*round_trip``,
  ``gauged_checkpoint``) or alignment (``align``; every test of ``test_align.py``), attributed to a model type by its parameter id
  or, for an unparametrised test, by the string literals in its body (``ckpts["gemma2"]``) and its
  fixture names (``def test_x(llama)``); a file
  ``test_family_<family>.py`` whose family has a single model type covers it by default;
* GGUF: ``tests/test_gguf_families.py`` reads that architecture (✓: checked against transformers'
  own GGUF load and the original model; "orig.": transformers cannot read it, original model only).

Regenerate the README block with ``python tests/test_support_matrix.py --write``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- support-matrix:start -->", "<!-- support-matrix:end -->"
FILES = ["tests/test_parity.py", "tests/test_bert.py", "tests/test_align.py", "tests/test_gguf_families.py",
         *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_family_*.py"))]
KINDS = {"load": re.compile(r"parity|matches_transformers"), "apply": re.compile(r"gauge\w*round_trip|gauged_checkpoint"),
         "align": re.compile(r"align")}
FILE_KINDS = {"tests/test_align.py": ["align"]}
"""Files whose every test is of one kind (``test_align.py`` tests ``gj.align`` throughout)."""


def collected() -> list[str]:
    """Test ids ``file::name[param]`` pytest collects from :data:`FILES`."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *FILES],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    ids = [line.strip() for line in out.stdout.splitlines() if "::" in line]
    if not ids:
        raise RuntimeError(f"pytest collected nothing:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return ids


def _literals(path: Path) -> dict[str, set[str]]:
    """Test function name → the string literals in its body and its argument (fixture) names."""
    tree = ast.parse(path.read_text())
    return {f.name: {n.value for n in ast.walk(f) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            | {a.arg for a in f.args.args}
            for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test_")}


def _match(token: str, model_types: list[str], families: dict[str, list[str]]) -> set[str]:
    """The model types a parameter id or literal names: itself, a ``<model_type>_variant`` (longest),
    a ``gemma3``-style prefix of one, or a family with a single model type (``neox_parallel``)."""
    if token in model_types:
        return {token}
    longest = max((m for m in model_types if token.startswith(m + "_")), key=len, default=None)
    if longest:
        return {longest}
    fam = next((f for f in families if token == f or token.startswith(f + "_")), None)
    if fam is not None and len(families[fam]) == 1:
        return set(families[fam])
    return {m for m in model_types if m.startswith(token + "_")}


def coverage(ids: list[str]) -> dict[str, set[str]]:
    """``kind`` → model types with a test of that kind (kinds of :data:`KINDS`)."""
    from gaugejax.models import MODEL_TYPES

    types = sorted(MODEL_TYPES)
    families: dict[str, list[str]] = {}
    for m, f in MODEL_TYPES.items():
        families.setdefault(f, []).append(m)
    literals = {f: _literals(ROOT / f) for f in FILES}
    out: dict[str, set[str]] = {k: set() for k in KINDS}
    for tid in ids:
        file, _, rest = tid.partition("::")
        if file.endswith("gguf_families.py"):
            continue
        name, _, param = rest.partition("[")
        kinds = FILE_KINDS.get(file) or [k for k, rx in KINDS.items() if rx.search(name)]
        if not kinds:
            continue
        hit: set[str] = set()
        for piece in param.rstrip("]").split("-") if param else literals[file].get(name, ()):
            hit |= _match(piece, types, families)
        fam = Path(file).stem.removeprefix("test_family_")
        if not hit and file.startswith("tests/test_family_") and len(families.get(fam, [])) == 1:
            hit = set(families[fam])
        for k in kinds:
            out[k] |= hit
    return out


def gguf_coverage(ids: list[str]) -> dict[str, str]:
    """model type → GGUF mark, from the collected GGUF tests."""
    from gaugejax.io.gguf_arch import ARCHITECTURES

    sys.path.insert(0, str(ROOT / "tests"))
    from test_gguf_families import CASES

    out = {}
    for tid in ids:
        m = re.fullmatch(r"tests/test_gguf_families\.py::test_gguf_matches_original_model\[(\w+)\]", tid)
        if m:
            arch = m.group(1)
            out[ARCHITECTURES[arch].model_type] = "✓" if CASES[arch][3] else "orig."
    return out


def _norm_group(model_type: str) -> str:
    """``rmsnorm / B_d`` from the config transformers' defaults give (``?`` when that fails)."""
    import transformers

    from gaugejax.group import Group
    from gaugejax.models import config_from_hf

    try:
        c = config_from_hf(transformers.AutoConfig.for_model(model_type).to_dict())
        return f"{c.norm} / {Group.of(c).value}"
    except Exception:  # noqa: BLE001 (the matrix says "?" rather than guessing)
        return "?"


def matrix(ids: list[str] | None = None) -> str:
    """The Markdown support matrix."""
    from gaugejax.models import FAMILIES, MODEL_TYPES

    ids = collected() if ids is None else ids
    cov, gg = coverage(ids), gguf_coverage(ids)
    yes = lambda b: "✓" if b else "—"  # noqa: E731
    rows = ["| model_type | family module | norm / group | load | apply | align | GGUF |",
            "|---|---|---|---|---|---|---|"]
    for mt in sorted(MODEL_TYPES):
        mod = FAMILIES[MODEL_TYPES[mt]].module.__name__
        rows.append(f"| `{mt}` | `{mod}` | {_norm_group(mt)} | {yes(mt in cov['load'])} | "
                    f"{yes(mt in cov['apply'])} | {yes(mt in cov['align'])} | {gg.get(mt, '—')} |")
    return "\n".join(rows)


def readme_block() -> str | None:
    text = README.read_text()
    if START not in text or END not in text:
        return None
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write_readme(table: str) -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{START}\n{table}\n{END}{tail}")
    tmp.replace(README)


@pytest.mark.slow
def test_readme_matrix_is_generated():
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    assert readme_block() is not None, f"README.md lacks the {START} ... {END} block"
    want = matrix()
    assert readme_block() == want, "README support matrix is stale: python tests/test_support_matrix.py --write"


def test_attribution_rules():
    types, fams = ["gemma", "gemma2", "gemma3_text", "qwen3", "qwen3_moe", "gpt_neox"], {
        "gemma": ["gemma", "gemma2", "gemma3_text"], "qwen3": ["qwen3"], "moe": ["qwen3_moe"], "neox": ["gpt_neox"]}
    assert _match("gemma3", types, fams) == {"gemma3_text"}
    assert _match("qwen3_moe_headdim_d", types, fams) == {"qwen3_moe"}
    assert _match("neox_parallel", types, fams) == {"gpt_neox"}
    assert _match("tied_bias", types, fams) == set()
    ids = ["tests/test_family_qwen3.py::test_parity[sliding]", "tests/test_family_qwen3.py::test_bfloat16_round_trip",
           "tests/test_parity.py::test_gauged_checkpoint_loads_in_transformers[neox_parallel]"]
    from gaugejax.models import MODEL_TYPES

    if "qwen3" in MODEL_TYPES:
        cov = coverage(ids)
        assert "qwen3" in cov["load"] and "qwen3" not in cov["apply"] and "gpt_neox" in cov["apply"]


def test_info_on_refused_model_type_lists_supported(tmp_path, capsys):
    import json

    import gaugejax as gj
    from gaugejax.cli import main
    from gaugejax.models import MODEL_TYPES

    d = gj.save_model(gj.random_model("llama"), tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(dict(cfg, model_type="mamba", architectures=["MambaForCausalLM"])))
    assert main(["info", str(d)]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "model_type='mamba'" in err[0]
    assert all(mt in err[0] for mt in MODEL_TYPES)


if __name__ == "__main__":
    table = matrix()
    if "--write" in sys.argv:
        write_readme(table)
    print(table)
