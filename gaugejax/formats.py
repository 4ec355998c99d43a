"""Reading and writing the files coordinate-indexed objects live in.

* tensor files (steering vectors, probe directions): ``.npy``, ``.npz`` (no pickles),
  ``.safetensors`` (metadata kept), and the GGUF control-vector format of llama.cpp and repeng
  (``general.architecture = "controlvector"``, ``controlvector.model_hint``,
  ``controlvector.layer_count``, tensors ``direction.{layer}`` of shape ``(d,)``);
* sparse autoencoders: a ``.safetensors`` (or ``.npz``) file with SAELens field names, or a
  SAELens directory (``sae_weights.safetensors`` + ``cfg.json`` + anything else, copied verbatim);
* neuron lists / attribution lists (JSON, CSV/TSV): :mod:`gaugejax.neuron_lists`, re-exported here.

Floating arrays in any dtype (bfloat16, float16/32/64) round-trip bit for bit. numpy stores an
``ml_dtypes`` bfloat16 array in ``.npy``/``.npz`` as raw 2-byte void (``|V2``); such arrays are read
as bfloat16 and written back as ``|V2`` (:attr:`TensorFile.stored`).

Every writer is atomic (:func:`gaugejax.atomic.atomic_path`) and writes arrays C-contiguous
(a Fortran-ordered array would be saved scrambled). Readers refuse what they do not understand with a one-line :class:`TransportError`.

Example:
  >>> import numpy as np
  >>> from gaugejax import formats
  >>> tf = formats.TensorFile({"direction.1": np.ones(4, np.float32)}, "gguf",
  ...                         {"controlvector.model_hint": "llama"})
  >>> formats.write_tensors("/tmp/cv.gguf", tf)                     # doctest: +SKIP
  >>> formats.read_tensors("/tmp/cv.gguf").tensors["direction.1"]  # doctest: +SKIP
  array([1., 1., 1., 1.], dtype=float32)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gaugejax.atomic import atomic_file_as, atomic_path
from gaugejax.errors import CheckpointError, TransportError
from gaugejax.io.containment import copy_input_file, input_file

TENSOR_FORMATS = {".npy": "npy", ".npz": "npz", ".safetensors": "safetensors", ".gguf": "gguf"}
SAELENS_WEIGHTS = "sae_weights.safetensors"
GGUF_ARCH = "controlvector"


# =========================================================================== tensor files
@dataclass
class TensorFile:
    """Named arrays read from (or to be written to) one file.

    Attributes:
      tensors: name → array (``.npy`` files hold one array, named ``"array"``).
      format: ``"npy"``, ``"npz"``, ``"safetensors"`` or ``"gguf"``.
      metadata: safetensors ``__metadata__`` (str → str) or the GGUF key/value fields other than
        ``general.architecture`` (name → ``(value, GGUFValueType name)``).
      stored: name → stored dtype of arrays read from raw 2-byte void as bfloat16.
    """

    tensors: dict[str, np.ndarray]
    format: str
    metadata: dict[str, Any] = field(default_factory=dict)
    stored: dict[str, np.dtype] = field(default_factory=dict)
    """Arrays stored as raw 2-byte void (numpy's ``|V2`` for ml_dtypes bfloat16), read as bfloat16
    and written back in the stored dtype."""

    def replace(self, **changes: Any) -> "TensorFile":
        return dataclasses.replace(self, **changes)


def tensor_format(path: str | os.PathLike) -> str:
    """The tensor-file format named by a path's extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in TENSOR_FORMATS:
        raise TransportError(f"{Path(path).name}: unknown tensor format {suffix or '(no extension)'!r} "
                             f"(known: {', '.join(TENSOR_FORMATS)})")
    return TENSOR_FORMATS[suffix]


def read_tensors(path: str | os.PathLike) -> TensorFile:
    """Reads a ``.npy`` / ``.npz`` / ``.safetensors`` / GGUF control-vector file.

    Raises:
      TransportError: unknown extension, unreadable file, pickled arrays, or a GGUF that is not a
        control vector (e.g. a model).
    """
    p = Path(path)
    fmt = tensor_format(p)
    if not p.is_file():
        raise TransportError(f"{p} is not a file")
    if fmt in ("npy", "npz"):
        arrays = _read_numpy_file(p, fmt)
        if not arrays:
            raise TransportError(f"{p}: the archive holds no arrays")
        return _npy_file(arrays, fmt, p)
    if fmt == "safetensors":
        return _read_safetensors(p)
    return _read_gguf_control_vector(p)


def _read_numpy_file(p: Path, fmt: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npy`` (named ``"array"``) or ``.npz`` file, read within the bytes the file
    holds (:mod:`gaugejax.io.npy_bounded`: no pickles, declared sizes checked first)."""
    from gaugejax.io.npy_bounded import is_zip, read_npy, read_npz

    zipped = is_zip(p)
    kind = "array" if fmt == "npy" else "archive"
    if zipped != (fmt == "npz"):
        other = "an .npz archive, not a single .npy array" if zipped else "a single .npy array, not an .npz archive"
        raise TransportError(f"{p}: not a plain .{fmt} {kind} ({other})")
    if fmt == "npy":
        return {"array": read_npy(p, error=TransportError, label=str(p))}
    return read_npz(p, error=TransportError, label=str(p))


def _npy_file(arrays: dict[str, np.ndarray], fmt: str, where: Path) -> TensorFile:
    """A TensorFile from loaded arrays; raw 2-byte void (numpy's bfloat16) is viewed as bfloat16."""
    import ml_dtypes

    stored = {}
    for k, a in arrays.items():
        if a.dtype.kind == "V" and a.dtype.fields is None and a.dtype.subdtype is None:
            if a.dtype.itemsize != 2:
                raise TransportError(f"{where}: array {k!r} has raw dtype {a.dtype.str} of unknown meaning (only "
                                     "2-byte void, numpy's bfloat16, is understood); save it as a float dtype")
            stored[k] = a.dtype
            arrays[k] = a.view(ml_dtypes.bfloat16)
    return TensorFile(arrays, fmt, stored=stored)


def write_tensors(path: str | os.PathLike, tf: TensorFile, *, overwrite: bool = True, inputs=(),
                  recognise=None) -> None:
    """Writes a :class:`TensorFile` atomically in ``tf.format`` (which must match the extension).

    ``overwrite``, ``inputs``, ``recognise``: the safe-write rules of :func:`gaugejax.atomic.atomic_path`.
    """
    tensors = {k: np.ascontiguousarray(v) for k, v in tf.tensors.items()}
    for k, dt in tf.stored.items():
        if k in tensors and tensors[k].dtype.itemsize == np.dtype(dt).itemsize:
            tensors[k] = tensors[k].view(dt)
    rules = dict(overwrite=overwrite, inputs=inputs, recognise=recognise)
    with atomic_file_as(path, tf.format, tensor_format(path), "data", **rules) as tmp:
        if tf.format == "npy":
            if list(tensors) != ["array"]:
                raise TransportError("a .npy file holds exactly one array")
            with open(tmp, "wb") as f:
                np.save(f, tensors["array"], allow_pickle=False)
        elif tf.format == "npz":
            with open(tmp, "wb") as f:
                np.savez(f, **tensors)
        elif tf.format == "safetensors":
            _write_safetensors(tmp, tensors, tf.metadata)
        else:
            _write_gguf_control_vector(tmp, tensors, tf.metadata)


def _read_safetensors(p: Path) -> TensorFile:
    from gaugejax.io.safetensors_stream import SafetensorsFile

    try:
        sf = SafetensorsFile(p)
    except CheckpointError as e:
        raise TransportError(str(e)) from None
    return TensorFile({k: np.array(sf[k]) for k in sf.keys()}, "safetensors", dict(sf.metadata))


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    from gaugejax.io.safetensors_stream import CODES, TensorInfo, write_safetensors

    for k, v in tensors.items():
        if v.dtype not in CODES:
            raise TransportError(f"tensor {k!r}: dtype {v.dtype} cannot be stored in safetensors")
    items = [(TensorInfo(k, v.dtype, v.shape), (lambda v=v: v)) for k, v in tensors.items()]
    write_safetensors(path, items, metadata or None)


# --------------------------------------------------------------------------- GGUF control vectors
def _gguf():
    try:
        import gguf
    except ImportError:
        raise TransportError("reading/writing GGUF control vectors needs the `gguf` package (pip install gguf)") from None
    return gguf


def _read_gguf_control_vector(p: Path) -> TensorFile:
    """A GGUF control vector, read by the bounded parser (:mod:`gaugejax.io.gguf_parse`)."""
    from gaugejax.io.gguf_parse import STRING, read_header

    _gguf()
    try:
        header = read_header(p)
    except CheckpointError as e:
        raise TransportError(str(e)) from None
    arch_field = header.fields.get("general.architecture")
    arch = header.value("general.architecture") if arch_field is not None and arch_field.type == STRING else None
    if arch != GGUF_ARCH:
        raise TransportError(f"{p}: GGUF architecture is {arch!r}, not a control vector ({GGUF_ARCH!r}); "
                             "transport full models with --kind checkpoint")
    metadata: dict[str, Any] = {}
    for name, f in header.fields.items():
        if name in ("general.architecture", "general.alignment"):  # the writer sets both itself
            continue
        if f.subtype is not None and f.count == 0:
            raise TransportError(f"{p}: metadata {name!r} is an empty array, which GGUF writers cannot write back")
        value = header.value(name)
        metadata[name] = (value.tolist() if isinstance(value, np.ndarray) else value, *f.type_names)
    tensors: dict[str, np.ndarray] = {}
    for name in header.tensors:
        if header.type_name(name) not in ("F32", "F16", "F64"):
            raise TransportError(f"{p}: tensor {name!r} is {header.type_name(name)}; control vectors are float")
        tensors[name] = np.array(header.tensor_data(name))
    if not tensors:
        raise TransportError(f"{p}: control vector holds no direction.* tensors")
    return TensorFile(tensors, "gguf", metadata)


def _write_gguf_control_vector(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    gguf = _gguf()
    writer = gguf.GGUFWriter(str(path), GGUF_ARCH)
    meta = dict(metadata)
    meta.setdefault("controlvector.model_hint", ("unknown", "STRING", None))
    meta.setdefault("controlvector.layer_count", (len(tensors), "UINT32", None))
    for name, value in meta.items():
        if not isinstance(value, tuple):  # plain value given by a caller
            value = (value, "STRING" if isinstance(value, str) else "UINT32", None)
        v, vtype, sub = value
        writer.add_key_value(name, v, gguf.GGUFValueType[vtype], gguf.GGUFValueType[sub] if sub else None)
    for name, arr in tensors.items():
        if arr.dtype not in (np.float32, np.float16, np.float64):
            raise TransportError(f"tensor {name!r}: GGUF control vectors hold float32/float16, got {arr.dtype}")
        writer.add_tensor(name, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def control_vector(directions: dict[int, Any], model_hint: str = "llama") -> TensorFile:
    """A GGUF control vector in memory: ``{layer: (d,) direction}`` (llama.cpp layers start at 1).

    Example:
      >>> tf = control_vector({1: np.zeros(8, np.float32)}, "llama")
      >>> sorted(tf.tensors), tf.metadata["controlvector.layer_count"][0]
      (['direction.1'], 1)
    """
    tensors = {f"direction.{int(k)}": np.asarray(v, np.float32) for k, v in sorted(directions.items())}
    meta = {"controlvector.model_hint": (model_hint, "STRING", None),
            "controlvector.layer_count": (len(tensors), "UINT32", None)}
    return TensorFile(tensors, "gguf", meta)


def control_vector_layers(tf: TensorFile) -> dict[int, np.ndarray]:
    """``{layer: direction}`` of a GGUF control vector (tensor names ``direction.{layer}``)."""
    out = {}
    for name, v in tf.tensors.items():
        head, _, tail = name.partition(".")
        if head != "direction" or not tail.isdigit():
            raise TransportError(f"control-vector tensor {name!r} is not named direction.<layer>")
        out[int(tail)] = v
    return out


# =========================================================================== SAEs
@dataclass
class SAEFile:
    """A sparse autoencoder as stored.

    Attributes:
      tensors: SAELens fields (``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``, ...).
      format: ``"safetensors"``, ``"npz"`` or ``"saelens"`` (a directory).
      metadata: safetensors ``__metadata__``.
      directory: for ``"saelens"``, the source directory (its other files are copied verbatim).
      stored: as :attr:`TensorFile.stored`.
    """

    tensors: dict[str, np.ndarray]
    format: str
    metadata: dict[str, str] = field(default_factory=dict)
    directory: str | None = None
    stored: dict[str, np.dtype] = field(default_factory=dict)

    def replace(self, **changes: Any) -> "SAEFile":
        return dataclasses.replace(self, **changes)


def sae_format(path: str | os.PathLike) -> str:
    """``"saelens"`` for a directory (or a path without extension), else the file's format."""
    p = Path(path)
    if p.is_dir() or p.suffix == "":
        return "saelens"
    fmt = TENSOR_FORMATS.get(p.suffix.lower())
    if fmt not in ("safetensors", "npz"):
        raise TransportError(f"{p.name}: SAEs are read from .safetensors, .npz or a SAELens directory")
    return fmt


def read_sae(path: str | os.PathLike) -> SAEFile:
    """Reads an SAE (see :class:`SAEFile`); shapes are checked by the transport."""
    p = Path(path)
    fmt = sae_format(p)
    if fmt == "saelens":
        w = p / SAELENS_WEIGHTS
        if not (w.exists() or w.is_symlink()):
            raise TransportError(f"{p} is not a SAELens directory (no {SAELENS_WEIGHTS})")
        tf = _read_safetensors(input_file(w, p))
        return SAEFile(tf.tensors, "saelens", tf.metadata, str(p))
    tf = read_tensors(p)
    return SAEFile(tf.tensors, fmt, tf.metadata, stored=tf.stored)


def write_sae(path: str | os.PathLike, sae: SAEFile, *, overwrite: bool = True, inputs=(), recognise=None) -> None:
    """Writes an SAE atomically; a SAELens directory gets the source's other files copied (sub-folders
    skipped) by the containment rule of :mod:`gaugejax.io.containment`: links out of the source
    folder and special files are refused, modes never widened.

    ``overwrite``, ``inputs``, ``recognise``: the safe-write rules of :func:`gaugejax.atomic.atomic_path`.
    """
    from gaugejax.atomic import MANIFEST

    p = Path(path)
    tensors = {k: np.ascontiguousarray(v) for k, v in sae.tensors.items()}
    if sae.format != "saelens":
        write_tensors(p, TensorFile(tensors, sae.format, sae.metadata, sae.stored), overwrite=overwrite,
                      inputs=inputs, recognise=recognise)
        return
    with atomic_path(p, directory=True, overwrite=overwrite, inputs=inputs) as tmp:
        if sae.directory:
            for q in sorted(Path(sae.directory).iterdir()):
                if q.name not in (SAELENS_WEIGHTS, MANIFEST) and not q.is_dir():
                    copy_input_file(q, tmp / q.name, sae.directory)
        _write_safetensors(tmp / SAELENS_WEIGHTS, tensors, sae.metadata)


# Neuron lists live in their own module; these names keep ``formats.read_neurons`` etc. working.
from gaugejax.neuron_lists import (  # noqa: E402,F401
    INDEX_KEYS, LATENT_KEYS, LIST_KEYS, NEURON_FORMATS, SCORE_KEYS, NeuronList, neuron_format, neuron_list,
    read_neurons, write_neurons,
)
