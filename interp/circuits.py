"""Automated circuit discovery: edge attribution patching (EAP, Syed et al. 2023) and EAP-IG (Hanna et al. 2024)
over the graph of attention heads and MLPs, with faithfulness curves.

Graph. Upstream nodes write to the residual stream: the embeddings, each head (its `hook_result`), each MLP.
Downstream nodes read from it: each head (the sum of its split q/k/v inputs), each MLP (`hook_mlp_in`), the
logits (the final residual stream). An edge u -> v exists when u writes before v reads.

Score of edge u -> v: sum over trials and positions of (out_u(clean) - out_u(corrupted)) . d metric / d in_v,
the gradient taken on the corrupted run (EAP) or averaged along the straight path of token embeddings from
corrupted to clean (EAP-IG, `steps` points). Scores are normalised by (clean - corrupted) mean logit difference.
A node's score is the sum of its outgoing edges (= the attribution patching estimate of patching its output).

Faithfulness of a set of nodes: mean logit difference with every other head and MLP ablated, divided by the full
model's. The ablation type matters (Miller et al. 2024) and is recorded: "corrupted" (the activation of the
corrupted input), "mean" (mean over the clean trials), "resample" (another clean trial's activation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from interp.ablation import _derangement
from interp.atp import gradients_at
from interp.metrics import as_ids, as_tokens, last_logits, logit_diff_from_logits

ABLATIONS = ("corrupted", "mean", "resample")


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


class _Hooks:
    """Switches on the TransformerLens hooks EAP needs and restores the model's settings afterwards."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __enter__(self) -> Any:
        c = self.model.cfg
        self.saved = (c.use_attn_result, c.use_split_qkv_input, c.use_hook_mlp_in)
        self.model.set_use_attn_result(True)
        self.model.set_use_split_qkv_input(True)
        self.model.set_use_hook_mlp_in(True)
        return self

    def __exit__(self, *exc: Any) -> None:
        r, s, m = self.saved
        self.model.set_use_attn_result(r)
        self.model.set_use_split_qkv_input(s)
        self.model.set_use_hook_mlp_in(m)


def _outputs(cache: Any, L: int) -> torch.Tensor:
    """[batch, pos, up, d_model] upstream outputs in `node_names` order."""
    parts = [(cache["hook_embed"] + cache["hook_pos_embed"])[:, :, None]]
    for l in range(L):
        parts.append(cache[f"blocks.{l}.attn.hook_result"])
        parts.append(cache[f"blocks.{l}.hook_mlp_out"][:, :, None])
    return torch.cat(parts, dim=2)


def _input_grads(model: Any, tokens: torch.Tensor, a: torch.Tensor, w: torch.Tensor,
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


def edge_attribution(model: Any, clean_tokens: Any, corrupt_tokens: Any, answer: Any, wrong: Any,
                     method: str = "eap", steps: int = 8) -> Graph:
    """EAP / EAP-IG edge scores (see the module docstring)."""
    if method not in ("eap", "eap-ig"):
        raise ValueError(f"unknown method {method!r} (choose eap or eap-ig)")
    dev = model.cfg.device
    clean, corrupt = as_tokens(clean_tokens, dev), as_tokens(corrupt_tokens, dev)
    a, w = as_ids(answer, dev), as_ids(wrong, dev)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    up, down = node_names(L, H)
    with _Hooks(model):
        keep = lambda n: n.endswith(("hook_result", "hook_mlp_out", "hook_embed", "hook_pos_embed"))  # noqa: E731
        with torch.no_grad():
            clogits, cc = model.run_with_cache(clean, names_filter=keep)
            _, kc = model.run_with_cache(corrupt, names_filter=keep)
        delta = _outputs(cc, L) - _outputs(kc, L)
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


class Faithfulness:
    """Mean logit difference with every head and MLP outside a node set ablated, over the full model's."""

    def __init__(self, model: Any, clean_tokens: Any, corrupt_tokens: Any, answer: Any, wrong: Any,
                 ablation: str = "corrupted", seed: int = 0) -> None:
        if ablation not in ABLATIONS:
            raise ValueError(f"unknown ablation {ablation!r} (choose from {', '.join(ABLATIONS)})")
        dev = model.cfg.device
        self.model, self.ablation = model, ablation
        self.clean, self.a, self.w = as_tokens(clean_tokens, dev), as_ids(answer, dev), as_ids(wrong, dev)
        L = model.cfg.n_layers
        names = [f"blocks.{l}.attn.hook_z" for l in range(L)] + [f"blocks.{l}.hook_mlp_out" for l in range(L)]
        with torch.no_grad():
            source = self.clean if ablation != "corrupted" else as_tokens(corrupt_tokens, dev)
            _, cache = model.run_with_cache(source, names_filter=lambda n: n in names)
        n = self.clean.shape[0]
        self.rep = {}
        for nm in names:
            act = cache[nm]
            if ablation == "mean":
                act = act.mean(0, keepdim=True).expand_as(act)
            elif ablation == "resample":
                act = act[torch.as_tensor(_derangement(n, n, seed), device=act.device)]
            self.rep[nm] = act
        self.full = self._ld(None)

    @torch.no_grad()
    def _ld(self, keep: set[str] | None) -> float:
        hooks = []
        if keep is not None:
            L, H = self.model.cfg.n_layers, self.model.cfg.n_heads
            for l in range(L):
                drop = [h for h in range(H) if f"L{l}H{h}" not in keep]
                if drop:
                    zname, idx = f"blocks.{l}.attn.hook_z", torch.as_tensor(drop)

                    def hz(act: torch.Tensor, hook: Any, r: torch.Tensor = self.rep[zname], i: torch.Tensor = idx) -> torch.Tensor:
                        act = act.clone()
                        act[:, :, i] = r[:, :, i]
                        return act

                    hooks.append((zname, hz))
                if f"MLP{l}" not in keep:
                    mname = f"blocks.{l}.hook_mlp_out"
                    hooks.append((mname, lambda act, hook, r=self.rep[mname]: r))
        return float(logit_diff_from_logits(last_logits(self.model, self.clean, hooks), self.a, self.w).mean())

    def of(self, nodes: list[str] | set[str]) -> float:
        return self._ld(set(nodes)) / self.full if self.full else float("nan")

    def curve(self, ranked_nodes: list[str], sizes: list[int] | None = None, progress: bool = False) -> dict[str, Any]:
        """Faithfulness of the top-k nodes of a ranking, for each k in sizes (default 0..all)."""
        sizes = list(range(len(ranked_nodes) + 1)) if sizes is None else sizes
        values = [self.of(ranked_nodes[:k]) for k in tqdm(sizes, desc="faithfulness", disable=not progress)]
        return {"sizes": sizes, "faithfulness": values, "ablation": self.ablation, "full_logit_diff": self.full}


def size_for(curve: dict[str, Any], level: float = 0.8) -> int | None:
    """Smallest circuit size whose faithfulness reaches `level` (None if none does)."""
    for k, f in zip(curve["sizes"], curve["faithfulness"]):
        if f >= level:
            return int(k)
    return None


def exact_node_effects(model: Any, clean_tokens: Any, corrupt_tokens: Any, answer: Any, wrong: Any,
                       nodes: list[str]) -> dict[str, float]:
    """Exact denoising effect (normalised) of patching each node's clean output into the corrupted run."""
    dev = model.cfg.device
    clean, corrupt = as_tokens(clean_tokens, dev), as_tokens(corrupt_tokens, dev)
    a, w = as_ids(answer, dev), as_ids(wrong, dev)
    with torch.no_grad():
        clogits, cc = model.run_with_cache(clean, names_filter=lambda n: n.endswith(("hook_z", "hook_mlp_out")))
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
            out[node] = (ld - k_ld) / (c_ld - k_ld) if abs(c_ld - k_ld) > 1e-9 else float("nan")
    return out
