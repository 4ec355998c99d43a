"""Real text for the experiments, available offline: disjoint splits and token windows.

The prose is the docstrings of Python's own standard library (read with ``ast`` from the running
interpreter's ``stdlib`` folder, files in sorted order, test suites and IDLE left out): about
1.5 MB of English technical prose shipped with every Python. Documents are dealt to named splits
by a fixed rule (document index modulo 20), so the splits are disjoint and identical across runs
on the same Python version. The ``code`` split is different text of the same origin: the source
code of the same files with every docstring removed (``ast.unparse``), for a fine-tuning run on
other data.
"""

from __future__ import annotations

import ast
import sysconfig
from functools import lru_cache
from pathlib import Path

import numpy as np

SPLITS = {
    "base": range(0, 10),        # pre-training of the from-scratch models
    "finetune_a": range(10, 13),  # fine-tuning run A
    "finetune_b": range(13, 16),  # fine-tuning run B
    "probe": range(16, 18),       # activations for matching / SAE training / statistics
    "heldout": range(18, 20),     # held-out losses
}
"""split → residues of the document index modulo 20."""

CORPUS_NAME = "docstrings of the Python standard library (ast, sorted files; tests and idlelib excluded)"
CODE_CHARS = 2_000_000
"""The ``code`` split is cut at this many characters."""

_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3"}
    return [f for f in sorted(root.rglob("*.py")) if not skip.intersection(f.relative_to(root).parts)]


def _parsed(f: Path):
    try:
        source = f.read_text(encoding="utf-8")
        return source, ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return None, None


@lru_cache(maxsize=1)
def stdlib_docstrings() -> tuple[str, ...]:
    """Every docstring of 80+ characters in the standard library, in a fixed order."""
    docs = []
    for f in _stdlib_files():
        _, tree = _parsed(f)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, _DOCUMENTED):
                d = ast.get_docstring(node)
                if d and len(d) >= 80:
                    docs.append(d)
    return tuple(docs)


def _without_docstrings(source: str, tree) -> str:
    lines = source.splitlines()
    drop = set()
    for node in ast.walk(tree):
        if isinstance(node, _DOCUMENTED) and node.body and ast.get_docstring(node, clean=False) is not None:
            doc = node.body[0]
            if isinstance(node, ast.Module) or doc.lineno > node.lineno:  # not a one-line `def f(): "doc"`
                drop.update(range(doc.lineno - 1, doc.end_lineno))
    return "\n".join(line for i, line in enumerate(lines) if i not in drop)


@lru_cache(maxsize=1)
def stdlib_code() -> str:
    """Standard-library source code (files in sorted order) with docstrings removed, cut at :data:`CODE_CHARS`."""
    parts, total = [], 0
    for f in _stdlib_files():
        source, tree = _parsed(f)
        if tree is None:
            continue
        text = _without_docstrings(source, tree)
        parts.append(text)
        total += len(text) + 2
        if total >= CODE_CHARS:
            break
    return "\n\n".join(parts)[:CODE_CHARS]


@lru_cache(maxsize=8)
def split_text(split: str) -> str:
    """All documents of one split joined by blank lines (``code``: :func:`stdlib_code`)."""
    if split == "code":
        return stdlib_code()
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; known: {', '.join(SPLITS)}, code")
    residues = set(SPLITS[split])
    return "\n\n".join(d for i, d in enumerate(stdlib_docstrings()) if i % 20 in residues)


def byte_tokens(split: str) -> np.ndarray:
    """A split as UTF-8 bytes (token ids 0..255, the from-scratch models' vocabulary)."""
    return np.frombuffer(split_text(split).encode("utf-8"), np.uint8).astype(np.int32)


_TOKEN_CACHE: dict = {}


def tokens_of(encode, split: str, key: str = "") -> np.ndarray:
    """A split tokenized with ``encode`` (cached per ``key``)."""
    k = (key or id(encode), split)
    if k not in _TOKEN_CACHE:
        _TOKEN_CACHE[k] = np.asarray(encode(split_text(split)), np.int32)
    return _TOKEN_CACHE[k]


def windows(ids: np.ndarray, n_rows: int, seq: int, rng: np.random.Generator) -> np.ndarray:
    """``n_rows`` random windows of ``seq`` consecutive tokens, ``(n_rows, seq)`` int32."""
    if ids.size <= seq:
        raise ValueError(f"the text has {ids.size} tokens, fewer than one window of {seq}")
    starts = rng.integers(0, ids.size - seq, n_rows)
    return np.stack([ids[s:s + seq] for s in starts]).astype(np.int32)


def token_windows(ctx, encode, n_rows: int, seq: int, *, split: str, seed_name: str, key: str = "") -> np.ndarray:
    """Seeded windows of a split tokenized with ``encode`` (``key`` names the tokenizer for the cache)."""
    return windows(tokens_of(encode, split, key), n_rows, seq, ctx.rng(f"{seed_name}/windows/{split}"))
