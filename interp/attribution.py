"""Direct logit attribution of the logit difference at the answer position, and the logit lens.

The final LayerNorm is handled exactly: each component's output c is centred and divided by the final LN's scale
(the clean run's own), then projected on ln_final.w * (W_U[:, answer] - W_U[:, wrong]). The LN bias and the
unembedding bias form one constant term ("bias"). Components: token + position embeddings, each head's output
(z_h @ W_O[h]), each attention layer's output bias b_O, each MLP's output (or its neurons plus b_out). They sum
to the model's logit difference exactly (tests).

Axes: batch (trials), layer, head, neuron.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from interp.metrics import as_ids, as_tokens
from interp.typing import TLModel


def _setup(model: TLModel, tokens: Any, answer: Any, wrong: Any) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    dev = model.cfg.device
    t, a, w = as_tokens(tokens, dev), as_ids(answer, dev), as_ids(wrong, dev)
    with torch.no_grad():
        _, cache = model.run_with_cache(t, return_type=None)
    direction = (model.W_U[:, a] - model.W_U[:, w]).T * model.ln_final.w  # [batch, d_model]
    const = model.b_U[a] - model.b_U[w]
    if hasattr(model.ln_final, "b"):  # LayerNorm has a bias; RMSNorm has none
        const = const + (model.W_U[:, a] - model.W_U[:, w]).T @ model.ln_final.b
    return cache, direction, const, t


def _centre(model: TLModel, x: torch.Tensor) -> torch.Tensor:
    """What the final normalisation does to a component before its scale: LayerNorm centres, RMSNorm does not."""
    rms = str(model.cfg.normalization_type).startswith("RMS")
    return x if rms else x - x.mean(-1, keepdim=True)


def _project(model: TLModel, x: Float[torch.Tensor, "batch ... d_model"], scale: Float[torch.Tensor, "batch 1"],
             direction: Float[torch.Tensor, "batch d_model"]) -> Float[torch.Tensor, "batch ..."]:
    """Contribution of a residual-stream component at the last position through the final normalisation."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (1,)
    return (_centre(model, x) / scale.view(shape) * direction.view(x.shape[0], *([1] * (x.dim() - 2)), -1)).sum(-1)


@torch.no_grad()
def direct_logit_attribution(model: TLModel, tokens: Any, answer: Any, wrong: Any,
                             neuron_layers: tuple[int, ...] = ()) -> dict[str, Any]:
    """Per-trial DLA. Returns arrays [batch, ...]: embed, pos_embed, heads [batch, layer, head], attn_bias
    [batch, layer], mlp [batch, layer], bias [batch], total (their sum) and logit_diff (the model's); plus
    neurons {layer: [batch, neuron]} and mlp_bias {layer: [batch]} for `neuron_layers`."""
    cache, direction, const, _ = _setup(model, tokens, answer, wrong)
    L = model.cfg.n_layers
    for l in neuron_layers:
        if not 0 <= l < L:
            raise ValueError(f"neuron layer {l} out of range: the model has layers 0..{L - 1}")
    scale = cache["ln_final.hook_scale"][:, -1]  # [batch, 1]
    proj = lambda x: _project(model, x, scale, direction)  # noqa: E731
    pos = cache["hook_pos_embed"][:, -1] if "hook_pos_embed" in cache else torch.zeros_like(cache["hook_embed"][:, -1])
    out: dict[str, Any] = {"embed": proj(cache["hook_embed"][:, -1]), "pos_embed": proj(pos)}  # rotary: no pos_embed
    heads, attn_bias, mlp = [], [], []
    for l in range(L):
        z = cache[f"blocks.{l}.attn.hook_z"][:, -1]  # [batch, head, d_head]
        per_head = torch.einsum("bhe,hed->bhd", z, model.blocks[l].attn.W_O)
        heads.append(proj(per_head))
        attn_bias.append(proj(model.blocks[l].attn.b_O.expand(z.shape[0], -1)))
        mlp.append(proj(cache[f"blocks.{l}.hook_mlp_out"][:, -1]))
    out["heads"], out["attn_bias"], out["mlp"] = torch.stack(heads, 1), torch.stack(attn_bias, 1), torch.stack(mlp, 1)
    out["bias"] = const
    out["neurons"], out["mlp_bias"] = {}, {}
    for l in neuron_layers:
        post = cache[f"blocks.{l}.mlp.hook_post"][:, -1]  # [batch, neuron]
        # by linearity, without a [batch, neuron, d_model] tensor: post_i * (normalised W_out[i] . direction)
        w_dir = torch.einsum("nd,bd->bn", _centre(model, model.blocks[l].mlp.W_out), direction)
        out["neurons"][l] = post * w_dir / scale
        out["mlp_bias"][l] = proj(model.blocks[l].mlp.b_out.expand(post.shape[0], -1))
    final = cache[f"blocks.{L - 1}.hook_resid_post"][:, -1]
    logits_diff = proj(final) + const
    out["total"] = out["embed"] + out["pos_embed"] + out["heads"].sum((1, 2)) + out["attn_bias"].sum(1) + \
        out["mlp"].sum(1) + const
    out["logit_diff"] = logits_diff
    return {k: ({kk: vv.cpu().numpy() for kk, vv in v.items()} if isinstance(v, dict) else v.cpu().numpy())
            for k, v in out.items()}


@torch.no_grad()
def logit_lens(model: TLModel, tokens: Any, answer: Any, wrong: Any) -> Float[np.ndarray, "batch layer_plus_1"]:
    """Logit difference read from the residual stream before each layer and after the last, each normalised by
    the final LayerNorm with its own statistics; the last column is the model's own logit difference."""
    dev = model.cfg.device
    t, a, w = as_tokens(tokens, dev), as_ids(answer, dev), as_ids(wrong, dev)
    _, cache = model.run_with_cache(t, names_filter=lambda n: n.endswith("hook_resid_pre") or n.endswith("resid_post"),
                                    return_type=None)
    udiff = (model.W_U[:, a] - model.W_U[:, w]).T  # [batch, d_model]
    bdiff = model.b_U[a] - model.b_U[w]
    L = model.cfg.n_layers
    cols = []
    for l in range(L + 1):
        x = cache[f"blocks.{l}.hook_resid_pre"][:, -1] if l < L else cache[f"blocks.{L - 1}.hook_resid_post"][:, -1]
        cols.append((model.ln_final(x[:, None])[:, 0] * udiff).sum(-1) + bdiff)
    return torch.stack(cols, 1).cpu().numpy()
