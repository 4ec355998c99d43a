"""Neuron lists and attribution lists on disk: top-k residual coordinates with optional scores.

Formats: JSON (a list of indices, of ``[index, score]`` pairs, of records with an ``index`` and
optional ``score`` field, or an object wrapping such a list under ``neurons``/``indices``/...) and
CSV/TSV with a header (``index`` column, optional ``score``). Lists of SAE *latents* (keyed
``feature``/``features``/``latent``...) are refused: latent ids index an SAE's dictionary, not the
residual stream, and a residual gauge leaves them unchanged. Readers refuse what they do not
understand (non-UTF-8 text, huge or non-integer indices, deep JSON) with a one-line
:class:`~gaugejax.errors.TransportError`. Writers are atomic and keep everything but the moved
index and the (exactly) negated score as it was: other fields, column order, the textual form of
CSV numbers.

Example:
  >>> nl = neuron_list([3, 1], [0.5, -0.25])
  >>> nl.doc
  [{'index': 3, 'score': 0.5}, {'index': 1, 'score': -0.25}]
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gaugejax.atomic import atomic_file_as
from gaugejax.errors import TransportError

NEURON_FORMATS = {".json": "json", ".csv": "csv", ".tsv": "tsv"}
INDEX_KEYS = ("index", "neuron", "coordinate", "coord", "dim", "idx")
"""Fields / columns holding residual coordinates (remapped by a gauge)."""
SCORE_KEYS = ("score", "attribution", "value", "weight", "activation")
LIST_KEYS = ("neurons", "indices", "top_k", "topk", "attributions", "items")
LATENT_KEYS = ("feature", "features", "latent", "latents", "feature_index", "feature_id", "latent_index",
               "latent_id", "sae_feature")
"""Fields / wrapping keys naming SAE latents: not residual coordinates, so such lists are refused."""
MAX_INDEX = 2**62
"""Indices beyond this are refused outright (no residual stream is that wide)."""


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
    rules = dict(overwrite=overwrite, inputs=inputs, recognise=recognise)
    with atomic_file_as(path, nl.format, neuron_format(path), "list", **rules) as tmp:
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
