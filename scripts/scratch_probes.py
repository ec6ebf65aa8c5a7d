"""The recorded search for a scratch recipe of SmolLM2-135M's 30-layer twin (issue: the study on a real base).

Each probe trains the scratch twin (same architecture and tokenizer, seed 100: never a study seed) for a short,
fixed budget with one recipe, checks validation accuracy and incongruent-trial accuracy every `eval_every` steps,
and writes its learning curve to docs/smollm2-study/probes/<name>.json (small, committed). A probe already
recorded is skipped, so the search resumes across sessions: run it again and it continues with the next probe.

Rule (printed with the table): a probe that meets the training criterion (the fine-tuned arm's: validation
>= 0.98 and incongruent >= 0.95) wins, the earliest step first; otherwise the probes are ranked by their best
incongruent validation accuracy (ties: best overall), since leaving the shortcut plateau (ignoring the cue scores
~0.75 overall but ~0.5 on incongruent trials) is what the search looks for.

    python scripts/scratch_probes.py [--only NAME ...] [--steps N] [--table]
    python scripts/scratch_probes.py --diagnostic NAME ...   (a shallower model of the twin's width: is depth the
                                                               obstacle? never chosen by the rule)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from experiments.core.config import to_dict  # noqa: E402
from experiments.training.train import ModelConfig, TrainConfig, meets_criterion, train  # noqa: E402
from interp.store import atomic_write_json, versions  # noqa: E402
from tasks.cdm import CDMConfig  # noqa: E402

OUT = ROOT / "docs" / "smollm2-study" / "probes"
WORK = ROOT / "runs" / "probes"
SEED = 100
TASK = CDMConfig(heldout_number_range=(70, 99))
BASE = TrainConfig(steps=400, batch_size=16, lr=1e-3, warmup=100, schedule="constant", decay_frac=0.0,
                   min_lr_frac=1.0, beta2=0.99, eval_every=25, eval_size=256, checkpoint_every=100,
                   seed=SEED, device="cpu", bf16=True)

# name -> (initialisation, training recipe, why), most promising first (docs: shared notes on deep scratch recipes)
PROBES: dict[str, tuple[dict, dict, str]] = {
    "depth-lr1e-3": ({"resid_init": "depth"}, {}, "depth-scaled residual writers, lr 1e-3 held"),
    "depth-lr1e-3-curr": ({"resid_init": "depth"}, {"curriculum_steps": 400, "curriculum_incongruent": 0.75},
                          "as above, 75% incongruent trials"),
    "zero-lr1e-3-curr": ({"resid_init": "zero"}, {"curriculum_steps": 400, "curriculum_incongruent": 0.75},
                         "residual writers zero (blocks start as identity), 75% incongruent"),
    "depth-lr3e-4-curr": ({"resid_init": "depth"}, {"lr": 3e-4, "curriculum_steps": 400,
                                                     "curriculum_incongruent": 0.75},
                          "lr 3e-4 (the rate at which the first twin left chance), 75% incongruent"),
    "depth-lr5e-4-curr": ({"resid_init": "depth"}, {"lr": 5e-4, "curriculum_steps": 400,
                                                     "curriculum_incongruent": 0.75}, "lr 5e-4, 75% incongruent"),
    "depth-emb-lr1e-3-curr-b32": ({"resid_init": "depth", "embed_init_std": 1e-4},
                                  {"batch_size": 32, "curriculum_steps": 400, "curriculum_incongruent": 0.75},
                                  "plus small-init embedding, batch 32"),
    "base-lr3e-4-curr-800": ({"resid_init": "base"}, {"lr": 3e-4, "steps": 800, "curriculum_steps": 400,
                                                       "curriculum_incongruent": 0.75},
                             "Llama init (the first twin left chance after ~300 steps with it), lr 3e-4 held, "
                             "75% incongruent for 400 steps, 800 steps"),
    "base-lr3e-4-800": ({"resid_init": "base"}, {"lr": 3e-4, "steps": 800},
                        "Llama init, lr 3e-4 held (the first twin's rate without its cosine decay), 800 steps"),
    "base-lr3e-4-1500": ({"resid_init": "base"}, {"lr": 3e-4, "steps": 1500},
                         "base-lr3e-4-800 (the first probe to leave chance on incongruent trials), 1500 steps"),
    "base-lr3e-4-2000-decay": ({"resid_init": "base"}, {"lr": 3e-4, "steps": 2000, "decay_frac": 0.4,
                                                         "min_lr_frac": 0.1},
                               "base-lr3e-4-1500 (0.957 / 0.946 at step 1450, oscillating around 0.87 from step "
                               "1000) with its rate decayed linearly to 0.1x over steps 1200-2000, to settle"),
}


# Diagnostics, not the twin: the same recipe on a shallower model of SmolLM2's width and tokenizer (its config with
# fewer layers). They say whether the task is learnable from scratch at this width at all, i.e. whether depth is the
# obstacle; they are never chosen by the rule (the study's twin keeps all 30 layers).
DIAGNOSTICS: dict[str, tuple[int, dict, dict, str]] = {
    "6l-base-lr3e-4-800": (6, {"resid_init": "base"}, {"lr": 3e-4, "steps": 800},
                           "6 of the 30 layers, Llama init, lr 3e-4 held, 800 steps (the base-lr3e-4-800 recipe)"),
    "6l-base-lr1e-3-800": (6, {"resid_init": "base"}, {"lr": 1e-3, "steps": 800},
                           "6 of the 30 layers, Llama init, lr 1e-3 held, 800 steps"),
}


def shallow_base(n_layers: int) -> Path:
    """A base folder holding SmolLM2-135M's config with `n_layers` layers and its tokenizer (no weights: scratch
    training reads the architecture and the tokenizer only)."""
    from interp.models import resolve_base

    src, dst = Path(resolve_base("smollm2-135m")), WORK / "_bases" / f"smollm2-{n_layers}l"
    dst.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_hidden_layers"] = n_layers
    (dst / "config.json").write_text(json.dumps(cfg, indent=1))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(src / f, dst / f)
    return dst


def _train_and_record(name: str, mrec: dict, trec: dict, why: str, steps: int | None, base: str | Path,
                      out: Path, extra: dict) -> dict:
    tcfg = replace(BASE, **mrec, **trec, **({"steps": steps} if steps else {}))
    mcfg = ModelConfig(init="scratch", base=str(base))
    work = WORK / name
    t0 = time.time()
    metrics = train({"task": TASK, "model": mcfg, "train": tcfg}, work, resume=work.exists(), progress=True)
    curve = json.loads((work / "curve.json").read_text())
    model = {**to_dict(mcfg), "base": "smollm2-135m", **extra}
    record = {"name": name, "why": why, "seed": SEED, "task": to_dict(TASK), "model": model,
              "train": to_dict(tcfg), "curve": curve, "metrics": metrics, "wall_s": round(time.time() - t0, 1),
              "versions": versions()}
    atomic_write_json(out / f"{name}.json", record)
    shutil.rmtree(work / "state", ignore_errors=True)
    (work / "model.safetensors").unlink(missing_ok=True)  # probes keep their curves, never their weights
    return record


def run_probe(name: str, steps: int | None) -> dict:
    mrec, trec, why = PROBES[name]
    return _train_and_record(name, mrec, trec, why, steps, "smollm2-135m", OUT, {})


def run_diagnostic(name: str, steps: int | None) -> dict:
    n_layers, mrec, trec, why = DIAGNOSTICS[name]
    return _train_and_record(name, mrec, trec, why, steps, shallow_base(n_layers), OUT / "diagnostics",
                             {"n_layers": n_layers, "diagnostic": "not the twin: a shallower model of its width"})


def summary(rec: dict) -> dict:
    curve, t = rec["curve"], TrainConfig(**{k: v for k, v in rec["train"].items()})
    met = [c["step"] for c in curve if meets_criterion(t, c["val_accuracy"], c["val_incongruent_accuracy"])]
    best = max(curve, key=lambda c: (c["val_incongruent_accuracy"], c["val_accuracy"]))
    first = next((c["step"] for c in curve if c["val_incongruent_accuracy"] >= 0.6), None)
    return {"name": rec["name"], "criterion_step": met[0] if met else None,
            "best_incongruent": best["val_incongruent_accuracy"], "at_step": best["step"],
            "accuracy_there": best["val_accuracy"], "first_incongruent_0.6": first,
            "last": (curve[-1]["val_accuracy"], curve[-1]["val_incongruent_accuracy"]), "steps": curve[-1]["step"],
            "s_per_step": round(rec["metrics"]["wall_s"] / max(1, curve[-1]["step"]), 2)}


DEPARTED = 0.6  # incongruent validation accuracy that counts as leaving chance (256 trials: ~ +3 SE above 0.5)


def choose(rows: list[dict]) -> dict | None:
    """The earliest probe to meet the criterion; else, among probes whose incongruent accuracy left chance
    (>= DEPARTED), the best one (ties: overall accuracy); else none."""
    met = [r for r in rows if r["criterion_step"] is not None]
    if met:
        return min(met, key=lambda r: r["criterion_step"])
    left = [r for r in rows if r["best_incongruent"] >= DEPARTED]
    return max(left, key=lambda r: (r["best_incongruent"], r["accuracy_there"])) if left else None


def table() -> str:
    recs = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    rows = [summary(r) for r in recs]
    lines = ["| probe | steps | criterion met at | best incongruent (step, overall) | first incongruent >= 0.6 |"
             " last (overall, incongruent) | wall s/step |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['steps']} | {r['criterion_step'] or 'no'} | {r['best_incongruent']:.3f} "
                     f"({r['at_step']}, {r['accuracy_there']:.3f}) | {r['first_incongruent_0.6'] or 'never'} | "
                     f"{r['last'][0]:.3f}, {r['last'][1]:.3f} | {r['s_per_step']} |")
    pick = choose(rows)
    lines.append("")
    lines.append("Rule: the earliest probe to meet the criterion; else, among probes whose incongruent validation "
                 f"accuracy reached {DEPARTED} (left chance), the best one (ties: overall accuracy); else none.")
    lines.append(f"Chosen: {pick['name'] if pick else 'none yet (no probe has left chance on incongruent trials)'}")
    diag = [json.loads(p.read_text()) for p in sorted((OUT / "diagnostics").glob("*.json"))]
    if diag:
        lines += ["", "Diagnostics (not the twin: the same recipe on a shallower model of its width and tokenizer; "
                  "never chosen):", "", "| diagnostic | layers | steps | criterion met at | best incongruent (step, "
                  "overall) | last (overall, incongruent) |", "|---|---|---|---|---|---|"]
        for rec in diag:
            r = summary(rec)
            lines.append(f"| {r['name']} | {rec['model']['n_layers']} | {r['steps']} | {r['criterion_step'] or 'no'} "
                         f"| {r['best_incongruent']:.3f} ({r['at_step']}, {r['accuracy_there']:.3f}) | "
                         f"{r['last'][0]:.3f}, {r['last'][1]:.3f} |")
    lines.append("")
    lines.append("Wall s/step is the probe's wall time over its steps, including the time it was paused while other "
                 "work used the 2 cores (the step itself costs ~1.7 s in bf16 with fused AdamW: benches/RESULTS.md).")
    return "\n".join(lines)


def write_table() -> str:
    """docs/smollm2-study/probes/TABLE.md: the table of every recorded probe, rewritten from the records."""
    from interp.store import atomic_write_text

    text = table()
    atomic_write_text(OUT / "TABLE.md", "# Scratch recipe probes (written by scripts/scratch_probes.py)\n\n"
                      f"Task: the default decision task, numbers 10-69 (70-99 held out); seed {SEED}; validation "
                      "256 trials.\n\n" + text + "\n")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="run these probes only (in this order)")
    ap.add_argument("--steps", type=int, help="override the probe budget")
    ap.add_argument("--table", action="store_true", help="print the table of recorded probes and stop")
    ap.add_argument("--diagnostic", nargs="*", choices=list(DIAGNOSTICS),
                    help="run these diagnostics (a shallower model of the twin's width) instead of probes")
    a = ap.parse_args()
    for name in a.diagnostic or []:
        if (OUT / "diagnostics" / f"{name}.json").exists():
            print(f"{name}: recorded, skipped", flush=True)
            continue
        print(f"{name}: {summary(run_diagnostic(name, a.steps))}", flush=True)
        write_table()
    if not a.table and a.diagnostic is None:
        for name in a.only or list(PROBES):
            if name not in PROBES:
                sys.exit(f"error: unknown probe {name!r} (known: {', '.join(PROBES)})")
            if (OUT / f"{name}.json").exists():
                print(f"{name}: recorded, skipped", flush=True)
                continue
            rec = run_probe(name, a.steps)
            print(f"{name}: {summary(rec)}", flush=True)
            write_table()
    print(write_table())


if __name__ == "__main__":
    main()
