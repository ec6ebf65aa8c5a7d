"""Rewrite a run's typed result files (results/per_model/*/*.json + .npz) written in result format 2 in the current
format: a circuit's edges as columns in a compressed NPZ (6 MB -> ~0.3 MB for a 30-layer model), equal arrays
stored once, and a neuron analysis's arrays in float32 (3.7 -> 1.8 MB), as `interp.neurons` now writes them.
Values are otherwise unchanged: each rewritten file is loaded back and compared with what was meant to be written,
field by field. Files already in the current format are left alone (unless --rewrite), so running it twice
changes nothing.

--neurons-float16 stores the neuron regression arrays (coef, r2 and their with-the-correct-answer twins) in
float16, for a study whose records are committed: rounding changes a value by at most 4.9e-4 (|beta| <= 1.2)
while the sampling standard error of one neuron's R^2 over 128 trials is ~0.06. Everything that ranks neurons
(`top`) was computed before, at float64.

    python scripts/compact_results.py docs/smollm2-study/run [--neurons-float16] [--rewrite]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from interp import result_io
from interp.result_io import load_provenance, load_result, save_result
from interp.results import Neurons


NEURON_ARRAYS = ("coef", "r2", "coef_correct", "r2_correct")


def _neurons_as(r: Neurons, dtype: type) -> Neurons:
    arrays = {f: getattr(r, f) for f in NEURON_ARRAYS}
    return dataclasses.replace(r, **{f: None if a is None else np.asarray(a, dtype=dtype) for f, a in arrays.items()})


def _same(a: object, b: object) -> bool:
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    return a == b


def compact(run: Path, neurons_float16: bool = False, rewrite: bool = False) -> list[tuple[Path, int, int]]:
    """Rewrite each format-2 result file under `run`/results/per_model (each one with `rewrite`; with
    `neurons_float16`, each neuron analysis not yet in float16); returns (stem, bytes before, after)."""
    done = []
    neuron_dtype = np.float16 if neurons_float16 else np.float32
    for meta_path in sorted((run / "results" / "per_model").glob("*/*.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("format") not in result_io.READS or "type" not in meta:
            continue
        stem = meta_path.with_suffix("")
        r = load_result(stem)
        recast = isinstance(r, Neurons) and r.coef.dtype != neuron_dtype
        if not (meta["format"] == 2 or rewrite or (recast and neurons_float16)):
            continue
        before = meta_path.stat().st_size + stem.with_suffix(".npz").stat().st_size
        new = _neurons_as(r, neuron_dtype) if recast else r
        save_result(new, stem, load_provenance(stem))
        if not _same(new, load_result(stem)):
            raise RuntimeError(f"{stem} does not read back as written")
        done.append((stem, before, meta_path.stat().st_size + stem.with_suffix(".npz").stat().st_size))
    return done


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--neurons-float16", action="store_true", help="neuron regression arrays in float16")
    p.add_argument("--rewrite", action="store_true", help="rewrite files already in the current format too")
    args = p.parse_args()
    if not (args.run / "results" / "per_model").is_dir():
        print(f"error: {args.run} has no results/per_model folder", file=sys.stderr)
        return 2
    done = compact(args.run, args.neurons_float16, args.rewrite)
    for stem, before, after in done:
        print(f"{stem.relative_to(args.run)}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    print(f"{len(done)} files rewritten in format {result_io.FORMAT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
