"""JAX's persistent compilation cache in the user's cache directory.

The ``gaugejax`` command turns it on before it compiles anything, so a second run of the same
command (same model shapes, same JAX, same machine) loads its compiled forward passes and
statistics from disk instead of compiling them again. ``import gaugejax`` never turns it on: a
library user opts in with :func:`enable_compilation_cache`.

Where it lives (first that applies):

* ``GAUGEJAX_NO_CACHE=1`` (or ``true`` / ``yes``): no cache at all;
* ``GAUGEJAX_CACHE_DIR=DIR``: ``DIR``;
* ``$XDG_CACHE_HOME/gaugejax/jax``;
* ``~/.cache/gaugejax/jax``.

A cache directory JAX was already told about (``JAX_COMPILATION_CACHE_DIR`` or
``jax.config.update("jax_compilation_cache_dir", ...)``) is kept. JAX keys every entry by the
program, the JAX/XLA versions and the device, so a stale entry is never used; deleting the folder
is always safe.

Example:
  >>> cache_dir({"GAUGEJAX_CACHE_DIR": "/tmp/cc"})
  PosixPath('/tmp/cc')
  >>> cache_dir({"XDG_CACHE_HOME": "/var/cache/me"})
  PosixPath('/var/cache/me/gaugejax/jax')
  >>> cache_dir({"GAUGEJAX_NO_CACHE": "1", "GAUGEJAX_CACHE_DIR": "/tmp/cc"}) is None
  True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

__all__ = ["cache_dir", "enable_compilation_cache", "ENV_DIR", "ENV_OFF"]

ENV_DIR = "GAUGEJAX_CACHE_DIR"
"""Environment variable naming the compilation-cache folder."""
ENV_OFF = "GAUGEJAX_NO_CACHE"
"""Environment variable that turns the compilation cache off (``1``, ``true`` or ``yes``)."""

_TRUE = ("1", "true", "yes", "on")


def cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The compilation-cache folder the environment asks for, or ``None`` when it is turned off.

    Args:
      environ: the environment to read (default ``os.environ``).

    Example:
      >>> cache_dir({"HOME": "/home/ann"})
      PosixPath('/home/ann/.cache/gaugejax/jax')
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_OFF, "").strip().lower() in _TRUE:
        return None
    if env.get(ENV_DIR):
        return Path(env[ENV_DIR]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "gaugejax" / "jax"
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".cache" / "gaugejax" / "jax"


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
    folder = Path(path) if path is not None else cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home, a file in the way: run uncached rather than fail
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
