"""Automated circuit discovery: edge attribution patching (EAP, Syed et al. 2023) and EAP-IG (Hanna et al. 2024)
over the graph of attention heads and MLPs, with faithfulness curves.

Graph. Upstream nodes write to the residual stream: the embeddings, each head (its output z_h @ W_O[h], computed
from `hook_z`: TransformerLens's own `hook_result` materialises a [batch, pos, head, d_head, d_model] product and was
6x slower here), each MLP.
Downstream nodes read from it: each head (the sum of its split q/k/v inputs), each MLP (`hook_mlp_in`), the
logits (the final residual stream). An edge u -> v exists when u writes before v reads.

Score of edge u -> v: sum over trials and positions of (out_u(clean) - out_u(corrupted)) . d metric / d in_v,
the gradient taken on the corrupted run (EAP) or averaged along the straight path of token embeddings from
corrupted to clean (EAP-IG, `steps` points). Scores are normalised by (clean - corrupted) mean logit difference.
A node's score is the sum of its outgoing edges (= the attribution patching estimate of patching its output).

Circuits are evaluated (faithfulness, CPR / CMD, random baselines) in `interp.faithfulness`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from interp.atp import gradients_at
from interp.metrics import MIN_GAP, as_ids, as_tokens, cache_last, last_logits, logit_diff_from_logits, normalise
from interp.typing import TLModel

def node_names(n_layers: int, n_heads: int) -> tuple[list[str], list[str]]:
    up = ["embed"] + [n for l in range(n_layers) for n in [f"L{l}H{h}" for h in range(n_heads)] + [f"MLP{l}"]]
    down = [n for l in range(n_layers) for n in [f"L{l}H{h}" for h in range(n_heads)] + [f"MLP{l}"]] + ["logits"]
    return up, down


def _order(name: str, reading: bool) -> float:
    """Position in the forward pass: heads of layer l at 2l(+0), MLP l at 2l+1, logits last."""
    if name == "embed":
        return -1
    if name == "logits":
        return 1e9
    if name.startswith("MLP"):
        return 2 * int(name[3:]) + 1
    return 2 * int(name[1:name.index("H")])


def edge_mask(up: list[str], down: list[str]) -> np.ndarray:
    return np.array([[_order(u, False) < _order(v, True) for v in down] for u in up])


@dataclass
class Graph:
    up: list[str]
    down: list[str]
    scores: np.ndarray  # [up, down], NaN where no edge
    method: str
    clean_logit_diff: float
    corrupt_logit_diff: float

    def node_scores(self) -> dict[str, float]:
        s = np.nan_to_num(self.scores).sum(1)
        return {u: float(v) for u, v in zip(self.up, s) if u != "embed"}

    def edges(self) -> list[tuple[str, str, float]]:
        out = [(u, v, float(self.scores[i, j])) for i, u in enumerate(self.up) for j, v in enumerate(self.down)
               if np.isfinite(self.scores[i, j])]
        return sorted(out, key=lambda e: -abs(e[2]))


class EdgeHooks:
    """Switches on the TransformerLens hooks the edge graph needs (split q/k/v inputs per head, MLP inputs) and
    restores the model's settings afterwards; gives the upstream outputs and edge-ablation hooks."""

    def __init__(self, model: TLModel) -> None:
        self.model = model
        c = model.cfg
        self.L, self.H = c.n_layers, c.n_heads

    def __enter__(self) -> EdgeHooks:
        c = self.model.cfg
        self.saved = (c.use_split_qkv_input, c.use_hook_mlp_in)
        self.model.set_use_split_qkv_input(True)
        self.model.set_use_hook_mlp_in(True)
        return self

    def __exit__(self, *exc: Any) -> None:
        s, m = self.saved
        self.model.set_use_split_qkv_input(s)
        self.model.set_use_hook_mlp_in(m)

    @torch.no_grad()
    def outputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, pos, up, d_model] upstream outputs of a run, in `node_names` order."""
        _, cache = self.model.run_with_cache(tokens, names_filter=OUTPUT_HOOKS, return_type=None)
        return _outputs(self.model, cache)

    def ablation_hooks(self, ablated: torch.Tensor, removed: torch.Tensor) -> list[tuple[str, Any]]:
        """Forward hooks that give every reader its input with the `removed` edges (1 = removed) carrying the
        upstream node's ablated output instead of its current one. `ablated` is [up, batch, pos, d_model] (up
        first: each node's output is one contiguous block, and one matrix product per reader sums the removed
        edges). `removed` is [up, down], or [circuit, up, down] for several circuits evaluated at once on a batch
        made of that many copies of the trials (circuit-major: copy c holds rows c * n .. (c + 1) * n - 1).

        Longer than a screen on purpose: the hooks are closures over one shared buffer of deltas, written by the
        writers' hooks and read by the readers' in the order TransformerLens calls them; split apart, that buffer
        and its indexing would have to travel between functions. (Runs use `interp.edge_forward`; this is the
        reference it is tested against.)"""
        L, H = self.L, self.H
        removed = removed if removed.dim() == 3 else removed[None]
        k = removed.shape[0]
        U, B, P, D = ablated.shape
        delta = torch.zeros(k, U, (B // k) * P * D, dtype=ablated.dtype, device=ablated.device)  # current - ablated
        hooks: list[tuple[str, Any]] = []

        def delta_into(cols: slice | int, written: int) -> torch.Tensor | None:
            r = removed[:, :written, cols]
            if not bool(r.any()):
                return None
            r = r if r.dim() == 3 else r[..., None]  # [circuit, up, readers]
            out = torch.bmm(r.transpose(1, 2), delta[:, :written])  # [circuit, readers, b * pos * d_model]
            out = out.view(k, -1, B // k, P, D).permute(0, 2, 3, 1, 4).reshape(B, P, -1, D)
            return out if isinstance(cols, slice) else out[:, :, 0]

        def write(idx: slice | int, value: torch.Tensor) -> None:
            """value [batch, pos, (nodes,) d_model]"""
            v = value if value.dim() == 4 else value[:, :, None]
            v = v.permute(2, 0, 1, 3).reshape(v.shape[2], k, -1).transpose(0, 1)  # [circuit, nodes, b*pos*d]
            sl = idx if isinstance(idx, slice) else slice(idx, idx + 1)
            delta[:, sl] = v - ablated[sl].reshape(v.shape[1], k, -1).transpose(0, 1)

        learned_positions = self.model.cfg.positional_embedding_type == "standard"

        def embed(act: torch.Tensor, hook: Any) -> torch.Tensor:
            self._embed = act
            if not learned_positions:  # rotary: the token embedding is the whole input node
                write(0, act)
            return act

        def pos_embed(act: torch.Tensor, hook: Any) -> torch.Tensor:
            write(0, self._embed + act)
            return act

        hooks += [("hook_embed", embed)] + ([("hook_pos_embed", pos_embed)] if learned_positions else [])
        for l in range(L):
            first = 1 + l * (H + 1)  # up index of head (l, 0); MLP l follows its heads
            heads_in, mlp_col = slice(l * (H + 1), l * (H + 1) + H), l * (H + 1) + H
            memo: dict[str, torch.Tensor | None] = {}

            def qkv(act: torch.Tensor, hook: Any, cols: slice = heads_in, memo: dict = memo, w: int = first
                    ) -> torch.Tensor:
                if hook.name.endswith("q_input"):  # q, k and v inputs of one layer see the same upstream outputs
                    memo["d"] = delta_into(cols, w)
                return act if memo["d"] is None else act - memo["d"]

            def result(act: torch.Tensor, hook: Any, first: int = first, l: int = l) -> torch.Tensor:
                write(slice(first, first + H), head_results(self.model, l, act))
                return act

            def mlp_in(act: torch.Tensor, hook: Any, col: int = mlp_col, w: int = first + H) -> torch.Tensor:
                d = delta_into(col, w)
                return act if d is None else act - d

            def mlp_out(act: torch.Tensor, hook: Any, idx: int = first + H) -> torch.Tensor:
                write(idx, act)
                return act

            hooks += [(f"blocks.{l}.hook_{x}_input", qkv) for x in "qkv"]
            hooks += [(f"blocks.{l}.attn.hook_z", result), (f"blocks.{l}.hook_mlp_in", mlp_in),
                      (f"blocks.{l}.hook_mlp_out", mlp_out)]

        def final(act: torch.Tensor, hook: Any) -> torch.Tensor:
            d = delta_into(L * (H + 1), U)
            return act if d is None else act - d

        hooks.append((f"blocks.{L - 1}.hook_resid_post", final))
        return hooks


def node_ablation_hooks(model: TLModel, ablated: torch.Tensor, removed: torch.Tensor) -> list[tuple[str, Any]]:
    """The fast path for NODE circuits (no per-head inputs needed): the output of every removed node is replaced
    by its ablated output in the residual stream. `ablated` is [up, batch, pos, d_model]; `removed` is [circuit,
    up] (1 = removed; the embeddings, up 0, are never removed), circuits stacked along the batch as in
    `EdgeHooks.ablation_hooks`."""
    H = model.cfg.n_heads
    k = removed.shape[0]
    hooks: list[tuple[str, Any]] = []

    def per_row(r: torch.Tensor) -> torch.Tensor:  # [circuit, n] -> [batch, 1, n, 1]
        return r.repeat_interleave(ablated.shape[1] // k, dim=0)[:, None, :, None]

    for l in range(model.cfg.n_layers):
        first = 1 + l * (H + 1)
        r_heads, r_mlp = removed[:, first:first + H], removed[:, first + H]
        memo: dict[str, torch.Tensor] = {}
        if bool(r_heads.any()):
            def z_hook(act: torch.Tensor, hook: Any, l: int = l, first: int = first, r: torch.Tensor = r_heads,
                       memo: dict = memo) -> torch.Tensor:
                cur = head_results(model, l, act)  # [batch, pos, head, d_model]
                memo["d"] = ((cur - ablated[first:first + H].permute(1, 2, 0, 3)) * per_row(r)).sum(2)
                return act

            def attn_out(act: torch.Tensor, hook: Any, memo: dict = memo) -> torch.Tensor:
                return act - memo["d"]

            hooks += [(f"blocks.{l}.attn.hook_z", z_hook), (f"blocks.{l}.hook_attn_out", attn_out)]
        if bool(r_mlp.any()):
            def mlp_out(act: torch.Tensor, hook: Any, idx: int = first + H, r: torch.Tensor = r_mlp) -> torch.Tensor:
                w = per_row(r[:, None])[:, :, 0]  # [batch, 1, 1]
                return act - (act - ablated[idx]) * w

            hooks.append((f"blocks.{l}.hook_mlp_out", mlp_out))
    return hooks


def OUTPUT_HOOKS(name: str) -> bool:  # noqa: N802  (a names_filter)
    return name.endswith(("hook_z", "hook_mlp_out", "hook_embed", "hook_pos_embed"))


def head_results(model: TLModel, layer: int, z: torch.Tensor) -> torch.Tensor:
    """[batch, pos, head, d_model] each head's output z_h @ W_O[h] (without the shared bias b_O)."""
    return torch.einsum("bphe,hed->bphd", z, model.blocks[layer].attn.W_O)


def _outputs(model: TLModel, cache: Any) -> torch.Tensor:
    """[batch, pos, up, d_model] upstream outputs in `node_names` order."""
    embed = cache["hook_embed"] + (cache["hook_pos_embed"] if "hook_pos_embed" in cache else 0)  # rotary: none
    parts = [embed[:, :, None]]
    for l in range(model.cfg.n_layers):
        parts.append(head_results(model, l, cache[f"blocks.{l}.attn.hook_z"]))
        parts.append(cache[f"blocks.{l}.hook_mlp_out"][:, :, None])
    return torch.cat(parts, dim=2)


def _input_grads(model: TLModel, tokens: torch.Tensor, a: torch.Tensor, w: torch.Tensor,
                 embed: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    """[batch, pos, down, d_model] gradients of the mean logit difference with respect to each reader's input."""
    L = model.cfg.n_layers
    names = [f"blocks.{l}.hook_{x}_input" for l in range(L) for x in "qkv"] + \
        [f"blocks.{l}.hook_mlp_in" for l in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
    _, g, metric = gradients_at(model, tokens, a, w, names, embed_override=embed)
    parts = []
    for l in range(L):
        parts.append(g[f"blocks.{l}.hook_q_input"] + g[f"blocks.{l}.hook_k_input"] + g[f"blocks.{l}.hook_v_input"])
        parts.append(g[f"blocks.{l}.hook_mlp_in"][:, :, None])
    parts.append(g[f"blocks.{L - 1}.hook_resid_post"][:, :, None])
    return torch.cat(parts, dim=2).detach(), metric


def edge_attribution(model: TLModel, clean_tokens: Any, corrupt_tokens: Any, answer: Any, wrong: Any,
                     method: str = "eap", steps: int = 8) -> Graph:
    """EAP / EAP-IG edge scores (see the module docstring)."""
    if method not in ("eap", "eap-ig"):
        raise ValueError(f"unknown method {method!r} (choose eap or eap-ig)")
    dev = model.cfg.device
    clean, corrupt = as_tokens(clean_tokens, dev), as_tokens(corrupt_tokens, dev)
    a, w = as_ids(answer, dev), as_ids(wrong, dev)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    up, down = node_names(L, H)
    with EdgeHooks(model):
        with torch.no_grad():
            clogits, cc = cache_last(model, clean, OUTPUT_HOOKS)
            _, kc = model.run_with_cache(corrupt, names_filter=OUTPUT_HOOKS, return_type=None)
            delta = _outputs(model, cc) - _outputs(model, kc)
        if method == "eap":
            grads, corrupt_ld = _input_grads(model, corrupt, a, w, None)
        else:
            e0, e1 = kc["hook_embed"], cc["hook_embed"]
            grads = torch.zeros(delta.shape[0], delta.shape[1], len(down), delta.shape[-1], device=dev)
            for k in range(1, steps + 1):
                g, _ = _input_grads(model, corrupt, a, w, e0 + (k / steps) * (e1 - e0))
                grads += g / steps
            with torch.no_grad():
                corrupt_ld = float(logit_diff_from_logits(last_logits(model, corrupt), a, w).mean())
    clean_ld = float(logit_diff_from_logits(clogits, a, w).mean())
    scores = torch.einsum("bpud,bpvd->uv", delta, grads).cpu().numpy()
    denom = clean_ld - corrupt_ld
    scores = scores / denom if abs(denom) > 1e-9 else np.full_like(scores, np.nan)
    scores[~edge_mask(up, down)] = np.nan
    return Graph(up, down, scores, method, clean_ld, corrupt_ld)


def select(graph: Graph, top_n: int | None = None, threshold: float | None = None) -> dict[str, Any]:
    """A circuit: the top_n edges by |score|, or every edge with |score| >= threshold; its nodes are the heads
    and MLPs those edges touch."""
    if (top_n is None) == (threshold is None):
        raise ValueError("give exactly one of top_n or threshold")
    edges = graph.edges()
    chosen = edges[:top_n] if top_n is not None else [e for e in edges if abs(e[2]) >= threshold]
    if not chosen:
        raise ValueError("the selected circuit is empty (threshold too high or top_n = 0)")
    nodes = sorted({n for u, v, _ in chosen for n in (u, v)} - {"embed", "logits"}, key=lambda n: _order(n, True))
    return {"edges": [{"from": u, "to": v, "score": s} for u, v, s in chosen], "nodes": nodes,
            "method": graph.method}


def exact_node_effects(model: TLModel, clean_tokens: Any, corrupt_tokens: Any, answer: Any, wrong: Any,
                       nodes: list[str], min_gap: float = MIN_GAP) -> dict[str, float]:
    """Exact denoising effect (normalised) of patching each node's clean output into the corrupted run."""
    dev = model.cfg.device
    clean, corrupt = as_tokens(clean_tokens, dev), as_tokens(corrupt_tokens, dev)
    a, w = as_ids(answer, dev), as_ids(wrong, dev)
    with torch.no_grad():
        clogits, cc = cache_last(model, clean, lambda n: n.endswith(("hook_z", "hook_mlp_out")))
        c_ld = float(logit_diff_from_logits(clogits, a, w).mean())
        k_ld = float(logit_diff_from_logits(last_logits(model, corrupt), a, w).mean())
        out = {}
        for node in nodes:
            if node.startswith("MLP"):
                name = f"blocks.{int(node[3:])}.hook_mlp_out"
                hook = lambda act, hook, s=cc[name]: s  # noqa: E731
            else:
                l, h = int(node[1:node.index("H")]), int(node[node.index("H") + 1:])
                name = f"blocks.{l}.attn.hook_z"

                def hook(act: torch.Tensor, hook: Any, s: torch.Tensor = cc[name], h: int = h) -> torch.Tensor:
                    act = act.clone()
                    act[:, :, h] = s[:, :, h]
                    return act
            ld = float(logit_diff_from_logits(last_logits(model, corrupt, [(name, hook)]), a, w).mean())
            out[node] = float(normalise(ld, c_ld, k_ld, min_gap))
    return out
