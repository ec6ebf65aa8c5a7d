"""A full forward pass with edges of the circuit graph ablated, written on the prepared weights of `interp.forward`.

The same computation as `interp.circuits.EdgeHooks.ablation_hooks` run through TransformerLens (the reference the
tests hold it to), without the hook machinery: every reader (a layer's heads, q / k / v of a head sharing one
input as in the graph; an MLP; the final normalisation) receives the residual stream minus, for each REMOVED edge
u -> reader, u's current output minus its ablated output. Readers of one layer whose removed edges are the same
(every node circuit, and most layers of an edge circuit) share one input, so the layer runs as a plain block;
otherwise each head gets its own input and its own normalisation.

Several circuits may be evaluated at once, stacked along the batch circuit-major (rows c * n .. (c + 1) * n - 1 are
circuit c), as in `EdgeHooks.ablation_hooks`.

Axes: circuit, up (upstream nodes, `interp.circuits.node_names` order), down (readers), batch, pos, head, d_model.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int

from interp.forward import Weights, final_logit_diff, softmax, supported

__all__ = ["embed_output", "run", "supported"]


class _Deltas:
    """current - ablated output of every upstream node written so far, [up, circuit, batch * pos * d_model] (each
    node's block contiguous: a reader's sum over its removed edges is one matrix product)."""

    def __init__(self, ablated: Float[torch.Tensor, "up batch pos d_model"], k: int) -> None:
        U, B, P, D = ablated.shape
        self.ablated, self.k, self.shape = ablated.reshape(U, 1, -1), k, (B, P, D)
        self.delta = ablated.new_empty(U, k, B * P * D)  # slots are written before any reader reads them

    def write(self, idx: slice, value: Float[torch.Tensor, "nodes kbatch_pos_d"]) -> None:
        n = idx.stop - idx.start
        self.delta[idx] = value.reshape(n, self.k, -1) - self.ablated[idx]

    def into(self, removed: Float[torch.Tensor, "circuit up readers"], written: int
             ) -> Float[torch.Tensor, "readers kbatch_pos_d"] | None:
        """Sum of the removed edges' deltas into each reader, or None when no edge into them is removed."""
        r = removed[:, :written]
        if not bool(r.any()):
            return None
        if self.k == 1:
            return torch.mm(r[0].T, self.delta[:written, 0])
        return torch.einsum("cur,ucx->rcx", r, self.delta[:written]).reshape(r.shape[2], -1)


def _qkv(w: Weights, l: int, x: Float[torch.Tensor, "kbatch pos d_model"]) -> tuple[torch.Tensor, ...]:
    """q, k, v [kbatch, pos, head, d_head] of every head from one shared input (keys and values per query head)."""
    blk = w.blocks[l]
    B, P, D = x.shape
    h, e, hk = w.n_heads, w.d_head, blk.n_kv
    qkv = torch.addmm(blk.b_qkv, blk.ln1(x).reshape(B * P, D), blk.W_qkv).view(B, P, h + 2 * hk, e)
    q, k, v = qkv.split([h, hk, hk], dim=2)
    if hk != h:
        k, v = k.repeat_interleave(h // hk, dim=2), v.repeat_interleave(h // hk, dim=2)
    return q, k, v


def _qkv_per_head(w: Weights, l: int, x: Float[torch.Tensor, "head kbatch_pos d_model"], B: int
                  ) -> tuple[torch.Tensor, ...]:
    """q, k, v [kbatch, pos, head, d_head] of each head from its own input (keys and values per query head)."""
    a, H = w.blocks[l].attn, w.n_heads
    ln = w.blocks[l].ln1(x)
    out = []
    for W, b in ((a.W_Q, a.b_Q), (a.W_K, a.b_K), (a.W_V, a.b_V)):
        t = torch.baddbmm(b[:, None], ln, W)  # [head, kbatch * pos, d_head]
        out.append(t.view(H, B, -1, w.d_head).permute(1, 2, 0, 3))
    return tuple(out)


def _results(w: Weights, l: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
             ) -> Float[torch.Tensor, "head kbatch_pos d_model"]:
    """Each head's output z_h @ W_O[h] (no bias), head-major, from q / k / v [kbatch, pos, head, d_head]."""
    blk = w.blocks[l]
    if blk.rotate is not None:
        q, k = blk.rotate(q, 0), blk.rotate(k, 0)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [batch, head, pos, d_head]
    scores = torch.matmul(q, k.transpose(-1, -2)).div_(blk.scale)
    P = scores.shape[-1]
    scores.masked_fill_(torch.ones(P, P, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    z = torch.matmul(softmax(scores), v)  # [batch, head, pos, d_head]
    return torch.bmm(z.transpose(0, 1).reshape(w.n_heads, -1, w.d_head), blk.attn.W_O)


def run(w: Weights, embed: Float[torch.Tensor, "batch pos d_model"],
        ablated: Float[torch.Tensor, "up batch pos d_model"], removed: Bool[torch.Tensor, "circuit up down"],
        direction: torch.Tensor, bias: torch.Tensor) -> Float[torch.Tensor, " kbatch"]:
    """Logit difference at the last position of each trial with the `removed` edges (True = removed) ablated.
    `embed` is the input node's output on the clean trials (token plus learned position embeddings);
    `direction` / `bias` are `Weights.direction` of the trials (shared by every circuit)."""
    k, H, L = removed.shape[0], w.n_heads, w.n_layers
    B, P, D = embed.shape
    r = removed.to(ablated.dtype)
    deltas = _Deltas(ablated, k)
    x = embed.repeat(k, 1, 1)
    deltas.write(slice(0, 1), x)
    for l in range(L):
        first, col = 1 + l * (H + 1), l * (H + 1)
        heads_r = r[:, :, col:col + H]
        if bool((heads_r[:, :first] == heads_r[:, :first, :1]).all()):  # every head reads the same input
            d = deltas.into(heads_r[:, :, :1], first)
            q, kk, v = _qkv(w, l, x if d is None else x - d.view(k * B, P, D))
        else:
            d = deltas.into(heads_r, first)
            q, kk, v = _qkv_per_head(w, l, x.view(1, -1, D) - d.view(H, -1, D), k * B)
        res = _results(w, l, q, kk, v)
        deltas.write(slice(first, first + H), res)
        x = x + res.sum(0).view(k * B, P, D) + w.blocks[l].b_O
        d = deltas.into(r[:, :, col + H:col + H + 1], first + H)
        mlp_out = w.blocks[l].mlp(w.blocks[l].ln2(x if d is None else x - d.view(k * B, P, D)))
        deltas.write(slice(first + H, first + H + 1), mlp_out)
        x = x + mlp_out
    d = deltas.into(r[:, :, L * (H + 1):], 1 + L * (H + 1))
    last = x[:, -1] if d is None else x[:, -1] - d.view(k * B, P, D)[:, -1]
    return final_logit_diff(w, last, direction, bias)


def run_nodes(w: Weights, embed: Float[torch.Tensor, "batch pos d_model"],
              ablated: Float[torch.Tensor, "up batch pos d_model"], removed: Bool[torch.Tensor, "circuit up"],
              direction: torch.Tensor, bias: torch.Tensor) -> Float[torch.Tensor, " kbatch"]:
    """`run` for NODE circuits (every edge leaving a removed node removed, the embeddings kept): each removed node's
    output is replaced by its ablated output in the residual stream, so every reader shares one input."""
    k, H = removed.shape[0], w.n_heads
    B, P, D = embed.shape
    abl = ablated.reshape(ablated.shape[0], 1, -1, D)  # [up, 1, batch * pos, d_model]
    gone = removed.T[:, :, None, None]  # [up, circuit, 1, 1]
    x = embed.repeat(k, 1, 1)
    for l in range(w.n_layers):
        first = 1 + l * (H + 1)
        res = _results(w, l, *_qkv(w, l, x)).view(H, k, -1, D)
        if bool(gone[first:first + H].any()):
            res = torch.where(gone[first:first + H], abl[first:first + H], res)
        x = x + res.sum(0).view(k * B, P, D) + w.blocks[l].b_O
        mlp_out = w.blocks[l].mlp(w.blocks[l].ln2(x))
        if bool(gone[first + H].any()):
            mlp_out = torch.where(gone[first + H], abl[first + H], mlp_out.view(k, -1, D)).view(k * B, P, D)
        x = x + mlp_out
    return final_logit_diff(w, x[:, -1], direction, bias)


def embed_output(w: Weights, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_model"]:
    """The input node's output: token embedding plus learned position embedding (rotary models: none)."""
    e = w.embed(tokens)
    return e if w.pos_embed is None else e + w.pos_embed(tokens)
