"""Writing GGUF files the way llama.cpp's ``convert_hf_to_gguf.py`` does, for the GGUF tests.

Import after ``pytest.importorskip("gguf")``.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np


def llama_cpp_permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """``LlamaModel.permute`` of llama.cpp's ``convert_hf_to_gguf.py``, verbatim in numpy."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tensors(writer: Any, tensors: Iterable[tuple[str, Any]], qtype: Any = None) -> None:
    """Adds ``(name, array)`` tensors as float32 (matrices quantized to ``qtype`` when given, 1-D
    tensors kept float32 as llama.cpp does), then writes the file and closes ``writer``."""
    import gguf

    for name, a in tensors:
        a = np.ascontiguousarray(np.asarray(a, np.float32))
        if qtype is not None and a.ndim == 2:
            writer.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, a)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
