"""Typed records kept as JSON files: frozen dataclasses with one save and one load.

A record's fields hold plain JSON values, tuples / lists of them, dicts keyed by str, other dataclasses, or
`X | None`. `to_dict` writes the fields in their declared order (leaving out the fields named in `OMIT_NONE` when
they are None, as the files written before the records were); `from_dict` rebuilds nested records from their type
hints and refuses an unknown or missing key with one line naming where it is. Loading never evaluates anything.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from interp.store import atomic_write_json

R = TypeVar("R", bound="Record")


class RecordError(ValueError):
    """A stored record does not have the shape its type declares; the message names the file and the key."""


def plain(value: Any) -> Any:
    """A record (or any dataclass), nested in lists and dicts, as JSON values (records keep their omissions)."""
    if isinstance(value, Record):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


SCALARS: dict[type, tuple[type, ...]] = {str: (str,), bool: (bool, np.bool_), int: (numbers.Integral,),
                                         float: (numbers.Real,)}


def _fits(cls: type, d: Any) -> bool:
    """Whether dict `d` has exactly the keys dataclass `cls` can take (every required one, no unknown one)."""
    if not isinstance(d, dict):
        return False
    fs = dataclasses.fields(cls)
    required = {f.name for f in fs if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return required <= set(d) <= {f.name for f in fs}


def build(tp: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON) as type `tp`: nested dataclasses rebuilt, JSON lists as tuples where `tp` says tuple."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is None or tp is type(None):
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) not in args:
                raise RecordError(f"{where}: null where a value is required")
            return None
        options = [a for a in args if a is not type(None)]
        classes = [a for a in options if dataclasses.is_dataclass(a)]
        if len(options) > 1 and classes:  # a choice of records: the one whose keys the value has
            fitting = [c for c in classes if _fits(c, value)]
            if len(fitting) != 1:
                raise RecordError(f"{where}: matches {len(fitting)} of {', '.join(c.__name__ for c in classes)}")
            return build(fitting[0], value, where)
        return build(options[0], value, where)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, where)
    if tp in SCALARS:
        if value is None:
            raise RecordError(f"{where}: null where a value is required")
        if not isinstance(value, SCALARS[tp]):
            raise RecordError(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
        return value
    if origin in (list, tuple):
        if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # an array built in memory
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            raise RecordError(f"{where}: expected a list, got {type(value).__name__}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(build(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        built = [build(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(built) if origin is tuple else built
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected an object, got {type(value).__name__}")
        return {k: build(args[1] if args else Any, v, f"{where}.{k}") for k, v in value.items()}
    return value


def _build_dataclass(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise RecordError(f"{where}: expected an object for {cls.__name__}, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fs = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fs))
    if unknown:
        raise RecordError(f"{where}: unknown key {unknown[0]!r} for {cls.__name__}")
    missing = [n for n, f in fs.items() if n not in d and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise RecordError(f"{where}: missing key {missing[0]!r} of {cls.__name__}")
    return cls(**{n: build(hints[n], d[n], f"{where}.{n}") for n in fs if n in d})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    """Base of the typed records: `to_dict` / `from_dict`, `save` / `load` (atomic write; no pickle)."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset()  # fields left out of the file when None

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None and f.name in self.OMIT_NONE:
                continue
            out[f.name] = plain(v)
        return out

    @classmethod
    def from_dict(cls: type[R], d: Any, where: str | None = None) -> R:
        return typing.cast(R, _build_dataclass(cls, d, where or cls.__name__))

    def save(self, path: str | Path) -> None:
        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text()), where=p.name)
        except json.JSONDecodeError as e:
            raise RecordError(f"{p.name}: not valid JSON ({e})") from e
