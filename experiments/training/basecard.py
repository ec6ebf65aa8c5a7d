"""Evidence that a base model is really pretrained, and its MODEL_CARD.md.

Measured against a random-init twin of the same shape: held-out perplexity (on token windows shipped with the
model in heldout_tokens.safetensors, so anyone can recompute it offline), greedy continuations, counting
("31 32 33 34" -> " 35") over the task's number range, and a linear probe of number magnitude from the number
tokens' embeddings and from the residual stream after the first block (fitted on even numbers, scored R^2 on odd).
Optionally: fine-tuned vs scratch from this base on the default task and on a held-out number range.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from experiments.training.train import ModelConfig, TrainConfig, train
from interp.models import Arch, build_hf_gpt2, load_hf_gpt2, load_model
from interp.store import atomic_write_json, atomic_write_text
from tasks.cdm import CDMConfig

HELDOUT = "heldout_tokens.safetensors"
PROMPTS = ("In the beginning God created", "The number of the", "A dictionary is a", "He said unto them,",
           "The function returns a")


@torch.no_grad()
def perplexity(hf: Any, windows: torch.Tensor, batch: int = 16) -> float:
    losses = [hf(input_ids=windows[i:i + batch], labels=windows[i:i + batch]).loss.item()
              for i in range(0, len(windows), batch)]
    return float(math.exp(np.mean(losses)))


@torch.no_grad()
def greedy(hf: Any, tok: Any, prompt: str, n: int = 24) -> str:
    ids = torch.tensor([tok.encode(prompt)])
    for _ in range(n):
        nxt = hf(input_ids=ids[:, -hf.config.n_positions + 1:]).logits[0, -1].argmax()
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return tok.decode(ids[0])


@torch.no_grad()
def counting_accuracy(hf: Any, tok: Any, lo: int, hi: int) -> float:
    """Share of n in [lo, hi - 4] where " n n+1 n+2 n+3" is continued by " n+4" (greedy)."""
    hits = []
    for n in range(lo, hi - 3):
        ids = torch.tensor([tok.encode(f" {n} {n + 1} {n + 2} {n + 3}")])
        pred = int(hf(input_ids=ids).logits[0, -1].argmax())
        hits.append(pred == tok.encode(f" {n + 4}")[0])
    return float(np.mean(hits))


def _ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    mu, sd, ym = x.mean(0), x.std(0) + 1e-8, y.mean()
    xs = (x - mu) / sd
    w = np.linalg.solve(xs.T @ xs + alpha * np.eye(x.shape[1]), xs.T @ (y - ym))  # intercept not penalised
    return w, mu, sd, ym


def _ridge_r2(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """R^2 on `test` of a ridge regression fitted on `train`, its penalty chosen by 5-fold CV within `train`."""
    xtr, ytr = x[train], y[train]
    folds = np.arange(len(ytr)) % 5
    best, best_err = 1.0, np.inf
    for alpha in (0.1, 1.0, 10.0, 100.0, 1000.0):
        err = 0.0
        for k in range(5):
            w, mu, sd, ym = _ridge_fit(xtr[folds != k], ytr[folds != k], alpha)
            err += (((xtr[folds == k] - mu) / sd @ w + ym - ytr[folds == k]) ** 2).sum()
        if err < best_err:
            best, best_err = alpha, err
    w, mu, sd, ym = _ridge_fit(xtr, ytr, best)
    pred = (x[test] - mu) / sd @ w + ym
    return float(1 - ((y[test] - pred) ** 2).sum() / ((y[test] - y[test].mean()) ** 2).sum())


@torch.no_grad()
def magnitude_probe(hf: Any, tok: Any, lo: int, hi: int) -> dict[str, float]:
    nums = np.arange(lo, hi + 1)
    ids = [tok.encode(f" {n}")[0] for n in nums]
    emb = hf.transformer.wte.weight[ids].double().numpy()
    out = hf(input_ids=torch.tensor([[tok.bos_token_id, i] for i in ids]), output_hidden_states=True)
    early = out.hidden_states[1][:, -1].double().numpy()  # after block 0, at the number token
    train, test = nums % 2 == 0, nums % 2 == 1
    y = nums.astype(float)
    return {"embedding_r2": _ridge_r2(emb, y, train, test), "early_resid_r2": _ridge_r2(early, y, train, test)}


def save_heldout(out: Path, windows: torch.Tensor) -> None:
    save_file({"windows": windows.to(torch.int32).contiguous()}, str(out / HELDOUT))


def evidence(model_dir: Path, seed: int = 0) -> dict[str, Any]:
    hf, tok = load_hf_gpt2(model_dir)
    twin = build_hf_gpt2(Arch.from_hf_config(hf.config), tok, seed + 1)
    twin.eval()
    windows = load_file(str(model_dir / HELDOUT))["windows"].long()
    lo, hi = CDMConfig().number_range
    ev = {"heldout_ppl": perplexity(hf, windows), "random_ppl": perplexity(twin, windows),
          "heldout_windows": list(windows.shape), "vocab_size": len(tok),
          "counting_accuracy": counting_accuracy(hf, tok, lo, hi),
          "random_counting_accuracy": counting_accuracy(twin, tok, lo, hi),
          "counting_range": [lo, hi]}
    probe, rprobe = magnitude_probe(hf, tok, lo, hi), magnitude_probe(twin, tok, lo, hi)
    ev["probe"], ev["random_probe"] = probe, rprobe
    ev["probe_r2"], ev["random_probe_r2"] = max(probe.values()), max(rprobe.values())
    ev["samples"] = {p: greedy(hf, tok, p) for p in PROMPTS}
    ev["random_samples"] = {p: greedy(twin, tok, p) for p in PROMPTS[:2]}
    return ev


def finetune_study(model_dir: Path, work: Path, steps: int = 300, progress: bool = False) -> dict[str, Any]:
    """Fine-tuned vs scratch from this base on the default task, and trained on the lower number range then
    tested on the upper range (the "gen" split)."""
    out: dict[str, Any] = {}
    tasks = {"default": CDMConfig(), "heldout_range_70_99": CDMConfig(heldout_number_range=(70, 99))}
    for tname, task in tasks.items():
        for init in ("pretrained", "scratch"):
            tcfg = TrainConfig(steps=steps, lr=3e-4 if init == "pretrained" else 1e-3, eval_every=25,
                               eval_size=256, target_accuracy=0.99, warmup=20)
            m = train({"task": task, "model": ModelConfig(init=init, base=str(model_dir)), "train": tcfg},
                      work / f"{tname}-{init}", overwrite=True, progress=progress)
            out[f"{tname}/{init}"] = {k: m.get(k) for k in ("steps", "test_accuracy", "gen_accuracy", "wall_s")}
    return out


def write_model_card(model_dir: Path, corpus_dir: Path | None = None, finetune: bool = False,
                     progress: bool = False) -> dict[str, Any]:
    model_dir = Path(model_dir)
    log = json.loads((model_dir / "pretrain_log.json").read_text())
    ev = evidence(model_dir)
    if finetune:
        ev["finetune_study"] = finetune_study(model_dir, model_dir / ".work" / "finetune_study", progress=progress)
    elif (model_dir / "evidence.json").exists():
        old = json.loads((model_dir / "evidence.json").read_text())
        if "finetune_study" in old:
            ev["finetune_study"] = old["finetune_study"]
    atomic_write_json(model_dir / "evidence.json", ev)
    manifest = {}
    if corpus_dir is not None and (Path(corpus_dir) / "manifest.json").exists():
        manifest = json.loads((Path(corpus_dir) / "manifest.json").read_text())
        atomic_write_json(model_dir / "corpus_manifest.json", manifest)
    elif (model_dir / "corpus_manifest.json").exists():
        manifest = json.loads((model_dir / "corpus_manifest.json").read_text())
    atomic_write_text(model_dir / "MODEL_CARD.md", render_card(model_dir, log, ev, manifest))
    return ev


def _evidence_lines(ev: dict[str, Any]) -> list[str]:
    """The card's evidence that the base is pretrained, against its random-init twin."""
    lines: list[str] = []
    lines += ["", "## Evidence that it is pretrained (against a random-init twin of the same shape)",
              f"- held-out perplexity on the {ev['heldout_windows'][0]} x {ev['heldout_windows'][1]} token windows in "
              f"`{HELDOUT}`: **{ev['heldout_ppl']:.2f}** (random twin {ev['random_ppl']:.1f}; vocabulary "
              f"{ev['vocab_size']})",
              f"- counting ' n n+1 n+2 n+3' -> ' n+4' over n = {ev['counting_range'][0]}..{ev['counting_range'][1] - 4}: "
              f"**{ev['counting_accuracy']:.1%}** correct (random twin {ev['random_counting_accuracy']:.1%})",
              f"- linear probe of magnitude (ridge, penalty by 5-fold CV on the even numbers, R^2 on the odd numbers of the "
              f"task range): embeddings "
              f"{ev['probe']['embedding_r2']:.3f}, residual stream after block 0 {ev['probe']['early_resid_r2']:.3f} "
              f"(random twin {ev['random_probe']['embedding_r2']:.3f} / {ev['random_probe']['early_resid_r2']:.3f})", "",
              "Greedy continuations:", ""]
    lines += [f"- `{p}` -> `{s[len(p):].strip()}`".replace("\n", " ") for p, s in ev["samples"].items()]
    lines += ["", "Random twin, for contrast:", ""]
    lines += [f"- `{p}` -> `{s[len(p):].strip()}`".replace("\n", " ") for p, s in ev["random_samples"].items()]
    return lines


def _finetune_lines(ev: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if "finetune_study" in ev:
        lines += ["", "## Fine-tuned vs scratch from this base (300 steps of batch 64, lr 3e-4 fine-tuned / 1e-3 scratch, stop at 99% "
                  "validation accuracy; one seed each)",
                  "| task | init | steps | test accuracy | accuracy on the held-out range |", "|---|---|---|---|---|"]
        for k, v in ev["finetune_study"].items():
            t, init = k.split("/")
            gen = f"{v['gen_accuracy']:.3f}" if v.get("gen_accuracy") is not None else "-"
            lines.append(f"| {t} | {init} | {v['steps']} | {v['test_accuracy']:.3f} | {gen} |")
    return lines


def render_card(model_dir: Path, log: dict[str, Any], ev: dict[str, Any], manifest: dict[str, Any]) -> str:
    cfg = log["config"]
    a = cfg["arch"]
    n_params = sum(p.numel() for p in load_model(model_dir)[0].parameters())
    lines = [f"# {model_dir.name}: a small GPT-2-architecture base pretrained for cogcircuits", "",
             "A causal language model of the GPT-2 architecture (learned positions, pre-LayerNorm blocks, GELU MLP, "
             "tied embeddings) pretrained on generic English text from freely licensed Debian packages, so that "
             "fine-tuned vs scratch experiments run offline. It is tiny next to GPT-2 small; every number below was "
             "measured by `cogcircuits base-card`.", "",
             "## Architecture",
             f"{a['n_layers']} layers, d_model {a['d_model']}, {a['n_heads']} heads, d_mlp {a['d_mlp']}, context "
             f"{a['n_ctx']}, byte-level BPE vocabulary of {ev['vocab_size']} tokens; {n_params:,} parameters in the "
             "TransformerLens form (the HF checkpoint ties embedding and unembedding).", "",
             "## Corpus", "| source | Debian package | licence | characters |", "|---|---|---|---|"]
    for s in manifest.get("sources", []):
        lines.append(f"| {s['name']} | {s['package']} | {s['licence']} | {s['chars']:,} |")
    if manifest:
        lines.append(f"\nTotal {manifest['total_chars']:,} characters. The Bible is rendered with chapter and verse "
                     "numbers inline; none of the text contains the decision task (checked by "
                     "`experiments.training.corpus.check_no_task_text`).")
    toks = log["corpus_tokens"]
    lines += ["", "Tokens per source (train / held out): " + ", ".join(
        f"{k} {v['train']:,} / {v['heldout']:,}" for k, v in toks.items()), "",
        "The tokenizer was trained on the corpus plus a coverage list of the task symbols (each number 0-99 with "
        "and without a leading space, the cue, modality and answer words), so that every task symbol is one token; "
        "the language model never trained on that list.", "",
        "## Training", f"- steps: {log['steps']}, tokens seen: {log['tokens_seen']:,} "
        f"({log['tokens_per_step']} per step), sampling weights {cfg['corpus']['weights']}",
        f"- optimiser: AdamW lr {cfg['pretrain']['lr']}, warmup {cfg['pretrain']['warmup']}, cosine to "
        f"{cfg['pretrain']['min_lr_frac']} x lr, weight decay {cfg['pretrain']['weight_decay']}, clip "
        f"{cfg['pretrain']['grad_clip']}, seed {cfg['pretrain']['seed']}",
        f"- hardware: {log['versions']['platform']}, CPU only (torch {log['versions']['torch']}); wall time "
        f"{log['wall_s'] / 60:.1f} min", "", "| step | tokens | train loss | held-out loss |", "|---|---|---|---|"]
    lines += [f"| {c['step']} | {c['tokens']:,} | {c['train_loss']:.3f} | {c['heldout_loss']:.3f} |" for c in log["curve"]]
    lines += _evidence_lines(ev) + _finetune_lines(ev)
    lines += ["", "## Reproduce", "```",
              "cogcircuits corpus --out data/corpus --install",
              f"cogcircuits pretrain --config experiments/configs/base-small.toml --out checkpoints/{model_dir.name}",
              f"cogcircuits base-card checkpoints/{model_dir.name} --corpus data/corpus --finetune", "```",
              "Pretraining is deterministic under its seed on CPU with the same torch build and thread count.", ""]
    return "\n".join(lines)
