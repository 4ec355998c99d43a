"""Helpers shared by the sub-commands: console, progress bars, token sources, tables, output checks."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from gaugejax.errors import GaugeJaxError

MAX_PROBE_TOKENS = 1 << 26
"""Most probe tokens a command materialises at once (ids are built in memory before batching)."""


def console(stderr: bool = False):
    """A rich console (plain text when not a terminal)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator:
    """A rich progress bar on stderr; yields ``advance(n=1)``. Silent when stderr is not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not sys.stderr.isatty() or os.environ.get("CI"):
        yield lambda n=1: None
        return
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*cols, console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def table(title: str, columns: list[str], rows: list[list]) -> None:
    """Prints a compact table to stdout."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="right" if c != columns[0] else "left", no_wrap=c == columns[0])
    for r in rows:
        t.add_row(*[_fmt(v) for v in r])
    console().print(t)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if (abs(v) < 1e-2 or abs(v) >= 1e4) and v != 0 else f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


def add_token_args(p: argparse.ArgumentParser, default_tokens: int = 1024) -> None:
    """``--tokens FILE.npy`` / ``--text FILE`` / ``--n-tokens`` / ``--seq-len`` / ``--seed``."""
    g = p.add_argument_group("probe tokens", "--tokens, else --text tokenized with the checkpoint's tokenizer, else a "
                             "built-in corpus (standard-library docstrings) with that tokenizer, else random ids")
    g.add_argument("--tokens", metavar="FILE.npy", help="token ids (int array, (n,) or (batch, seq))")
    g.add_argument("--text", metavar="FILE", help="text file, tokenized with the checkpoint's tokenizer")
    g.add_argument("--n-tokens", type=int, default=default_tokens, help=f"tokens to use (default {default_tokens})")
    g.add_argument("--seq-len", type=int, default=128, help="sequence length of each batch row (default 128)")
    g.add_argument("--seed", type=int, default=0, help="seed of random token ids, the last resort (default 0)")


def load_token_file(path: str | os.PathLike) -> np.ndarray:
    """1-D integer token ids from a ``.npy`` file (no pickles) holding ``(n,)`` or ``(batch, seq)``
    ids, or a one-line error.

    Example:
      >>> import tempfile
      >>> p = Path(tempfile.mkdtemp()) / "t.npy"
      >>> np.save(p, np.zeros((2, 3, 4), np.int32))
      >>> load_token_file(p)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      gaugejax.errors.GaugeJaxError: --tokens ... holds an array of shape (2, 3, 4); token ids are (n,) or (batch, seq): ...
    """
    from gaugejax.io.containment import regular_file

    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        raise GaugeJaxError(f"--tokens {path} does not exist")
    regular_file(path, f"--tokens {path}")
    from gaugejax.io.npy_bounded import is_zip, read_npy

    if is_zip(path):
        raise GaugeJaxError(f"--tokens {path} is an .npz archive; save one array with np.save")
    ids = read_npy(path, error=GaugeJaxError, label=f"--tokens {path}")  # no pickles; sizes checked first
    if not np.issubdtype(ids.dtype, np.integer):
        raise GaugeJaxError(f"--tokens {path} must hold integer ids, got {ids.dtype}")
    if ids.ndim not in (1, 2):
        raise GaugeJaxError(f"--tokens {path} holds an array of shape {ids.shape}; token ids are (n,) or (batch, seq): "
                            "save them with that shape")
    if ids.size == 0:
        raise GaugeJaxError(f"--tokens {path} holds no token ids")
    return ids.reshape(-1)


def read_text_file(path: str | os.PathLike, flag: str = "--text") -> str:
    """The UTF-8 text of ``path``, or a one-line error (missing, unreadable, not UTF-8, a FIFO or device)."""
    from gaugejax.io.containment import regular_file

    regular_file(path, f"{flag} {path}")
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise GaugeJaxError(f"{flag} {path} is not UTF-8 text (byte {e.start}); convert it to UTF-8") from None
    except OSError as e:
        raise GaugeJaxError(f"cannot read {flag} {path}: {e.strerror or e}") from None


def tokens_from_args(args: argparse.Namespace, vocab_size: int, checkpoint: str | None = None) -> np.ndarray:
    """Token ids ``(batch, seq)`` from ``--tokens``, ``--text``, the built-in corpus (with the
    checkpoint's tokenizer) or seeded random ids: :func:`gaugejax.corpus.probe_tokens`."""
    n, seq = args.n_tokens, args.seq_len
    if n <= 0 or seq <= 0:
        raise GaugeJaxError("--n-tokens and --seq-len must be positive")
    if args.seed < 0:
        raise GaugeJaxError(f"--seed must be non-negative, got {args.seed}")
    return token_source(args, vocab_size, n, [checkpoint])[0].astype(np.int32)


def token_source(args: argparse.Namespace, vocab_size: int, n_tokens: int,
                 checkpoints: list) -> tuple[np.ndarray, str]:
    """``(rows (batch, seq), source)`` by :func:`gaugejax.corpus.probe_tokens` from ``--tokens`` /
    ``--text`` / the first tokenizer among ``checkpoints`` / ``--seed``, cut into ``--seq-len`` rows.

    The built-in corpus's ids under a checkpoint's tokenizer are kept in the cache
    (:func:`gaugejax.cache.corpus_key`): a second run does not build the tokenizer again.
    """
    from gaugejax.cache import corpus_key, load_ids, store_ids
    from gaugejax.corpus import CORPUS_SOURCE, corpus_tokens, probe_tokens, to_rows
    from gaugejax.io import load_tokenizer

    if n_tokens > MAX_PROBE_TOKENS:
        raise GaugeJaxError(f"{n_tokens} probe tokens asked for; at most {MAX_PROBE_TOKENS} are held in memory at once "
                            "(use fewer tokens, or several runs)")
    ids = load_token_file(args.tokens) if args.tokens else None
    label = f"tokens:{Path(args.tokens).name}" if ids is not None else None
    source_file = next(filter(None, map(tokenizer_file, checkpoints)), None)
    key = corpus_key(source_file, n_tokens) if ids is None and not args.text and source_file else None
    if key is not None:
        ids = load_ids(key)
        label = CORPUS_SOURCE if ids is not None else None
    tok = None
    for c in checkpoints if ids is None else ():
        tok = tok or (load_tokenizer(c) if c else None)
    if args.text and ids is None and tok is None:
        raise GaugeJaxError(f"{checkpoints[0]} ships no tokenizer (or `tokenizers` is not installed); pass --tokens")
    text = read_text_file(args.text) if args.text and ids is None else None
    if key is not None and ids is None and tok is not None:
        ids, label = corpus_tokens(tok, n_tokens), CORPUS_SOURCE
        store_ids(key, ids)
    label = f"text:{Path(args.text).name}" if text else label
    ids, source = probe_tokens(vocab_size, n_tokens, ids=ids, text=text, tokenizer=tok, seed=args.seed, source=label)
    return to_rows(ids, args.seq_len), source


def tokenizer_file(checkpoint: str | os.PathLike | None) -> Path | None:
    """The file :func:`gaugejax.io.load_tokenizer` builds a checkpoint's tokenizer from (a ``.gguf``
    file itself, an HF directory's ``tokenizer.json``), or ``None``.

    Example:
      >>> tokenizer_file("no/such/dir") is None
      True
    """
    if not checkpoint:
        return None
    p = Path(checkpoint)
    if p.suffix == ".gguf" and p.is_file():
        return p
    return p / "tokenizer.json" if p.is_dir() and (p / "tokenizer.json").is_file() else None


# --------------------------------------------------------------------------- outputs
def add_overwrite_arg(p: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace an existing output, but only a previous gaugejax output."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing, non-empty output if it is a previous gaugejax output (a directory "
                   "with its .gaugejax manifest and nothing else, or a file of the same kind); never an input, a "
                   "folder holding an input, or files gaugejax did not write")


def is_gauge_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a gauge archive (``.npz`` holding ``perm`` and ``signs``)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile, NotImplementedError, ValueError):  # any damaged archive: not ours
        return False
    return {"perm.npy", "signs.npy"} <= names


def is_json_object(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a JSON object (what ``--json`` reports write)."""
    import json

    try:
        return isinstance(json.loads(Path(path).read_bytes()), dict)
    except (OSError, ValueError):
        return False


def output(path: str | os.PathLike, *, directory: bool = False, recognise=None):
    """An :class:`gaugejax.atomic.Output` for ``check_outputs``."""
    from gaugejax.atomic import Output

    if os.fspath(path) == "":
        raise GaugeJaxError("the output path is empty; name a file or folder")
    return Output(Path(path), directory, True, recognise)


def check_outputs(args: argparse.Namespace, outputs: list, inputs: list = ()) -> list:
    """Validates every output path before any work (``--overwrite`` rules); returns the outputs.

    Raises a one-line :class:`GaugeJaxError` for an output that is or holds an input, lies under a
    file, is not writable, exists and is not empty (without ``--overwrite``), or is not a previous
    gaugejax output (with it). Two outputs may not overlap.
    """
    import dataclasses

    from gaugejax.atomic import _resolved, check_output

    overwrite = bool(getattr(args, "overwrite", False))
    outs = [dataclasses.replace(o, overwrite=overwrite) for o in outputs if o is not None]
    seen: dict[Path, Path] = {}
    for o in outs:
        check_output(o.path, directory=o.directory, overwrite=overwrite, inputs=[i for i in inputs if i],
                     recognise=o.recognise)
        r = _resolved(o.path)
        for s, name in seen.items():
            if r == s or s in r.parents or r in s.parents:
                raise GaugeJaxError(f"outputs {name} and {o.path} overlap; choose distinct paths")
        seen[r] = o.path
    return outs
