"""A training step on this project's model (`interp.hooked_lm.HookedLM`) against TransformerLens 4's
`TransformerBridge` booted from the same Hugging Face weights (what a port to the bridge would train), under
TransformerLens 4 only.

Both models are loaded from the same base (the shipped cogbase-6l; `--smollm2` for SmolLM2-135M), and each runs the
same steps: batch 16 of random prompts of the task's length (22 tokens), forward to logits, cross-entropy at the
last position, backward, AdamW. Prints the median seconds per step of each over --steps steps (after 2 warm-up
steps), their ratio, and the largest difference of the two models' logits on one batch before training (they are
the same function: a check that the comparison is fair).

    python benches/bridge_step.py [--smollm2] [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from importlib.metadata import version

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def step_times(model: torch.nn.Module, tokens: torch.Tensor, targets: torch.Tensor, steps: int) -> list[float]:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        logits = model(tokens)[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smollm2", action="store_true")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if int(version("transformer-lens").split(".")[0]) < 4:
        print("error: TransformerBridge needs TransformerLens 4 (installed: "
              f"{version('transformer-lens')}); run under a 4.x environment", file=sys.stderr)
        return 2
    from transformer_lens.model_bridge import TransformerBridge

    from interp.models import hf_to_hooked, load_hf, resolve_base

    torch.set_num_threads(a.threads)
    base = resolve_base("smollm2-135m" if a.smollm2 else "cogbase-6l")
    hf, tok = load_hf(base)
    ours = hf_to_hooked(hf, tok)
    hf_b, _ = load_hf(base)  # a second copy: the bridge wraps (and trains) the HF modules themselves
    bridge = TransformerBridge.boot_transformers(str(base), hf_model=hf_b, tokenizer=tok)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, ours.cfg.d_vocab, (16, 22), generator=gen)
    targets = torch.randint(0, ours.cfg.d_vocab, (16,), generator=gen)
    with torch.no_grad():
        gap = float((ours(tokens) - bridge(tokens)).abs().max())
    t_ours = statistics.median(step_times(ours, tokens, targets, a.steps))
    t_bridge = statistics.median(step_times(bridge, tokens, targets, a.steps))
    name = "SmolLM2-135M" if a.smollm2 else "cogbase-6l"
    print(f"TransformerLens {version('transformer-lens')}, torch {torch.__version__}, {a.threads} threads, {name}, "
          f"batch 16 x 22 tokens, median of {a.steps} steps")
    print(f"| model | s / step |\n|---|---|\n| HookedLM (cogcircuits) | {t_ours:.3f} |\n"
          f"| TransformerBridge | {t_bridge:.3f} |")
    print(f"bridge / HookedLM: {t_bridge / t_ours:.2f}x; largest logit difference before training {gap:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
