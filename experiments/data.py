"""Real text for the experiments, available offline: disjoint splits and token windows.

The prose is the library's built-in corpus (:func:`gaugejax.corpus.iter_texts`: docstrings of a
curated list of standard-library modules and their public members, in a fixed order), the same
text ``gaugejax align`` probes with by default. Documents are dealt to named splits by a fixed
rule (document index modulo 20), so the splits are disjoint and identical across runs on the same
Python version. The ``code`` split is text of another kind: the source code of the standard
library's files (sorted, read with ``ast``, never imported) with every docstring removed, for a
fine-tuning run on other data.
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
def documents() -> tuple[str, ...]:
    """The prose documents in their fixed order (:func:`gaugejax.corpus.iter_texts`)."""
    from gaugejax.corpus import iter_texts

    return tuple(iter_texts())


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
    return "\n\n".join(d for i, d in enumerate(documents()) if i % 20 in residues)


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
