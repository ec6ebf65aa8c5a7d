"""Training throughput: this project's training loop vs a bare PyTorch GPT-2 of the same shape and batch.

Both train a 4-layer d_model-256 GPT-2 (8 heads, d_mlp 1024) from scratch on CPU with AdamW, batch 64 x 12 tokens
(the default task's trials), loss on the last token. The project's loop includes task generation, the
TransformerLens model and its bookkeeping; its per-step cost is the difference between a long and a short run.

    python benches/train_throughput.py [--steps 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Block(nn.Module):
    def __init__(self, d: int, h: int, mlp: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, mlp), nn.Linear(mlp, d)
        self.h = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class BareGPT(nn.Module):
    def __init__(self, vocab: int, ctx: int, d: int, layers: int, h: int, mlp: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, h, mlp) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def bare(steps: int, vocab: int, batch: int, seq: int) -> float:
    torch.manual_seed(0)
    m = BareGPT(vocab, 64, 256, 4, 8, 1024)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randint(0, vocab, (batch, seq))
    y = torch.randint(0, vocab, (batch,))
    for i in range(steps + 5):
        if i == 5:
            t0 = time.perf_counter()
        loss = F.cross_entropy(m(x)[:, -1], y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    return (time.perf_counter() - t0) / steps


def ours(steps: int, base: Path, tmp: Path) -> float:
    from experiments.training.train import load_config, train

    def run(n: int, name: str) -> float:
        cfg = load_config(None, {"model": {"init": "scratch", "base": str(base)},
                                 "train": {"steps": n, "eval_every": 10_000, "eval_size": 16, "checkpoint_every": 10_000,
                                           "warmup": 1, "batch_size": 64}})
        t0 = time.perf_counter()
        train(cfg, tmp / name, progress=False)
        return time.perf_counter() - t0

    short, long = run(5, "short"), run(5 + steps, "long")
    return (long - short) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from interp.models import Arch, build_hf_gpt2, load_tokenizer, save_hf_dir
    from tasks.cdm import CDMConfig, seq_len

    repo = Path(__file__).resolve().parents[1]
    tok = load_tokenizer(repo / "checkpoints" / "cogbase-6l")
    with tempfile.TemporaryDirectory() as d:
        base = Path(d) / "base"
        save_hf_dir(build_hf_gpt2(Arch(4, 256, 8, 1024, len(tok), 64), tok, 0), tok, base)
        seq = seq_len(CDMConfig(), tok)
        t_bare = bare(a.steps, len(tok), 64, seq)
        t_ours = ours(a.steps, base, Path(d))
    tokens = 64 * seq
    print(f"tokens per step: {tokens} (batch 64 x {seq}); threads {a.threads}; steps {a.steps}")
    print(f"bare PyTorch GPT-2: {t_bare * 1000:.1f} ms/step, {tokens / t_bare:,.0f} tokens/s")
    print(f"cogcircuits loop:   {t_ours * 1000:.1f} ms/step, {tokens / t_ours:,.0f} tokens/s")
    print(f"ratio (ours / bare throughput): {t_bare / t_ours:.2f}x")


if __name__ == "__main__":
    main()
