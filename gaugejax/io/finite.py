"""Finite-weight checks shared by every writer (``apply``, a GGUF rewrite, ``merge``) and ``verify``.

Example:
  >>> check_finite_tensor(np.ones((3, 2), np.float16), "w", "ckpt")
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gaugejax.errors import NonFiniteError

__all__ = ["check_finite_tensor", "broken_weights", "is_floating"]


def is_floating(dtype: Any) -> bool:
    import jax.numpy as jnp

    return bool(jnp.issubdtype(dtype, jnp.floating))  # bfloat16 and the other ml_dtypes floats too


def check_finite_tensor(array: Any, name: str, where: Any, *, block: int = 1 << 22) -> None:
    """Raises :class:`~gaugejax.errors.NonFiniteError` naming tensor ``name`` of ``where`` when
    ``array`` holds a NaN or ±Inf; integer tensors pass. Read in blocks of ``block`` values, so a
    memory-mapped tensor is never held in memory whole.

    Example:
      >>> check_finite_tensor(np.ones((3, 2), np.float16), "w", "ckpt")
      >>> check_finite_tensor(np.array([1.0, np.nan]), "model.norm.weight", "ckpt")
      Traceback (most recent call last):
      ...
      gaugejax.errors.NonFiniteError: ckpt: tensor model.norm.weight holds NaN or infinite values; gaugejax does not write broken weights: repair or re-download the checkpoint
    """
    flat = np.asarray(array).reshape(-1)
    if not is_floating(flat.dtype):
        return
    for start in range(0, flat.size, block):
        if not np.isfinite(flat[start:start + block]).all():
            raise NonFiniteError(broken_weights(where, name))


def broken_weights(where: Any, name: str) -> str:
    """The one message for a tensor holding NaN or ±Inf."""
    return (f"{where}: tensor {name} holds NaN or infinite values; gaugejax does not write broken weights: repair or "
            "re-download the checkpoint")
