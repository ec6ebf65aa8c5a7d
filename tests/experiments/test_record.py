"""The typed run record's one save / load (`experiments.core.record`): what goes in comes back, field by field,
with the omissions older files had, and a file of the wrong shape fails with one line naming the key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest

from experiments.core.record import Record, RecordError
from experiments.core.run_record import Contrast, Contrasts, PairValue, RunMeta, Trials
from interp.stats import GroupContrast, PairContrast, group_contrast, pair_contrast


@dataclass(frozen=True, kw_only=True)
class Leaf(Record):
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"note"})
    values: tuple[float, ...]
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class Tree(Record):
    name: str
    leaves: dict[str, Leaf]
    path: tuple[Leaf, ...]
    pair: tuple[int, int]
    maybe: Leaf | None


def test_a_nested_record_round_trips_with_its_types_and_omissions(tmp_path):
    """Catches nested records left as dicts, lists left where the type says tuple (a frozen record holding a
    mutable list), None written where older files left the key out, and fields reordered."""
    t = Tree(name="t", leaves={"a": Leaf(values=(1.0, 2.0)), "b": Leaf(values=(), note="n")},
             path=(Leaf(values=(3.0,)),), pair=(1, 2), maybe=None)
    t.save(tmp_path / "t.json")
    text = (tmp_path / "t.json").read_text()
    assert '"note"' in text and text.count('"note"') == 1  # written for b only
    assert list(json.loads(text)) == ["name", "leaves", "path", "pair", "maybe"]
    back = Tree.load(tmp_path / "t.json")
    assert back == t
    assert isinstance(back.leaves["a"], Leaf) and isinstance(back.path, tuple) and isinstance(back.path[0].values,
                                                                                               tuple)


@pytest.mark.parametrize("edit, says", [
    (lambda d: d.update(extra=1), "unknown key 'extra' for Tree"),
    (lambda d: d.pop("pair"), "missing key 'pair' of Tree"),
    (lambda d: d["leaves"]["a"].update(value=[1]), "t.json.leaves.a: unknown key 'value' for Leaf"),
    (lambda d: d.update(path={"x": 1}), "t.json.path: expected a list"),
    (lambda d: d.update(name=None), "t.json.name: null where a value is required"),
])
def test_a_file_of_the_wrong_shape_is_refused_naming_the_key(tmp_path, edit, says):
    d = Tree(name="t", leaves={"a": Leaf(values=(1.0,))}, path=(), pair=(1, 2), maybe=None).to_dict()
    edit(d)
    (tmp_path / "t.json").write_text(json.dumps(d))
    with pytest.raises(RecordError) as e:
        Tree.load(tmp_path / "t.json")
    assert says in str(e.value) and "\n" not in str(e.value)


def test_not_json_is_one_line(tmp_path):
    (tmp_path / "t.json").write_text("{oops")
    with pytest.raises(RecordError, match="t.json: not valid JSON"):
        Tree.load(tmp_path / "t.json")


def test_a_contrast_gets_back_the_statistic_of_its_own_kind():
    """The union GroupContrast | PairContrast is resolved by the keys stored: catches a pair contrast read back
    as a group one (or the reverse), which would judge a claim by the wrong rule."""
    g = group_contrast([3, 4, 5], [0, 1, 2])
    import numpy as np

    S = np.array([[np.nan, .9, .1, .1], [.9, np.nan, .1, .1], [.1, .1, np.nan, .8], [.1, .1, .8, np.nan]])
    p = pair_contrast(S, ["finetuned", "finetuned", "scratch", "scratch"], chance=0.2)
    c = Contrasts(entries={
        "g": Contrast(key="g", kind="group", measure="m", per_model={"finetuned-s0": 3.0}, chance=None, result=g,
                      note=None),
        "p": Contrast(key="p", kind="pair", measure="m", pairs=(PairValue(a="x", b="y", value=0.1,
                                                                          relation="between"),),
                      chance=0.2, result=p, note=None),
        "u": Contrast(key="u", kind="group", measure="m", per_model={}, chance=None, result=None, note="undefined")})
    back = Contrasts.from_dict(json.loads(json.dumps(c.to_dict())))
    assert isinstance(back.entries["g"].result, GroupContrast) and isinstance(back.entries["p"].result, PairContrast)
    assert back == c
    assert "pairs" not in c.to_dict()["g"] and "per_model" not in c.to_dict()["p"]


def test_trials_keep_their_nested_reference():
    d = {"split": "test", "n": 32, "seed": 2000, "reference": {"split": "test", "n": 32, "seed": 2001}}
    t = Trials.from_dict(d)
    assert t.reference == Trials(split="test", n=32, seed=2001)
    assert t.to_dict() == d


def test_run_meta_of_a_run_made_before_jobs_were_recorded_loads():
    d = {"config": {"run": {"name": "r"}}, "config_hash": "h", "base": {"name": "cogbase-6l", "weights_sha256": None},
         "versions": {}, "device": "cpu", "created": "2026-01-01 00:00:00"}
    meta = RunMeta.from_dict(d)
    assert meta.jobs is None and meta.to_dict() == d
