"""Wall time of the main job (`bash scripts/demo.sh`'s `cogcircuits run experiments/configs/default.toml`), per stage.

Runs the default config into --out (a new folder) in a child process, exactly as the demo does, and prints each
stage's seconds (from the run's own `stages/<step>.json`), the total wall time against the 600 s goal, and the
headline numbers (steps to criterion, test accuracy, verdicts) so a speed change that changes results shows.

    python benches/default_run.py --out runs/bench-default [--against runs/other-default]

--against compares the results files of two runs (parsed JSON, volatile fields left out) and lists differences.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

GOAL_S = 600
VOLATILE = {"created", "seconds", "wall_s", "executor", "refs", "attempts", "resumed_from_step", "versions"}


def strip(x):  # noqa: ANN001, ANN201
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def max_rel_diff(x, y) -> float:  # noqa: ANN001
    """Largest |x - y| / max(1, |y|) over the numbers of two parsed JSON values of the same shape; inf when their
    structure or any non-number differs."""
    if isinstance(x, dict) and isinstance(y, dict):
        return max((max_rel_diff(x[k], y[k]) for k in x), default=0.0) if x.keys() == y.keys() else float("inf")
    if isinstance(x, list) and isinstance(y, list):
        return max((max_rel_diff(u, v) for u, v in zip(x, y)), default=0.0) if len(x) == len(y) else float("inf")
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
        if x != x and y != y:  # both NaN
            return 0.0
        return abs(x - y) / max(1.0, abs(y))
    return 0.0 if x == y else float("inf")


def compare(a: Path, b: Path) -> list[str]:
    """Every results JSON of run a against run b: 'equal', or the largest relative difference of its numbers."""
    diffs = []
    for f in sorted((a / "results").glob("*.json")):
        g = b / "results" / f.name
        if not g.exists():
            diffs.append(f"{f.name}: missing in {b}")
            continue
        x, y = strip(json.loads(f.read_text())), strip(json.loads(g.read_text()))
        if x != y:
            diffs.append(f"{f.name}: largest relative difference {max_rel_diff(x, y):.2e}")
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--against", help="another run folder of the same config to compare results with")
    a = ap.parse_args()
    out = Path(a.out)
    if out.exists():
        sys.exit(f"error: --out {out} exists: give a new folder")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments.cli", "run", str(repo / "experiments/configs/default.toml"),
                    "--out", str(out), "--quiet"], check=True, env=env, cwd=repo)
    wall = time.perf_counter() - t0
    print("| stage | seconds |\n|---|---|")
    for f in sorted((out / "stages").glob("*.json"), key=lambda p: p.stat().st_mtime):
        print(f"| {f.stem} | {json.loads(f.read_text())['seconds']:.1f} |")
    print(f"| total (process wall time) | {wall:.1f} |")
    print(f"goal <= {GOAL_S} s: {'met' if wall <= GOAL_S else 'missed'}")
    ev = json.loads((out / "results" / "evaluate.json").read_text())
    for mid, r in ev["models"].items():
        t = r.get("training", {})
        if "test" in r:
            print(f"{mid}: steps to criterion {t.get('steps_to_criterion')}, test accuracy {r['test']['accuracy']:.3f} "
                  f"(incongruent {r['test']['incongruent_accuracy']:.3f}), numbers 70-99 {r['gen']['accuracy']:.3f}")
    claims = json.loads((out / "results" / "claims.json").read_text())
    print("verdicts: " + ", ".join(f"{c['key']} {c['verdict']}" for c in claims["claims"]))
    if a.against:
        d = compare(out, Path(a.against))
        print("results equal to " + a.against if not d else "differences: " + "; ".join(d))


if __name__ == "__main__":
    main()
