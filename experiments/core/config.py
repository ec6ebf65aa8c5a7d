"""TOML configs -> frozen dataclasses, with one clear error for unknown keys, wrong types and bad values.

Configs are parsed with `tomllib` (never evaluated). Each section maps onto one frozen dataclass; the dataclass's
own `__post_init__` checks ranges and contradictions.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any
from tasks.registry import config_class


class ConfigError(ValueError):
    """A config file or value is invalid; the message names the file, key and problem."""


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(_check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return {str(k): _check_type(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):  # TOML writes nan, inf and -inf; no option of the project means them
            raise ConfigError(f"{where}: must be a finite number, got {value}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return build(tp, value, where)
    return value


def build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Instantiate frozen dataclass `cls` from a dict, naming `where` (file and section) in every error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(names))})")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def build_task(raw: dict[str, Any] | None, where: str) -> Any:
    """A task config from a raw [task] table: `name` picks the registered task (none = the default task), the
    other keys must be that task's config fields."""
    data = dict(raw or {})
    try:
        cls = config_class(data)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    return build(cls, data, where)


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# Options added after runs were recorded, with the default that keeps the earlier behaviour: a hash of a config
# leaves them out while they hold it, so a run folder (or a training state) recorded before the option existed
# still resumes under the same config. Set to anything else, they are hashed like every other option.
ADDED_OPTIONS: dict[str, Any] = {"hold_steps": 0, "balanced_trials": False, "multiplicity": "none", "shuffled": False,
                                  "shuffle_digits": False, "embed_from_base": False,
                                  "freeze_below": 0}


def hashed_form(d: Any) -> Any:
    """A config dict (`to_dict`) as its hash sees it: every section's ADDED_OPTIONS left out where at their
    default."""
    if isinstance(d, dict):
        return {k: hashed_form(v) for k, v in d.items() if not (k in ADDED_OPTIONS and v == ADDED_OPTIONS[k])}
    return d


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        return tomllib.loads(p.read_text("utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text") from None


def load_sections(path: str | Path | None, schema: dict[str, type], defaults: dict[str, Any] | None = None,
                  overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Read a TOML file whose top-level tables are `schema`'s keys; returns {section: dataclass instance}. A schema
    value is a dataclass or a function building one from the section's table and a location (e.g. `build_task`)."""
    raw = read_toml(path) if path is not None else {}
    name = str(path) if path is not None else "<defaults>"
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ConfigError(f"{name}: unknown section(s) {', '.join(unknown)} (allowed: {', '.join(schema)})")
    out = {}
    for section, cls in schema.items():
        data = dict((defaults or {}).get(section, {}))
        sec = raw.get(section, {})
        if not isinstance(sec, dict):
            raise ConfigError(f"{name}: [{section}] must be a table")
        data.update(sec)
        data.update((overrides or {}).get(section, {}))
        where = f"{name} [{section}]"
        out[section] = build(cls, data, where) if isinstance(cls, type) else cls(data, where)
    return out
