"""Answer-only training of GPT-2-architecture HookedTransformers on the CDM task: fine-tuned or from scratch.

One code path for both inits. Loss: cross-entropy of the answer token at the final position only. AdamW with
linear warmup and cosine decay, gradient clipping, evaluation on the validation split every `eval_every` steps,
early stop at the training criterion (`meets_criterion`: overall and incongruent-trial validation accuracy), periodic resumable states (model, optimizer, scheduler, RNG; no pickle).
Training batches are a pure function of (seed, step), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from experiments.config import load_sections, to_dict
from experiments.state import latest_state, load_state, lr_lambda, save_state
from interp.metrics import (accuracy_by_condition, as_ids, as_tokens, evaluate_batch, incongruent_accuracy,
                            last_logits, logit_diff_from_logits)
from interp.models import base_arch_and_tokenizer, build_scratch, load_model, save_checkpoint, state_sha256
from interp.store import atomic_write_csv, atomic_write_json, portable, prepare_out_dir, versions
from tasks.cdm import CDMConfig, generate, seq_len

DEFAULT_BASE = "cogbase-6l"  # the shipped base, by name (interp.models.resolve_base)


class NonFiniteLossError(FloatingPointError):
    pass


@dataclass(frozen=True)
class ModelConfig:
    """init: "pretrained" (fine-tune every weight of `base`) or "scratch" (base's architecture and tokenizer,
    GPT-2 initialisation). base: a shipped base's name (default "cogbase-6l"), a local Hugging Face GPT-2 directory,
    a project checkpoint, or a hub name."""

    init: str = "pretrained"
    base: str = DEFAULT_BASE

    def __post_init__(self) -> None:
        if self.init not in ("pretrained", "scratch"):
            raise ValueError(f"model.init must be 'pretrained' or 'scratch', got {self.init!r}")
        if not self.base:
            raise ValueError("model.base must name a model directory or hub name")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 50
    min_lr_frac: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_size: int = 512
    target_accuracy: float = 0.98
    target_incongruent: float = 0.95
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    bf16: bool = False

    def __post_init__(self) -> None:
        for f in ("steps", "batch_size", "eval_every", "eval_size", "checkpoint_every"):
            if getattr(self, f) < 1:
                raise ValueError(f"train.{f} must be >= 1, got {getattr(self, f)}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.warmup < 0 or self.warmup > self.steps:
            raise ValueError(f"train.warmup must be in [0, steps], got {self.warmup}")
        if not 0 <= self.min_lr_frac <= 1:
            raise ValueError("train.min_lr_frac must be in [0, 1]")
        for f in ("target_accuracy", "target_incongruent"):
            if not 0 < getattr(self, f) <= 1:
                raise ValueError(f"train.{f} must be in (0, 1], got {getattr(self, f)}")
        if self.grad_clip <= 0 or self.weight_decay < 0:
            raise ValueError("train.grad_clip must be > 0 and train.weight_decay >= 0")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise ValueError(f"train.device must be auto, cpu, cuda or mps, got {self.device!r}")


SCHEMA = {"task": CDMConfig, "model": ModelConfig, "train": TrainConfig}


def load_config(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    return load_sections(path, SCHEMA, overrides=overrides)


def pick_device(flag: str = "auto") -> str:
    if flag != "auto":
        if flag.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available on this machine")
        return flag
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def init_model(mcfg: ModelConfig, seed: int, device: str) -> tuple[Any, Any, dict[str, Any]]:
    if mcfg.init == "pretrained":
        model, tok, info = load_model(mcfg.base, device)
        return model, tok, {"base": info}
    arch, tok = base_arch_and_tokenizer(mcfg.base)
    return build_scratch(arch, tok, seed, device), tok, {"base": {"name": Path(str(mcfg.base)).name,
                                                                  "arch_only": True}}


def _optimizer(model: torch.nn.Module, tcfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": tcfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=tcfg.lr)


@contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels while training: on CPU some backward kernels accumulate in thread order otherwise
    (seen here: two identical 2-thread fine-tuning runs of the shipped base differed after 15 steps)."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def criterion_of(tcfg: TrainConfig) -> dict[str, Any]:
    """The stated training criterion, as recorded with every model."""
    return {"split": "val", "n_trials": tcfg.eval_size, "accuracy": tcfg.target_accuracy,
            "incongruent_accuracy": tcfg.target_incongruent, "checked_every": tcfg.eval_every}


def meets_criterion(tcfg: TrainConfig, accuracy: float, incongruent: float) -> bool:
    """Validation accuracy >= target_accuracy overall and >= target_incongruent on incongruent trials (the trials
    where following the irrelevant modality gives the wrong answer, i.e. where the context rule is needed)."""
    return accuracy >= tcfg.target_accuracy and incongruent >= tcfg.target_incongruent


def batch_seed(seed: int, step: int) -> int:
    return seed * 1_000_003 + step


def train(cfg: dict[str, Any], out: Path, resume: bool = False, overwrite: bool = False, progress: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:
    with deterministic():
        return _train(cfg, out, resume, overwrite, progress, stop_after)


def _train(cfg: dict[str, Any], out: Path, resume: bool, overwrite: bool, progress: bool,
           stop_after: int | None) -> dict[str, Any]:
    """Train and write out/ (a checkpoint: weights, tokenizer, checkpoint.json with every config, the curve and
    metrics) plus curve.csv / curve.json. Returns the metrics. `stop_after` ends the process's work after that
    many steps without finishing (used to test resumption)."""
    task, mcfg, tcfg = cfg["task"], cfg["model"], cfg["train"]
    if resume and (Path(out) / "metrics.json").exists() and (Path(out) / "checkpoint.json").exists():
        return json.loads((Path(out) / "metrics.json").read_text())  # already finished: nothing to resume
    device = pick_device(tcfg.device)
    t0 = time.time()
    model, tok, info = init_model(mcfg, tcfg.seed, device)
    init_hash = state_sha256(model)
    n_tok = seq_len(task, tok)  # aligned token layout and single-token answers, or a clear error before writing
    if n_tok > model.cfg.n_ctx:
        raise ValueError(f"task sequences have {n_tok} tokens but the model's context is {model.cfg.n_ctx}")
    out = prepare_out_dir(out, overwrite=overwrite, resume=resume)
    model.train()
    opt = _optimizer(model, tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tcfg.warmup, tcfg.steps, tcfg.min_lr_frac))
    val = generate(task, tcfg.eval_size, seed=tcfg.seed, tokenizer=tok, split="val")
    curve: list[dict[str, Any]] = []
    step, done = 0, False
    st = latest_state(out / "state") if resume else None
    if st is not None:
        body = load_state(st, model, opt, sched)
        step, curve, done = body["step"], body["curve"], body["done"]
    use_bf16 = tcfg.bf16 and device.startswith("cuda")
    bar = tqdm(total=tcfg.steps, initial=step, desc=f"train[{mcfg.init}]", disable=not progress)
    ran = 0
    while step < tcfg.steps and not done:
        b = generate(task, tcfg.batch_size, seed=batch_seed(tcfg.seed, step), tokenizer=tok, split="train")
        toks, ans = as_tokens(b.tokens, device), as_ids(b.answer_ids, device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            logits = last_logits(model, toks).float()
        loss = torch.nn.functional.cross_entropy(logits, ans)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"training loss became {loss.item()} at step {step}: stopped; the last good "
                                     f"state in {out / 'state'} is kept (lower train.lr?)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        ran += 1
        bar.update(1)
        if step % tcfg.eval_every == 0 or step == tcfg.steps:
            model.eval()
            ev = evaluate_batch(model, val)
            model.train()
            train_acc = float((logit_diff_from_logits(logits, ans, as_ids(b.wrong_ids, device)) > 0).float().mean())
            inc = incongruent_accuracy(val, ev["per_trial_logit_diff"])
            curve.append({"step": step, "train_loss": float(loss.item()), "train_accuracy": train_acc,
                          "val_accuracy": ev["accuracy"], "val_incongruent_accuracy": inc,
                          "val_logit_diff": ev["logit_diff"], "lr": float(sched.get_last_lr()[0])})
            bar.set_postfix(loss=f"{loss.item():.3f}", val_acc=f"{ev['accuracy']:.3f}", val_inc=f"{inc:.3f}")
            done = meets_criterion(tcfg, ev["accuracy"], inc)
        if step % tcfg.checkpoint_every == 0 or done or step == tcfg.steps:
            if not all(torch.isfinite(p).all() for p in model.parameters()):
                raise NonFiniteLossError(f"weights became non-finite at step {step}: stopped; the last good state "
                                         f"in {out / 'state'} is kept (lower train.lr?)")
            save_state(out / "state", step, model.state_dict(), opt, sched, {"curve": curve, "done": done})
        if stop_after is not None and ran >= stop_after:
            bar.close()
            return {"stopped_after": ran, "step": step}
    bar.close()
    model.eval()
    test = generate(task, tcfg.eval_size, seed=tcfg.seed, tokenizer=tok, split="test")
    ev = evaluate_batch(model, test)
    metrics = {"steps": step, "met_criterion": done, "steps_to_criterion": step if done else None,
               "criterion": criterion_of(tcfg), "stopped_early": done and step < tcfg.steps,
               "test_accuracy": ev["accuracy"],
               "test_incongruent_accuracy": incongruent_accuracy(test, ev["per_trial_logit_diff"]),
               "test_logit_diff": ev["logit_diff"], "by_condition": accuracy_by_condition(test, ev["per_trial_logit_diff"]),
               "device": device, "wall_s": time.time() - t0}
    if step > 0 and curve:
        metrics["final_val_accuracy"] = curve[-1]["val_accuracy"]
    if task.has_gen:
        gen = generate(task, tcfg.eval_size, seed=tcfg.seed, tokenizer=tok, split="gen")
        gev = evaluate_batch(model, gen)
        metrics["gen_accuracy"], metrics["gen_logit_diff"] = gev["accuracy"], gev["logit_diff"]
    config = to_dict(cfg)
    config["model"]["base"] = portable(config["model"]["base"], out)
    meta = {"init": mcfg.init, "seed": tcfg.seed, "config": config, "curve": curve, "metrics": metrics,
            "init_state_sha256": init_hash, "versions": versions(), **info}
    atomic_write_csv(out / "curve.csv", curve)
    atomic_write_json(out / "curve.json", curve)
    atomic_write_json(out / "metrics.json", metrics)
    save_checkpoint(model, out, meta, tok)
    shutil.rmtree(out / "state", ignore_errors=True)  # finished: the resumable states are no longer needed
    return metrics


def evaluate_checkpoint(path: str | Path, task: CDMConfig | None = None, n: int = 1000, seed: int = 0,
                        split: str = "test", device: str = "cpu") -> dict[str, Any]:
    """Accuracy overall and per context x coherence x congruency of any model on a split of the task."""
    from experiments.config import build

    model, tok, info = load_model(path, device)
    if task is None:
        raw = info.get("config", {}).get("task")
        task = build(CDMConfig, raw, f"{path} task config") if raw else CDMConfig()
    batch = generate(task, n, seed=seed, tokenizer=tok, split=split)
    ev = evaluate_batch(model, batch)
    return {"split": split, "n": n, "seed": seed, "accuracy": ev["accuracy"], "logit_diff": ev["logit_diff"],
            "by_condition": accuracy_by_condition(batch, ev["per_trial_logit_diff"])}
