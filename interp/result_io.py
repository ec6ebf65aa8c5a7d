"""Typed results as files: every array of a result in one NPZ, everything else (labels, numbers, provenance) in
one JSON beside it, and back. Loading never unpickles: the JSON names the result's type, which must be a defined
result type (`interp.result_base.Result`), and arrays are read with `allow_pickle=False`.

    save_result(patching, "out/patching")     # out/patching.json + out/patching.npz
    load_result("out/patching")               # an equal Patching

Encoding of a field value: an array becomes {"__array__": key into the NPZ}; a nested dataclass
{"__type__": name, "fields": {...}} (only the plain dataclasses results hold: PatchResult, CircuitCurve); a tuple
{"__tuple__": [...]} (frozen results use tuples); a long tuple of equal-length tuples whose columns each hold one
scalar type (a circuit's ~50,000 (upstream, downstream, score) edges) {"__rows__": [column, ...]}, each column an
array in the NPZ (float64 for floats, int64 for ints: exact) or, for strings, {"__strings__": [distinct values],
"index": array}; a dict whose keys are not all strings {"__items__": [[key, value], ...]}; numpy scalars become
Python numbers. Equal arrays (dtype, shape and bytes) are stored once. The NPZ is compressed.

The JSON records the NPZ's sha256 (a .json is never read with another save's .npz) and the module defining the
result's type: a type not yet defined in this process is imported from there when that module belongs to the
project (`interp.*`, and packages that register with `allow_results_from`: `experiments.*`), so a new analysis's
results load in any process (export, report, workers).
Types register themselves (`RESULT_TYPES`, `held`): this module imports no result module, the result modules
import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from interp.store import atomic_write_bytes, atomic_write_json

FORMAT = 3  # 1: before the NPZ hash and the module were recorded; 2: before row tables and compression
READS = (2, 3)  # format 2 files are format 3 files without row tables: read as they are
ROWS_MIN = 32  # tuples of tuples shorter than this stay readable JSON
IMPORTABLE: tuple[str, ...] = ("interp.",)  # where a result type named by a file may be imported from


def allow_results_from(prefix: str) -> None:
    """Let files name result types defined under `prefix` (a package above this library registers itself:
    `experiments` does, so the library never names the application)."""
    global IMPORTABLE
    if prefix not in IMPORTABLE:
        IMPORTABLE = (*IMPORTABLE, prefix)


# name -> type; filled by the types themselves: each `interp.result_base.Result` subclass registers on definition,
# each plain dataclass a result may hold through `held`
RESULT_TYPES: dict[str, type] = {}
HELD_TYPES: dict[str, type] = {}
DEFAULT_HOME = "interp.results"  # where the API's result types are defined (files that record no module)


def held(cls: type) -> type:
    """Class decorator: a plain dataclass that results may hold as a field (e.g. PatchResult, CircuitCurve)."""
    HELD_TYPES[cls.__name__] = cls
    return cls


def result_types() -> dict[str, type]:
    """Every result type defined so far in this process."""
    return dict(RESULT_TYPES)


def _result_type(name: str, module: str | None, where: Path) -> type:
    """The result type a file names; imported from its recorded module when not yet defined (project modules
    only)."""
    types = result_types()
    if name not in types:  # imported by the name the file records (project modules only), not by this module
        importlib.import_module(module if module and module.startswith(IMPORTABLE) else DEFAULT_HOME)
        types = result_types()
    if name not in types:
        raise ValueError(f"{where} names type {name!r}, which is not a result type ({', '.join(sorted(types))})"
                         + (f"; its module {module!r} is not one results are imported from" if module else ""))
    if module and types[name].__module__ != module:
        raise ValueError(f"{where} names {name} from {module}, but {name} here is {types[name].__module__}'s")
    return types[name]


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        for key, held in arrays.items():  # an array equal to one already held (dtype, shape, bytes) is kept once
            if held.dtype == value.dtype and held.shape == value.shape and held.tobytes() == value.tobytes():
                return {"__array__": key}
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__name__,
                "fields": {f.name: _encode(getattr(value, f.name), arrays) for f in dataclasses.fields(value)}}
    if isinstance(value, tuple):
        kinds = _row_kinds(value)
        if kinds is not None:
            return {"__rows__": [_encode_column([r[i] for r in value], kind, arrays) for i, kind in enumerate(kinds)]}
        return {"__tuple__": [_encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, arrays) for k, v in value.items()}
        return {"__items__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _scalar_kind(value: Any) -> type | None:
    """str, int or float for a column scalar (numpy scalars too; bools are not numbers here), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    for kind, also in ((str, ()), (int, np.integer), (float, np.floating)):
        if isinstance(value, kind) or (also and isinstance(value, also)):
            return kind
    return None


def _row_kinds(rows: tuple[Any, ...]) -> tuple[type, ...] | None:
    """The scalar type of each column when `rows` is a row table worth storing as columns (at least ROWS_MIN
    tuples of one length, each column all str, all float or all int), else None."""
    if len(rows) < ROWS_MIN or not all(type(r) is tuple for r in rows) or len({len(r) for r in rows}) != 1:
        return None
    kinds = tuple(_scalar_kind(v) for v in rows[0])
    if not kinds or None in kinds or any(tuple(_scalar_kind(v) for v in r) != kinds for r in rows):
        return None
    return kinds


def _encode_column(values: list[Any], kind: type, arrays: dict[str, np.ndarray]) -> Any:
    if kind is str:
        distinct = sorted(set(values))
        at = {v: i for i, v in enumerate(distinct)}
        return {"__strings__": distinct, "index": _encode(np.array([at[v] for v in values], dtype=np.int32), arrays)}
    return _encode(np.array(values, dtype=np.float64 if kind is float else np.int64), arrays)


def _decode_column(column: Any, arrays: Any) -> list[Any]:
    if isinstance(column, dict) and "__strings__" in column:
        distinct = column["__strings__"]
        return [distinct[i] for i in arrays[column["index"]["__array__"]].tolist()]
    return arrays[column["__array__"]].tolist()  # float64 -> float, int64 -> int


def _decode(value: Any, arrays: Any, types: dict[str, type]) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays, types) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        return arrays[value["__array__"]].copy()  # fields that shared one stored array do not share memory
    if "__tuple__" in value:
        return tuple(_decode(v, arrays, types) for v in value["__tuple__"])
    if "__rows__" in value:
        return tuple(zip(*(_decode_column(c, arrays) for c in value["__rows__"]), strict=True))
    if "__items__" in value:
        return {_decode(k, arrays, types): _decode(v, arrays, types) for k, v in value["__items__"]}
    if "__type__" in value:
        name = value["__type__"]
        if name not in types:
            raise ValueError(f"result file names type {name!r} inside a result, which is not one a result holds "
                             f"({', '.join(sorted(types))})")
        return types[name](**{k: _decode(v, arrays, types) for k, v in value["fields"].items()})
    return {k: _decode(v, arrays, types) for k, v in value.items()}


def save_result(result: Any, stem: str | Path, provenance: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write `stem`.npz, then `stem`.json naming it by hash (each atomically); `provenance` (config, seed, model
    hash ...) is kept beside."""
    cls = type(result)
    if result_types().get(cls.__name__) is not cls or not dataclasses.is_dataclass(result):
        raise TypeError(f"{cls.__name__} is not a result type (a dataclass deriving from interp.result_base.Result)")
    arrays: dict[str, np.ndarray] = {}
    fields = {f.name: _encode(getattr(result, f.name), arrays) for f in dataclasses.fields(result)}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    stem = Path(stem)
    atomic_write_bytes(stem.with_suffix(".npz"), data)
    atomic_write_json(stem.with_suffix(".json"), {
        "format": FORMAT, "type": cls.__name__, "module": cls.__module__, "fields": fields,
        "npz_sha256": hashlib.sha256(data).hexdigest(), "provenance": provenance or {}})
    return stem.with_suffix(".json"), stem.with_suffix(".npz")


def load_result(stem: str | Path) -> Any:
    """The result saved at `stem` (its .json and .npz), rebuilt without unpickling anything."""
    stem = Path(stem)
    where = stem.with_suffix(".json")
    meta = json.loads(where.read_text())
    if meta.get("format") not in READS or "type" not in meta:
        raise ValueError(f"{where}: not a result file of a format this version reads {READS} (format "
                         f"{meta.get('format')!r}: written by another version of cogcircuits; recompute it)")
    cls = _result_type(meta["type"], meta.get("module"), where)
    data = stem.with_suffix(".npz").read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("npz_sha256"):
        raise ValueError(f"{stem.with_suffix('.npz')} is not the array file saved with {where} (its sha256 differs)")
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return cls(**{k: _decode(v, arrays, dict(HELD_TYPES)) for k, v in meta["fields"].items()})


def load_provenance(stem: str | Path) -> dict[str, Any]:
    return dict(json.loads(Path(stem).with_suffix(".json").read_text()).get("provenance", {}))
