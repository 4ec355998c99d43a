"""Transport of coordinate-indexed objects between residual charts (docs/conventions.md §3).

Each object kind is a small pure function of the object and a gauge ``G`` (A→B, ``h_B =
h_A[..., perm] * signs``) that returns the object as it must be written in B's chart:

| kind | object | rule |
|---|---|---|
| ``steering`` / ``probe`` | vector(s) with a trailing residual axis ``(..., d)`` | ``v[..., perm] * signs`` |
| ``sae`` | ``W_enc (d, k)``, ``b_enc (k)``, ``W_dec (k, d)``, ``b_dec (d)`` | rows / columns / entries of the residual axis; latent axis untouched |
| ``neurons`` | indices ``i`` with scores ``s`` | ``j`` with ``perm[j] = i``, score ``signs[j] * s`` |
| ``checkpoint`` | a Hugging Face directory | :func:`gaugejax.io.apply_gauge_to_checkpoint` |

Every function takes ``group="B_d"`` (the full signed gauge) or ``group="S_d"`` (its permutation
part only: what permutation-only alignment would do; kept for comparison, wrong for RMSNorm
models). File-level transport (formats, atomic writes) is :func:`transport_file`.

Example:
  >>> import numpy as np, gaugejax as gj
  >>> from gaugejax.transport import transport_vector, transport_neurons
  >>> g = gj.SignedPermutation([2, 0, 1], [1, -1, 1])
  >>> transport_vector(np.array([10.0, 20.0, 30.0]), g)
  array([ 30., -10.,  20.])
  >>> idx, score = transport_neurons([0, 2], g, scores=[0.5, 0.25])
  >>> idx.tolist(), score.tolist()
  ([1, 0], [-0.5, 0.25])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gaugejax.errors import TransportError
from gaugejax.gauge import SignedPermutation

GROUPS = ("B_d", "S_d")
"""``B_d``: transport by the signed gauge; ``S_d``: by its permutation part only (comparison)."""

KINDS = ("steering", "probe", "sae", "neurons", "checkpoint")
"""Object kinds :func:`transport_file` and ``gaugejax transport --kind`` accept."""

SAE_RESIDUAL_FIELDS = {"W_enc": 0, "W_dec": 1, "b_dec": 0}
"""SAE fields (SAELens names) that carry the residual axis, and which axis it is."""
SAE_LATENT_FIELDS = ("b_enc", "threshold", "log_threshold", "b_gate", "b_mag", "r_mag")
"""SAE fields indexed by latents only (JumpReLU / gated variants): never touched."""


def group_gauge(gauge: SignedPermutation, group: Any = "B_d") -> SignedPermutation:
    """The gauge a transport in ``group`` uses: its projection onto the group
    (:meth:`gaugejax.group.Group.project`): ``B_d`` the gauge itself, ``S_d`` its permutation part.

    Example:
      >>> g = SignedPermutation([1, 0], [-1, 1])
      >>> group_gauge(g, "S_d").signs.tolist()
      [1, 1]
    """
    from gaugejax.errors import GaugeError
    from gaugejax.group import Group

    if not isinstance(gauge, SignedPermutation):
        raise TransportError(f"expected a SignedPermutation, got {type(gauge).__name__}")
    try:
        grp = Group(group)
    except GaugeError:
        grp = None
    if grp not in GROUPS:
        raise TransportError(f"unknown group {group!r}: use one of {', '.join(GROUPS)}")
    return grp.project(gauge)


def _array(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype.name == "bfloat16"):
        raise TransportError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    return a


def is_float_dtype(dtype: Any) -> bool:
    """True for the floating dtypes a residual object may have: float16/32/64 and bfloat16.

    Example:
      >>> is_float_dtype(np.float16), is_float_dtype(np.uint8)
      (True, False)
    """
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype.name == "bfloat16"


def _float_array(x: Any, name: str) -> np.ndarray:
    """A residual-indexed array: floating point only (a sign flip of an integer array is not exact)."""
    a = np.asarray(x)
    if not is_float_dtype(a.dtype):
        kind = "integer" if a.dtype.kind in "iub" else "non-floating"
        raise TransportError(f"{name} has {kind} dtype {a.dtype}; residual vectors must be floating point "
                             "(bfloat16/float16/float32/float64): a sign flip of an integer array wraps or "
                             "overflows, so convert it first (e.g. astype(float32))")
    return a


# --------------------------------------------------------------------------- vectors
def transport_vector(v: Any, gauge: SignedPermutation, *, group: str = "B_d", axis: int = -1) -> np.ndarray:
    """Moves a steering vector / probe direction (any array whose ``axis`` is residual).

    Args:
      v: ``(d,)`` (shared), ``(L, d)`` (per layer), ``(classes, d)`` (probe), ...
      gauge: A→B.
      group: ``"B_d"`` or ``"S_d"``.
      axis: the residual axis.

    Returns:
      A C-contiguous array of the same dtype: ``v[..., perm] * signs``.

    Raises:
      TransportError: the residual axis does not have size ``gauge.d``, or ``v`` is not floating
        point (integer vectors are refused: negating ``uint8`` wraps).

    Example:
      >>> g = SignedPermutation([1, 0], [1, -1])
      >>> transport_vector(np.array([[1.0, 2.0], [3.0, 4.0]]), g).tolist()
      [[2.0, -1.0], [4.0, -3.0]]
    """
    g = group_gauge(gauge, group)
    a = _float_array(v, "vector")
    if a.ndim == 0:
        raise TransportError("a steering vector / probe direction needs a residual axis, got a scalar")
    if a.shape[axis] != g.d:
        raise TransportError(f"vector has shape {a.shape} but the gauge's d is {g.d} (residual axis {axis})")
    return np.ascontiguousarray(g.apply(a, axis=axis))


def transport_vectors(tensors: Mapping[str, Any], gauge: SignedPermutation, *, group: str = "B_d",
                      untouched: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Moves a named set of vectors (per-layer steering vectors, a probe's weights).

    Args:
      tensors: name → array with a trailing residual axis.
      gauge: A→B.
      group: ``"B_d"`` or ``"S_d"``.
      untouched: name suffixes left as they are (a probe's ``bias``: ``w·h + b`` keeps ``b``).

    Example:
      >>> g = SignedPermutation([1, 0], [1, -1])
      >>> out = transport_vectors({"weight": np.eye(2), "bias": np.ones(2)}, g, untouched=("bias",))
      >>> out["weight"].tolist(), out["bias"].tolist()
      ([[0.0, -1.0], [1.0, -0.0]], [1.0, 1.0])
    """
    out = {}
    for name, v in tensors.items():
        if untouched and name.endswith(untouched):
            out[name] = np.asarray(v)
            continue
        try:
            out[name] = transport_vector(v, gauge, group=group)
        except TransportError as e:
            raise TransportError(f"tensor {name!r}: {e}") from None
    return out


# --------------------------------------------------------------------------- SAEs
def check_sae(sae: Mapping[str, Any], d: int) -> int:
    """Validates an SAE dict against residual width ``d``; returns the latent width ``k``.

    Raises:
      TransportError: missing or unknown fields, or shapes that do not fit ``d``.
    """
    missing = [k for k in ("W_enc", "W_dec") if k not in sae]
    if missing:
        raise TransportError(f"SAE lacks {', '.join(missing)} (expected SAELens fields W_enc (d,k), b_enc (k), "
                             "W_dec (k,d), b_dec (d))")
    unknown = sorted(set(sae) - set(SAE_RESIDUAL_FIELDS) - set(SAE_LATENT_FIELDS))
    if unknown:
        raise TransportError(f"SAE has fields with no transport rule: {', '.join(unknown)} "
                             f"(known: {', '.join(list(SAE_RESIDUAL_FIELDS) + list(SAE_LATENT_FIELDS))})")
    w_enc, w_dec = np.shape(sae["W_enc"]), np.shape(sae["W_dec"])
    if len(w_enc) != 2 or w_enc[0] != d:
        raise TransportError(f"SAE W_enc has shape {w_enc}; expected (d={d}, k)")
    k = w_enc[1]
    if w_dec != (k, d):
        raise TransportError(f"SAE W_dec has shape {w_dec}; expected (k={k}, d={d})")
    if "b_dec" in sae and np.shape(sae["b_dec"]) != (d,):
        raise TransportError(f"SAE b_dec has shape {np.shape(sae['b_dec'])}; expected (d={d},)")
    for name in SAE_LATENT_FIELDS:
        if name in sae and np.shape(sae[name]) not in ((k,), ()):
            raise TransportError(f"SAE {name} has shape {np.shape(sae[name])}; expected (k={k},)")
    return k


def transport_sae(sae: Mapping[str, Any], gauge: SignedPermutation, *, group: str = "B_d") -> dict[str, np.ndarray]:
    """Moves an SAE ``{W_enc (d,k), b_enc (k), W_dec (k,d), b_dec (d)}`` (SAELens names).

    ``W_enc[perm, :] * signs[:, None]``, ``W_dec[:, perm] * signs``, ``b_dec[perm] * signs``;
    latent-indexed fields (``b_enc``, JumpReLU ``threshold``, ...) are returned as they are. The
    encoder pre-activations ``(x - b_dec) @ W_enc`` and the reconstruction error are then the same
    in B as in A.

    Example:
      >>> g = SignedPermutation([1, 0], [-1, 1])
      >>> sae = {"W_enc": np.array([[1.0, 2, 3], [4, 5, 6]]), "b_enc": np.zeros(3),
      ...        "W_dec": np.array([[1.0, 2], [3, 4], [5, 6]]), "b_dec": np.array([7.0, 8])}
      >>> transport_sae(sae, g)["b_dec"].tolist()
      [-8.0, 7.0]
    """
    g = group_gauge(gauge, group)
    check_sae(sae, g.d)
    out = {}
    for name, value in sae.items():
        a = (_float_array if name in SAE_RESIDUAL_FIELDS else _array)(value, f"SAE {name}")
        if name in SAE_RESIDUAL_FIELDS:
            out[name] = np.ascontiguousarray(g.apply(a, axis=SAE_RESIDUAL_FIELDS[name]))
        else:
            out[name] = a
    return out


# --------------------------------------------------------------------------- neuron sets
def transport_neurons(indices: Any, gauge: SignedPermutation, *, scores: Any = None,
                      group: str = "B_d") -> tuple[np.ndarray, np.ndarray]:
    """Moves a top-k neuron set / attribution list ``(index i, score s)``.

    The coordinate ``i`` of A is coordinate ``j`` of B with ``perm[j] = i``, and it carries the
    sign ``signs[j]``: ``h_B[j] = signs[j] * h_A[i]``.

    Args:
      indices: integer residual coordinates in A's chart.
      gauge: A→B.
      scores: optional scores (attributions, activations): multiplied by the sign.
      group: ``"B_d"`` or ``"S_d"``.

    Returns:
      ``(new_indices, new_scores)``; without ``scores``, ``new_scores`` holds the signs (``±1``,
      int8) so a caller can still tell which coordinates flipped.

    Raises:
      TransportError: indices that are not integers in ``[0, d)``.

    Example:
      >>> g = SignedPermutation([2, 0, 1], [1, -1, 1])
      >>> transport_neurons([0, 1, 2], g)[0].tolist()
      [1, 2, 0]
    """
    g = group_gauge(gauge, group)
    idx = np.asarray(indices)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        if not np.issubdtype(idx.dtype, np.floating) or not np.all(np.mod(idx, 1) == 0):
            raise TransportError(f"neuron indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= g.d):
        bad = int(idx[(idx < 0) | (idx >= g.d)][0])
        raise TransportError(f"neuron index {bad} is outside [0, {g.d}) (the gauge's d)")
    new_idx, sign = g.map_index(idx)
    new_idx = np.asarray(new_idx, np.int64)
    sign = np.asarray(sign, np.int8)
    if scores is None:
        return new_idx, sign
    s = _array(scores, "scores")
    if s.shape != idx.shape:
        raise TransportError(f"{s.shape[0] if s.ndim else 0} scores for {idx.size} indices")
    return new_idx, np.where(sign < 0, -s, s)


# --------------------------------------------------------------------------- files
@dataclass
class TransportReport:
    """What :func:`transport_file` did.

    Attributes:
      kind: the object kind.
      group: ``"B_d"`` or ``"S_d"``.
      format: the file format read and written.
      output: the path written.
      items: number of tensors / neurons moved.
      flipped: number of items whose sign changed (vectors: coordinates with a -1 sign).
      notes: human-readable remarks (e.g. fields left untouched).
    """

    kind: str
    group: str
    format: str
    output: str
    items: int
    flipped: int = 0
    notes: list[str] = field(default_factory=list)


def output_recogniser(kind: str, src: str | os.PathLike, dst: str | os.PathLike):
    """``(is_directory, recognise)`` of the output :func:`transport_file` writes for ``kind``.

    ``recognise(path)`` says whether an existing file is a previous output of that kind (the
    reader of the kind accepts it); directory outputs are recognised by their manifest
    (:mod:`gaugejax.atomic`).
    """
    from gaugejax import formats

    def reads(reader):
        def recognise(path: Path) -> bool:
            try:
                reader(path)
            except (TransportError, OSError, ValueError):
                return False
            return True

        return recognise

    try:
        if kind == "checkpoint":
            return True, None
        if kind == "sae":
            if formats.sae_format(dst) == "saelens":
                return True, None
            return False, reads(formats.read_sae)
        if kind == "neurons":
            return False, reads(formats.read_neurons)
        if kind in ("steering", "probe"):
            return False, reads(formats.read_tensors)
    except TransportError:
        pass
    return False, None


def transport_file(kind: str, src: str | os.PathLike, dst: str | os.PathLike, gauge: SignedPermutation, *,
                   group: str = "B_d", overwrite: bool = True) -> TransportReport:
    """Reads an object file, transports it and writes it atomically in the same format.

    Formats (see :mod:`gaugejax.formats`): ``steering``/``probe``: ``.npy``, ``.npz``,
    ``.safetensors``, GGUF control vectors (``.gguf``); ``sae``: a ``.safetensors`` file or a
    SAELens directory (``sae_weights.safetensors`` + ``cfg.json``); ``neurons``: ``.json`` or
    ``.csv``; ``checkpoint``: a Hugging Face directory.

    Raises:
      TransportError: unknown kind or format, shapes that do not match the gauge's ``d``, or an
        output format different from the input's.
      GaugeJaxError: ``dst`` exists and is not empty, and is not a previous gaugejax output of this
        kind (or ``overwrite=False``), or it is, holds or contains ``src``
        (:mod:`gaugejax.atomic`).

    Example:
      >>> transport_file("steering", "vec.gguf", "vec_B.gguf", gauge)  # doctest: +SKIP
    """
    from gaugejax import formats

    g = group_gauge(gauge, group)
    if kind not in KINDS:
        raise TransportError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise TransportError(f"{src} does not exist")
    if src.resolve() == dst.resolve():
        raise TransportError("the output would overwrite the input; choose another -o path")
    n_neg = int((g.signs < 0).sum())
    from gaugejax.atomic import atomic_path, check_output

    directory, recognise = output_recogniser(kind, src, dst)
    check_output(dst, directory=directory, overwrite=overwrite, inputs=[src], recognise=recognise)
    safe = dict(overwrite=overwrite, inputs=[src], recognise=recognise)

    if kind == "checkpoint":
        from gaugejax.io import apply_gauge_to_checkpoint

        with atomic_path(dst, directory=True, **safe) as tmp:
            apply_gauge_to_checkpoint(src, tmp, g)
        return TransportReport(kind, group, "hf", str(dst), g.d, n_neg)

    if kind == "neurons":
        nl = formats.read_neurons(src)
        fmt_out = formats.neuron_format(dst)
        if fmt_out != nl.format:
            raise TransportError(f"input is {nl.format} but -o {dst.name} asks for {fmt_out}; transport keeps the format")
        new_idx, signs = transport_neurons(nl.indices, g, group="B_d")
        formats.write_neurons(dst, nl.moved(new_idx, signs), **safe)
        notes = [] if nl.scores is not None else ["no score field: the signs of moved neurons are not recorded"]
        return TransportReport(kind, group, nl.format, str(dst), len(nl.indices), int((signs < 0).sum()), notes)

    if kind == "sae":
        sae = formats.read_sae(src)
        if formats.sae_format(dst) != sae.format:
            raise TransportError(f"input is a {sae.format} SAE but -o {dst.name} names a {formats.sae_format(dst)}; "
                                 "transport keeps the format")
        moved = transport_sae(sae.tensors, g, group="B_d")
        formats.write_sae(dst, sae.replace(tensors=moved), **safe)
        notes = [f"latent fields untouched: {', '.join(k for k in moved if k not in SAE_RESIDUAL_FIELDS)}"]
        notes += [f"{k}: read raw {dt} as bfloat16 and wrote it back as {dt}" for k, dt in sae.stored.items()]
        return TransportReport(kind, group, sae.format, str(dst), len(moved), n_neg, notes)

    # steering / probe
    tf = formats.read_tensors(src)
    fmt_out = formats.tensor_format(dst)
    if fmt_out != tf.format:
        raise TransportError(f"input is {tf.format} but -o {dst.name} asks for {fmt_out}; transport keeps the format")
    untouched = ("bias",) if kind == "probe" else ()
    moved = transport_vectors(tf.tensors, g, group="B_d", untouched=untouched)
    formats.write_tensors(dst, tf.replace(tensors=moved), **safe)
    notes = [f"untouched (probe bias): {k}" for k in moved if untouched and k.endswith(untouched)]
    notes += [f"{k}: read the raw 2-byte numpy dtype {dt} as bfloat16 (how numpy saves ml_dtypes bfloat16) and "
              f"wrote it back as {dt}" for k, dt in tf.stored.items()]
    return TransportReport(kind, group, tf.format, str(dst), len(moved), n_neg, notes)
