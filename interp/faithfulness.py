"""Circuit faithfulness as the MIB circuit track defines it, with empty-circuit and random-circuit baselines.

A circuit is a set of edges of the graph of `interp.circuits` (upstream writers -> downstream readers). Evaluating
it runs the clean inputs; every reader v receives, from each upstream node u, u's current output when the edge
u -> v is in the circuit and u's ABLATED output otherwise:

    input_v = resid_v - sum over edges u -> v NOT in the circuit of (out_u - ablated_u)

(bias terms, which belong to no node, are always kept). The ablated output of a node is its output on the
corrupted input ("corrupted", MIB's default "patching"), its mean over the clean trials per position ("mean"), or
another clean trial's output ("resample"). A NODE circuit C keeps every edge that leaves a node of C or the
embeddings: it equals replacing the output of every head and MLP outside C by its ablated value.

With m the mean logit difference (answer minus wrong answer):

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty))

where "empty" ablates every edge (node level: every head and MLP; the embeddings stay) and "full" is the
unablated model; so f(empty) = 0 and f(full) = 1 by definition, and f is UNDEFINED (NaN) when the gap
m(full) - m(empty) is too small: not above `min_gap` logits, or within `se_factor` (3) standard errors of zero
over trials.

Curves follow MIB: the top int(p * n) items (edges or nodes, ranked by |score|) for p in GRID; CPR is the area
under f and CMD the area under |1 - f|, both by the trapezoid rule over p. Every curve comes with random circuits
of the same sizes (`n_random` per size) and the CPR / CMD of each random draw.

Axes: batch (trials), pos, up (upstream nodes), down (downstream nodes), d_model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from interp import edge_forward
from interp.ablation import derangement
from interp.circuits import EdgeHooks, edge_mask, node_ablation_hooks, node_names
from interp.forward import Weights
from interp.metrics import as_ids, as_tokens, last_logits, logit_diff_from_logits
from interp.result_io import held
from interp.typing import TLModel

ABLATIONS = ("corrupted", "mean", "resample")
GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # MIB's circuit-size percentages


def area(grid: Any, f: Any) -> tuple[float, float]:
    """(CPR, CMD): trapezoid areas under f and under |1 - f| over the grid, as MIB computes them. NaN if any f is."""
    x, y = np.asarray(grid, float), np.asarray(f, float)
    if not np.isfinite(y).all():
        return float("nan"), float("nan")
    dx = np.diff(x)
    return float((dx * (y[:-1] + y[1:]) / 2).sum()), float((dx * (np.abs(1 - y[:-1]) + np.abs(1 - y[1:])) / 2).sum())


class CircuitEvaluator:
    """Mean logit difference of the clean inputs with the edges outside a circuit ablated."""

    def __init__(self, model: TLModel, clean_tokens: Any, corrupt_tokens: Any, answer: Any, wrong: Any,
                 ablation: str = "corrupted", seed: int = 0, min_gap: float = 0.25, se_factor: float = 3.0,
                 per_forward: int = 1) -> None:
        if ablation not in ABLATIONS:
            raise ValueError(f"unknown ablation {ablation!r} (choose from {', '.join(ABLATIONS)})")
        dev = model.cfg.device
        self.model, self.ablation, self.min_gap, self.se_factor = model, ablation, min_gap, se_factor
        self.per_forward = per_forward
        self.fast = edge_forward.supported(model.cfg)  # False: TransformerLens with hooks (the reference)
        self.clean, self.a, self.w = as_tokens(clean_tokens, dev), as_ids(answer, dev), as_ids(wrong, dev)
        self.up, self.down = node_names(model.cfg.n_layers, model.cfg.n_heads)
        self.valid = torch.as_tensor(edge_mask(self.up, self.down), device=dev)
        source = as_tokens(corrupt_tokens, dev) if ablation == "corrupted" else self.clean
        with EdgeHooks(model) as eh:
            ablated = eh.outputs(source)  # [batch, pos, up, d_model]
        if ablation == "mean":
            ablated = ablated.mean(0, keepdim=True).expand_as(ablated)
        elif ablation == "resample":
            ablated = ablated[torch.as_tensor(derangement(len(ablated), len(ablated), seed), device=dev)]
        self.ablated_u = ablated.permute(2, 0, 1, 3).contiguous()  # [up, batch, pos, d_model]
        self.full_trials = self.trials(self.valid)
        self.full = float(self.full_trials.mean())
        self._empty: dict[str, tuple[float, float, bool]] = {}

    def empty_mask(self, level: str) -> torch.Tensor:
        """Node level: every head and MLP ablated, the embeddings kept; edge level: every edge ablated."""
        return self.node_edges([]) if level == "node" else torch.zeros_like(self.valid)

    def baseline(self, level: str) -> tuple[float, float, bool]:
        """(m(empty), standard error of the per-trial full - empty gap, whether f is defined) at `level`."""
        if level not in self._empty:
            empty = self.trials(self.empty_mask(level))
            gap = self.full_trials - empty
            se = float(gap.std() / np.sqrt(len(gap))) if len(gap) > 1 else float("inf")
            m = float(empty.mean())
            self._empty[level] = (m, se, abs(self.full - m) > max(self.min_gap, self.se_factor * se))
        return self._empty[level]

    @torch.no_grad()
    def trials(self, keep: torch.Tensor) -> torch.Tensor:
        """Per-trial logit difference with edge mask `keep` [up, down] (True = in the circuit)."""
        return self.trials_many(keep[None])[0]

    @torch.no_grad()
    def trials_many(self, keeps: torch.Tensor) -> torch.Tensor:
        """[circuit, trial] logit differences for edge masks [circuit, up, down], `per_forward` circuits stacked
        along the batch of one forward."""
        out = []
        for i in range(0, len(keeps), self.per_forward):
            chunk = keeps[i:i + self.per_forward].to(self.valid.device)
            k = len(chunk)
            removed = (self.valid[None] & ~chunk).to(self.ablated_u.dtype)
            rep = lambda x: x.repeat(k, *([1] * (x.dim() - 1)))  # noqa: E731
            ablated = self.ablated_u.repeat(1, k, 1, 1)
            nodes = self._node_rows(chunk)
            if self.fast:  # this project's forward, no hooks: the same numbers to float rounding (tests)
                w = Weights.of(self.model)
                run_args = (w, edge_forward.embed_output(w, self.clean), self.ablated_u)
                ld = (edge_forward.run_nodes(*run_args, ~nodes, *w.direction(self.a, self.w)) if nodes is not None
                      else edge_forward.run(*run_args, removed.bool(), *w.direction(self.a, self.w)))
            elif nodes is not None:  # node circuits: replace outputs, no per-head inputs needed (faster)
                hooks = node_ablation_hooks(self.model, ablated, (~nodes).to(ablated.dtype))
                ld = logit_diff_from_logits(last_logits(self.model, rep(self.clean), hooks), rep(self.a), rep(self.w))
            else:
                with EdgeHooks(self.model) as eh:
                    hooks = eh.ablation_hooks(ablated, removed)
                    ld = logit_diff_from_logits(last_logits(self.model, rep(self.clean), hooks), rep(self.a),
                                                rep(self.w))
            out.append(ld.detach().float().cpu().view(k, -1))
        return torch.cat(out)

    def _node_rows(self, keeps: torch.Tensor) -> torch.Tensor | None:
        """[circuit, up] kept nodes when every mask is a node circuit (each node keeps all or none of its edges,
        the embeddings all), else None."""
        n_valid = self.valid.sum(1)
        kept = (keeps & self.valid[None]).sum(2)
        whole = (kept == 0) | (kept == n_valid[None])
        rows = kept == n_valid[None]
        return rows if bool(whole.all()) and bool(rows[:, 0].all()) else None

    def node_edges(self, nodes: Any) -> torch.Tensor:
        """The edge mask of a node circuit: every edge leaving a kept node or the embeddings."""
        keep = set(nodes) | {"embed"}
        rows = torch.tensor([u in keep for u in self.up], device=self.valid.device)
        return self.valid & rows[:, None]

    def edge_set(self, edges: Any) -> torch.Tensor:
        """The edge mask of a list of (upstream, downstream) names."""
        ui, di = {u: i for i, u in enumerate(self.up)}, {v: j for j, v in enumerate(self.down)}
        keep = torch.zeros_like(self.valid)
        for u, v in edges:
            keep[ui[u], di[v]] = True
        return keep & self.valid

    def faithfulness(self, keep: torch.Tensor, level: str) -> float:
        """f of an edge mask against the `level`'s empty circuit; NaN when the full-vs-empty gap is too small."""
        return self.faithfulness_many(keep[None], level)[0]

    def faithfulness_many(self, keeps: torch.Tensor, level: str) -> list[float]:
        """f of each edge mask [circuit, up, down]."""
        empty, _, defined = self.baseline(level)
        if not defined:
            return [float("nan")] * len(keeps)
        return [(float(m) - empty) / (self.full - empty) for m in self.trials_many(keeps).mean(1)]


@held
@dataclass(frozen=True)
class CircuitCurve:
    """A ranked circuit's faithfulness over MIB's size grid, beside random circuits of the same sizes."""

    level: str  # "node" or "edge"
    n_items: int
    grid: tuple[float, ...]
    sizes: tuple[int, ...]
    faithfulness: tuple[float, ...]  # NaN everywhere when undefined
    cpr: float
    cmd: float
    random_faithfulness: tuple[tuple[float, ...], ...]  # [size][draw]
    random_cpr: tuple[float, ...]  # one per draw (draw j's circuit at every size)
    random_cmd: tuple[float, ...]
    m_full: float
    m_empty: float
    gap_se: float
    defined: bool
    ablation: str
    level_reached: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Every field, plus f at the empty and the full circuit (0 and 1 by definition, NaN when undefined)."""
        return {**asdict(self), "f_empty": self.f_empty, "f_full": self.f_full}

    @property
    def f_empty(self) -> float:
        return 0.0 if self.defined else float("nan")

    @property
    def f_full(self) -> float:
        return 1.0 if self.defined else float("nan")


def size_at(curve: CircuitCurve, level: float = 0.8) -> int | None:
    """Smallest grid size below the full graph whose faithfulness reaches `level`; None when only the full graph
    does (f(full) = 1 by definition, so it is not counted) or when f is undefined."""
    for k, f in zip(curve.sizes, curve.faithfulness):
        if k < curve.n_items and np.isfinite(f) and f >= level:
            return int(k)
    return None


def _random_masks(ev: CircuitEvaluator, level: str, items: list[Any], k: int, rng: np.random.Generator
                  ) -> torch.Tensor:
    pick = [items[i] for i in rng.choice(len(items), size=k, replace=False)] if k else []
    return ev.node_edges(pick) if level == "node" else ev.edge_set(pick)


def curve(ev: CircuitEvaluator, ranked: list[Any], level: str, n_random: int = 20, seed: int = 0,
          grid: tuple[float, ...] = GRID, at_level: float = 0.8, progress: bool = False) -> CircuitCurve:
    """Faithfulness of the top int(p * n) items of `ranked` (node names, or (up, down) edges) for p in grid,
    and of `n_random` random sets of each size."""
    if level not in ("node", "edge"):
        raise ValueError(f"level must be 'node' or 'edge', got {level!r}")
    n = len(ranked)
    sizes = tuple(int(p * n) for p in grid)
    mask = ev.node_edges if level == "node" else ev.edge_set
    empty, se, defined = ev.baseline(level)
    f = tuple(ev.faithfulness_many(torch.stack([mask(ranked[:k]) for k in sizes]), level))
    rng = np.random.default_rng(seed)
    rand: list[tuple[float, ...]] = []
    for k in tqdm(sizes, desc=f"random {level} circuits", disable=not progress):
        if k in (0, n) or not defined or n_random == 0:  # the empty and the full circuit are not random
            rand.append(tuple([(0.0 if k == 0 else 1.0) if defined else float("nan")] * n_random))
        else:
            masks = torch.stack([_random_masks(ev, level, ranked, k, rng) for _ in range(n_random)])
            rand.append(tuple(ev.faithfulness_many(masks, level)))
    per_draw = [area(grid, [rand[i][j] for i in range(len(sizes))]) for j in range(n_random)]
    cpr, cmd = area(grid, f)
    c = CircuitCurve(level=level, n_items=n, grid=tuple(grid), sizes=sizes, faithfulness=f, cpr=cpr, cmd=cmd,
                     random_faithfulness=tuple(rand), random_cpr=tuple(p[0] for p in per_draw),
                     random_cmd=tuple(p[1] for p in per_draw), m_full=ev.full, m_empty=empty, gap_se=se,
                     defined=defined, ablation=ev.ablation)
    k = size_at(c, at_level)
    reached: dict[str, Any] = {"level": at_level, "size": k, "fraction": (k / n) if k is not None else None}
    if k is not None:
        r = rand[sizes.index(k)]
        reached["random_share_reaching"] = float(np.mean([v >= at_level for v in r]))
    reached["cpr_percentile_among_random"] = (float(np.mean([cpr > r for r in c.random_cpr]))
                                              if np.isfinite(cpr) else None)
    return replace(c, level_reached=reached)
