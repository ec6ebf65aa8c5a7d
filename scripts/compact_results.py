"""Rewrite a run's typed result files (results/per_model/*/*.json + .npz) written in result format 2 in the current
format: a circuit's edges as columns in a compressed NPZ (6 MB -> ~0.3 MB for a 30-layer model) and a neuron
analysis's arrays in float32 (3.7 -> 1.8 MB), as `interp.neurons` now writes them. Values are otherwise unchanged:
each rewritten file is loaded back and compared with the original, field by field. Files already in the current
format are left alone, so running it twice changes nothing.

    python scripts/compact_results.py docs/smollm2-study/run
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


def _float32_neurons(r: Neurons) -> Neurons:
    arrays = {f: getattr(r, f) for f in ("coef", "r2", "coef_correct", "r2_correct")}
    return dataclasses.replace(r, **{f: None if a is None else np.asarray(a, dtype=np.float32)
                                     for f, a in arrays.items()})


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


def compact(run: Path) -> list[tuple[Path, int, int]]:
    """Rewrite each format-2 result file under `run`/results/per_model; returns (stem, bytes before, after)."""
    done = []
    for meta_path in sorted((run / "results" / "per_model").glob("*/*.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != 2 or "type" not in meta:
            continue
        stem = meta_path.with_suffix("")
        before = meta_path.stat().st_size + stem.with_suffix(".npz").stat().st_size
        r = load_result(stem)
        new = _float32_neurons(r) if isinstance(r, Neurons) else r
        save_result(new, stem, load_provenance(stem))
        if not _same(new, load_result(stem)):
            raise RuntimeError(f"{stem} does not read back as written")
        done.append((stem, before, meta_path.stat().st_size + stem.with_suffix(".npz").stat().st_size))
    return done


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    args = p.parse_args()
    if not (args.run / "results" / "per_model").is_dir():
        print(f"error: {args.run} has no results/per_model folder", file=sys.stderr)
        return 2
    done = compact(args.run)
    for stem, before, after in done:
        print(f"{stem.relative_to(args.run)}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    print(f"{len(done)} files rewritten in format {result_io.FORMAT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
