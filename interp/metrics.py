"""Task metrics at the answer position: logit difference, two-choice accuracy, the normalised patching metric.

Axes: `batch` trials, `pos` positions, `vocab` tokens. The answer position is the last position of every trial.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int

from interp.typing import TLModel

ArrayLike = Any


def as_tokens(tokens: ArrayLike, device: Any) -> Int[torch.Tensor, "batch pos"]:
    if isinstance(tokens, np.ndarray):
        tokens = torch.from_numpy(tokens)
    return tokens.to(device=device, dtype=torch.long)


def as_ids(ids: ArrayLike, device: Any) -> Int[torch.Tensor, " batch"]:
    return as_tokens(np.asarray(ids), device)


def last_logits(model: TLModel, tokens: Int[torch.Tensor, "batch pos"], hooks: list | None = None
                ) -> Float[torch.Tensor, "batch vocab"]:
    """Logits at the final position only: the unembedding is applied to one position, not all of them.
    `hooks` are TransformerLens forward hooks applied during the run."""
    if hooks:
        resid = model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=model.cfg.n_layers)
    else:
        resid = model(tokens, stop_at_layer=model.cfg.n_layers)
    return unembed_last(model, resid)


def unembed_last(model: TLModel, resid: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch vocab"]:
    """Final normalisation and unembedding of the last position of a final residual stream."""
    return model.unembed(model.ln_final(resid[:, -1:]))[:, 0]


def cache_last(model: TLModel, tokens: Int[torch.Tensor, "batch pos"], names_filter: Any
               ) -> tuple[Float[torch.Tensor, "batch vocab"], Any]:
    """`run_with_cache` that unembeds the final position only, never the [batch, pos, vocab] logits: returns the
    last position's logits and the cache of the hooks `names_filter` selects (final-normalisation hooks excluded:
    the blocks run, then the last position alone is normalised and unembedded)."""
    resid, cache = model.run_with_cache(tokens, names_filter=names_filter, stop_at_layer=model.cfg.n_layers)
    return unembed_last(model, resid), cache


def logit_diff_from_logits(logits: Float[torch.Tensor, "batch pos vocab"] | Float[torch.Tensor, "batch vocab"],
                           answer: Int[torch.Tensor, " batch"], wrong: Int[torch.Tensor, " batch"]
                           ) -> Float[torch.Tensor, " batch"]:
    """logit(answer) - logit(wrong) at the final position, per trial."""
    last = logits[:, -1] if logits.dim() == 3 else logits
    return last.gather(1, answer[:, None])[:, 0] - last.gather(1, wrong[:, None])[:, 0]


@torch.no_grad()
def logit_diff(model: TLModel, tokens: ArrayLike, answer: ArrayLike, wrong: ArrayLike, batch_size: int = 256
               ) -> Float[torch.Tensor, " batch"]:
    """Per-trial logit difference of a model, batched over trials."""
    dev = model.cfg.device
    toks, a, w = as_tokens(tokens, dev), as_ids(answer, dev), as_ids(wrong, dev)
    out = []
    for i in range(0, len(toks), batch_size):
        logits = last_logits(model, toks[i:i + batch_size])
        out.append(logit_diff_from_logits(logits, a[i:i + batch_size], w[i:i + batch_size]).float())
    return torch.cat(out)


MIN_GAP = 0.25  # logits: below this clean - corrupted gap a normalised effect means nothing


def normalise(values: Any, clean: float, corrupt: float, min_gap: float = MIN_GAP) -> np.ndarray:
    """(values - corrupt) / (clean - corrupt): 0 = the corrupted run's mean logit difference, 1 = the clean run's.
    NaN everywhere ("undefined") when |clean - corrupt| is below `min_gap` logits, e.g. a model that does not do the
    task, or a corruption that leaves the answer unchanged."""
    v = np.asarray(values, dtype=float)
    denom = clean - corrupt
    if not abs(denom) >= max(min_gap, 1e-9):
        return np.full_like(v, np.nan)
    return (v - corrupt) / denom


def evaluate_batch(model: TLModel, batch: Any, batch_size: int = 256) -> dict[str, Any]:
    """Accuracy (answer logit > wrong logit), mean logit difference and per-trial values for a TrialBatch."""
    ld = logit_diff(model, batch.tokens, batch.answer_ids, batch.wrong_ids, batch_size).cpu().numpy()
    return {"accuracy": float((ld > 0).mean()), "logit_diff": float(ld.mean()), "per_trial_logit_diff": ld}


def accuracy_by_condition(batch: Any, per_trial_logit_diff: np.ndarray) -> list[dict[str, Any]]:
    """Accuracy per combination of the task's conditions (`batch.conditions`, e.g. context x relevant coherence x
    congruency): rows for a tidy table, in sorted order of the condition values, empty cells left out."""
    names = list(batch.conditions)
    cols = [np.asarray(batch.meta[batch.conditions[k]]) for k in names]
    keys = list(zip(*[c.tolist() for c in cols])) if names else [()] * len(batch)
    correct = np.asarray(per_trial_logit_diff) > 0
    rows = []
    for combo in sorted(set(keys)):
        sel = np.ones(len(batch), dtype=bool)
        for c, v in zip(cols, combo):
            sel &= c == v
        rows.append({**dict(zip(names, combo)), "n": int(sel.sum()), "accuracy": float(correct[sel].mean())})
    return rows


def condition_label(row: dict[str, Any]) -> str:
    """A short label of one `accuracy_by_condition` row ("context=0 relevant_coherence=5 incong")."""
    parts = []
    for k, v in row.items():
        if k in ("n", "accuracy"):
            continue
        parts.append(("cong" if v else "incong") if k == "congruent" else f"{k}={v}")
    return " ".join(parts)


def incongruent_accuracy(batch: Any, per_trial_logit_diff: np.ndarray) -> float:
    """Accuracy on the incongruent trials of a batch (NaN if it has none)."""
    mask = ~np.asarray(batch.meta["congruent"], dtype=bool)
    return float((np.asarray(per_trial_logit_diff)[mask] > 0).mean()) if mask.any() else float("nan")
