"""Recognising a file by its content: does it already hold the format its extension names?

``--overwrite`` replaces a single file only when it is a previous gaugejax output; without a
manifest to say so, :func:`looks_like` sniffs the first bytes (a zip archive for ``.npz``, the
NumPy magic for ``.npy``, a JSON header for ``.safetensors``, UTF-8 text for ``.md``, ...).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Callable

__all__ = ["MANIFEST", "Recogniser", "looks_like"]

MANIFEST = ".gaugejax"
"""Name of the manifest a directory write leaves inside the directory (JSON: ``files`` written)."""

Recogniser = Callable[[Path], bool]
"""``path -> bool``: "this existing file is a previous output of this kind"."""


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _is_text(path: Path, limit: int = 1 << 20) -> bool:
    try:
        _head(path, limit).decode("utf-8")
    except UnicodeDecodeError as e:  # a multi-byte character cut at the limit is still text
        return e.start >= limit - 4
    return True


def _is_json(path: Path, limit: int = 64 << 20) -> bool:
    if path.stat().st_size > limit:
        return False
    try:
        json.loads(path.read_bytes())
    except ValueError:
        return False
    return True


def _is_safetensors(path: Path) -> bool:
    raw = _head(path, 8)
    if len(raw) != 8:
        return False
    n = int.from_bytes(raw, "little")
    if n > min(path.stat().st_size - 8, 100 << 20):
        return False
    try:
        return isinstance(json.loads(_head(path, 8 + n)[8:]), dict)
    except ValueError:
        return False


_SNIFF: dict[str, Recogniser] = {
    ".npz": lambda p: zipfile.is_zipfile(p),
    ".npy": lambda p: _head(p, 6) == b"\x93NUMPY",
    ".gguf": lambda p: _head(p, 4) == b"GGUF",
    ".png": lambda p: _head(p, 8) == b"\x89PNG\r\n\x1a\n",
    ".pdf": lambda p: _head(p, 5) == b"%PDF-",
    ".svg": lambda p: _is_text(p) and b"<svg" in _head(p, 4096),
    ".safetensors": _is_safetensors,
    ".json": _is_json,
    ".md": _is_text, ".txt": _is_text, ".csv": _is_text, ".tsv": _is_text,
}


def looks_like(path: str | os.PathLike) -> bool:
    """True when an existing file already holds the format its extension names (cheap sniff).

    Example:
      >>> looks_like("results/REPORT.md")  # doctest: +SKIP
      True
    """
    p = Path(path)
    sniff = _SNIFF.get(p.suffix.lower())
    try:
        return bool(sniff and p.is_file() and sniff(p))
    except OSError:
        return False
