"""Reliance on a reference model layer by layer, from cached prefixes: reverting a layer (or every layer from
some layer up) to the reference's weights, and patching the reference's residual stream in before a layer.

Each of these edits leaves the layers below it untouched, so the model's own residual stream entering that layer
(one forward, cached) is where each edited forward starts: layer l's edit runs L - l blocks instead of L. A layer's
weights reverted to the reference's are the reference's block (its normalisations, attention and MLP: the
components `interp.compare.weight_reversion` resets), so no weights are copied. The blocks run on the prepared
weights of `interp.forward` (fused projections; the last block computes the last position only) where that forward
supports the architecture, else as TransformerLens's modules. The numbers are those of `weight_reversion(...,
singles=False, bottom_up=False)` and `cross_model_patching(..., sites=("resid",))`, which stay as the reference
implementation (tests: equal to float rounding on the tiny GPT-2 and the tiny grouped-query Llama).

Axes: `batch` trials, `pos` positions, `d_model` the residual stream.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float

from interp.compare import chance_accuracy, check_same_shape, performance, retained
from interp.forward import Weights, final_logit_diff, record, run_block, supported
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
    """Run `blocks` (TransformerLens's) on `x`, then the model's final normalisation and unembedding at the last
    position."""
    for block in blocks:
        x = block(x)
    return _scores(logit_diff_from_logits(unembed_last(model, x), a, w))


def _scores(ld: torch.Tensor) -> dict[str, float]:
    return {"accuracy": float((ld > 0).float().mean()), "logit_diff": float(ld.mean())}


@torch.no_grad()
def _finish_prepared(wm: Weights, blocks: list[Any], x: Resid, direction: torch.Tensor, bias: torch.Tensor
                     ) -> dict[str, float]:
    """The same on prepared weights (`interp.forward`): `blocks` are `Weights.blocks` entries of either model."""
    for i, blk in enumerate(blocks):
        x = run_block(blk, x, last_only=i == len(blocks) - 1)  # only the last position's output is read
    return _scores(final_logit_diff(wm, x[:, -1], direction, bias))


@torch.no_grad()
def layer_reliance(model: TLModel, reference: TLModel, tokens: Any, answer: Any, wrong: Any, cmap: bool = True
                   ) -> dict[str, Any]:
    """{"full": the model's performance; "chance": chance measured on these trials (`chance_accuracy`); "layer":
    [retained with layer l reverted to the reference's weights]; "top_down": [retained with layers k..L-1 reverted, k from L-1 down to 0]; "cmap_resid" (with `cmap`):
    [retained with the reference's residual stream entering layer l patched in]}. Retained shares are
    chance-corrected (`interp.compare.retained`)."""
    check_same_shape(model, reference, "layer-by-layer reliance")
    dev = model.cfg.device
    t, a, w = as_tokens(tokens, dev), as_ids(answer, dev), as_ids(wrong, dev)
    full, chance = performance(model, t, a, w), chance_accuracy(a, w)
    L = model.cfg.n_layers
    if supported(model.cfg):
        wm, wr = Weights.of(model), Weights.of(reference)
        direction, bias = wm.direction(a, w)
        mine, theirs = wm.blocks, wr.blocks
        own = _prepared_resid_pres(wm, t)
        ref = _prepared_resid_pres(wr, t) if cmap else []
        run = lambda blocks, x: _finish_prepared(wm, blocks, x, direction, bias)  # noqa: E731
    else:
        mine, theirs = list(model.blocks), list(reference.blocks)
        own, ref = resid_pres(model, t), resid_pres(reference, t) if cmap else []
        run = lambda blocks, x: _finish(model, blocks, x, a, w)  # noqa: E731
    out: dict[str, Any] = {"full": full, "chance": chance}
    out["layer"] = [retained(run([theirs[l]] + mine[l + 1:], own[l]), full, chance) for l in range(L)]
    out["top_down"] = [retained(run(theirs[k:], own[k]), full, chance) for k in range(L - 1, -1, -1)]
    if cmap:
        out["cmap_resid"] = [retained(run(mine[l:], ref[l]), full, chance) for l in range(L)]
    return out


def _prepared_resid_pres(wm: Weights, tokens: torch.Tensor) -> list[Resid]:
    rec = record(wm, tokens)[1]
    return [rec[f"blocks.{l}.hook_resid_pre"] for l in range(wm.n_layers)]
