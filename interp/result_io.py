"""Typed results as files: every array of a result in one NPZ, everything else (labels, numbers, provenance) in
one JSON beside it, and back. Loading never unpickles: the JSON names the result's type, which must be one of
the allowed classes, and arrays are read with `allow_pickle=False`.

    save_result(patching, "out/patching")     # out/patching.json + out/patching.npz
    load_result("out/patching")               # an equal Patching

Encoding of a field value: an array becomes {"__array__": key into the NPZ}; a nested dataclass
{"__type__": name, "fields": {...}}; a tuple {"__tuple__": [...]} (frozen results use tuples); a dict whose keys
are not all strings {"__items__": [[key, value], ...]}; numpy scalars become Python numbers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from interp.store import atomic_write_json, atomic_write_npz

FORMAT = 1


def allowed_types() -> dict[str, type]:
    """The classes a result file may name: every defined result type (`interp.result_base.Result` subclasses,
    the API's among them) and the plain dataclasses they hold."""
    import interp.results  # noqa: F401  (defines the API's result types)
    from interp.faithfulness import CircuitCurve
    from interp.patching import PatchResult
    from interp.result_base import RESULT_TYPES

    return {**RESULT_TYPES, "PatchResult": PatchResult, "CircuitCurve": CircuitCurve}


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__name__,
                "fields": {f.name: _encode(getattr(value, f.name), arrays) for f in dataclasses.fields(value)}}
    if isinstance(value, tuple):
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


def _decode(value: Any, arrays: Any, types: dict[str, type]) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays, types) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        return arrays[value["__array__"]]
    if "__tuple__" in value:
        return tuple(_decode(v, arrays, types) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, arrays, types): _decode(v, arrays, types) for k, v in value["__items__"]}
    if "__type__" in value:
        name = value["__type__"]
        if name not in types:
            raise ValueError(f"result file names type {name!r}, which is not a result type "
                             f"({', '.join(sorted(types))})")
        return types[name](**{k: _decode(v, arrays, types) for k, v in value["fields"].items()})
    return {k: _decode(v, arrays, types) for k, v in value.items()}


def save_result(result: Any, stem: str | Path, provenance: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write `stem`.json and `stem`.npz (atomically); `provenance` (config, seed, model hash ...) is kept beside."""
    types = allowed_types()
    if type(result).__name__ not in types:
        raise TypeError(f"{type(result).__name__} is not a result type ({', '.join(sorted(types))})")
    arrays: dict[str, np.ndarray] = {}
    body = _encode(result, arrays)
    stem = Path(stem)
    atomic_write_npz(stem.with_suffix(".npz"), arrays)
    atomic_write_json(stem.with_suffix(".json"), {"format": FORMAT, "result": body, "provenance": provenance or {}})
    return stem.with_suffix(".json"), stem.with_suffix(".npz")


def load_result(stem: str | Path) -> Any:
    """The result saved at `stem` (its .json and .npz), rebuilt without unpickling anything."""
    stem = Path(stem)
    meta = json.loads(stem.with_suffix(".json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{stem.with_suffix('.json')}: unknown result file format {meta.get('format')!r}")
    with np.load(stem.with_suffix(".npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return _decode(meta["result"], arrays, allowed_types())


def load_provenance(stem: str | Path) -> dict[str, Any]:
    return dict(json.loads(Path(stem).with_suffix(".json").read_text()).get("provenance", {}))
