"""Attribution patching: the first-order (gradient) approximation of denoising patching, and its
integrated-gradients variant.

effect(node) ~= (a_clean - a_corrupt) . d metric / d a, with the gradient taken on the corrupted run (AtP), or
averaged over `steps` runs whose token embeddings interpolate from corrupted to clean (IG). The metric is the mean
logit difference; values are normalised like exact patching (divided by clean minus corrupted), so they estimate
the normalised denoising effect of each node.

Nodes: attention heads per (layer, pos, head) via `hook_z`; residual stream, attention and MLP outputs per
(layer, pos). Two forward passes and one backward for AtP; `steps` forward+backward passes for IG.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from interp.metrics import MIN_GAP, as_ids, as_tokens, cache_last, last_logits, logit_diff_from_logits
from interp.stats import spearman, top_k_recall
from interp.typing import TLModel

NODE_HOOKS = {"heads": "attn.hook_z", "resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out",
              "mlp_out": "hook_mlp_out"}


def gradients_at(model: TLModel, tokens: torch.Tensor, a: torch.Tensor, w: torch.Tensor, names: list[str],
           embed_override: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """Activations at `names`, the gradient of the mean logit difference with respect to them, and the metric.
    Weights get no gradient: the graph starts at the token embeddings (optionally replaced)."""
    live: dict[str, torch.Tensor] = {}

    def leaf(act: torch.Tensor, hook: Any) -> torch.Tensor:
        src = act if embed_override is None else embed_override
        return src.detach().requires_grad_(True)

    def save(act: torch.Tensor, hook: Any) -> torch.Tensor:
        live[hook.name] = act
        return act

    with torch.enable_grad():
        logits = last_logits(model, tokens, [("hook_embed", leaf)] + [(n, save) for n in names])
        metric = logit_diff_from_logits(logits, a, w).mean()
        gs = torch.autograd.grad(metric, [live[n] for n in names])
    acts = {n: live[n].detach() for n in names}
    return acts, {n: g.detach() for n, g in zip(names, gs)}, float(metric.item())


def attribution_patch(model: TLModel, clean_tokens: Any, corrupt_tokens: Any, answer: Any, wrong: Any,
                      nodes: str = "heads", method: str = "atp", steps: int = 8, min_gap: float = MIN_GAP
                      ) -> dict[str, Any]:
    """Estimated normalised denoising effect of every node. Returns {"values": array, "axes": ...}.

    heads -> [layer, pos, head]; resid_pre / attn_out / mlp_out -> [layer, pos]."""
    if nodes not in NODE_HOOKS:
        raise ValueError(f"unknown node type {nodes!r} (choose from {', '.join(NODE_HOOKS)})")
    if method not in ("atp", "ig"):
        raise ValueError(f"method must be 'atp' or 'ig', got {method!r}")
    if method == "ig" and steps < 1:
        raise ValueError("integrated gradients needs steps >= 1")
    dev = model.cfg.device
    clean, corrupt = as_tokens(clean_tokens, dev), as_tokens(corrupt_tokens, dev)
    a, w = as_ids(answer, dev), as_ids(wrong, dev)
    names = [f"blocks.{l}.{NODE_HOOKS[nodes]}" for l in range(model.cfg.n_layers)]
    wanted = set(names) | {"hook_embed"}
    with torch.no_grad():
        clogits, ccache = cache_last(model, clean, lambda n: n in wanted)
    clean_ld = float(logit_diff_from_logits(clogits, a, w).mean())
    acts, grads, corrupt_ld = gradients_at(model, corrupt, a, w, names + ["hook_embed"])
    if method == "ig":
        e0, e1 = acts["hook_embed"], ccache["hook_embed"]
        grads = {n: torch.zeros_like(acts[n]) for n in names}
        for k in range(1, steps + 1):
            _, g, _ = gradients_at(model, corrupt, a, w, names, embed_override=e0 + (k / steps) * (e1 - e0))
            for n in names:
                grads[n] += g[n] / steps
    per_layer = []
    for n in names:
        contrib = ((ccache[n] - acts[n]) * grads[n]).sum(0)  # grads are of the MEAN metric: sum over trials
        per_layer.append(contrib.sum(-1))
    values: Float[torch.Tensor, "layer ..."] = torch.stack(per_layer)
    gap = clean_ld - corrupt_ld  # NaN ("undefined") when the runs are too close, as for exact patching
    out = values.cpu().numpy() / gap if abs(gap) >= max(min_gap, 1e-9) else np.full(tuple(values.shape), np.nan)
    axes = ("layer", "pos", "head") if nodes == "heads" else ("layer", "pos")
    return {"values": out, "axes": axes, "method": method, "steps": steps if method == "ig" else 1,
            "clean_logit_diff": clean_ld, "corrupt_logit_diff": corrupt_ld}


def agreement(estimate: np.ndarray, exact: np.ndarray, first_diff: int, pos_axis: int = 1, k: int = 10
              ) -> dict[str, Any]:
    """How well attribution patching ranks what exact patching measures, over the indices that CAN differ:
    positions before the first token where clean and corrupted inputs differ are zero in both by construction and
    are left out (counting them inflates the correlation). Spearman (average ranks for ties) and the share of
    exact patching's top k (by |effect|) that the estimate also puts in its top k."""
    est, ex = np.asarray(estimate, float), np.asarray(exact, float)
    if est.shape != ex.shape:
        raise ValueError(f"estimate {est.shape} and exact {ex.shape} differ in shape")
    keep = np.moveaxis(est, pos_axis, 0)[first_diff:], np.moveaxis(ex, pos_axis, 0)[first_diff:]
    return {"spearman": spearman(*keep), "top_k_recall": top_k_recall(keep[0], keep[1], k), "k": k,
            "n_compared": int(keep[0].size), "first_compared_position": int(first_diff),
            "left_out": "positions before the first differing token (zero in both by construction)"}
