"""What `cogcircuits attention` shows: which heads (named, or the top K by a score computed on task pairs), their
attention patterns on one task trial (clean and corrupted) or on any text, and the offline page that holds them.

Axes: layer, head; a view's patterns are [head, dest, src] for the chosen heads in their order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from experiments.core.config import to_dict
from interp.ablation import Ablator
from interp.attribution import direct_logit_attribution
from interp.metrics import cache_last
from interp.patching import patch_sweep
from interp.store import versions
from interp.viz import attention_views_page
from tasks.base import TrialBatch
from tasks.registry import make_pairs, task_of
from interp.typing import TLModel

SCORES = ("patching", "dla", "ablation")
_HEAD = re.compile(r"L(\d+)H(\d+)")


def head_name(head: tuple[int, int]) -> str:
    return f"L{head[0]}H{head[1]}"


def parse_heads(spec: str) -> list[tuple[int, int]]:
    """"L0H2,L3H1" -> [(0, 2), (3, 1)] (order kept, repeats dropped); anything else is a ValueError."""
    heads: list[tuple[int, int]] = []
    for part in spec.split(","):
        m = _HEAD.fullmatch(part.strip())
        if m is None:
            raise ValueError(f"--heads: {part.strip()!r} is not a head; write heads as L<layer>H<head>, comma-"
                             "separated (e.g. L0H2,L3H1)")
        h = (int(m.group(1)), int(m.group(2)))
        if h not in heads:
            heads.append(h)
    return heads


def check_heads(heads: list[tuple[int, int]], n_layers: int, n_heads: int) -> None:
    for l, h in heads:
        if not (0 <= l < n_layers and 0 <= h < n_heads):
            raise ValueError(f"head {head_name((l, h))} does not exist: the model has layers 0..{n_layers - 1} and "
                             f"heads 0..{n_heads - 1} per layer")


@dataclass(frozen=True)
class HeadScores:
    """One score per head [layer, head] and what it means. Heads are ranked by |values| (largest first)."""

    by: str
    values: np.ndarray
    unit: str
    description: str

    def top(self, k: int) -> list[tuple[int, int]]:
        mag = np.abs(np.nan_to_num(self.values, nan=0.0)).ravel()
        order = np.argsort(-mag, kind="stable")[:k]
        return [(int(i // self.values.shape[1]), int(i % self.values.shape[1])) for i in order]


def score_heads(model: TLModel, pairs: tuple[TrialBatch, TrialBatch], by: str, corruption: str) -> HeadScores:
    """Each head's score on the pairs (clean, corrupted): "patching" denoises the head's output (exact patching),
    "dla" is its direct logit attribution on the clean trials, "ablation" mean-ablates it on the clean trials."""
    clean, bad = pairs
    n = len(clean)
    if by == "patching":
        r = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, "heads", "denoise")
        if r.defined:  # normalised: the same ranking as the raw change, since the normalisation is affine
            return HeadScores(by, r.values, "share of the clean run restored",
                              f"denoising patching of each head's output ({corruption}, {n} pairs)")
        return HeadScores(by, r.raw - r.corrupt_logit_diff, "change in mean logit diff",
                          f"denoising patching of each head's output ({corruption}, {n} pairs; the normalised "
                          f"effect is undefined: clean and corrupted runs differ by only "
                          f"{abs(r.clean_logit_diff - r.corrupt_logit_diff):.3f} logits)")
    if by == "dla":
        d = direct_logit_attribution(model, clean.tokens, clean.answer_ids, clean.wrong_ids)
        return HeadScores(by, d["heads"].mean(0), "mean logit diff",
                          f"direct logit attribution of each head on the {n} clean trials of the pairs")
    if by == "ablation":
        ab = Ablator(model, clean.tokens, clean.answer_ids, clean.wrong_ids, "mean")
        return HeadScores(by, ab.each_head()["logit_diff"] - ab.baseline["logit_diff"], "change in mean logit diff",
                          f"mean ablation of each head on the {n} clean trials of the pairs")
    raise ValueError(f"unknown score {by!r} (choose from {', '.join(SCORES)})")


def task_pairs(model: TLModel, task: Any, n: int, seed: int, corruption: str) -> tuple[TrialBatch, TrialBatch]:
    return make_pairs(task, n, seed=seed, tokenizer=model.tokenizer, corruption=corruption)


def prompt_tokens(model: TLModel, prompt: str) -> np.ndarray:
    """The prompt's tokens (with the model's BOS when it prepends one); empty or too long is a ValueError."""
    if not prompt.strip():
        raise ValueError("--prompt is empty")
    tokens = model.to_tokens(prompt, truncate=False)[0].cpu().numpy()
    if len(tokens) > model.cfg.n_ctx:
        raise ValueError(f"--prompt is {len(tokens)} tokens long, more than the model's context of "
                         f"{model.cfg.n_ctx} tokens")
    return tokens


@torch.no_grad()
def patterns(model: TLModel, tokens: np.ndarray, heads: list[tuple[int, int]]
             ) -> tuple[Float[np.ndarray, "head dest src"], Float[np.ndarray, " vocab"]]:
    """The chosen heads' attention patterns on one sequence, and the logits at its last position."""
    logits, cache = cache_last(model, torch.as_tensor(tokens[None], dtype=torch.long, device=model.cfg.device),
                               lambda n: n.endswith("hook_pattern"))
    att = np.stack([cache[f"blocks.{l}.attn.hook_pattern"][0, h].float().cpu().numpy() for l, h in heads])
    return att, logits[0].float().cpu().numpy()


def _view(model: TLModel, title: str, tokens: np.ndarray, heads: list[tuple[int, int]], answer: int | None = None,
          wrong: int | None = None) -> dict[str, Any]:
    tok = model.tokenizer
    att, last = patterns(model, tokens, heads)
    text = repr(tok.decode([int(t) for t in tokens]))
    if answer is not None and wrong is not None:
        text += (f" -> {tok.decode([answer])!r} (model: logit diff answer - other "
                 f"{float(last[answer] - last[wrong]):+.3f})")
    return {"title": title, "text": text, "tokens": [tok.decode([int(t)]) for t in tokens], "attention": att}


def trial_views(model: TLModel, pairs: tuple[TrialBatch, TrialBatch], trial: int, heads: list[tuple[int, int]]
                ) -> list[dict[str, Any]]:
    """The clean and the corrupted version of pair `trial`, side by side."""
    return [_view(model, f"{label} trial {trial}", b.tokens[trial], heads, int(b.answer_ids[trial]),
                  int(b.wrong_ids[trial])) for label, b in zip(("clean", "corrupted"), pairs)]


def prompt_views(model: TLModel, tokens: np.ndarray, heads: list[tuple[int, int]]) -> list[dict[str, Any]]:
    return [_view(model, "prompt", tokens, heads)]


@dataclass(frozen=True)
class AttentionPage:
    """The page `cogcircuits attention` writes (and `run` writes for its models): which heads, why, and the HTML."""

    html: str
    heads: list[tuple[int, int]]
    scores: HeadScores | None
    provenance: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return [head_name(h) for h in self.heads]


def attention_page_of(model: TLModel, info: dict[str, Any], task: Any, heads: list[tuple[int, int]] | None = None,
                      top: int | None = None, by: str | None = None, trial: int | None = 0, n: int = 16,
                      seed: int = 0, corruption: str | None = None, prompt: str | None = None) -> AttentionPage:
    """The attention page of `model`: `heads` named, or the `top` K (default 3) by the score `by` (default
    patching) on `n` task pairs; shown on pair `trial` (clean and corrupted) or on `prompt`. `info` names the model
    (name, weights_sha256) in the notes and the embedded provenance."""
    corruption = corruption or task_of(task).default_corruption
    L, H = model.cfg.n_layers, model.cfg.n_heads
    if heads is not None:
        check_heads(heads, L, H)
    k = top if top is not None else 3
    if heads is None and k > L * H:
        raise ValueError(f"--top {k} is more than the model's {L * H} heads")
    tokens = prompt_tokens(model, prompt) if prompt is not None else None
    by = by or ("patching" if heads is None else None)
    pairs = task_pairs(model, task, n, seed, corruption) if by or tokens is None else None
    scores = score_heads(model, pairs, by, corruption) if by else None
    named = heads is not None
    heads = heads if heads is not None else scores.top(k)
    names = [head_name(h) for h in heads]
    notes = [f"Model: {info.get('name')} ({L} layers x {H} heads; weights sha256 {info.get('weights_sha256')})."]
    if scores is not None:
        how = "named on the command line" if named else f"the top {k} by |{by} score|"
        where = (" The scores come from task pairs of the checkpoint's task, not from this prompt (a score needs "
                 "clean/corrupted pairs)." if tokens is not None else "")
        notes.append(f"Heads: {how}; score: {scores.description}, seed {seed}.{where}")
        notes.append("Scores (" + scores.unit + "): " + ", ".join(f"{head_name(h)} {scores.values[h]:+.3f}"
                                                                 for h in heads))
    else:
        notes.append("Heads: named on the command line (no score computed; pass --by to compute one).")
    if tokens is None:
        views = trial_views(model, pairs, trial, heads)
        notes.append(f"Trial {trial} of {n} clean/corrupted pairs ({corruption}, test split, seed {seed}): the clean "
                     "trial on the left, its corrupted version on the right.")
        shown = [pairs[0].tokens[trial], pairs[1].tokens[trial]]
    else:
        views = prompt_views(model, tokens, heads)
        notes.append("A free prompt has no corrupted version: it is shown alone.")
        shown = [tokens]
    provenance: dict[str, Any] = {
        "command": "attention", "model": info.get("name"), "weights_sha256": info.get("weights_sha256"),
        "task": to_dict(task), "heads": names, "chosen_by": None if named else by,
        "scores": None if scores is None else {"by": by, "unit": scores.unit, "description": scores.description,
                                                "values": scores.values.tolist(),
                                                "pairs": {"n": n, "seed": seed, "corruption": corruption,
                                                          "split": "test"}},
        "trial": trial, "prompt": prompt,
        "tokens": {v["title"]: [int(t) for t in ts] for v, ts in zip(views, shown)}, "versions": versions()}
    html = attention_views_page(views, names, f"Attention of {', '.join(names)} in {info.get('name')}", notes,
                                provenance)
    return AttentionPage(html, heads, scores, provenance)
