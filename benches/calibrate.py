"""Calibrate a run config's budget on whatever device is at hand: ms per training step and seconds per analysis
stage, then what the whole `cogcircuits run` of that config costs.

The model is a random one of the config's shape (or of a named shape: `gpt2-small` is GPT-2 small, 124M parameters,
on the shipped tokenizer's ids), so nothing is downloaded and timings do not depend on training. Analyses are timed
on the config's pairs (or fewer, `--pairs`) with 0 and 2 random circuits and extrapolated linearly to the config's
sizes: a stage's cost is proportional to its batch, and circuit discovery is a fixed part plus one part per random
circuit (random circuits share forwards, more of them on fewer pairs: time circuits on the config's pairs). The
budget's upper bound uses every model's full step budget; `--expect-steps` gives a typical case.

    python benches/calibrate.py --config experiments/configs/paper-gpt2.toml --shape gpt2-small [--device cuda]
    python benches/calibrate.py --config experiments/configs/default.toml            # the shipped base's shape

Without a GPU, `--gpu-ms-per-step MS` also prints the budget with training steps at MS and every analysis sped up
by the same factor as a training step (an assumption, stated in the output: it is an estimate, not a measurement).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from experiments.analysis import stages  # noqa: E402
from experiments.run.config import load_run_config  # noqa: E402
from experiments.core.state import lr_lambda  # noqa: E402
from experiments.training.train import make_optimizer, pick_device, to_device, train_step  # noqa: E402
from interp.arch import Arch  # noqa: E402
from interp.faithfulness import CircuitEvaluator  # noqa: E402
from interp.metrics import evaluate_batch  # noqa: E402
from interp.models import base_arch_and_tokenizer, build_scratch, resolve_base  # noqa: E402
from tasks.cdm import generate  # noqa: E402

SHAPES = {"gpt2-small": Arch(n_layers=12, d_model=768, n_heads=12, d_mlp=3072, d_vocab=50257, n_ctx=1024)}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn, *args, **kw) -> float:  # noqa: ANN001
    sync(device)
    t0 = time.perf_counter()
    fn(*args, **kw)
    sync(device)
    return time.perf_counter() - t0


def step_ms(model, tok, task, tcfg, device: str, n: int) -> float:  # noqa: ANN001
    """Mean ms of the project's own training step (task generation, copy, forward, backward, AdamW), after 2
    warm-up steps."""
    opt = make_optimizer(model, tcfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tcfg.warmup, tcfg.steps, tcfg.min_lr_frac))
    bf16 = tcfg.bf16 and device.startswith("cuda")

    def one(step: int) -> None:
        b = generate(task, tcfg.batch_size, seed=step, tokenizer=tok, split="train")
        train_step(model, opt, sched, to_device(b.tokens, device), to_device(b.answer_ids, device), tcfg.grad_clip,
                   bf16)

    for s in range(2):
        one(s)
    return 1000 * timed(device, lambda: [one(2 + s) for s in range(n)]) / n


def stage_seconds(model, base, task, rc, pairs: int, device: str, maps: bool = True  # noqa: ANN001
                  ) -> dict[str, float]:
    """Seconds per model of each per-model stage at the config's sizes, extrapolated from `pairs` pairs and
    4 x `pairs` trials (evaluation, representations, reliance)."""
    scale, n = rc.n_pairs / pairs, 4 * pairs
    model.eval()
    out = {"evaluate": timed(device, stages.evaluate_model, model, task, n, seed=0) * rc.n_eval / n}
    for detailed in (False, True) if maps else (False,):
        t = timed(device, stages.analyse_model, model, task, rc.corruption, pairs, seed=0, ablation=rc.ablation,
                  detailed=detailed)
        out["analyses (per-position maps)" if detailed else "analyses"] = t * scale
    with curves_always_defined():
        disc = [timed(device, stages.discover, model, task, rc.corruption, pairs, seed=0, method=rc.circuit_method,
                      ablation=rc.circuit_ablation, n_random=r, level=rc.circuit_level,
                      overlap_fraction=rc.overlap_fraction) for r in (0, 2)]
    out["circuits"] = (disc[0] + (disc[1] - disc[0]) / 2 * rc.circuit_random) * scale
    out["circuit scores only (the base)"] = timed(device, stages.base_ranking, base, task, rc.corruption, pairs, seed=0,
                                                  method=rc.circuit_method) * scale
    rel = generate(task, n, seed=0, tokenizer=model.tokenizer, split="test")
    out["compare (per model)"] = (timed(device, stages.representations_of, {"m": model}, task, n, 0) * rc.n_compare / n
                                  + timed(device, stages.reliance, model, base, rel) * rc.n_reliance / n)
    return out


@contextmanager
def curves_always_defined() -> Iterator[None]:
    """A random model has no clean-corrupted gap, so its faithfulness curves are undefined and `discover` skips
    their random circuits; for timing, the curves are computed as if defined (the work a trained model costs)."""
    real = CircuitEvaluator.baseline
    CircuitEvaluator.baseline = lambda self, level: (*real(self, level)[:2], True)
    try:
        yield
    finally:
        CircuitEvaluator.baseline = real


def budget(cfg: dict, ms: float, st: dict[str, float], steps: dict[str, int]) -> dict[str, float]:  # noqa: ANN001
    """Seconds of a whole run: training (+ validation every eval_every steps) and the per-model stages."""
    rc = cfg["run"]
    seeds = {"finetune": len(rc.seeds), "scratch": len(rc.scratch_seeds if rc.scratch_seeds is not None else rc.seeds)}
    train = sum(seeds[k] * steps[k] * ms / 1000 * (1 + st["eval_per_step"] / cfg[k].eval_every) for k in seeds)
    n = sum(seeds.values())
    per = st["evaluate"] + st["analyses"] + st["circuits"] + st["compare (per model)"]
    maps = st.get("analyses (per-position maps)")  # None with --skip-maps: not in the budget (printed)
    first = 2 * (maps - st["analyses"]) if rc.detailed_maps and maps is not None else 0.0
    analyses = n * per + first + st["evaluate"] + st["circuit scores only (the base)"]
    return {"training": train, "analyses": analyses, "total": train + analyses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="experiments/configs/default.toml")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="a named shape instead of the config's base")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=5, help="training steps timed")
    ap.add_argument("--pairs", type=int, help="pairs the analyses are timed on (default: the config's n_pairs; fewer "
                    "is faster but random circuits are batched better on fewer pairs, so circuits are underestimated)")
    ap.add_argument("--expect-steps", type=int, nargs=2, metavar=("FINETUNE", "SCRATCH"),
                    help="typical steps to criterion, for a typical-case budget")
    ap.add_argument("--gpu-ms-per-step", type=float, help="print the budget at this training step cost")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-maps", action="store_true", help="do not time the per-position patching maps")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_run_config(args.config)
    args.pairs = args.pairs or cfg["run"].n_pairs
    device = pick_device(args.device)
    arch, tok = base_arch_and_tokenizer(resolve_base("cogbase-6l") if args.shape else cfg["model"].base)
    if args.shape:
        arch = dataclasses.replace(SHAPES[args.shape], n_ctx=max(arch.n_ctx, 64))
    task = cfg["task"]
    model, base = build_scratch(arch, tok, 0, device), build_scratch(arch, tok, 1, device)
    n_params = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; shape: {args.shape or cfg['model'].base} ({arch.n_layers} layers, d_model "
          f"{arch.d_model}, {n_params / 1e6:.1f}M parameters); config: {Path(args.config).name}")
    tcfg = cfg["finetune"]
    model.train()
    ms = step_ms(model, tok, task, tcfg, device, args.steps)
    print(f"training step (batch {tcfg.batch_size}, bf16 {tcfg.bf16 and device.startswith('cuda')}): {ms:.1f} ms")
    val = generate(task, 4 * args.pairs, seed=0, tokenizer=tok, split="val")
    model.eval()
    ev = timed(device, evaluate_batch, model, val) * tcfg.eval_size / len(val)
    st = stage_seconds(model, base, task, cfg["run"], args.pairs, device, maps=not args.skip_maps)
    st["eval_per_step"] = ev / (ms / 1000)  # one validation pass, in training steps
    print(f"validation pass ({tcfg.eval_size} trials): {ev:.2f} s")
    for k, v in st.items():
        if k != "eval_per_step":
            print(f"  {k}: {v:.1f} s per model (config sizes, from {args.pairs} pairs / {4 * args.pairs} trials)")
    if args.skip_maps and cfg["run"].detailed_maps:
        print("  per-position maps (first model of each init): NOT timed (--skip-maps), not in the budget below")
    full = {"finetune": cfg["finetune"].steps, "scratch": cfg["scratch"].steps}
    cases = [("upper bound (every model uses its full step budget)", full)]
    if args.expect_steps:
        cases.append(("typical (steps to criterion as given)", dict(zip(("finetune", "scratch"), args.expect_steps))))
    for label, steps in cases:
        b = budget(cfg, ms, st, steps)
        print(f"{label}: training {b['training'] / 60:.1f} min + analyses {b['analyses'] / 60:.1f} min = "
              f"{b['total'] / 60:.1f} min")
        if args.gpu_ms_per_step:
            f = args.gpu_ms_per_step / ms
            g = budget(cfg, args.gpu_ms_per_step, {k: (v if k == "eval_per_step" else v * f) for k, v in st.items()},
                       steps)
            print(f"  ESTIMATE at {args.gpu_ms_per_step} ms/step, analyses sped up {1 / f:.0f}x like a training step "
                  f"(assumed, not measured): {g['total'] / 60:.1f} min")


if __name__ == "__main__":
    main()
