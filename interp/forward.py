"""A partial forward pass of a HookedTransformer (GPT-2 or Llama architecture) that starts at layer L and position p.

Exact patching only needs to recompute what a patch can change: layers >= L (the earlier ones are read from the
target run's cache) and positions >= p (causal attention: earlier positions, and their keys and values, are
unchanged, so they are read from the cache too). Only the logit difference at the final position is needed, so
the unembedding is applied to two columns, not the vocabulary.

Architectures: normalisation (LayerNorm or RMSNorm) and the MLP (GELU, or gated SiLU) are the model's own modules;
attention is written here: learned positions (GPT-2) or rotary positions applied with the offset of the first
recomputed position (Llama), keys and values per query head (grouped-query attention ungrouped, see interp.arch).
Patched q / k / v are the pre-rotary values TransformerLens hooks as `hook_q` / `hook_k` / `hook_v`; the cached keys of
earlier positions are the post-rotary ones (`hook_rot_k`).

Axes: batch (trials, possibly several patched variants stacked), pos (positions p..end), kpos (all key
positions 0..end), head, d_head, d_model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float, Int

# a patch receives (activation name, activation, start position) and returns the patched activation
Patch = Callable[[str, torch.Tensor, int], torch.Tensor]


def _attention(attn: Any, x_ln: Float[torch.Tensor, "batch pos d_model"], k_prev: torch.Tensor, v_prev: torch.Tensor,
               start: int, patch: Patch | None) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.einsum("bpd,hde->bphe", x_ln, attn.W_Q) + attn.b_Q
    k = torch.einsum("bpd,hde->bphe", x_ln, attn.W_K) + attn.b_K
    v = torch.einsum("bpd,hde->bphe", x_ln, attn.W_V) + attn.b_V
    if patch is not None:
        q, k, v = patch("q", q, start), patch("k", k, start), patch("v", v, start)
    if attn.cfg.positional_embedding_type == "rotary":
        q, k = attn.apply_rotary(q, start), attn.apply_rotary(k, start)
    k_all = torch.cat([k_prev, k], dim=1)
    v_all = torch.cat([v_prev, v], dim=1)
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k_all) / attn.attn_scale
    n_q, n_k = q.shape[1], k_all.shape[1]
    qpos = torch.arange(start, start + n_q, device=q.device)[:, None]
    kpos = torch.arange(n_k, device=q.device)[None, :]
    scores = scores.masked_fill(kpos > qpos, float("-inf"))
    pattern = torch.softmax(scores, dim=-1)
    if patch is not None:
        pattern = patch("pattern", pattern, start)
    z = torch.einsum("bhqk,bkhe->bqhe", pattern, v_all)
    if patch is not None:
        z = patch("z", z, start)
    out = torch.einsum("bqhe,hed->bqd", z, attn.W_O) + attn.b_O
    if patch is not None:
        out = patch("attn_out", out, start)
    return out, z


def run_from(model: Any, layer: int, start: int, resid: Float[torch.Tensor, "batch pos d_model"],
             kv_prefix: list[tuple[torch.Tensor, torch.Tensor]], answer: Int[torch.Tensor, " batch"],
             wrong: Int[torch.Tensor, " batch"], patch: Patch | None = None, patch_layer: int | None = None,
             cached: dict[str, torch.Tensor] | None = None) -> Float[torch.Tensor, " batch"]:
    """Logit difference at the last position after running blocks layer.. on `resid` (positions start..end).

    kv_prefix[l] holds the cached keys (post-rotary when rotary) and values of positions < start at layer l (shape
    [batch, start, head, d_head]). `patch` is applied inside block `patch_layer` (default: `layer`)."""
    patch_layer = layer if patch_layer is None else patch_layer
    x = resid
    if patch is not None and patch_layer == layer:
        x = patch("resid_pre", x, start)
    for l in range(layer, model.cfg.n_layers):
        block = model.blocks[l]
        p = patch if l == patch_layer else None
        k_prev, v_prev = kv_prefix[l]
        c = cached if (cached and l == layer) else {}
        if "z" in c:
            z = p("z", c["z"], start) if p is not None else c["z"]
            attn_out = torch.einsum("bqhe,hed->bqd", z, block.attn.W_O) + block.attn.b_O
        elif "attn_out" in c or "mlp_out" in c:
            attn_out = p("attn_out", c["attn_out"], start) if p is not None else c["attn_out"]
        else:
            attn_out, _ = _attention(block.attn, block.ln1(x), k_prev, v_prev, start, p)
        x = x + attn_out
        if "mlp_out" in c:
            mlp_out = c["mlp_out"]
        else:
            mlp_out = block.mlp(block.ln2(x))
        if p is not None:
            mlp_out = p("mlp_out", mlp_out, start)
        x = x + mlp_out
    final = model.ln_final(x[:, -1:])[:, 0]
    direction = model.W_U[:, answer].T - model.W_U[:, wrong].T
    return (final * direction).sum(-1) + model.b_U[answer] - model.b_U[wrong]
