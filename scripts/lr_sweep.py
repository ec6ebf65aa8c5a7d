"""Learning-rate validation sweep behind the default run config's rates (`experiments/configs/default.toml`).

For each init (fine-tuned from the shipped base, and from scratch) and each learning rate, trains on sweep seeds
that the default run does not use, stops at the training criterion (validation split only: the test and
generalisation splits are never looked at), and records the steps to criterion. The rate chosen per init is the
one that meets the criterion on every sweep seed in the fewest steps (mean over seeds); ties go to the smaller
rate. Results are written to experiments/configs/lr_sweep.json and printed as a table.

    python scripts/lr_sweep.py                    # the sweep behind default.toml (about 15 minutes on 2 cores)
    python scripts/lr_sweep.py --lrs 3e-4 1e-3 --seeds 100 --out /tmp/sweep.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from experiments.core.config import to_dict
from experiments.run.config import load_run_config
from experiments.training.train import ModelConfig, TrainConfig, train
from interp.store import atomic_write_json, versions

REPO = Path(__file__).resolve().parents[1]


def sweep(config: Path, lrs: list[float], seeds: list[int], max_steps: int, batch_size: int | None = None) -> dict:
    cfg = load_run_config(config)
    rows = []
    for init, section in (("pretrained", "finetune"), ("scratch", "scratch")):
        bs = batch_size or cfg[section].batch_size
        for lr in lrs:
            for seed in seeds:
                t = TrainConfig(**{**to_dict(cfg[section]), "lr": lr, "seed": seed, "steps": max_steps,
                                   "batch_size": bs,
                                   "warmup": min(cfg[section].warmup, max_steps), "device": "cpu"})
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.time()
                    m = train({"task": cfg["task"], "model": ModelConfig(init=init, base=cfg["model"].base),
                               "train": t}, Path(tmp) / "m", progress=False)
                rows.append({"init": init, "lr": lr, "batch_size": bs, "seed": seed, "met_criterion": m["met_criterion"],
                             "steps": m["steps"], "final_val_accuracy": m.get("final_val_accuracy"),
                             "wall_s": round(time.time() - t0, 1)})
                print(f"{init:>10} lr={lr:<7g} seed={seed}: {'met' if m['met_criterion'] else 'MISSED'} the "
                      f"criterion at step {m['steps']} ({rows[-1]['wall_s']} s)", flush=True)
    chosen = {}
    for init in ("pretrained", "scratch"):
        ok = []
        for lr in lrs:
            rs = [r for r in rows if r["init"] == init and r["lr"] == lr]
            if all(r["met_criterion"] for r in rs):
                ok.append((sum(r["steps"] for r in rs) / len(rs), lr))
        chosen[init] = min(ok)[1] if ok else None
    return {"config": str(config.relative_to(REPO)) if config.is_relative_to(REPO) else config.name,
            "rule": "per init, the rate that meets the criterion on every sweep seed in the fewest mean steps "
                    "(ties: the smaller rate)", "seeds": seeds, "max_steps": max_steps,
            "criterion": {"accuracy": cfg["finetune"].target_accuracy,
                          "incongruent_accuracy": cfg["finetune"].target_incongruent, "split": "val"},
            "rows": rows, "chosen": chosen, "versions": versions()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "experiments" / "configs" / "default.toml")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    ap.add_argument("--max-steps", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, help="override the config's batch size")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "configs" / "lr_sweep.json")
    a = ap.parse_args()
    res = sweep(a.config.resolve(), a.lrs, a.seeds, a.max_steps, a.batch_size)
    atomic_write_json(a.out, res)
    print(f"chosen: fine-tuning lr {res['chosen']['pretrained']}, scratch lr {res['chosen']['scratch']}; wrote {a.out}")


if __name__ == "__main__":
    main()
