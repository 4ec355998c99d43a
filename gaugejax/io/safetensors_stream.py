"""Lazy reading and streaming writing of ``.safetensors`` files.

The format (https://github.com/huggingface/safetensors) is an 8-byte little-endian header length,
a JSON header ``{name: {dtype, shape, data_offsets}}`` and the raw little-endian data. Reading
memory-maps each tensor on demand; writing takes shapes and dtypes first, writes the header, then
one tensor at a time, so peak memory is one tensor. Every array is made C-contiguous before its
bytes are written (a Fortran-ordered view would otherwise be saved scrambled).
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


class TensorInfo(NamedTuple):
    """Name, dtype and shape of one stored tensor."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


class SafetensorsFile:
    """A ``.safetensors`` file opened lazily.

    Example:
      >>> f = SafetensorsFile("model.safetensors")  # doctest: +SKIP
      >>> w = f["lm_head.weight"]                   # a read-only memory map
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
                header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{self.path} is not a safetensors file (header is not JSON)") from None
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._base = 8 + n
        self._entries = header
        for name, e in header.items():
            if e.get("dtype") not in DTYPES:
                raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {e.get('dtype')!r}")
            begin, end = e["data_offsets"]
            if end > size - self._base or end - begin != DTYPES[e["dtype"]].itemsize * int(np.prod(e["shape"])):
                raise CheckpointError(f"{self.path}: tensor {name!r} has inconsistent offsets (truncated file?)")

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
