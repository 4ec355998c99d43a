"""Lazy reading and streaming writing of ``.safetensors`` files.

The format (https://github.com/huggingface/safetensors) is an 8-byte little-endian header length,
a JSON header ``{name: {dtype, shape, data_offsets}}`` and the raw little-endian data. Reading
memory-maps each tensor on demand; writing takes shapes and dtypes first, writes the header, then
one tensor at a time, so peak memory is one tensor. Every array is made C-contiguous before its
bytes are written (a Fortran-ordered view would otherwise be saved scrambled).

The header is read only when its declared length is at most :data:`MAX_HEADER_BYTES` (the
``safetensors`` library's own cap) and fits in the file; every tensor's byte extent is checked
against the data section before anything is mapped.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Callable, Iterable, NamedTuple

import ml_dtypes
import numpy as np

from gaugejax.errors import CheckpointError

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
CODES = {v: k for k, v in DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000
"""Longest JSON header read (the ``safetensors`` library refuses longer ones too)."""
MAX_DIMS = 32
"""Tensors of more dimensions are refused (numpy's limit is 64; real checkpoints use at most 5)."""


class TensorInfo(NamedTuple):
    """Name, dtype and shape of one stored tensor."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


class SafetensorsFile:
    """A ``.safetensors`` file opened lazily.

    Example:
      >>> import tempfile
      >>> from safetensors.numpy import save_file
      >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
      >>> save_file({"lm_head.weight": np.ones((4, 3), np.float32)}, path)
      >>> f = SafetensorsFile(path)
      >>> w = f["lm_head.weight"]  # a read-only memory map, nothing read yet
      >>> f.keys(), w.shape, float(w.sum())
      (['lm_head.weight'], (4, 3), 12.0)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(8)
                if len(raw) != 8:
                    raise CheckpointError(f"{self.path} is not a safetensors file (too short)")
                (n,) = struct.unpack("<Q", raw)
                size = os.path.getsize(self.path)
                if n > size - 8:
                    raise CheckpointError(f"{self.path} is not a safetensors file (bad header length)")
                if n > MAX_HEADER_BYTES:
                    raise CheckpointError(f"{self.path}: the safetensors header claims {n} bytes, over the "
                                          f"{MAX_HEADER_BYTES}-byte limit (corrupt or crafted file)")
                header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise CheckpointError(f"{self.path} is not a safetensors file (header is not JSON)") from None
        self._base = 8 + n
        self._entries = _check_header(self.path, header, size - self._base)
        self.metadata: dict[str, str] = header.get("__metadata__") or {}

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def info(self, name: str) -> TensorInfo:
        e = self._entries[name]
        return TensorInfo(name, DTYPES[e["dtype"]], tuple(e["shape"]))

    def __getitem__(self, name: str) -> np.ndarray:
        e = self._entries[name]
        begin, end = e["data_offsets"]
        dtype, shape = DTYPES[e["dtype"]], tuple(e["shape"])
        if end == begin:
            return np.zeros(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=self._base + begin, shape=shape)


def _check_header(path: str, header, data_size: int) -> dict:
    """The tensor entries of a parsed header, each checked; a one-line error for anything malformed."""
    bad = f"{path} is not a valid safetensors file"
    if not isinstance(header, dict):
        raise CheckpointError(f"{bad} (the header is a JSON {type(header).__name__}, not an object)")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise CheckpointError(f"{bad} (__metadata__ must map strings to strings)")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    spans = []
    for name, e in entries.items():
        if not isinstance(e, dict):
            raise CheckpointError(f"{bad}: tensor {name!r} is described by a {type(e).__name__}, not an object")
        if not isinstance(e.get("dtype"), str) or e["dtype"] not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {str(e.get('dtype'))[:40]!r}")
        shape, offsets = e.get("shape"), e.get("data_offsets")
        if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(_is_count(x) for x in shape)):
            raise CheckpointError(f"{bad}: tensor {name!r} has no valid shape (a list of at most {MAX_DIMS} "
                                  "non-negative integers)")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(x) for x in offsets)):
            raise CheckpointError(f"{bad}: tensor {name!r} lacks data_offsets [begin, end]")
        begin, end = offsets
        nbytes = DTYPES[e["dtype"]].itemsize * _elements(shape, data_size)
        if not begin <= end <= data_size or end - begin != nbytes:
            raise CheckpointError(f"{path}: tensor {name!r} has inconsistent offsets (truncated file?)")
        spans.append((begin, end, name))
    spans.sort()
    for (_, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise CheckpointError(f"{bad}: tensors {n0!r} and {n1!r} overlap")
    return entries


def _elements(shape: list[int], cap: int) -> int:
    """Number of elements of ``shape``, or ``cap + 1`` once the product passes ``cap`` (a product
    of many huge dimensions is never computed in full)."""
    if 0 in shape:
        return 0
    n = 1
    for x in shape:
        n *= x
        if n > cap:
            return cap + 1
    return n


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def write_safetensors(path: str | os.PathLike, tensors: Iterable[tuple[TensorInfo, Callable[[], np.ndarray]]],
                      metadata: dict[str, str] | None = None) -> None:
    """Writes tensors one at a time: ``(info, produce)`` pairs, ``produce()`` called once each.

    Each produced array must match its ``info`` (shape and dtype); it is written C-contiguous.
    """
    tensors = list(tensors)
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for info, _ in tensors:
        nbytes = info.dtype.itemsize * int(np.prod(info.shape, dtype=np.int64))
        header[info.name] = {"dtype": CODES[np.dtype(info.dtype)], "shape": list(info.shape),
                             "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # align data to 8 bytes, as the reference writer does
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for info, produce in tensors:
            arr = np.asarray(produce())
            if arr.shape != tuple(info.shape) or arr.dtype != info.dtype:
                raise CheckpointError(f"tensor {info.name!r}: produced {arr.dtype}{list(arr.shape)}, "
                                      f"declared {info.dtype}{list(info.shape)}")
            fh.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)
