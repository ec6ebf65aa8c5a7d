"""Answer-only training of hooked models (`interp.hooked_lm.HookedLM`) on any registered task: fine-tuned from a base or from scratch.

One code path for both inits. Loss: cross-entropy of the answer token at the final position only. AdamW with
linear warmup and cosine decay, gradient clipping, evaluation on the validation split every `eval_every` steps,
early stop at the training criterion (`meets_criterion`: overall and incongruent-trial validation accuracy), periodic resumable states (model, optimizer, scheduler, RNG; no pickle).
Training batches are a pure function of (seed, step), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from experiments.core.config import build_task, hashed_form, load_sections, to_dict
from experiments.core.state import latest_state, load_state, lr_lambda, save_state
from interp.metrics import (accuracy_by_condition, evaluate_batch, incongruent_accuracy, logit_diff_from_logits,
                            unembed_last)
from experiments.training.start import (DEFAULT_BASE, ModelConfig, check_bf16, freeze_below,  # noqa: F401
                                        init_model)
from interp.models import RESID_INITS, params_sha256, save_checkpoint
from interp.store import atomic_write_csv, atomic_write_json, portable, prepare_out_dir, versions
from tasks.registry import generate, seq_len
from interp.typing import TLModel


class NonFiniteLossError(FloatingPointError):
    pass


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
    state_time_share: float = 0.05  # resumable states may cost at most this share of the training time
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    schedule: str = "cosine"  # "cosine": warmup, cosine to min_lr_frac; "constant": warmup, flat, linear decay
    decay_frac: float = 0.2  # "constant": the share of `steps` at the end over which the rate decays to min_lr_frac
    hold_steps: int = 0  # after `steps`, up to this many more at the schedule's last rate (a cap beyond the schedule)
    freeze_below: int = 0  # the embeddings and blocks 0..k-1 keep their initial weights (a skill planted above them)
    beta2: float = 0.999
    curriculum_steps: int = 0  # the first steps draw `curriculum_incongruent` of each batch from incongruent trials
    curriculum_incongruent: float = 0.75
    resid_init: str = "base"  # scratch only: "base", "depth" or "zero" (interp.models.build_scratch)
    embed_init_std: float = 0.0  # scratch only: > 0 redraws the embedding from N(0, this)

    def __post_init__(self) -> None:
        for f in (f.name for f in fields(self)):
            v = getattr(self, f)
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"train.{f} must be a finite number, got {v}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"train.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not 0 <= self.decay_frac <= 1:
            raise ValueError(f"train.decay_frac must be in [0, 1], got {self.decay_frac}")
        if not 0 < self.beta2 < 1:
            raise ValueError(f"train.beta2 must be in (0, 1), got {self.beta2}")
        if self.resid_init not in RESID_INITS:
            raise ValueError(f"train.resid_init must be one of {', '.join(RESID_INITS)}, got {self.resid_init!r}")
        if self.embed_init_std < 0:
            raise ValueError(f"train.embed_init_std must be >= 0, got {self.embed_init_std}")
        if self.curriculum_steps < 0 or not 0 <= self.curriculum_incongruent <= 1:
            raise ValueError("train.curriculum_steps must be >= 0 and train.curriculum_incongruent in [0, 1]")
        if self.hold_steps < 0 or self.freeze_below < 0:
            raise ValueError(f"train.hold_steps and train.freeze_below must be >= 0, got {self.hold_steps}, "
                             f"{self.freeze_below}")
        for f in ("steps", "batch_size", "eval_every", "eval_size", "checkpoint_every"):
            if getattr(self, f) < 1:
                raise ValueError(f"train.{f} must be >= 1, got {getattr(self, f)}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.warmup < 0 or self.warmup > self.steps:
            raise ValueError(f"train.warmup must be in [0, steps], got {self.warmup}")
        if not 0 < self.state_time_share <= 1:
            raise ValueError(f"train.state_time_share must be in (0, 1], got {self.state_time_share}")
        if not 0 <= self.min_lr_frac <= 1:
            raise ValueError("train.min_lr_frac must be in [0, 1]")
        for f in ("target_accuracy", "target_incongruent"):
            if not 0 < getattr(self, f) <= 1:
                raise ValueError(f"train.{f} must be in (0, 1], got {getattr(self, f)}")
        if self.grad_clip <= 0 or self.weight_decay < 0:
            raise ValueError("train.grad_clip must be > 0 and train.weight_decay >= 0")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise ValueError(f"train.device must be auto, cpu, cuda or mps, got {self.device!r}")

    @property
    def max_steps(self) -> int:
        """The step budget: the schedule's `steps`, then `hold_steps` at its last rate (training stops earlier at
        the criterion either way, so a model that meets it within `steps` trains the same with any hold)."""
        return self.steps + self.hold_steps

    def scratch_recipe(self) -> dict[str, Any]:
        """How a scratch model's initial weights are rescaled (`interp.models.build_scratch`)."""
        return {"resid_init": self.resid_init, "embed_init_std": self.embed_init_std}

    def is_default_init(self) -> bool:
        return self.resid_init == "base" and self.embed_init_std == 0


SCHEMA = {"task": build_task, "model": ModelConfig, "train": TrainConfig}


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


def make_optimizer(model: torch.nn.Module, tcfg: TrainConfig, device: str) -> torch.optim.Optimizer:
    """AdamW, fused (on CUDA and on CPUs: 0.10 s against 0.44 s for a step over 163M parameters on 2 cores,
    benches/smollm2_step.py); no weight decay on gains and biases."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and p.requires_grad]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 and p.requires_grad]
    return torch.optim.AdamW([{"params": decay, "weight_decay": tcfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=tcfg.lr, betas=(0.9, tcfg.beta2),
                             fused=device == "cpu" or device.startswith("cuda") or None)


def to_device(x: Any, device: str) -> torch.Tensor:
    """Host array -> device tensor; on CUDA through pinned memory without waiting for the copy."""
    t = torch.as_tensor(x, dtype=torch.long)
    if device.startswith("cuda"):
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def answer_logits(model: TLModel, tokens: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Answer-position logits in float32: the blocks run under bf16 autocast when asked, the final normalisation
    and the unembedding never do (GPT-2 logits of 60-130 would be rounded by 0.25-0.5 in bf16)."""
    with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=bf16):
        resid = model(tokens, stop_at_layer=model.cfg.n_layers)
    return unembed_last(model, resid[:, -1:].float())


def train_step(model: TLModel, opt: torch.optim.Optimizer, sched: Any, tokens: torch.Tensor, answer: torch.Tensor,
               grad_clip: float, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One AdamW step on the answer-token cross-entropy; returns (loss, answer logits) without a host sync."""
    logits = answer_logits(model, tokens, bf16)
    loss = torch.nn.functional.cross_entropy(logits, answer)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    return loss, logits


class StateCadence:
    """When to write a resumable state: at multiples of `every` steps, and only once the training time since the
    last write is long enough for that write's cost to be at most `share` of the time (a 163M-parameter state
    with its optimizer is ~2 GB). share = 1 writes at every multiple of `every`."""

    def __init__(self, every: int, share: float = 0.05) -> None:
        self.every, self.ratio = every, (1 - share) / share
        self.last_cost, self.since = 0.0, time.perf_counter()

    def due(self, step: int) -> bool:
        return step % self.every == 0 and time.perf_counter() - self.since >= self.ratio * self.last_cost

    def wrote(self, cost: float) -> None:
        self.last_cost, self.since = cost, time.perf_counter()


def _finite_weights(model: torch.nn.Module) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


@contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels while training: on CPU some backward kernels accumulate in thread order otherwise
    (seen here: two identical 2-thread fine-tuning runs of the shipped base differed after 15 steps)."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    # cuBLAS matmuls are deterministic only with this set before CUDA starts (the CLI sets it first thing)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
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
    where the task's shortcut gives the wrong answer, e.g. following the irrelevant modality: a model that learned
    the shortcut fails this part). A task config without incongruent trials (NaN) is judged on the first part."""
    return accuracy >= tcfg.target_accuracy and (incongruent != incongruent or incongruent >= tcfg.target_incongruent)


def _check_weights(model: torch.nn.Module, step: int, out: Path) -> None:
    if not _finite_weights(model):
        raise NonFiniteLossError(f"weights became non-finite by step {step}: stopped; the last good state in "
                                 f"{out / 'state'} is kept (lower train.lr?)")


def config_sha256(cfg: dict[str, Any]) -> str:
    """The hash of everything that decides the trajectory (task, model, training; not the device), recorded in each
    resumable state so a resume under another config is refused."""
    d = hashed_form(to_dict(cfg))
    d["train"] = {k: v for k, v in d["train"].items() if k != "device"}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def batch_seed(seed: int, step: int) -> int:
    return seed * 1_000_003 + step


def training_batch(task: Any, tcfg: TrainConfig, step: int, tok: Any) -> Any:
    """The batch of `step` (0-based), a pure function of (seed, step). During the curriculum, a share
    `curriculum_incongruent` of it comes from incongruent trials (those the task's shortcut gets wrong), drawn from
    a pool four times the batch; the rest, and every batch after the curriculum, as the task draws them."""
    seed = batch_seed(tcfg.seed, step)
    if step >= tcfg.curriculum_steps:
        return generate(task, tcfg.batch_size, seed=seed, tokenizer=tok, split="train")
    pool = generate(task, 4 * tcfg.batch_size, seed=seed, tokenizer=tok, split="train")
    inc = np.flatnonzero(~pool.meta["congruent"])
    con = np.flatnonzero(pool.meta["congruent"])
    k = min(len(inc), round(tcfg.curriculum_incongruent * tcfg.batch_size))
    idx = np.concatenate([inc[:k], con[:tcfg.batch_size - k]])
    if len(idx) < tcfg.batch_size:
        raise ValueError(f"a pool of {len(pool)} training trials has too few (in)congruent trials for the curriculum")
    return pool.subset(np.random.default_rng(seed).permutation(idx))


def train(cfg: dict[str, Any], out: Path, resume: bool = False, overwrite: bool = False, progress: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:
    with deterministic():
        return _train(cfg, out, resume, overwrite, progress, stop_after)


@dataclass
class _Session:
    """One training's moving parts, from its start (or the state it resumed from) to its checkpoint."""

    model: TLModel
    tok: Any
    info: dict[str, Any]
    opt: torch.optim.Optimizer
    sched: Any
    val: Any
    device: str
    init_hash: str
    cfg_hash: str
    t0: float
    curve: list[dict[str, Any]]
    step: int = 0
    done: bool = False
    resumed_from: int | None = None


def _start(cfg: dict[str, Any], out: Path, resume: bool, overwrite: bool) -> tuple[_Session, Path]:
    """The model, optimizer and schedule, restored from the latest resumable state when resuming; the output
    folder prepared (after every check that could refuse the config)."""
    task, mcfg, tcfg = cfg["task"], cfg["model"], cfg["train"]
    device = pick_device(tcfg.device)
    check_bf16(tcfg.bf16, device)
    t0 = time.time()
    model, tok, info = init_model(mcfg, tcfg, device)
    init_hash = params_sha256(model)
    n_tok = seq_len(task, tok)  # aligned token layout and single-token answers, or a clear error before writing
    if n_tok > model.cfg.n_ctx:
        raise ValueError(f"task sequences have {n_tok} tokens but the model's context is {model.cfg.n_ctx}")
    freeze_below(model, tcfg.freeze_below)
    out = prepare_out_dir(out, overwrite=overwrite, resume=resume)
    model.train()
    opt = make_optimizer(model, tcfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tcfg.warmup, tcfg.steps, tcfg.min_lr_frac,
                                                             tcfg.schedule, tcfg.decay_frac))
    val = generate(task, tcfg.eval_size, seed=tcfg.seed, tokenizer=tok, split="val")
    s = _Session(model, tok, info, opt, sched, val, device, init_hash, config_sha256(cfg), t0, [])
    st = latest_state(out / "state") if resume else None
    if st is not None:
        body = load_state(st, model, opt, sched, s.cfg_hash)
        s.step, s.curve, s.done, s.resumed_from = body["step"], body["curve"], body["done"], body["step"]
    return s, out


def _checkpoint(s: _Session, tcfg: TrainConfig, loss: torch.Tensor, logits: torch.Tensor, b: Any,
                out: Path) -> dict[str, Any]:
    """The curve's point at this step (validation accuracy overall and on incongruent trials); the only host
    syncs of a step happen here."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"training loss became {loss.item()} by step {s.step}: stopped; the last "
                                 f"good state in {out / 'state'} is kept (lower train.lr?)")
    s.model.eval()
    ev = evaluate_batch(s.model, s.val)
    s.model.train()
    ans = to_device(b.answer_ids, s.device)
    train_acc = float((logit_diff_from_logits(logits, ans, to_device(b.wrong_ids, s.device)) > 0).float().mean())
    inc = incongruent_accuracy(s.val, ev["per_trial_logit_diff"])
    return {"step": s.step, "train_loss": float(loss.item()), "train_accuracy": train_acc,
            "val_accuracy": ev["accuracy"], "val_incongruent_accuracy": inc, "val_logit_diff": ev["logit_diff"],
            "lr": float(s.sched.get_last_lr()[0])}


def _loop(s: _Session, cfg: dict[str, Any], out: Path, progress: bool, stop_after: int | None) -> bool:
    """Train until the criterion, the step budget or `stop_after` steps of this process; True when stopped by
    `stop_after` (unfinished)."""
    task, mcfg, tcfg = cfg["task"], cfg["model"], cfg["train"]
    use_bf16 = tcfg.bf16 and s.device != "mps"  # bf16 autocast on CUDA and on CPUs (measured: benches/)
    bar = tqdm(total=tcfg.max_steps, initial=s.step, desc=f"train[{mcfg.init}]", disable=not progress)
    ran, cadence = 0, StateCadence(tcfg.checkpoint_every, tcfg.state_time_share)
    while s.step < tcfg.max_steps and not s.done:
        b = training_batch(task, tcfg, s.step, s.tok)
        toks, ans = to_device(b.tokens, s.device), to_device(b.answer_ids, s.device)
        loss, logits = train_step(s.model, s.opt, s.sched, toks, ans, tcfg.grad_clip, use_bf16)
        s.step += 1
        ran += 1
        bar.update(1)
        if s.step % tcfg.eval_every == 0 or s.step == tcfg.max_steps:
            point = _checkpoint(s, tcfg, loss, logits, b, out)
            s.curve.append(point)
            bar.set_postfix(loss=f"{point['train_loss']:.3f}", val_acc=f"{point['val_accuracy']:.3f}",
                            val_inc=f"{point['val_incongruent_accuracy']:.3f}")
            s.done = meets_criterion(tcfg, point["val_accuracy"], point["val_incongruent_accuracy"])
        if not s.done and s.step < tcfg.max_steps and cadence.due(s.step):
            _check_weights(s.model, s.step, out)
            t_save = time.perf_counter()
            save_state(out / "state", s.step, s.model.state_dict(), s.opt, s.sched,
                       {"curve": s.curve, "done": s.done, "config_sha256": s.cfg_hash})
            cadence.wrote(time.perf_counter() - t_save)
        if stop_after is not None and ran >= stop_after:
            bar.close()
            return True
    bar.close()
    return False


def _finish(s: _Session, cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Test (and generalisation) accuracy, the metrics, and the checkpoint with its curve; the resumable states
    removed."""
    task, mcfg, tcfg = cfg["task"], cfg["model"], cfg["train"]
    model, tok = s.model, s.tok
    _check_weights(model, s.step, out)
    model.eval()
    test = generate(task, tcfg.eval_size, seed=tcfg.seed, tokenizer=tok, split="test")
    ev = evaluate_batch(model, test)
    metrics = {"steps": s.step, "met_criterion": s.done, "steps_to_criterion": s.step if s.done else None,
               "criterion": criterion_of(tcfg), "stopped_early": s.done and s.step < tcfg.max_steps,
               "test_accuracy": ev["accuracy"],
               "test_incongruent_accuracy": incongruent_accuracy(test, ev["per_trial_logit_diff"]),
               "test_logit_diff": ev["logit_diff"], "by_condition": accuracy_by_condition(test, ev["per_trial_logit_diff"]),
               "device": s.device, "wall_s": time.time() - s.t0, "resumed_from_step": s.resumed_from}
    if s.step > 0 and s.curve:
        metrics["final_val_accuracy"] = s.curve[-1]["val_accuracy"]
    if task.has_gen:
        gen = generate(task, tcfg.eval_size, seed=tcfg.seed, tokenizer=tok, split="gen")
        gev = evaluate_batch(model, gen)
        metrics["gen_accuracy"], metrics["gen_logit_diff"] = gev["accuracy"], gev["logit_diff"]
    config = to_dict(cfg)
    config["model"]["base"] = portable(config["model"]["base"], out)
    meta = {"init": mcfg.init, "seed": tcfg.seed, "config": config, "curve": s.curve, "metrics": metrics,
            "init_params_sha256": s.init_hash, "versions": versions(), **s.info}
    atomic_write_csv(out / "curve.csv", s.curve)
    atomic_write_json(out / "curve.json", s.curve)
    atomic_write_json(out / "metrics.json", metrics)
    save_checkpoint(model, out, meta, tok)
    shutil.rmtree(out / "state", ignore_errors=True)  # finished: the resumable states are no longer needed
    return metrics


def _train(cfg: dict[str, Any], out: Path, resume: bool, overwrite: bool, progress: bool,
           stop_after: int | None) -> dict[str, Any]:
    """Train and write out/ (a checkpoint: weights, tokenizer, checkpoint.json with every config, the curve and
    metrics) plus curve.csv / curve.json. Returns the metrics. `stop_after` ends the process's work after that
    many steps without finishing (used to test resumption)."""
    if resume and (Path(out) / "metrics.json").exists() and (Path(out) / "checkpoint.json").exists():
        return json.loads((Path(out) / "metrics.json").read_text())  # already finished: nothing to resume
    s, out = _start(cfg, out, resume, overwrite)
    if _loop(s, cfg, out, progress, stop_after):
        return {"stopped_after": stop_after, "step": s.step}
    return _finish(s, cfg, out)
