"""Claim C's first confound test (issue #36 item 4): does the frozen base already carry the value of numbers 70-99,
which the task's training never shows, in the form it carries 10-69?

A ridge probe per layer, at the last token of the "motion, left" number, fitted on validation trials (numbers
10-69) and scored on held-out trials (numbers 70-99), for the base and, as the baseline, for an untrained model of
the same architecture (its seed-0 scratch draw). Prints a table and writes JSON.

    python scripts/number_probe.py --base smollm2-135m --out docs/smollm2-study/number-probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from experiments.run.config import load_run_config
from interp.models import base_arch_and_tokenizer, build_scratch, load_model
from interp.probes import residual_at, value_probe
from interp.store import atomic_write_json, versions
from tasks.registry import generate

SYMBOL = "motion.left0"


def last_position(labels: list[str], name: str) -> int:
    """The last position of a symbol that a tokenizer may split ("motion.left0 (2/3)" ...)."""
    return max(i for i, lab in enumerate(labels) if lab == name or lab.startswith(name + " ("))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="experiments/configs/smollm2-referee.toml", help="its [task] section is used")
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    t0 = time.time()
    task = load_run_config(a.config)["task"]
    base, tok, _ = load_model(a.base)
    fit, test = (generate(task, a.n, seed=11, tokenizer=tok, split=s) for s in ("val", "gen"))
    pos = last_position(list(fit.position_labels), SYMBOL)
    y_fit, y_test = fit.meta["numbers"][:, 0, 0, 0], test.meta["numbers"][:, 0, 0, 0]
    arch, _ = base_arch_and_tokenizer(a.base)
    rows = {}
    for name, model in (("base", base), ("untrained (scratch draw, seed 0)", build_scratch(arch, tok, 0))):
        curve = value_probe(residual_at(model, fit.tokens, pos), y_fit, residual_at(model, test.tokens, pos), y_test,
                            a.alpha)
        rows[name] = curve.to_dict()
    body = {"what": "ridge probe of the motion-left number's value per residual point (layer l's input; last: the "
                    "last layer's output), fitted on numbers 10-69 (val split) and scored on 70-99 (gen split)",
            "base": a.base, "position": pos, "fit_range": [int(y_fit.min()), int(y_fit.max())],
            "test_range": [int(y_test.min()), int(y_test.max())], "probes": rows, "versions": versions(),
            "seconds": round(time.time() - t0, 1)}
    atomic_write_json(a.out, body)
    print(f"{'point':>6} " + " ".join(f"{n[:24]:>26}" for n in rows))
    for l in range(len(next(iter(rows.values()))["r2"])):
        print(f"{l:>6} " + " ".join(f"R2 {r['r2'][l]:7.3f} rho {r['spearman'][l]:6.3f}   " for r in rows.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
