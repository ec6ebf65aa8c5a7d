"""SmolLM2-135M training step on CPU: float32 against bf16 autocast, fused against foreach AdamW, torch.compile, threads.

One process, the same batches (the default task, batch 16, the scratch twin's shapes: every weight trains), each
variant timed over `--steps` steps after `--warmup` untimed ones. Then the accuracy curve of a short fine-tune of the
pretrained model in float32 and in the adopted setting (validation accuracy every 25 steps), so a speed-up that
changes what the model learns shows. Prints a markdown table for benches/RESULTS.md.

    python benches/smollm2_step.py [--steps 8] [--warmup 2] [--finetune 75] [--compile]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def time_variant(model, tok, task, bf16: bool, fused: bool, steps: int, warmup: int, compiled: bool = False):  # noqa: ANN001, ANN201
    from experiments.training.train import TrainConfig, answer_logits, training_batch

    tcfg = TrainConfig(steps=100, batch_size=16, lr=1e-5)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-5, fused=fused or None, foreach=None if fused else True)
    fwd = torch.compile(answer_logits) if compiled else answer_logits
    times, n_tok = [], 0
    for step in range(warmup + steps):
        b = training_batch(task, tcfg, step, tok)
        toks, ans = torch.as_tensor(b.tokens), torch.as_tensor(b.answer_ids)
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(fwd(model, toks, bf16), ans)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= warmup:
            times.append(time.perf_counter() - t)
            n_tok += toks.numel()
    return sum(times) / len(times), n_tok / sum(times)


def finetune_curve(bf16: bool, steps: int) -> tuple[list[tuple[int, float, float]], float]:
    import tempfile
    from pathlib import Path

    from experiments.training.train import ModelConfig, TrainConfig, train
    from tasks.cdm import CDMConfig

    tcfg = TrainConfig(steps=steps, batch_size=16, lr=1e-4, warmup=10, eval_every=25, eval_size=256,
                       target_accuracy=1.0, target_incongruent=1.0, checkpoint_every=1000, seed=7, device="cpu", bf16=bf16)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        m = train({"task": CDMConfig(heldout_number_range=(70, 99)), "model": ModelConfig(base="smollm2-135m"),
                   "train": tcfg}, Path(d) / "ft", progress=False)
        wall = time.perf_counter() - t
        import json

        curve = json.loads((Path(d) / "ft" / "curve.json").read_text())
    pts = [(c["step"], c["val_accuracy"], c["val_incongruent_accuracy"]) for c in curve]
    return pts + [(-1, m["test_accuracy"], m["test_incongruent_accuracy"])], wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--finetune", type=int, default=75, help="steps of the short fine-tune per setting (0: skip)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compilation)")
    a = ap.parse_args()
    from experiments.training.train import ModelConfig, TrainConfig, init_model
    from tasks.cdm import CDMConfig

    from importlib.metadata import version

    task = CDMConfig(heldout_number_range=(70, 99))
    print(f"torch {torch.__version__}, transformer-lens {version('transformer-lens')}, "
          f"{os.cpu_count()} CPUs; batch 16; {a.steps} timed steps after {a.warmup}")
    print("| threads | autocast | AdamW | compile | s/step | tokens/s |")
    print("|---|---|---|---|---|---|")
    variants = [(2, False, False, False), (2, False, True, False), (2, True, False, False), (2, True, True, False),
                (1, True, True, False)]
    if a.compile:
        variants.append((2, True, True, True))
    ref = None
    for threads, bf16, fused, compiled in variants:
        torch.set_num_threads(threads)
        model, tok, _ = init_model(ModelConfig(init="scratch", base="smollm2-135m"), TrainConfig(seed=0), "cpu")
        model.train()
        s, tps = time_variant(model, tok, task, bf16, fused, a.steps, a.warmup, compiled)
        ref = ref or s
        print(f"| {threads} | {'bf16' if bf16 else 'float32'} | {'fused' if fused else 'foreach'} | "
              f"{'yes' if compiled else 'no'} | {s:.2f} ({ref / s:.2f}x) | {tps:.0f} |", flush=True)
    torch.set_num_threads(2)
    if a.finetune:
        for bf16 in (False, True):
            pts, wall = finetune_curve(bf16, a.finetune)
            shown = ", ".join(f"{s}: {acc:.3f}/{inc:.3f}" for s, acc, inc in pts if s > 0)
            test = pts[-1]
            print(f"fine-tune {'bf16 autocast' if bf16 else 'float32'} (fused AdamW, seed 7): validation "
                  f"accuracy/incongruent by step {shown}; test {test[1]:.3f}/{test[2]:.3f}; {wall:.0f} s", flush=True)


if __name__ == "__main__":
    main()
