"""Memory budgets: sizes such as ``400MB`` or ``16GB``, the bytes a checkpoint needs, resident memory.

Layer streaming (:mod:`gaugejax.streaming`) is chosen when a pair of checkpoints does not fit a
budget; these helpers parse the budget, measure what the weights would take in the compute
dtype, and report the process's resident set size for progress lines and benchmarks.

Example:
  >>> parse_size("400MB"), parse_size("16GB"), parse_size("1.5GiB")
  (400000000, 16000000000, 1610612736)
  >>> format_size(1610612736)
  '1.61 GB'
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from gaugejax.errors import GaugeJaxError

__all__ = ["parse_size", "format_size", "rss_bytes", "peak_rss_bytes", "default_budget", "weight_bytes"]

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

DEFAULT_DEVICE_FRACTION = 0.5
"""Default budget: this fraction of the device memory that is free (of host memory on a CPU)."""


def parse_size(text: str) -> int:
    """Bytes in a size such as ``400MB``, ``16GB``, ``1.5GiB`` or ``123456`` (decimal units, binary with ``i``).

    Raises:
      GaugeJaxError: not a positive size.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS or float(m.group(1)) <= 0:
        raise GaugeJaxError(f"not a memory size: {text!r}; write e.g. 400MB, 16GB or 1.5GiB")
    return int(float(m.group(1)) * _UNITS[unit])


def format_size(n: float) -> str:
    """``n`` bytes in decimal units with three significant digits."""
    for unit, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= f:
            return f"{n / f:.3g} {unit}"
    return f"{int(n)} B"


def _status_field(name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Resident set size of this process now (``None`` where ``/proc`` is unavailable)."""
    return _status_field("VmRSS")


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process (``VmHWM``; ``ru_maxrss`` where ``/proc`` is missing)."""
    peak = _status_field("VmHWM")
    if peak is None:
        try:
            import resource
            import sys

            r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = r if sys.platform == "darwin" else r * 1024
        except (ImportError, OSError):
            return None
    return peak


def default_budget() -> int:
    """Bytes the weights may take when no ``--max-memory`` is given.

    :data:`DEFAULT_DEVICE_FRACTION` of the free memory of the first accelerator (``bytes_limit -
    bytes_in_use``), or of the host's available memory on a CPU backend.
    """
    import jax

    dev = jax.devices()[0]
    free = None
    if dev.platform != "cpu":
        try:
            s = dev.memory_stats() or {}
            free = s.get("bytes_limit", 0) - s.get("bytes_in_use", 0)
        except Exception:  # noqa: BLE001 (backends without memory stats)
            free = None
    if not free:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            free = 8 * 10**9
    return int(free * DEFAULT_DEVICE_FRACTION)


def weight_bytes(shapes: Any, dtype: Any = None) -> int:
    """Bytes of arrays (anything with ``.shape`` and ``.dtype``) stored in ``dtype`` (default: their own).

    Example:
      >>> weight_bytes([np.zeros((4, 4), np.float32)], "bfloat16")
      32
    """
    total = 0
    for a in shapes:
        size = dtype if dtype is not None else a.dtype
        total += int(np.prod(a.shape)) * _itemsize(size)
    return total


def _itemsize(dtype: Any) -> int:
    import jax.numpy as jnp

    return jnp.dtype(dtype).itemsize
