"""numpy's own BLAS as an in-place float32 GEMM, ``C = AᵀB + β·C``, callable from worker threads.

numpy has no in-place GEMM (``np.matmul`` cannot accumulate) and scipy's ``sgemm`` wrapper holds the
GIL. The OpenBLAS that numpy wheels bundle (``scipy-openblas``) exports ``cblas_sgemm``; called
through ``ctypes`` it releases the GIL, so several Python threads can each run a single-threaded
GEMM on their own share of the tokens (:mod:`gaugejax.hoststats`). Where that library is not found
(numpy built against MKL or Accelerate, say) :func:`gemm_acc` falls back to scipy's ``sgemm``, which
is correct but serializes the threads: :func:`threads_free` then says ``False``
(``GAUGEJAX_HOST_BLAS=scipy`` forces that fallback).

Example:
  >>> a = np.arange(6, dtype=np.float32).reshape(2, 3)
  >>> c = np.ones((3, 3), np.float32)
  >>> gemm_acc(a, a, c)
  >>> c.tolist() == (a.T @ a + 1).tolist()
  True
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import threading
from typing import Iterator, NamedTuple

import numpy as np

from gaugejax.errors import StatsError

__all__ = ["gemm_acc", "threads_free", "blas_threads", "single_threaded"]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

# (sgemm, get_num_threads, set_num_threads, index type): scipy-openblas wheels prefix and, for the
# 64-bit-integer build numpy uses, suffix every symbol.
_SYMBOLS = (
    ("scipy_cblas_sgemm64_", "scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_", ctypes.c_int64),
    ("scipy_cblas_sgemm", "scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads", ctypes.c_int),
    ("cblas_sgemm64_", "openblas_get_num_threads64_", "openblas_set_num_threads64_", ctypes.c_int64),
    ("cblas_sgemm", "openblas_get_num_threads", "openblas_set_num_threads", ctypes.c_int),
)


class _Blas(NamedTuple):
    sgemm: object
    get_threads: object
    set_threads: object


def _candidates() -> list[str]:
    root = os.path.dirname(np.__file__)
    pats = [os.path.join(root, os.pardir, "numpy.libs", "*openblas*"), os.path.join(root, ".dylibs", "*openblas*")]
    return sorted(p for pat in pats for p in glob.glob(pat))


def _bind(path: str) -> _Blas | None:
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for gemm, get, set_, idx in _SYMBOLS:
        try:
            f, g, s = getattr(lib, gemm), getattr(lib, get), getattr(lib, set_)
        except AttributeError:
            continue
        f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, idx, idx, idx, ctypes.c_float, ctypes.c_void_p, idx,
                      ctypes.c_void_p, idx, ctypes.c_float, ctypes.c_void_p, idx]
        f.restype = None
        g.argtypes, g.restype = [], ctypes.c_int
        s.argtypes, s.restype = [ctypes.c_int], None
        return _Blas(f, g, s)
    return None


def _self_test(blas: _Blas) -> bool:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 5)).astype(np.float32)
    b = rng.normal(size=(7, 3)).astype(np.float32)
    c = rng.normal(size=(5, 3)).astype(np.float32)
    want = a.T.astype(np.float64) @ b + 0.5 * c
    _cblas(blas, a, b, c, 0.5)
    return bool(np.allclose(c, want, rtol=1e-5, atol=1e-5))


def _load() -> _Blas | None:
    if os.environ.get("GAUGEJAX_HOST_BLAS", "auto") == "scipy":
        return None
    for path in _candidates():
        blas = _bind(path)
        if blas is not None and _self_test(blas):
            return blas
    return None


def _cblas(blas: _Blas, a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float) -> None:
    k, m = a.shape
    blas.sgemm(_ROW_MAJOR, _TRANS, _NO_TRANS, m, b.shape[1], k, 1.0, a.ctypes.data, a.strides[0] // 4,
               b.ctypes.data, b.strides[0] // 4, float(beta), c.ctypes.data, c.strides[0] // 4)


_BLAS = _load()


def threads_free() -> bool:
    """Whether :func:`gemm_acc` releases the GIL and the BLAS thread count can be set (numpy's
    bundled OpenBLAS was found)."""
    return _BLAS is not None


def blas_threads() -> int | None:
    """The thread count of numpy's OpenBLAS, ``None`` where it is not reachable."""
    return None if _BLAS is None else int(_BLAS.get_threads())


_THREADS_LOCK = threading.Lock()
_single = {"depth": 0, "saved": None}  # how many blocks are inside single_threaded(), and the count to restore


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """numpy's OpenBLAS runs single-threaded inside the block (its thread count is process-wide, so
    a BLAS call from another thread meanwhile runs single-threaded too); restored when the last of
    several overlapping blocks (other threads, nesting) exits.

    Example:
      >>> before = blas_threads()
      >>> with single_threaded():
      ...     blas_threads() in (None, 1)
      True
      >>> blas_threads() == before
      True
    """
    if _BLAS is None:
        yield
        return
    with _THREADS_LOCK:
        if _single["depth"] == 0:
            _single["saved"] = int(_BLAS.get_threads())
            _BLAS.set_threads(1)
        _single["depth"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _single["depth"] -= 1
            if _single["depth"] == 0:
                _BLAS.set_threads(_single["saved"])


def _usable(a: np.ndarray) -> bool:
    return (a.dtype == np.float32 and a.ndim == 2 and a.strides[1] == 4 and a.strides[0] % 4 == 0
            and a.strides[0] >= 4 * max(a.shape[1], 1))


def gemm_acc(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float = 1.0) -> None:
    """``c[...] = a.T @ b + beta * c`` in place, float32 (``beta = 0`` ignores what ``c`` held).

    Args:
      a: ``(k, m)`` float32 with contiguous rows (any row stride).
      b: ``(k, n)`` float32 with contiguous rows.
      c: ``(m, n)`` float32 with contiguous rows, written in place.
    """
    if a.shape[0] != b.shape[0] or c.shape != (a.shape[1], b.shape[1]):
        raise StatsError(f"gemm_acc: shapes {a.shape}ᵀ·{b.shape} do not give {c.shape}: "
                         "pass a (k, m), b (k, n) and c (m, n)")
    if not (c.flags.writeable and _usable(c)):
        raise StatsError("gemm_acc: c must be a writeable float32 matrix with contiguous rows: "
                         "pass np.zeros((m, n), np.float32)")
    if a.shape[0] == 0 or c.size == 0:
        if beta == 0.0:
            c.fill(0.0)
        elif beta != 1.0:
            c *= np.float32(beta)
        return
    if not _usable(a):
        a = np.ascontiguousarray(a, np.float32)
    if not _usable(b):
        b = np.ascontiguousarray(b, np.float32)
    if _BLAS is not None:
        _cblas(_BLAS, a, b, c, beta)
        return
    from scipy.linalg.blas import sgemm

    # Column-major view: cᵀ (n × m) = bᵀ a + beta·cᵀ, every operand without a copy when contiguous.
    out = sgemm(1.0, b.T, a.T, beta=beta, c=c.T, trans_b=1, overwrite_c=1)
    if not np.shares_memory(out, c):
        c[...] = out.T
