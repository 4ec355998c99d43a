"""``gaugejax apply`` of a GGUF file: stream it, tensor by tensor, into a gauged Hugging Face directory.

Loading the whole model, moving it and saving it holds the float model several times over (the
dequantized arrays, the stacked parameters, the moved copy). :func:`apply_gauge_to_gguf` holds one
tensor at a time instead: dequantize it (:meth:`GGUFModelFile.tensor`, which also undoes llama.cpp's
layout), check it is finite, move it by its rule in the stored layout (the parameter table's axes,
:func:`gaugejax.io.hf.hf_tensor_axes`), write it into the safetensors file, drop it. A matrix whose
columns move (the embedding, every matrix reading the stream) is moved in place, block of rows by
block of rows, so the largest tensor is held once. The tensors, their order, shards and
``config.json`` are those ``save_model(apply_gauge(load_model(src), gauge), out)`` writes, bit for
bit; the GGUF's tokenizer is written beside them (:func:`gaugejax.io.gguf.gguf_tokenizer_files`).

Example:
  >>> import gaugejax as gj
  >>> apply_gauge_to_gguf("model.gguf", "out", gj.SignedPermutation.random(0, 576))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from gaugejax.errors import CheckpointError
from gaugejax.gauge import SignedPermutation
from gaugejax.io.gguf import GGUFModelFile, open_gguf
from gaugejax.spec import Axes, apply_axes

__all__ = ["apply_gauge_to_gguf", "gauge_in_row_blocks", "BLOCK_VALUES"]

BLOCK_VALUES = 1 << 20
"""Values moved per block by :func:`gauge_in_row_blocks` (4 MB of float32)."""


def gauge_in_row_blocks(w: np.ndarray, axes: Axes, gauge: SignedPermutation) -> np.ndarray:
    """``apply_axes(w, axes, gauge)``, in place when only the last axis of a matrix moves.

    The rows are then independent: each block of rows is moved through a block-sized temporary
    and written back, so no second full-size array exists. Other tensors (rows permuted, vectors)
    are moved by :func:`gaugejax.spec.apply_axes` as they are (a new array).

    Example:
      >>> from gaugejax.spec import RESIDUAL
      >>> g = SignedPermutation(np.array([1, 0]), np.array([1, -1]))
      >>> w = np.arange(6.0, dtype=np.float32).reshape(3, 2)
      >>> moved = gauge_in_row_blocks(w, Axes(None, RESIDUAL), g)
      >>> moved is w, w.tolist()
      (True, [[1.0, -0.0], [3.0, -2.0], [5.0, -4.0]])
    """
    if w.ndim != 2 or not axes.acts or len(axes.actions) != 2 or axes.actions[0] is not None:
        return apply_axes(w, axes, gauge)
    step = max(1, BLOCK_VALUES // max(w.shape[1], 1))
    for start in range(0, w.shape[0], step):
        w[start:start + step] = apply_axes(w[start:start + step], axes, gauge)
    return w


def apply_gauge_to_gguf(src: str | os.PathLike | GGUFModelFile, directory: str | os.PathLike,
                        gauge: SignedPermutation, *, tokenizer_files: dict[str, str] | None = None,
                        on_tokenizer_error: Callable[[CheckpointError], None] | None = None,
                        on_tensor: Callable[[str], None] | None = None, max_shard_bytes: int | None = None,
                        overwrite: bool = True) -> Path:
    """Writes a GGUF model in the chart of ``gauge`` as a Hugging Face directory, one tensor at a time.

    Args:
      src: the ``.gguf`` file, or one already opened with :func:`gaugejax.io.gguf.open_gguf`.
      directory: the output (rules of :func:`gaugejax.io.hf.save_hf`; atomic).
      gauge: from the GGUF model's chart to the new one.
      tokenizer_files: name → text of the tokenizer files to write beside the weights; default:
        the GGUF's own (:func:`gaugejax.io.gguf.gguf_tokenizer_files`, none when it has none),
        built after the weights are written, so the build's memory and the largest tensor's do
        not add up.
      on_tokenizer_error: called with the error when the GGUF's tokenizer cannot be built (the
        directory is then written without tokenizer files); default: raise it.
      on_tensor: called with each tensor's name once it is moved.
      max_shard_bytes: shard size (default that of :func:`gaugejax.io.hf.save_hf`).
      overwrite: may replace a previous gaugejax output.

    Memory: the largest dequantized tensor plus block-sized temporaries (and the file's pages the
    kernel keeps mapped).

    Raises:
      CheckpointError: as :func:`gaugejax.io.gguf.open_gguf`, or a tokenizer that cannot be built
        (without ``on_tokenizer_error``).
      GaugeError: a gauge of the wrong width, or non-global signs on a LayerNorm model.
      NonFiniteError: a tensor holds NaN or ±Inf (named; nothing is written).
    """
    from gaugejax.atomic import atomic_path
    from gaugejax.io.gguf import gguf_tokenizer_files
    from gaugejax.io.hf import DEFAULT_SHARD_BYTES, hf_tensor_axes, hf_tensor_shapes, write_weights
    from gaugejax.io.safetensors_stream import TensorInfo
    from gaugejax.models import check_gauge_for, family_module
    from gaugejax.io.finite import check_finite_tensor

    model = src if isinstance(src, GGUFModelFile) else open_gguf(src)
    check_gauge_for(model.config, gauge)
    axes, shapes = hf_tensor_axes(model.config), hf_tensor_shapes(model.config)

    def item(t):
        def produce() -> np.ndarray:
            w = model.tensor(t)
            check_finite_tensor(w, t.name, model.path)
            w = gauge_in_row_blocks(w, axes[t.name], gauge)
            if on_tensor:
                on_tensor(t.name)
            return w

        return TensorInfo(t.name, np.dtype(np.float32), tuple(shapes[t.name])), produce

    items = [item(t) for t in family_module(model.config).hf_tensors(model.config)]
    with atomic_path(directory, directory=True, overwrite=overwrite, inputs=[model.path]) as tmp:
        write_weights(tmp, model.config, items, np.dtype(np.float32), max_shard_bytes or DEFAULT_SHARD_BYTES)
        texts = tokenizer_files
        if texts is None:
            try:
                texts = gguf_tokenizer_files(model.path)
            except CheckpointError as e:
                if on_tokenizer_error is None:
                    raise
                on_tokenizer_error(e)
                texts = {}
        for name, text in texts.items():
            (tmp / name).write_text(text, encoding="utf-8")
    return Path(directory)
