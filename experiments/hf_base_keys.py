"""Generates :mod:`gaugejax.models.hf_base_keys`: every attribute of transformers' config base class.

Not an experiment of the paper: the generator of a data module of the library, kept here so the
data can be regenerated and checked. For each transformers release in :data:`RELEASES` (the first
release of every minor version from 4.45, the oldest gaugejax supports, to 5.25, the newest at the
time of writing, plus 4.57.6, the last 4.x), it downloads the wheel with ``pip download --no-deps``,
reads ``transformers/configuration_utils.py`` (and, from 5.0 on, where the generation defaults
moved, ``transformers/generation/configuration_utils.py``) and collects, by parsing the source
with :mod:`ast` (nothing of transformers is imported or run):

* the annotated class-level fields of ``PretrainedConfig`` / ``PreTrainedConfig`` (the dataclass
  fields of 5.x), except ``ClassVar`` ones;
* every ``self.NAME = ...`` assignment and every property in that class;
* every key popped from or read in ``kwargs`` by its ``__init__`` / ``__post_init__``;
* the keys of the generation defaults it accepts from old ``config.json`` files
  (``_get_global_generation_defaults`` in 4.x, ``GenerationConfig._get_default_generation_params``
  in 5.x).

It writes the union, each key with the first release that has it. How it was run (2 CPU cores,
about 15 minutes: 40 wheels of ~10 MB, each deleted once its two files are extracted to the cache)::

    python -m experiments.hf_base_keys --cache /tmp/hf_config_sources --out gaugejax/models/hf_base_keys.py

(For the committed data the cache held 5.25.0's two files copied from the installed transformers
5.25.0, the same PyPI release; every other release was downloaded.)

Example:
  >>> sorted(base_attributes("class PretrainedConfig:\\n    def __init__(self, **kwargs):\\n"
  ...                        "        self.x = kwargs.pop('y', 1)\\n"))
  ['x', 'y']
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

RELEASES = ("4.45.0", "4.46.0", "4.47.0", "4.48.0", "4.49.0", "4.50.0", "4.51.0", "4.52.1", "4.53.0", "4.54.0",
            "4.55.0", "4.56.0", "4.57.0", "4.57.6", "5.0.0", "5.1.0", "5.2.0", "5.3.0", "5.4.0", "5.5.0", "5.6.0",
            "5.7.0", "5.8.0", "5.9.0", "5.10.1", "5.11.0", "5.12.0", "5.13.0", "5.14.0", "5.15.0", "5.16.0",
            "5.17.0", "5.18.0", "5.19.0", "5.20.0", "5.21.0", "5.22.0", "5.23.0", "5.24.0", "5.25.0")
"""The releases read (4.52.0 and 5.10.0 were never published; 4.52.1 and 5.10.1 are the first)."""

FILES = ("transformers/configuration_utils.py", "transformers/generation/configuration_utils.py")
CONFIG_CLASSES = ("PretrainedConfig", "PreTrainedConfig")
GENERATION_DEFAULTS = ("_get_global_generation_defaults", "_get_default_generation_params")


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def fetch_sources(version: str, cache: Path) -> Path:
    """``cache/VERSION`` holding the two files of that release (downloaded once with pip)."""
    out = cache / version
    needed = ["configuration_utils.py"] + (["generation_configuration_utils.py"] if _version_key(version) >= (5,) else [])
    if all((out / name).exists() for name in needed):
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        f"transformers=={version}", "-d", tmp], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as z:
            for name in FILES:
                if name in z.namelist():
                    (out / name.replace("transformers/", "").replace("/", "_")).write_bytes(z.read(name))
    return out


def _dict_keys(fn: ast.FunctionDef) -> set[str]:
    """String keys of the dict literals a function returns."""
    return {k.value for node in ast.walk(fn) if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict)
            for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}


def _kwargs_keys(fn: ast.FunctionDef) -> set[str]:
    """Keys a function pops from or reads in ``kwargs`` (``kwargs.pop("k")``, ``kwargs.get("k")``)."""
    out = set()
    for node in ast.walk(fn):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("pop", "get")
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "kwargs" and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.add(node.args[0].value)
    return out


def _is_classvar(annotation: ast.expr) -> bool:
    target = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    return (isinstance(target, ast.Name) and target.id == "ClassVar") or (
        isinstance(target, ast.Attribute) and target.attr == "ClassVar")


def base_attributes(source: str) -> set[str]:
    """The attributes of the config base class defined in ``configuration_utils.py`` source text."""
    names: set[str] = set()
    for cls in ast.walk(ast.parse(source)):
        if not (isinstance(cls, ast.ClassDef) and cls.name in CONFIG_CLASSES):
            continue
        for item in cls.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and not _is_classvar(item.annotation):
                names.add(item.target.id)
            elif isinstance(item, ast.FunctionDef):
                if any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list):
                    names.add(item.name)
                if item.name in ("__init__", "__post_init__"):
                    names |= _kwargs_keys(item)
                if item.name in GENERATION_DEFAULTS:
                    names |= _dict_keys(item)
                for node in ast.walk(item):
                    targets = node.targets if isinstance(node, ast.Assign) else (
                        [node.target] if isinstance(node, ast.AnnAssign) else [])
                    names |= {t.attr for t in targets if isinstance(t, ast.Attribute)
                              and isinstance(t.value, ast.Name) and t.value.id == "self"}
    return names


def generation_defaults(source: str) -> set[str]:
    """The generation parameters ``GenerationConfig`` lists as defaults (5.x pops them from configs)."""
    return {k for fn in ast.walk(ast.parse(source)) if isinstance(fn, ast.FunctionDef) and fn.name in GENERATION_DEFAULTS
            for k in _dict_keys(fn)}


def release_keys(folder: Path) -> set[str]:
    """Every base attribute of one release (its configuration file, and its generation defaults from 5.0)."""
    keys = base_attributes((folder / "configuration_utils.py").read_text())
    generation = folder / "generation_configuration_utils.py"
    if _version_key(folder.name) >= (5,) and generation.exists():
        keys |= generation_defaults(generation.read_text())
    return keys


def first_releases(cache: Path, releases=RELEASES) -> dict[str, str]:
    """key → the first release in ``releases`` that has it."""
    first: dict[str, str] = {}
    for version in sorted(releases, key=_version_key):
        for key in sorted(release_keys(fetch_sources(version, cache))):
            first.setdefault(key, version)
    return first


def render(first: dict[str, str], releases=RELEASES) -> str:
    """The text of the data module."""
    lines = [f"    {key!r}: {v!r}," for key, v in sorted(first.items(), key=lambda kv: (_version_key(kv[1]), kv[0]))]
    return (f'"""Every attribute of transformers\' config base class, from {releases[0]} to {releases[-1]}: key → the\n'
            "first release that has it.\n\n"
            "Generated by ``experiments/hf_base_keys.py`` (which says how it was run) from the source of each\n"
            f"release it reads ({len(releases)} releases); do not edit by hand. What is inert among them is\n"
            "decided in :mod:`gaugejax.models.config_keys`.\n\n"
            "Example:\n  >>> BASE_KEYS['output_hidden_states'], BASE_KEYS['_name_or_path']\n"
            f"  ({first.get('output_hidden_states')!r}, {first.get('_name_or_path')!r})\n"
            '"""\n\n'
            "RELEASES = (\n" + "\n".join(textwrap.wrap(" ".join(f"{v!r}," for v in releases), 112,
                                                      initial_indent="    ", subsequent_indent="    ")) + "\n)\n"
            '"""The transformers releases read."""\n\n'
            "BASE_KEYS: dict[str, str] = {\n" + "\n".join(lines) + "\n}\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="folder for the extracted source files")
    parser.add_argument("--out", type=Path, required=True, help="the data module to write")
    args = parser.parse_args(argv)
    args.out.write_text(render(first_releases(args.cache)))


if __name__ == "__main__":
    main()
