"""A built-in text corpus and token sources that work offline.

The default probe text of ``gaugejax align`` is real English prose with code: the docstrings of
Python standard-library modules (``inspect.getdoc``), read from the running interpreter, in a fixed
order (a curated module list, members sorted by name). No network, no data files. Random token ids
are the last resort, for checkpoints without a tokenizer.

Example:
  >>> text = next(iter_texts())
  >>> isinstance(text, str) and len(text) > 0
  True
  >>> ids = corpus_tokens(lambda s: np.frombuffer(s.encode(), np.uint8).astype(np.int32), 100)
  >>> ids.shape, ids.dtype
  ((100,), dtype('int32'))
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from typing import Any, Callable, Iterator

import numpy as np

from gaugejax.errors import GaugeError

__all__ = ["MODULES", "iter_texts", "corpus_text", "corpus_tokens", "random_tokens", "to_rows", "probe_tokens",
           "CORPUS_SOURCE"]

CORPUS_SOURCE = "corpus:stdlib-docstrings"
"""How :func:`probe_tokens` names the built-in corpus as a token source."""

MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "cmath", "codecs", "collections",
    "colorsys", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "dis", "email", "enum", "filecmp", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext",
    "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "http", "imaplib", "inspect", "io",
    "ipaddress", "itertools", "json", "keyword", "linecache", "locale", "logging", "lzma", "mailbox",
    "math", "mimetypes", "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pkgutil", "platform",
    "plistlib", "pprint", "queue", "quopri", "random", "re", "reprlib", "sched", "secrets", "selectors",
    "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3", "statistics",
    "string", "struct", "subprocess", "symtable", "tarfile", "tempfile", "textwrap", "threading", "time",
    "timeit", "token", "tokenize", "trace", "traceback", "types", "typing", "unittest", "urllib", "uuid",
    "warnings", "wave", "weakref", "xml", "zipfile", "zipimport", "zlib",
)
"""Standard-library modules whose docstrings form the corpus (safe to import: no side effects)."""


def iter_texts(modules: tuple[str, ...] = MODULES) -> Iterator[str]:
    """Docstrings in a deterministic order: each module's, then its public members' by name.

    Modules that are missing from the interpreter are skipped.
    """
    for name in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(name)
        except Exception:  # an optional module (e.g. sqlite3 without libsqlite) is simply skipped
            continue
        doc = inspect.getdoc(mod)
        if doc:
            yield doc
        for attr in sorted(vars(mod)):
            if attr.startswith("_"):
                continue
            obj = vars(mod)[attr]
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            if getattr(obj, "__module__", name) not in (name, None) and not str(getattr(obj, "__module__", "")).startswith(name):
                continue  # re-exported from elsewhere: counted where it is defined
            doc = inspect.getdoc(obj)
            if doc and len(doc) >= 40:
                yield doc


def corpus_text(max_chars: int | None = None) -> str:
    """The corpus as one string (texts separated by blank lines), cut at ``max_chars``."""
    parts, total = [], 0
    for t in iter_texts():
        parts.append(t)
        total += len(t) + 2
        if max_chars is not None and total >= max_chars:
            break
    text = "\n\n".join(parts)
    return text if max_chars is None else text[:max_chars]


def corpus_tokens(tokenizer: Callable[[str], np.ndarray], n_tokens: int) -> np.ndarray:
    """The first ``n_tokens`` token ids of the corpus under ``tokenizer`` (fewer if it runs out).

    Args:
      tokenizer: ``str -> int array`` (e.g. :func:`gaugejax.io.load_tokenizer`'s result).
      n_tokens: how many ids.

    Returns:
      ``(n,)`` int32 ids, ``n <= n_tokens``.
    """
    chunks, have, buf = [], 0, []
    for t in iter_texts():
        buf.append(t)
        if sum(len(b) for b in buf) < 4096:
            continue
        ids = np.asarray(tokenizer("\n\n".join(buf) + "\n\n"), np.int64).reshape(-1)
        buf = []
        chunks.append(ids)
        have += ids.size
        if have >= n_tokens:
            break
    if buf and have < n_tokens:
        chunks.append(np.asarray(tokenizer("\n\n".join(buf)), np.int64).reshape(-1))
    ids = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    return ids[:n_tokens].astype(np.int32)


def random_tokens(vocab_size: int, n_tokens: int, seed: int = 0) -> np.ndarray:
    """Uniform random ids (the last resort when no tokenizer is available), ``(n_tokens,)`` int32.

    Example:
      >>> random_tokens(50, 4, seed=1).tolist() == random_tokens(50, 4, seed=1).tolist()
      True
    """
    import jax

    return np.asarray(jax.random.randint(jax.random.key(seed), (n_tokens,), 0, vocab_size), np.int32)


def to_rows(ids: np.ndarray, seq_len: int) -> np.ndarray:
    """Cuts a 1-D id array into ``(rows, seq_len)`` (the tail that does not fill a row is dropped;
    a shorter array becomes one row).

    Example:
      >>> to_rows(np.arange(10), 4).tolist()
      [[0, 1, 2, 3], [4, 5, 6, 7]]
    """
    ids = np.asarray(ids).reshape(-1)
    seq_len = max(1, min(int(seq_len), ids.size))
    rows = ids.size // seq_len
    return ids[: rows * seq_len].reshape(rows, seq_len)


def probe_tokens(vocab_size: int, n_tokens: int, *, ids: Any = None, text: str | None = None,
                 tokenizer: Callable[[str], Any] | None = None, seed: int = 0,
                 source: str | None = None) -> tuple[np.ndarray, str]:
    """Probe token ids from the first available source: ``ids``, else ``text`` (tokenized), else
    the built-in corpus (when there is a tokenizer), else random ids (seeded).

    Every command that runs models on probe tokens picks them by this one rule.

    Args:
      vocab_size: ids must lie in ``[0, vocab_size)``.
      n_tokens: at most this many ids are returned (the corpus and random ids give exactly this many
        when they can).
      ids: token ids given by the caller (any shape; flattened).
      text: text to tokenize with ``tokenizer``.
      tokenizer: ``str -> ids`` (e.g. :func:`gaugejax.io.load_tokenizer`'s result), or ``None``.
      seed: seed of the random ids.
      source: how to name a given ``ids`` / ``text`` source (default ``"tokens"`` / ``"text"``).

    Returns:
      ``(ids, source)``: 1-D int32 ids and where they came from (``"tokens"``, ``"text"``,
      :data:`CORPUS_SOURCE`, ``"random:seed=S"``).

    Raises:
      GaugeError: text without a tokenizer, no ids at all, or ids outside ``[0, vocab_size)``.

    Example:
      >>> probe_tokens(10, 3, ids=[[1, 2], [3, 4]])
      (array([1, 2, 3], dtype=int32), 'tokens')
      >>> probe_tokens(50, 4, seed=1)[1]
      'random:seed=1'
    """
    if n_tokens <= 0:
        raise GaugeError(f"the number of probe tokens must be positive, got {n_tokens}")
    if ids is not None:
        out, src = np.asarray(ids).reshape(-1), source or "tokens"
        if out.size and not np.issubdtype(out.dtype, np.integer):
            raise GaugeError(f"token ids must be integers, got dtype {out.dtype}")
    elif text is not None:
        if tokenizer is None:
            raise GaugeError("a text needs a tokenizer: the checkpoint ships none (or `tokenizers` is not installed); "
                             "give token ids instead (--tokens)")
        out, src = np.asarray(tokenizer(text)).reshape(-1), source or "text"
    elif tokenizer is not None:
        out, src = corpus_tokens(tokenizer, n_tokens), CORPUS_SOURCE
    else:
        out, src = random_tokens(vocab_size, n_tokens, seed), f"random:seed={seed}"
    if out.size == 0:
        raise GaugeError(f"no tokens to run ({src} is empty)")
    if out.min() < 0 or out.max() >= vocab_size:
        raise GaugeError(f"token ids must lie in [0, {vocab_size}), got [{out.min()}, {out.max()}] from {src}")
    return out[:n_tokens].astype(np.int32), src
