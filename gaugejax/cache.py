"""The ``gaugejax`` command's caches in the user's cache directory.

* JAX's persistent compilation cache (``<root>/jax``): the command turns it on before it compiles
  anything, so a second run of the same command (same model shapes, same JAX, same machine) loads
  its compiled forward passes and statistics from disk instead of compiling them again.
* Probe token ids of the built-in corpus (``<root>/tokens``): building a tokenizer from a GGUF
  file's metadata takes seconds for a large vocabulary (Gemma 3's 262144 tokens: its merges are
  rebuilt), so the ids its tokenizer gives the corpus are kept, keyed by the tokenizer file (path,
  size, modification time) and by the code and Python that made them (:func:`corpus_key`).

``import gaugejax`` never turns them on: a library user opts in to the compilation cache with
:func:`enable_compilation_cache`. The root (first that applies):

* ``GAUGEJAX_NO_CACHE=1`` (or ``true`` / ``yes``): no cache at all;
* ``GAUGEJAX_CACHE_DIR=DIR``: ``DIR``;
* ``$XDG_CACHE_HOME/gaugejax``;
* ``~/.cache/gaugejax``.

A compilation-cache folder JAX was already told about (``JAX_COMPILATION_CACHE_DIR`` or
``jax.config.update("jax_compilation_cache_dir", ...)``) is kept. JAX keys every entry by the
program, the JAX/XLA versions and the device, so a stale entry is never used; deleting the folder
is always safe.

Example:
  >>> cache_dir({"GAUGEJAX_CACHE_DIR": "/tmp/cc"})
  PosixPath('/tmp/cc/jax')
  >>> cache_dir({"XDG_CACHE_HOME": "/var/cache/me"})
  PosixPath('/var/cache/me/gaugejax/jax')
  >>> cache_dir({"GAUGEJAX_NO_CACHE": "1", "GAUGEJAX_CACHE_DIR": "/tmp/cc"}) is None
  True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

__all__ = ["cache_root", "cache_dir", "enable_compilation_cache", "corpus_key", "load_ids", "store_ids",
           "ENV_DIR", "ENV_OFF"]

ENV_DIR = "GAUGEJAX_CACHE_DIR"
"""Environment variable naming the cache folder (the compilation cache is its ``jax`` folder)."""
ENV_OFF = "GAUGEJAX_NO_CACHE"
"""Environment variable that turns the compilation cache off (``1``, ``true`` or ``yes``)."""

_TRUE = ("1", "true", "yes", "on")


def cache_root(environ: Mapping[str, str] | None = None) -> Path | None:
    """The gaugejax cache folder the environment asks for, or ``None`` when caching is turned off.

    Args:
      environ: the environment to read (default ``os.environ``).

    Example:
      >>> cache_root({"HOME": "/home/ann"})
      PosixPath('/home/ann/.cache/gaugejax')
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_OFF, "").strip().lower() in _TRUE:
        return None
    if env.get(ENV_DIR):
        return Path(env[ENV_DIR]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "gaugejax"
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".cache" / "gaugejax"


def cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The compilation-cache folder, ``<root>/jax`` (:func:`cache_root`), or ``None`` when off.

    Example:
      >>> cache_dir({"HOME": "/home/ann"})
      PosixPath('/home/ann/.cache/gaugejax/jax')
    """
    root = cache_root(environ)
    return None if root is None else root / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache (what the ``gaugejax`` command does at start).

    Every compiled program is kept, however fast it compiled (a command compiles a few dozen small
    ones; together they dominate a second run). Call it before the first computation: JAX opens
    its cache once, at the first compilation.

    Args:
      path: the folder (default :func:`cache_dir`, which honours ``GAUGEJAX_CACHE_DIR`` and
        ``GAUGEJAX_NO_CACHE``).

    Returns:
      The folder in use, or ``None`` when the cache is off (``GAUGEJAX_NO_CACHE``, or the folder
      cannot be created: the command then runs as before, compiling everything).

    Example:
      >>> import tempfile
      >>> enable_compilation_cache(tempfile.mkdtemp())  # doctest: +SKIP
      PosixPath('/tmp/tmpa1b2c3')
    """
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:  # the user's own choice wins
        return Path(current)
    folder = _writable(Path(path) if path is not None else cache_dir())
    if folder is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def _writable(folder: Path | None) -> Path | None:
    """``folder``, made if needed, or ``None`` when it cannot be written (read-only home, a file in
    the way: the command then runs uncached rather than fail)."""
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK | os.X_OK) else None


_CORPUS_CODE = ("corpus.py", "io/tokenizer.py", "io/gguf.py", "io/__init__.py")
"""Sources whose change may change the corpus ids a tokenizer file gives (read for the key)."""


def corpus_key(tokenizer_file: str | os.PathLike, n_tokens: int) -> str:
    """The cache key of the built-in corpus's first ``n_tokens`` ids under the tokenizer built
    from ``tokenizer_file`` (a GGUF file or a ``tokenizer.json``): the file's resolved path, size
    and modification time, the sources that build the tokenizer and the corpus, and the versions of
    Python (the corpus is its standard library's docstrings), ``tokenizers`` and gaugejax.

    Example:
      >>> import tempfile
      >>> f = Path(tempfile.mkdtemp()) / "tokenizer.json"
      >>> _ = f.write_text("{}")
      >>> len(corpus_key(f, 4096)), corpus_key(f, 4096) == corpus_key(f, 512)
      (64, False)
    """
    import hashlib
    import sys
    from importlib.metadata import PackageNotFoundError, version

    import gaugejax

    st = Path(tokenizer_file).resolve().stat()
    h = hashlib.sha256(f"{Path(tokenizer_file).resolve()}|{st.st_size}|{st.st_mtime_ns}|{n_tokens}".encode())
    here = Path(gaugejax.__file__).parent
    for name in _CORPUS_CODE:
        h.update((here / name).read_bytes())
    try:
        tk = version("tokenizers")
    except PackageNotFoundError:
        tk = "none"
    h.update(f"{sys.version}|{tk}|{gaugejax.__version__}".encode())
    return h.hexdigest()


def load_ids(key: str):
    """The int32 ids stored under ``key`` by :func:`store_ids`, or ``None`` (cache off, no entry,
    or an entry that does not read back as a 1-D integer array)."""
    import numpy as np

    root = cache_root()
    path = None if root is None else root / "tokens" / f"{key}.npy"
    if path is None or not path.is_file():
        return None
    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return ids.astype(np.int32) if ids.ndim == 1 and np.issubdtype(ids.dtype, np.integer) else None


def store_ids(key: str, ids) -> None:
    """Keeps ``ids`` under ``key`` (atomically; nothing when the cache is off or unwritable)."""
    import numpy as np

    root = cache_root()
    folder = _writable(None if root is None else root / "tokens")
    if folder is None:
        return
    tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
    try:
        np.save(tmp, np.asarray(ids, np.int32))
        os.replace(tmp, folder / f"{key}.npy")
    except OSError:
        tmp.unlink(missing_ok=True)
