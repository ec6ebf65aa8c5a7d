"""Pretraining the shipped base: a byte-level BPE tokenizer and a GPT-2-architecture causal LM on generic text.

The model is a transformers `GPT2LMHeadModel` (learned positions, pre-LN blocks, GELU MLP, tied embeddings), so the
output is an ordinary Hugging Face GPT-2 directory that the project's loader converts like real GPT-2.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from experiments.core.config import load_sections, to_dict
from experiments.core.state import latest_state, load_state, lr_lambda, save_state
from experiments.training.basecard import save_heldout
from experiments.training.corpus import read_corpus
from experiments.training.train import deterministic
from interp.models import Arch, build_hf_gpt2, load_tokenizer, save_hf_dir
from interp.store import atomic_write_json, atomic_write_npz, prepare_out_dir, versions
from tasks.base import check_finite
from tasks.cdm import CDMConfig, required_symbols

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class CorpusConfig:
    dir: str = "data/corpus"
    weights: dict[str, float] = field(default_factory=dict)  # sampling weight per source (default: by size)
    heldout_frac: float = 0.005

    def __post_init__(self) -> None:
        check_finite(self, "corpus.", ValueError)
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("corpus.weights must be non-negative")
        if not 0 < self.heldout_frac < 0.5:
            raise ValueError("corpus.heldout_frac must be in (0, 0.5)")


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 4096

    def __post_init__(self) -> None:
        check_finite(self, "tokenizer.", ValueError)
        if not 300 <= self.vocab_size <= 65535:
            raise ValueError(f"tokenizer.vocab_size must be in [300, 65535], got {self.vocab_size}")


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 3000
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 1e-3
    warmup: int = 200
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_batches: int = 16
    checkpoint_every: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        check_finite(self, "pretrain.", ValueError)
        for f in ("steps", "batch_size", "seq_len", "eval_every", "eval_batches", "checkpoint_every"):
            if getattr(self, f) < 1:
                raise ValueError(f"pretrain.{f} must be >= 1")
        if self.lr <= 0:
            raise ValueError("pretrain.lr must be > 0")


SCHEMA = {"corpus": CorpusConfig, "tokenizer": TokenizerConfig, "arch": Arch, "pretrain": PretrainConfig}


def load_config(path: str | Path | None, overrides: dict | None = None) -> dict[str, Any]:
    return load_sections(path, SCHEMA, overrides=overrides)


def train_tokenizer(texts: dict[str, str], vocab_size: int, symbols: list[str]) -> Any:
    """Byte-level BPE on the corpus plus a coverage list of the task symbols (the LM never trains on that list);
    raises if a task symbol is still not a single token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

    def docs():  # noqa: ANN202
        for text in texts.values():
            for i in range(0, len(text), 100_000):
                yield text[i:i + 100_000]

    def with_symbols():  # noqa: ANN202
        yield from docs()
        # A coverage list (not part of the LM's training text): each task symbol repeated, so BPE merges it whole.
        line = "\n".join(symbols)
        for _ in range(20000):
            yield line

    tok.train_from_iterator(with_symbols(), trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS)
    bad = [s for s in symbols if len(hf.encode(s, add_special_tokens=False)) != 1]
    if bad:
        raise ValueError(f"tokenizer of size {vocab_size} does not keep these task symbols as single tokens: {bad[:10]}")
    return hf


def encode_sources(texts: dict[str, str], tokenizer: Any, heldout_frac: float) -> dict[str, dict[str, np.ndarray]]:
    """Token arrays per source: documents joined by EOS; the last `heldout_frac` of each source is held out."""
    eos = tokenizer.eos_token_id
    out = {}
    for name, text in texts.items():
        chunks = [c for c in text.split("\n\n") if c.strip()]
        ids: list[int] = []
        for i in range(0, len(chunks), 2000):
            for enc in tokenizer(chunks[i:i + 2000], add_special_tokens=False)["input_ids"]:
                ids.extend(enc)
                ids.append(eos)
        arr = np.asarray(ids, dtype=np.uint16)
        cut = int(len(arr) * (1 - heldout_frac))
        out[name] = {"train": arr[:cut], "heldout": arr[cut:]}
    return out


def sample_batch(arrays: dict[str, np.ndarray], weights: dict[str, float], batch: int, seq: int,
                 rng: np.random.Generator) -> torch.Tensor:
    names = [n for n in arrays if len(arrays[n]) > seq + 1]
    p = np.array([weights.get(n, len(arrays[n])) for n in names], dtype=float)
    p = p / p.sum()
    src = rng.choice(len(names), size=batch, p=p)
    rows = []
    for s in src:
        a = arrays[names[s]]
        start = rng.integers(0, len(a) - seq - 1)
        rows.append(a[start:start + seq].astype(np.int64))
    return torch.from_numpy(np.stack(rows))


def heldout_batches(enc: dict[str, dict[str, np.ndarray]], seq: int, n_batches: int, batch: int) -> list[torch.Tensor]:
    """Fixed held-out windows (deterministic), spread over every source in proportion to its held-out size."""
    rng = np.random.default_rng(12345)
    arrays = {n: d["heldout"] for n, d in enc.items()}
    return [sample_batch(arrays, {}, batch, seq, rng) for _ in range(n_batches)]


@torch.no_grad()
def lm_loss(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    model.eval()
    losses = [model(input_ids=b, labels=b).loss.item() for b in batches]
    return float(np.mean(losses))


def pretrain(cfg: dict[str, Any], out: Path, resume: bool = False, overwrite: bool = False,
             progress: bool = True, corpus_dir: Path | None = None) -> dict[str, Any]:
    """Train tokenizer and LM; writes out/ (HF GPT-2 directory) and out/pretrain_log.json. Returns the log."""
    with deterministic():
        return _pretrain(cfg, out, resume, overwrite, progress, corpus_dir)


def _tokenized(texts: dict[str, str], work: Path, vocab_size: int, heldout_frac: float
               ) -> tuple[Any, dict[str, dict[str, np.ndarray]]]:
    """The tokenizer and the encoded corpus, each trained / encoded once and cached under `work`."""
    tok_dir = work / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = load_tokenizer(tok_dir)
    else:
        tokenizer = train_tokenizer(texts, vocab_size, required_symbols(CDMConfig()))
        tokenizer.save_pretrained(str(tok_dir))
    cache = work / "tokens.npz"
    if cache.exists():
        with np.load(cache) as z:
            enc = {n: {"train": z[f"{n}.train"], "heldout": z[f"{n}.heldout"]} for n in texts}
    else:
        enc = encode_sources(texts, tokenizer, heldout_frac)
        atomic_write_npz(cache, {f"{n}.{k}": v for n, d in enc.items() for k, v in d.items()})
    return tokenizer, enc


def _optimizer(model: torch.nn.Module, pcfg: PretrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW with weight decay on matrices only, and the warmup-cosine schedule."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": pcfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=pcfg.lr, betas=(0.9, 0.95))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(pcfg.warmup, pcfg.steps, pcfg.min_lr_frac))


def _pretrain_loop(model: torch.nn.Module, opt: Any, sched: Any, step: int, log: dict[str, Any], train_arrays: dict[str, Any],
                   val: list[torch.Tensor], cfg: dict[str, Any], save: Any, progress: bool) -> int:
    """Steps from `step` to the budget (held-out loss every eval_every, `save(step)` every checkpoint_every);
    returns the last step."""
    ccfg, pcfg = cfg["corpus"], cfg["pretrain"]
    bar = tqdm(total=pcfg.steps, initial=step, desc="pretrain", disable=not progress)
    model.train()
    while step < pcfg.steps:
        rng = np.random.default_rng([pcfg.seed, step])
        x = sample_batch(train_arrays, ccfg.weights, pcfg.batch_size, pcfg.seq_len, rng)
        loss = model(input_ids=x, labels=x).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretraining loss became {loss.item()} at step {step}; last good state kept")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), pcfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % pcfg.eval_every == 0 or step == pcfg.steps:
            hl = lm_loss(model, val)
            model.train()
            log["curve"].append({"step": step, "train_loss": loss.item(), "heldout_loss": hl,
                                 "tokens": step * log["tokens_per_step"]})
        if step % pcfg.checkpoint_every == 0 or step == pcfg.steps:
            save(step)
    bar.close()
    return step


def _pretrain(cfg: dict[str, Any], out: Path, resume: bool, overwrite: bool, progress: bool,
              corpus_dir: Path | None) -> dict[str, Any]:
    ccfg, tcfg, arch, pcfg = cfg["corpus"], cfg["tokenizer"], cfg["arch"], cfg["pretrain"]
    out = prepare_out_dir(out, overwrite=overwrite, resume=resume)
    work = out / ".work"
    texts = read_corpus(Path(corpus_dir or ccfg.dir))
    t0 = time.time()
    tokenizer, enc = _tokenized(texts, work, tcfg.vocab_size, ccfg.heldout_frac)
    train_arrays = {n: d["train"] for n, d in enc.items()}
    arch = Arch(**{**to_dict(arch), "d_vocab": len(tokenizer)})
    torch.manual_seed(pcfg.seed)
    model = build_hf_gpt2(arch, tokenizer, pcfg.seed)
    opt, sched = _optimizer(model, pcfg)
    val = heldout_batches(enc, pcfg.seq_len, pcfg.eval_batches, pcfg.batch_size)
    log: dict[str, Any] = {"curve": [], "config": to_dict(cfg), "tokens_per_step": pcfg.batch_size * pcfg.seq_len,
                           "corpus_tokens": {n: {k: int(len(v)) for k, v in d.items()} for n, d in enc.items()},
                           "versions": versions(), "wall_s": 0.0}
    step = 0
    st = latest_state(work / "state") if resume else None
    if st is not None:
        body = load_state(st, model, opt, sched)
        step, log = body["step"], body["log"]
    elapsed0 = log["wall_s"]
    t_start = time.time()

    def save(at: int) -> None:
        log["wall_s"] = elapsed0 + time.time() - t_start
        save_state(work / "state", at, model.state_dict(), opt, sched, {"log": log})
        save_hf_dir(model, tokenizer, work / "latest_model")

    step = _pretrain_loop(model, opt, sched, step, log, train_arrays, val, cfg, save, progress)
    log["wall_s"] = elapsed0 + time.time() - t_start
    log["tokenizer_s"] = time.time() - t0 if st is None else log.get("tokenizer_s")
    log["final_heldout_loss"] = lm_loss(model, val)
    log["final_heldout_ppl"] = math.exp(log["final_heldout_loss"])
    log["steps"] = step
    log["tokens_seen"] = step * log["tokens_per_step"]
    save_hf_dir(model, tokenizer, out)
    save_heldout(out, torch.cat(val))
    atomic_write_json(out / "pretrain_log.json", log)
    return log


def summarise_log(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
