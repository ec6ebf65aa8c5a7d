"""NaN and +/-infinity in any float option are refused with one clear line naming the option: from a TOML file
(which can write `nan`, `inf` and `-inf`), from a dataclass built directly through the API, and from a CLI flag.

The options are found by introspection, not listed: every config schema of the experiments package (a module-level
`SCHEMA` dict of section -> dataclass, as `load_sections` reads them; `build_task` stands for every registered
task's config class) is walked, and every field typed float, float | None, tuple/list of floats or dict of
floats is a case. A float option added to any config dataclass, a new task, or a new schema is covered without
editing this file.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

import experiments
from experiments.core.config import ConfigError, build_task, load_sections
from tasks.registry import TASKS
from tests.experiments.test_bad_inputs import run_bad

REPO = Path(__file__).resolve().parents[2]
BAD = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}  # TOML literal -> value


def schemas() -> dict[str, dict[str, typing.Any]]:
    """{module: SCHEMA} for every experiments module that defines a config schema."""
    out = {}
    for m in pkgutil.walk_packages(experiments.__path__, "experiments."):
        if m.name.endswith("__main__"):
            continue
        mod = importlib.import_module(m.name)
        schema = getattr(mod, "SCHEMA", None)
        if isinstance(schema, dict) and schema:
            out[m.name.removeprefix("experiments.")] = schema
    return out


def section_classes(value: typing.Any) -> list[type]:
    """The dataclasses a schema entry accepts: itself, or every registered task's config for `build_task`."""
    if value is build_task:
        return [t.config for t in TASKS.values()]
    assert dataclasses.is_dataclass(value), f"schema entry {value!r}: add how to expand it to this test"
    return [value]


def _float_kind(tp: typing.Any) -> str | None:
    """"scalar", "seq" or "dict" for a type holding floats, else None."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is float:
        return "scalar"
    if origin in (typing.Union, types.UnionType):
        kinds = {_float_kind(a) for a in args if a is not type(None)} - {None}
        return kinds.pop() if kinds else None
    if origin in (tuple, list) and float in args:
        return "seq"
    if origin is dict and len(args) == 2 and args[1] is float:
        return "dict"
    return None


def float_fields(cls: type) -> list[tuple[str, str]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, k) for f in dataclasses.fields(cls) if f.init and (k := _float_kind(hints[f.name]))]


def cases() -> list[tuple[str, str, type, str, str]]:
    """(module, section, config class, field, kind) for every float option of every schema."""
    out = []
    for mod, schema in schemas().items():
        for section, entry in schema.items():
            for cls in section_classes(entry):
                out += [(mod, section, cls, name, kind) for name, kind in float_fields(cls)]
    return out


CASES = cases()
IDS = [f"{m}-{s}-{c.__name__}.{f}" for m, s, c, f, _ in CASES]


def bad_value(cls: type, field: str, kind: str, value: float) -> typing.Any:
    """The field's default with `value` in it: the value itself, first element of the sequence, a dict entry."""
    if kind == "scalar":
        return value
    if kind == "dict":
        return {"x": value}
    f = next(f for f in dataclasses.fields(cls) if f.name == field)
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else ())
    return (value, *tuple(default or ())[1:])


def toml_value(v: typing.Any, literal: str) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {literal}" for k in v) + " }"
    if isinstance(v, tuple):
        return "[" + ", ".join([literal, *(repr(x) for x in v[1:])]) + "]"
    return literal


def names_option(msg: str, field: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(field)}(?![\w])", msg) is not None


def test_the_introspection_finds_the_known_float_options():
    """Guards the discovery against silently finding nothing: options known today must be among the cases."""
    found = {(m, s, f) for m, s, _, f, _ in CASES}
    for want in [("training.train", "train", "lr"), ("run.config", "finetune", "lr"),
                 ("run.config", "run", "circuit_level"), ("run.config", "executor", "poll_s"),
                 ("run.config", "scratch", "embed_init_std"), ("run.config", "task", "split_fractions"),
                 ("run.config", "task", "diff_per_coherence"), ("run.config", "task", "match_fraction"),
                 ("training.pretrain", "corpus", "weights"), ("training.pretrain", "arch", "eps"),
                 ("training.pretrain", "pretrain", "lr")]:
        assert want in found, want
    assert {c for _, s, c, _, _ in CASES if s == "task"} == {t.config for t in TASKS.values()}


@pytest.mark.parametrize("literal", list(BAD))
@pytest.mark.parametrize("mod,section,cls,field,kind", CASES, ids=IDS)
def test_non_finite_option_in_a_toml_file(tmp_path, mod, section, cls, field, kind, literal):
    """A config file with nan / inf / -inf in one float option: one ConfigError line naming the file and option."""
    v = bad_value(cls, field, kind, BAD[literal])
    name = f'name = "{cls.name}"\n' if section == "task" else ""
    path = tmp_path / "bad.toml"
    path.write_text(f"[{section}]\n{name}{field} = {toml_value(v, literal)}\n")
    with pytest.raises(ConfigError) as e:
        load_sections(path, schemas()[mod])
    msg = str(e.value)
    assert "\n" not in msg and "bad.toml" in msg and names_option(msg, field) and "finite" in msg, msg


@pytest.mark.parametrize("literal", list(BAD))
@pytest.mark.parametrize("mod,section,cls,field,kind", CASES, ids=IDS)
def test_non_finite_option_built_directly(mod, section, cls, field, kind, literal):
    """The dataclass itself (API users build them without a file) refuses the value in `__post_init__`."""
    with pytest.raises(ValueError) as e:
        cls(**{field: bad_value(cls, field, kind, BAD[literal])})
    msg = str(e.value)
    assert "\n" not in msg and names_option(msg, field) and "finite" in msg, msg


@pytest.mark.parametrize("literal", list(BAD))
def test_cli_train_refuses_a_non_finite_rate(capsys, tmp_path, literal):
    """In process: status 2, one `error:` line naming lr, nothing written at --out."""
    p = tmp_path / "bad.toml"
    p.write_text(f"[train]\nlr = {literal}\n")
    run_bad(capsys, ["train", "--config", str(p), "--out", str(tmp_path / "X"), "--quiet"], "lr",
            out=tmp_path / "X")
    assert not (tmp_path / "X").exists()


def test_cli_train_nan_rate_as_a_user_sees_it(tmp_path):
    """`python -m experiments.cli train --config bad.toml --out X` with `lr = nan`: exit status 2, exactly one
    `error:` line on stderr and it names lr, no traceback, and X is not created."""
    p = tmp_path / "bad.toml"
    p.write_text("[train]\nlr = nan\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "experiments.cli", "train", "--config", str(p), "--out",
                        str(tmp_path / "X")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(err) == 1 and err[0].startswith("error:") and names_option(err[0], "lr"), r.stderr
    assert "finite" in err[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "X").exists()


@pytest.mark.parametrize("flag", ["--level", "--fraction"])
@pytest.mark.parametrize("literal", ["nan", "inf", "-inf", "NaN", "infinity"])
def test_cli_float_flags_refuse_non_finite(capsys, tmp_path, flag, literal):
    """Every float flag (argparse type `finite_float`): status 2, one `error:` line naming the flag."""
    run_bad(capsys, ["!argparse", "discover", str(tmp_path / "ck"), f"{flag}={literal}", "--out",
                     str(tmp_path / "d")], f"argument {flag}: must be a finite number", out=tmp_path / "d")


def test_every_cli_float_flag_is_finite_checked():
    """No CLI option parses with bare `float` (which accepts nan and inf): walks the whole parser."""
    import argparse

    from experiments.cli.main import build_parser

    def walk(p: argparse.ArgumentParser, path: str):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    yield from walk(sp, f"{path} {name}")
            else:
                yield path, a

    bare = [f"{path} {'/'.join(a.option_strings) or a.dest}" for path, a in walk(build_parser(), "cogcircuits")
            if a.type is float]
    assert not bare, f"use experiments.cli.analyses.finite_float for: {bare}"
