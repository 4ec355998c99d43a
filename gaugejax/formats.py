"""Reading and writing the files coordinate-indexed objects live in.

* tensor files (steering vectors, probe directions): ``.npy``, ``.npz`` (no pickles),
  ``.safetensors`` (metadata kept), and the GGUF control-vector format of llama.cpp and repeng
  (``general.architecture = "controlvector"``, ``controlvector.model_hint``,
  ``controlvector.layer_count``, tensors ``direction.{layer}`` of shape ``(d,)``);
* sparse autoencoders: a ``.safetensors`` (or ``.npz``) file with SAELens field names, or a
  SAELens directory (``sae_weights.safetensors`` + ``cfg.json`` + anything else, copied verbatim);
* neuron lists / attribution lists: JSON (a list of indices, of ``[index, score]`` pairs, of
  records with an ``index`` and optional ``score`` field, or an object wrapping such a list under
  ``neurons``/``indices``/...) and CSV/TSV with a header (``index`` column, optional ``score``).
  Lists of SAE *latents* (keyed ``feature``/``features``/``latent``...) are refused: latent ids
  index an SAE's dictionary, not the residual stream, and a residual gauge leaves them unchanged.

Floating arrays in any dtype (bfloat16, float16/32/64) round-trip bit for bit. numpy stores an
``ml_dtypes`` bfloat16 array in ``.npy``/``.npz`` as raw 2-byte void (``|V2``); such arrays are read
as bfloat16 and written back as ``|V2`` (:attr:`TensorFile.stored`).

Every writer is atomic (:func:`gaugejax.atomic.atomic_path`) and writes arrays C-contiguous
(a Fortran-ordered array would be saved scrambled). Readers refuse what they do not understand with a one-line :class:`TransportError`.
Neuron-list writers keep everything but the moved index and the (exactly) negated score as it was:
other fields, column order, the textual form of CSV numbers.

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

import csv
import dataclasses
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gaugejax.atomic import atomic_path
from gaugejax.errors import CheckpointError, TransportError

TENSOR_FORMATS = {".npy": "npy", ".npz": "npz", ".safetensors": "safetensors", ".gguf": "gguf"}
NEURON_FORMATS = {".json": "json", ".csv": "csv", ".tsv": "tsv"}
SAELENS_WEIGHTS = "sae_weights.safetensors"
INDEX_KEYS = ("index", "neuron", "coordinate", "coord", "dim", "idx")
"""Fields / columns holding residual coordinates (remapped by a gauge)."""
SCORE_KEYS = ("score", "attribution", "value", "weight", "activation")
LIST_KEYS = ("neurons", "indices", "top_k", "topk", "attributions", "items")
LATENT_KEYS = ("feature", "features", "latent", "latents", "feature_index", "feature_id", "latent_index",
               "latent_id", "sae_feature")
"""Fields / wrapping keys naming SAE latents: not residual coordinates, so such lists are refused."""
MAX_INDEX = 2**62
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
        try:
            loaded = np.load(p, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                if fmt != "npy":
                    raise ValueError("a single .npy array, not an .npz archive")
                arrays = {"array": loaded}
            else:
                if fmt != "npz":
                    raise ValueError("an .npz archive, not a single .npy array")
                with loaded as z:
                    arrays = {k: z[k] for k in z.files}
        except Exception as e:  # ValueError (pickles), EOFError (empty file), zipfile / OS errors
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise TransportError(f"{p}: not a plain .{fmt} {'array' if fmt == 'npy' else 'archive'} ({reason})") from None
        if not arrays:
            raise TransportError(f"{p}: the archive holds no arrays")
        return _npy_file(arrays, fmt, p)
    if fmt == "safetensors":
        return _read_safetensors(p)
    return _read_gguf_control_vector(p)


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
    p = Path(path)
    if tensor_format(p) != tf.format:
        raise TransportError(f"{p.name}: extension says {tensor_format(p)} but the data is {tf.format}")
    tensors = {k: np.ascontiguousarray(v) for k, v in tf.tensors.items()}
    for k, dt in tf.stored.items():
        if k in tensors and tensors[k].dtype.itemsize == np.dtype(dt).itemsize:
            tensors[k] = tensors[k].view(dt)
    with atomic_path(p, overwrite=overwrite, inputs=inputs, recognise=recognise) as tmp:
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
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(str(p))
    except Exception as e:
        raise TransportError(f"{p}: not a readable GGUF file ({str(e).splitlines()[0]})") from None
    arch_field = reader.fields.get("general.architecture")
    arch = arch_field.contents() if arch_field is not None else None
    if arch != GGUF_ARCH:
        raise TransportError(f"{p}: GGUF architecture is {arch!r}, not a control vector ({GGUF_ARCH!r}); "
                             "transport full models with --kind checkpoint")
    metadata: dict[str, Any] = {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = gguf.GGUFValueType(f.types[0])
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = gguf.GGUFValueType(f.types[1]) if len(f.types) > 1 else None
            metadata[name] = (f.contents(), vtype.name, sub.name if sub else None)
        else:
            metadata[name] = (f.contents(), vtype.name, None)
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                                 gguf.GGMLQuantizationType.F64):
            raise TransportError(f"{p}: tensor {t.name!r} is {t.tensor_type.name}; control vectors are float")
        tensors[t.name] = np.array(t.data)
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
        if not w.is_file():
            raise TransportError(f"{p} is not a SAELens directory (no {SAELENS_WEIGHTS})")
        tf = _read_safetensors(w)
        return SAEFile(tf.tensors, "saelens", tf.metadata, str(p))
    tf = read_tensors(p)
    return SAEFile(tf.tensors, fmt, tf.metadata, stored=tf.stored)


def write_sae(path: str | os.PathLike, sae: SAEFile, *, overwrite: bool = True, inputs=(), recognise=None) -> None:
    """Writes an SAE atomically; a SAELens directory gets the source's other files copied.

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
                if q.name not in (SAELENS_WEIGHTS, MANIFEST) and q.is_file():
                    shutil.copy2(q, tmp / q.name)
        _write_safetensors(tmp / SAELENS_WEIGHTS, tensors, sae.metadata)


# =========================================================================== neuron lists
@dataclass
class NeuronList:
    """A top-k neuron set or attribution list as read from JSON or CSV.

    Attributes:
      indices: int64 residual coordinates.
      scores: float64 scores, or ``None`` when the file has none.
      format: ``"json"``, ``"csv"`` or ``"tsv"``.
      doc: the parsed document (JSON value, or CSV ``(header, rows)``), kept to write back.
      index_key / score_key: the field (or column) names used, or list positions for pairs.
      layout: JSON layout (``"ints"``, ``"pairs"``, ``"records"``) and the wrapping key if any.
    """

    indices: np.ndarray
    scores: np.ndarray | None
    format: str
    doc: Any
    index_key: Any = None
    score_key: Any = None
    layout: str = "records"
    wrap_key: str | None = None

    def moved(self, new_indices: Any, signs: Any) -> "NeuronList":
        """The same list with indices replaced and scores negated where ``signs`` is -1.

        Negation is exact: JSON numbers are negated as numbers, CSV scores textually
        (``"0.25"`` ↔ ``"-0.25"``), so a round trip writes the original file back.
        """
        new_indices = np.asarray(new_indices, np.int64)
        neg = np.asarray(signs) < 0
        if new_indices.shape != self.indices.shape or neg.shape != self.indices.shape:
            raise TransportError("moved(): need one new index and one sign per neuron")
        if self.format == "json":
            items = [_copy_json(x) for x in self._json_items()]
            for n, (item, j, flip) in enumerate(zip(items, new_indices.tolist(), neg.tolist())):
                if self.layout == "ints":
                    items[n] = int(j)
                else:
                    item[self.index_key] = int(j)
                    if flip and self.score_key is not None and _has(item, self.score_key):
                        item[self.score_key] = _neg_json(item[self.score_key])
            doc = items if self.wrap_key is None else {**self.doc, self.wrap_key: items}
            scores = None if self.scores is None else np.where(neg, -self.scores, self.scores)
            return dataclasses.replace(self, indices=new_indices, scores=scores, doc=doc)
        header, rows = self.doc
        new_rows = []
        for row, j, flip in zip(rows, new_indices.tolist(), neg.tolist()):
            row = list(row)
            row[self.index_key] = str(j)
            if flip and self.score_key is not None:
                row[self.score_key] = _neg_text(row[self.score_key])
            new_rows.append(row)
        scores = None if self.scores is None else np.where(neg, -self.scores, self.scores)
        return dataclasses.replace(self, indices=new_indices, scores=scores, doc=(header, new_rows))

    def _json_items(self) -> list:
        return self.doc if self.wrap_key is None else self.doc[self.wrap_key]


def _has(item: Any, key: Any) -> bool:
    return key in item if isinstance(item, dict) else key < len(item)


def _copy_json(x: Any) -> Any:
    return dict(x) if isinstance(x, dict) else (list(x) if isinstance(x, list) else x)


def _neg_json(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TransportError(f"score {v!r} is not a number")
    return -v


def _neg_text(s: str) -> str:
    t = s.strip()
    if t == "":
        return s
    if t.startswith("-"):
        return t[1:]
    if t.startswith("+"):
        return "-" + t[1:]
    return "-" + t


def neuron_format(path: str | os.PathLike) -> str:
    """``"json"``, ``"csv"`` or ``"tsv"`` from the extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in NEURON_FORMATS:
        raise TransportError(f"{Path(path).name}: neuron lists are .json, .csv or .tsv, got {suffix or 'no extension'!r}")
    return NEURON_FORMATS[suffix]


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _as_index(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TransportError(f"{where}: index {_short(v)} is not an integer")
    if isinstance(v, int):
        f = v
    else:
        try:
            f = float(v)
        except (ValueError, OverflowError):
            raise TransportError(f"{where}: index {_short(v)} is not an integer") from None
        if not f.is_integer():
            raise TransportError(f"{where}: index {_short(v)} is not an integer")
    if not -MAX_INDEX < f < MAX_INDEX:
        raise TransportError(f"{where}: index {_short(v)} is far outside any residual width")
    return int(f)


def _as_score(v: Any, where: str) -> float:
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return float("nan")
    if isinstance(v, bool):
        raise TransportError(f"{where}: score {v!r} is not a number")
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        raise TransportError(f"{where}: score {_short(v)} is not a number") from None


def read_neurons(path: str | os.PathLike) -> NeuronList:
    """Reads a neuron list (see the module docstring for the accepted layouts).

    Raises:
      TransportError: unknown extension, malformed JSON/CSV, no index field, non-integer
        indices or non-numeric scores.
    """
    p = Path(path)
    fmt = neuron_format(p)
    if not p.is_file():
        raise TransportError(f"{p} is not a file")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TransportError(f"{p}: not UTF-8 text (byte {e.start}); save the list as UTF-8") from None
    if fmt == "json":
        return _parse_json_neurons(text, str(p))
    return _parse_csv_neurons(text, str(p), fmt)


def _id_like(v: Any) -> bool:
    """An integer id (JSON number or integer text), as latent ids are; text labels are not."""
    if isinstance(v, bool) or v is None:
        return False
    if isinstance(v, (int, float)):
        return True
    return isinstance(v, str) and v.strip().lstrip("+-").isdigit()


def _refuse_latents(where: str, key: str) -> None:
    raise TransportError(f"{where}: keyed {key!r}, so it lists SAE latents, which index the SAE's dictionary, not "
                         "the residual stream; a residual gauge leaves latent ids unchanged: use the list as it is "
                         "with the SAE moved by --kind sae (residual coordinates go under 'index' or 'neuron')")


def _parse_json_neurons(text: str, where: str) -> NeuronList:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise TransportError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise TransportError(f"{where}: JSON nested too deeply to be a neuron list") from None
    wrap = None
    items = doc
    if isinstance(doc, dict):
        keys = [k for k in LIST_KEYS if k in doc]
        latent = [k for k in LATENT_KEYS if k in doc]
        if latent and not keys:
            _refuse_latents(where, latent[0])
        if not keys:
            raise TransportError(f"{where}: JSON object has none of the list keys {', '.join(LIST_KEYS)}")
        wrap = keys[0]
        items = doc[wrap]
    if not isinstance(items, list):
        raise TransportError(f"{where}: expected a JSON list of neurons")
    if not items or all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in items):
        idx = np.array([_as_index(x, where) for x in items], np.int64)
        return NeuronList(idx, None, "json", doc, layout="ints", wrap_key=wrap)
    if all(isinstance(x, list) for x in items):
        if any(len(x) < 1 for x in items):
            raise TransportError(f"{where}: empty [index, score] pair")
        idx = np.array([_as_index(x[0], where) for x in items], np.int64)
        has_score = all(len(x) >= 2 for x in items)
        scores = np.array([_as_score(x[1], where) for x in items]) if has_score else None
        return NeuronList(idx, scores, "json", doc, 0, 1 if has_score else None, "pairs", wrap)
    if all(isinstance(x, dict) for x in items):
        ik = next((k for k in INDEX_KEYS if all(k in x for x in items)), None)
        # a latent-id field ("feature": 123) marks SAE latents; a text label ("feature": "refusal") does not
        latent = next((k for k in LATENT_KEYS if any(_id_like(x.get(k)) for x in items)), None)
        if latent is not None:
            _refuse_latents(where, latent)
        if ik is None:
            raise TransportError(f"{where}: neuron records need an index field ({', '.join(INDEX_KEYS)})")
        sk = next((k for k in SCORE_KEYS if any(k in x for x in items)), None)
        idx = np.array([_as_index(x[ik], where) for x in items], np.int64)
        scores = None if sk is None else np.array([_as_score(x.get(sk), where) for x in items])
        return NeuronList(idx, scores, "json", doc, ik, sk, "records", wrap)
    raise TransportError(f"{where}: mixed JSON list; expected indices, [index, score] pairs or records")


def _parse_csv_neurons(text: str, where: str, fmt: str) -> NeuronList:
    delim = "\t" if fmt == "tsv" else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delim))
    rows = [r for r in rows if r]
    if not rows:
        raise TransportError(f"{where}: empty {fmt.upper()} file")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    ik = next((lower.index(k) for k in INDEX_KEYS if k in lower), None)
    latent = next((k for k in LATENT_KEYS if k in lower), None)
    if latent is not None and (ik is None or all(_id_like(r[lower.index(latent)]) for r in rows[1:]
                                                 if len(r) > lower.index(latent))):
        _refuse_latents(where, latent)
    if ik is None:
        raise TransportError(f"{where}: {fmt.upper()} header needs an index column ({', '.join(INDEX_KEYS)})")
    sk = next((lower.index(k) for k in SCORE_KEYS if k in lower), None)
    body = rows[1:]
    for n, r in enumerate(body):
        if len(r) != len(header):
            raise TransportError(f"{where}: row {n + 2} has {len(r)} fields, the header {len(header)}")
    idx = np.array([_as_index(r[ik], f"{where} row {n + 2}") for n, r in enumerate(body)], np.int64)
    scores = None if sk is None else np.array([_as_score(r[sk], f"{where} row {n + 2}") for n, r in enumerate(body)])
    return NeuronList(idx, scores, fmt, (rows[0], body), ik, sk, "rows")


def write_neurons(path: str | os.PathLike, nl: NeuronList, *, overwrite: bool = True, inputs=(),
                  recognise=None) -> None:
    """Writes a neuron list atomically in ``nl.format`` (which must match the extension).

    ``overwrite``, ``inputs``, ``recognise``: the safe-write rules of :func:`gaugejax.atomic.atomic_path`.
    """
    p = Path(path)
    if neuron_format(p) != nl.format:
        raise TransportError(f"{p.name}: extension says {neuron_format(p)} but the list is {nl.format}")
    with atomic_path(p, overwrite=overwrite, inputs=inputs, recognise=recognise) as tmp:
        if nl.format == "json":
            tmp.write_text(json.dumps(nl.doc, indent=2) + "\n")
        else:
            header, rows = nl.doc
            buf = io.StringIO()
            w = csv.writer(buf, delimiter="\t" if nl.format == "tsv" else ",", lineterminator="\n")
            w.writerow(header)
            w.writerows(rows)
            tmp.write_text(buf.getvalue())


def neuron_list(indices: Any, scores: Any = None, *, format: str = "json", layer: int | None = None) -> NeuronList:
    """A new neuron list (records ``{"index", "score"[, "layer"]}`` or CSV rows) to write.

    Example:
      >>> nl = neuron_list([3, 1], [0.5, -0.25])
      >>> nl.doc
      [{'index': 3, 'score': 0.5}, {'index': 1, 'score': -0.25}]
    """
    idx = [int(i) for i in np.asarray(indices).tolist()]
    sc = None if scores is None else [float(s) for s in np.asarray(scores, np.float64).tolist()]
    if format == "json":
        items = []
        for n, i in enumerate(idx):
            rec: dict[str, Any] = {"index": i}
            if sc is not None:
                rec["score"] = sc[n]
            if layer is not None:
                rec["layer"] = int(layer)
            items.append(rec)
        return NeuronList(np.array(idx, np.int64), None if sc is None else np.array(sc), "json", items, "index",
                          None if sc is None else "score", "records")
    if format not in ("csv", "tsv"):
        raise TransportError(f"unknown neuron-list format {format!r}")
    header = ["index"] + (["score"] if sc is not None else []) + (["layer"] if layer is not None else [])
    rows = [[str(i)] + ([repr(sc[n])] if sc is not None else []) + ([str(layer)] if layer is not None else [])
            for n, i in enumerate(idx)]
    return NeuronList(np.array(idx, np.int64), None if sc is None else np.array(sc), format, (header, rows), 0,
                      1 if sc is not None else None, "rows")
