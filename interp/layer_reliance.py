"""Reliance on a reference model layer by layer, from cached prefixes: reverting a layer (or every layer from
some layer up) to the reference's weights, and patching the reference's residual stream in before a layer.

Each of these edits leaves the layers below it untouched, so the model's own residual stream entering that layer
(one forward, cached) is where each edited forward starts: layer l's edit runs L - l blocks instead of L. A layer's
weights reverted to the reference's are the reference's block (its normalisations, attention and MLP: the
components `interp.compare.weight_reversion` resets), so no weights are copied. The numbers are those of
`weight_reversion(..., singles=False, bottom_up=False)` and `cross_model_patching(..., sites=("resid",))`, which
stay as the reference implementation (tests: equal on the tiny GPT-2 and the tiny grouped-query Llama).

Axes: `batch` trials, `pos` positions, `d_model` the residual stream.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float

from interp.compare import performance, check_same_shape, retained
from interp.metrics import as_ids, as_tokens, logit_diff_from_logits, unembed_last
from interp.typing import TLModel

Resid = Float[torch.Tensor, "batch pos d_model"]


@torch.no_grad()
def resid_pres(model: TLModel, tokens: torch.Tensor) -> list[Resid]:
    """The residual stream entering each layer (hook_resid_pre), from one forward of `model`."""
    L = model.cfg.n_layers
    names = [f"blocks.{l}.hook_resid_pre" for l in range(L)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names, stop_at_layer=L, return_type=None)
    return [cache[n] for n in names]


@torch.no_grad()
def _finish(model: TLModel, blocks: list[Any], x: Resid, a: torch.Tensor, w: torch.Tensor) -> dict[str, float]:
    """Run `blocks` on `x`, then the model's final normalisation and unembedding at the last position."""
    for block in blocks:
        x = block(x)
    ld = logit_diff_from_logits(unembed_last(model, x), a, w)
    return {"accuracy": float((ld > 0).float().mean()), "logit_diff": float(ld.mean())}


@torch.no_grad()
def layer_reliance(model: TLModel, reference: TLModel, tokens: Any, answer: Any, wrong: Any, cmap: bool = True
                   ) -> dict[str, Any]:
    """{"full": the model's performance; "layer": [retained with layer l reverted to the reference's weights];
    "top_down": [retained with layers k..L-1 reverted, k from L-1 down to 0]; "cmap_resid" (with `cmap`):
    [retained with the reference's residual stream entering layer l patched in]}. Retained shares are
    chance-corrected (`interp.compare.retained`)."""
    check_same_shape(model, reference, "layer-by-layer reliance")
    dev = model.cfg.device
    t, a, w = as_tokens(tokens, dev), as_ids(answer, dev), as_ids(wrong, dev)
    full = performance(model, t, a, w)
    own, L = resid_pres(model, t), model.cfg.n_layers
    mine, theirs = list(model.blocks), list(reference.blocks)
    out: dict[str, Any] = {"full": full}
    out["layer"] = [retained(_finish(model, [theirs[l]] + mine[l + 1:], own[l], a, w), full) for l in range(L)]
    out["top_down"] = [retained(_finish(model, theirs[k:], own[k], a, w), full) for k in range(L - 1, -1, -1)]
    if cmap:
        ref = resid_pres(reference, t)
        out["cmap_resid"] = [retained(_finish(model, mine[l:], ref[l], a, w), full) for l in range(L)]
    return out
