"""Every typed result of the API saves itself as JSON + NPZ and loads back equal, field by field, without
unpickling; a file that names another type, or an NPZ holding objects, is refused."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from experiments import api as cc
from interp import result_io
from interp.result_base import Result
from interp.result_io import load_provenance, load_result, save_result


def same(a, b, where="result") -> None:
    """Equal by an independent walk: types, array dtypes and values (NaN equal to NaN), tuples stay tuples."""
    assert type(a) is type(b), (where, type(a), type(b))
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def results(tiny_trained, tiny_base):
    ft = cc.load(tiny_trained, device="cpu")
    base = cc.load(tiny_base, device="cpu")
    pairs = cc.pairs(ft, 6, seed=0)
    trials = cc.trials(ft, 24, seed=1)
    return {
        "patching": cc.patch(ft, pairs, what="heads_by_pos"),
        "attribution": cc.attribute(ft, trials, neuron_layers=[1]),
        "ablation": cc.ablate(ft, trials),
        "neurons": cc.neurons(ft, cc.trials(ft, 32, seed=2), layers=[0], top_k=3),
        "circuit": cc.discover(ft, pairs, method="eap", n_random=1),
        "comparison": cc.compare([ft], base, cc.trials(base, 24, seed=3)),
        "attention": cc.attention(ft, pairs, [(0, 0), (1, 1)], trial=0),
        "evaluation": cc.evaluate(ft, 48),
    }


@pytest.mark.parametrize("name", ["patching", "attribution", "ablation", "neurons", "circuit", "comparison",
                                  "attention", "evaluation"])
def test_every_result_round_trips_through_its_files(results, tmp_path, name):
    r = results[name]
    json_path, npz_path = r.to_files(tmp_path / name, provenance={"seed": 0, "model": "tiny"})
    assert json_path.exists() and npz_path.exists()
    back = type(r).from_files(tmp_path / name)
    same(r, back)
    assert load_provenance(tmp_path / name) == {"seed": 0, "model": "tiny"}
    # the arrays really live in the NPZ, not as lists in the JSON (catches an encoder that flattens them)
    n_arrays = len(np.load(npz_path).files)
    assert (n_arrays > 0) == ('"__array__"' in json_path.read_text())


def test_a_file_of_another_type_is_refused(results, tmp_path):
    results["ablation"].to_files(tmp_path / "a")
    with pytest.raises(TypeError, match="holds a Ablation, not a Patching"):
        type(results["patching"]).from_files(tmp_path / "a")


def test_a_file_naming_a_type_outside_the_results_is_refused(results, tmp_path):
    """Only result types at the top and only the plain dataclasses results hold inside: a file cannot make the
    loader construct anything else, nor import a module outside the project."""
    import sys

    save_result(results["patching"], tmp_path / "p")
    meta = json.loads((tmp_path / "p.json").read_text())
    for type_, module in (("Popen", "subprocess"), ("CircuitCurve", "interp.faithfulness"), ("Thing", "antigravity")):
        (tmp_path / "p.json").write_text(json.dumps({**meta, "type": type_, "module": module}))
        with pytest.raises(ValueError, match="not a result type"):
            load_result(tmp_path / "p")
    assert "antigravity" not in sys.modules  # refused before any import
    nested = json.loads(json.dumps(meta))
    nested["fields"]["result"]["__type__"] = "Evaluation"  # a result type where only PatchResult may be
    (tmp_path / "p.json").write_text(json.dumps(nested))
    with pytest.raises(ValueError, match="inside a result"):
        load_result(tmp_path / "p")


def test_an_npz_from_another_save_is_refused(results, tmp_path):
    """A .json is read only with the .npz saved with it (e.g. not a stale one left by an interrupted rewrite)."""
    a = results["ablation"]
    save_result(a, tmp_path / "a")
    other = dataclasses.replace(a, accuracy=a.accuracy + 1)
    save_result(other, tmp_path / "b")
    (tmp_path / "b.npz").replace(tmp_path / "a.npz")
    with pytest.raises(ValueError, match="sha256 differs"):
        load_result(tmp_path / "a")


def test_an_npz_holding_objects_is_refused_not_unpickled(results, tmp_path):
    import hashlib

    save_result(results["evaluation"], tmp_path / "e")
    np.savez(tmp_path / "e.npz", a0=np.array([{"x": 1}], dtype=object))
    meta = json.loads((tmp_path / "e.json").read_text())
    meta["npz_sha256"] = hashlib.sha256((tmp_path / "e.npz").read_bytes()).hexdigest()  # as if saved together
    (tmp_path / "e.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_result(tmp_path / "e")


def test_a_result_type_loads_in_a_process_that_has_not_imported_it(tmp_path, monkeypatch):
    """A new analysis's result type lives in its own project module: a process that never imported it (export,
    the report, a coordinator gathering a worker's results) imports it from the module the file records."""
    import sys

    from interp import result_io
    from interp.result_base import RESULT_TYPES

    pkg = tmp_path / "plantedpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "planted.py").write_text(
        "from dataclasses import dataclass\nimport numpy as np\nfrom interp.result_base import Result\n\n"
        "@dataclass(frozen=True, eq=False)\nclass PlantedOnly(Result):\n    values: np.ndarray\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from plantedpkg.planted import PlantedOnly

    PlantedOnly(np.arange(3.0)).to_files(tmp_path / "r")
    del RESULT_TYPES["PlantedOnly"], sys.modules["plantedpkg.planted"]  # as in a fresh process
    with pytest.raises(ValueError, match="not one results are imported from"):
        load_result(tmp_path / "r")  # plantedpkg is not a project package
    monkeypatch.setattr(result_io, "IMPORTABLE", ("plantedpkg.",))
    back = load_result(tmp_path / "r")
    assert type(back).__name__ == "PlantedOnly" and back.values.tolist() == [0.0, 1.0, 2.0]
    del RESULT_TYPES["PlantedOnly"], sys.modules["plantedpkg.planted"]


def test_a_result_type_name_is_registered_once(tmp_path):
    """Defining a result type registers it for loading; a second, different class of the same name is refused
    (else a file would load as whichever class was defined last)."""
    from dataclasses import dataclass

    from interp.result_base import RESULT_TYPES, Result

    @dataclass(frozen=True, eq=False)
    class OneNumber(Result):
        x: float

    assert RESULT_TYPES["OneNumber"] is OneNumber
    OneNumber(2.5).to_files(tmp_path / "n")
    assert load_result(tmp_path / "n").x == 2.5
    with pytest.raises(TypeError, match="already defined"):
        type("Patching", (Result,), {"__module__": "somewhere.else"})


@dataclasses.dataclass(frozen=True, eq=False)
class PlantedRows(Result):
    rows: tuple


def test_a_circuits_edges_are_stored_as_columns_not_one_json_entry_each(results, tmp_path):
    """~50,000 edges of a 30-layer model took 6 MB of JSON; as columns in the NPZ they take a few hundred KB."""
    c = results["circuit"]
    assert len(c.edges) >= result_io.ROWS_MIN  # else this test would not reach the row tables
    json_path, _ = save_result(c, tmp_path / "c")
    edges = json.loads(json_path.read_text())["fields"]["edges"]
    assert set(edges) == {"__rows__"} and len(edges["__rows__"]) == 3
    assert load_result(tmp_path / "c").edges == c.edges


def test_a_row_table_reads_back_with_its_values_and_types_exactly(tmp_path):
    """Strings through their index (an index off by one, or distinct values reordered without remapping, would
    change them), floats at float64 (float32 columns would lose digits), ints as ints, NaN as NaN."""
    rng = np.random.default_rng(0)
    rows = tuple((f"L{int(i) % 7}H{int(i) % 3}", float(rng.normal()) / 3, int(i) - 50, "MLP") for i in range(99))
    rows = (*rows, ("L9H9", float("nan"), 10**12, "MLP"))
    save_result(PlantedRows(rows), tmp_path / "r")
    assert '"__rows__"' in (tmp_path / "r.json").read_text()
    same(PlantedRows(rows), load_result(tmp_path / "r"))


@pytest.mark.parametrize("odd", [("a", 3, 1), ("a", 0.5, True), ("a", 0.5), ["a", 0.5, 1]],
                         ids=["int-among-floats", "bool-among-ints", "shorter-row", "a-list-row"])
def test_rows_that_are_not_one_table_stay_tuples_with_their_types(tmp_path, odd):
    """A column whose types differ from the first row's, a bool, a row of another length or a list is kept as
    plain tuples: the types read back are the ones written (an encoder that took the first row's types would read
    3 back as 3.0, or True as 1)."""
    rows = (*(("x", i / 7, i) for i in range(40)), tuple(odd) if isinstance(odd, tuple) else odd)
    save_result(PlantedRows(rows), tmp_path / "r")
    assert '"__rows__"' not in (tmp_path / "r.json").read_text()
    same(PlantedRows(rows), load_result(tmp_path / "r"))


def test_a_file_of_the_previous_format_still_loads(results, tmp_path, monkeypatch):
    """Format 2 (no row tables, an uncompressed NPZ) was written by the version before: records committed then
    (a study recorded model by model across sessions) must keep loading."""
    c = results["circuit"]
    monkeypatch.setattr(result_io, "FORMAT", 2)
    monkeypatch.setattr(result_io, "ROWS_MIN", 10**9)
    monkeypatch.setattr(result_io.np, "savez_compressed", np.savez)
    save_result(c, tmp_path / "old")
    monkeypatch.undo()
    meta = json.loads((tmp_path / "old.json").read_text())
    assert meta["format"] == 2 and '"__rows__"' not in json.dumps(meta)
    same(c, load_result(tmp_path / "old"))
    meta["format"] = 1
    (tmp_path / "old.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format 1"):
        load_result(tmp_path / "old")


def test_the_compaction_script_rewrites_format_2_files_and_changes_no_value(results, tmp_path, monkeypatch):
    """scripts/compact_results.py (for records committed in format 2): the circuit reads back equal, the neuron
    arrays equal to float32 of the originals, a file already in format 3 is left alone, and a second pass rewrites
    nothing."""
    import subprocess
    import sys
    from pathlib import Path

    folder = tmp_path / "run" / "results" / "per_model" / "m"
    folder.mkdir(parents=True)
    monkeypatch.setattr(result_io, "FORMAT", 2)
    monkeypatch.setattr(result_io, "ROWS_MIN", 10**9)
    monkeypatch.setattr(result_io.np, "savez_compressed", np.savez)
    n = results["neurons"]
    wide = {f: getattr(n, f).astype(np.float64) for f in ("coef", "r2", "coef_correct", "r2_correct")}
    save_result(results["circuit"], folder / "circuit", provenance={"seed": 7})
    save_result(dataclasses.replace(n, **wide), folder / "neurons", provenance={"seed": 7})  # as format 2 held them
    monkeypatch.undo()
    save_result(results["ablation"], folder / "ablation")
    untouched = (folder / "ablation.npz").read_bytes()
    script = Path(__file__).resolve().parents[2] / "scripts" / "compact_results.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().endswith("2 files rewritten in format 3")
    same(results["circuit"], load_result(folder / "circuit"))
    back = load_result(folder / "neurons")
    assert n.coef.dtype == np.float32  # the analysis now writes float32
    for f in ("coef", "r2", "coef_correct", "r2_correct"):
        assert getattr(back, f).dtype == np.float32 and np.array_equal(getattr(back, f), getattr(n, f))
    assert load_provenance(folder / "neurons") == {"seed": 7}
    assert (folder / "ablation.npz").read_bytes() == untouched
    again = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                           check=True).stdout
    assert again.strip().endswith("0 files rewritten in format 3")
    half = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "--neurons-float16"],
                          capture_output=True, text=True, check=True).stdout
    assert half.strip().endswith("1 files rewritten in format 3")  # the neurons only
    back = load_result(folder / "neurons")
    for f in ("coef", "r2", "coef_correct", "r2_correct"):
        assert getattr(back, f).dtype == np.float16 and np.array_equal(getattr(back, f), getattr(n, f).astype(np.float16))
    assert back.top == n.top


@dataclasses.dataclass(frozen=True, eq=False)
class PlantedArrays(Result):
    arrays: tuple


def test_equal_arrays_are_stored_once_and_read_back_apart(tmp_path):
    """A neuron analysis of a model that is always right holds coef_correct == coef: stored once. Arrays with the
    same bytes but another dtype or shape are not equal (zeros as float32 and int32; 6 values as [6] and [2, 3])."""
    a = np.arange(6, dtype=np.float32)
    arrays = (a, a.copy(), np.zeros(6, np.float32), np.zeros(6, np.int32), a.reshape(2, 3), a + 1)
    _, npz = save_result(PlantedArrays(arrays), tmp_path / "r")
    assert len(np.load(npz).files) == 5
    back = load_result(tmp_path / "r")
    same(PlantedArrays(arrays), back)
    back.arrays[0][0] = 99.0
    assert back.arrays[1][0] == 0.0
