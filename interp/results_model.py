"""Typed results of whole-model analyses: a circuit (`Circuit`), models against a base (`Comparison`), attention
views (`AttentionView`) and accuracy (`Evaluation`). Re-exported by `interp.results`; see there and
`interp.result_base` for what every result does."""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from interp import viz
from interp.faithfulness import CircuitCurve
from interp.metrics import condition_label
from interp.model_id import group_of
from interp.result_base import Result, head_label, layer_labels
from interp.stats import mean_ci, spearman
from interp.store import atomic_write_text


def _node_layer(name: str) -> float:
    return float(name[3:]) + 0.5 if name.startswith("MLP") else float(name[1:name.index("H")])


@dataclass(frozen=True, eq=False)
class Circuit(Result):
    """An EAP / EAP-IG edge graph (`interp.circuits.edge_attribution`) with MIB faithfulness curves over nodes and
    over edges beside random circuits (`interp.faithfulness.curve`), and an exact-patching check of the top nodes.
    Node scores are the sums of their outgoing edges; `top` is the top `fraction` of nodes by |score|."""

    method: str
    ablation: str
    corruption: str
    n_pairs: int
    clean_logit_diff: float
    corrupt_logit_diff: float
    node_scores: dict[str, float]
    edges: tuple[tuple[str, str, float], ...]  # (upstream, downstream, score), by |score|
    node_curve: CircuitCurve
    edge_curve: CircuitCurve
    top: tuple[str, ...]
    exact: dict[str, float]  # exact denoising effect of patching each of the first top nodes
    model: str = "model"

    @property
    def ranked(self) -> list[str]:
        return sorted(self.node_scores, key=lambda k: -abs(self.node_scores[k]))

    def to_frame(self) -> pd.DataFrame:
        """One row per edge: rank, upstream (from), downstream (to), score (normalised by clean - corrupted)."""
        return pd.DataFrame([{"rank": i, "from": u, "to": v, "score": s} for i, (u, v, s) in enumerate(self.edges)])

    def nodes_frame(self) -> pd.DataFrame:
        """One row per node: rank, node, kind (head / mlp), layer, head (<NA> for MLPs), score, in_top, and the
        exact patching effect where checked."""
        rows = []
        for i, n in enumerate(self.ranked):
            mlp = n.startswith("MLP")
            rows.append({"rank": i, "node": n, "kind": "mlp" if mlp else "head", "layer": int(_node_layer(n)),
                         "head": None if mlp else int(n[n.index("H") + 1:]), "score": self.node_scores[n],
                         "in_top": n in self.top, "exact": self.exact.get(n, np.nan)})
        return pd.DataFrame(rows).astype({"head": "Int64"})

    def curve_frame(self) -> pd.DataFrame:
        """Faithfulness per level (node, edge) and size: fraction, size, faithfulness, and the random circuits'
        mean and 2.5 / 97.5 percentiles."""
        rows = []
        for c in (self.node_curve, self.edge_curve):
            for p, k, f, r in zip(c.grid, c.sizes, c.faithfulness, c.random_faithfulness):
                r = np.asarray(r, float)
                with warnings.catch_warnings():  # undefined faithfulness is NaN everywhere
                    warnings.simplefilter("ignore", RuntimeWarning)
                    stats = (np.nanmean(r), np.nanpercentile(r, 2.5), np.nanpercentile(r, 97.5)) if r.size else \
                        (np.nan,) * 3
                rows.append({"level": c.level, "fraction": p, "size": k, "faithfulness": f, "random_mean": stats[0],
                             "random_low": stats[1], "random_high": stats[2]})
        return pd.DataFrame(rows)

    def plot(self, kind: str = "graph", max_edges: int = 60) -> Any:
        """"graph": the top nodes and their strongest edges; "node" / "edge": the faithfulness curve beside random
        circuits (mean dashed, 2.5-97.5 percentile band)."""
        if kind == "graph":
            nodes = [{"name": "embed", "x": -1.0, "y": 0, "score": 0.0}]
            per_layer: dict[float, int] = {}
            for n in self.top:
                x = _node_layer(n)
                per_layer[x] = per_layer.get(x, 0) + 1
                nodes.append({"name": n, "x": x, "y": per_layer[x], "score": self.node_scores[n]})
            nodes.append({"name": "logits", "x": max([n["x"] for n in nodes] + [0]) + 1, "y": 0, "score": 0.0})
            keep = set(self.top) | {"embed", "logits"}
            edges = [{"from": u, "to": v, "score": s} for u, v, s in self.edges if u in keep and v in keep][:max_edges]
            return viz.circuit_graph(nodes, edges, f"{self.model}: its top {len(self.top)} nodes and their strongest "
                                                   f"edges ({self.method})")
        if kind in ("node", "edge"):
            f = self.curve_frame()
            f = f[f["level"] == kind]
            c = self.node_curve if kind == "node" else self.edge_curve
            return viz.faithfulness_curves(list(f["fraction"]), {self.model: list(f["faithfulness"])},
                                           {"random": (f["random_mean"].to_numpy(), f["random_low"].to_numpy(),
                                                       f["random_high"].to_numpy())},
                                           f"{self.model}: faithfulness of the top-ranked {kind}s ({self.method}, "
                                           f"{self.ablation} ablation; CPR {c.cpr:.3f}) beside random circuits")
        raise ValueError(f"unknown plot {kind!r} (choose graph, node, edge)")

    def figures(self) -> dict[str, Any]:
        return {"circuit": self.plot("graph"), "faithfulness_node": self.plot("node"),
                "faithfulness_edge": self.plot("edge")}

    def summary(self) -> dict[str, Any]:
        """Curves (with their random circuits), ranking, the top set and the exact-patching check of the nodes
        it covers (Spearman of EAP scores against exact effects)."""
        checked = [n for n in self.ranked if n in self.exact]
        eap, exact = [self.node_scores[n] for n in checked], [self.exact[n] for n in checked]
        return {"method": self.method, "ablation": self.ablation, "corruption": self.corruption,
                "n_pairs": self.n_pairs, "clean_logit_diff": self.clean_logit_diff,
                "corrupt_logit_diff": self.corrupt_logit_diff, "node_scores": self.node_scores, "ranked": self.ranked,
                "n_nodes": len(self.node_scores), "overlap_set": list(self.top),
                "node_curve": self.node_curve.to_dict(), "edge_curve": self.edge_curve.to_dict(),
                "exact_check": {"nodes": checked, "eap": eap, "exact": exact, "spearman": spearman(eap, exact)}}


KEPT = "(acc - 0.5) / (acc_full - 0.5)"


@dataclass(frozen=True, eq=False)
class Comparison(Result):
    """Trained models against a base on the same trials, per layer: debiased CKA of the residual stream at the
    answer position (`cka`, [layer_plus_1]), chance-corrected accuracy kept reverting each layer to the base
    (`reversion`, [layer]), reverting every layer from the top down to layer l (`top_down`, [layer], x from the
    top), with the base's residual stream patched in (`cmap`, [layer]), and relative weight change."""

    base: str
    cka: dict[str, np.ndarray]
    reversion: dict[str, np.ndarray]
    top_down: dict[str, np.ndarray]
    cmap: dict[str, np.ndarray]
    weight_change: dict[str, dict[str, float]]
    n_trials: int
    full: dict[str, dict[str, float]] = field(default_factory=dict)  # each model unreverted: accuracy, logit_diff
    n_reliance_trials: int | None = None  # trials of reversion and cmap (None: the CKA trials)
    reversion_init: dict[str, np.ndarray] = field(default_factory=dict)  # scratch models reverted to their init

    def x_labels(self, measure: str) -> list[str]:
        """The x axis of a measure: residual-stream reads for cka, layers, or weight components."""
        L = len(next(iter(self.reversion.values())))
        return {"cka": [f"resid_pre L{i}" for i in range(L)] + ["final"], "reversion": layer_labels(L),
                "reversion_init": layer_labels(L), "cmap": layer_labels(L), "top_down": layer_labels(L)[::-1],
                "weight_change": list(next(iter(self.weight_change.values())))}[measure]

    def _series(self, measure: str) -> dict[str, list[float]]:
        if measure == "weight_change":
            return {m: list(d.values()) for m, d in self.weight_change.items()}
        return {m: list(np.asarray(v, float)) for m, v in getattr(self, measure).items()}

    def _reversion_series(self) -> tuple[dict[str, list[float]], dict[str, str]]:
        """Reverting one layer to the model's starting weights: fine-tuned models to the base; models with their
        own initialisation (`reversion_init`, scratch) to it, and to the base as a second control."""
        series, group = {}, {}
        for m, v in self.reversion.items():
            g = group_of(m)
            if m in self.reversion_init:
                series[f"{m} to its own init"], group[f"{m} to its own init"] = list(self.reversion_init[m]), g
                g = f"{g} to the base"
            series[f"{m} to the base"], group[f"{m} to the base"] = list(np.asarray(v, float)), g
        return series, group

    def to_frame(self) -> pd.DataFrame:
        """One row per (model, measure, x): measure is cka, reversion, reversion_init (to the model's own
        initialisation), top_down, cmap or weight_change; x the layer (or component) label."""
        return pd.DataFrame([{"model": m, "measure": meas, "x": x, "value": float(y)}
                             for meas in ("cka", "reversion", "reversion_init", "top_down", "cmap", "weight_change")
                             for m, ys in self._series(meas).items()
                             for x, y in zip(self.x_labels(meas), ys)])

    def plot(self, measure: str = "cka") -> Any:
        """One line per model (groups by the name before "-s", e.g. finetuned-s0) for one measure."""
        titles = {"cka": ("Debiased CKA with the base (residual stream, answer position)", "CKA"),
                  "reversion": ("Accuracy kept (chance-corrected) reverting one layer to the base", KEPT),
                  "top_down": ("Accuracy kept (chance-corrected) reverting every layer from the top down to the base "
                               "(x = lowest reverted layer)", KEPT),
                  "cmap": ("Accuracy kept (chance-corrected) with the base's residual stream patched in at each "
                           "layer", KEPT),
                  "weight_change": ("Relative weight change from the base", "||W - W_base|| / ||W_base||")}
        if measure not in titles:
            raise ValueError(f"unknown measure {measure!r} (choose {', '.join(titles)})")
        t, y = titles[measure]
        n = self.n_trials if measure in ("cka", "weight_change") or self.n_reliance_trials is None \
            else self.n_reliance_trials
        series, group = self._reversion_series() if measure == "reversion" else (self._series(measure), None)
        if measure == "reversion" and self.reversion_init:
            t = t.replace("to the base", "to its starting weights (scratch: its own init; also the base)")
        x_title = {"reversion": "reverted layer", "top_down": "lowest reverted layer",
                   "weight_change": "component"}.get(measure, "layer")
        return viz.profiles(self.x_labels(measure), series, f"{t} ({self.base}, {n} trials)", x_title, y,
                            hline=None if measure in ("cka", "weight_change") else 0.0, group=group)

    def figures(self) -> dict[str, Any]:
        names = {"cka": "cka_base", "cmap": "cmap", "reversion": "reversion", "top_down": "reversion_top_down",
                 "weight_change": "weight_change"}
        return {name: self.plot(m) for m, name in names.items() if m != "cmap" or self.cmap}

    def summary(self) -> dict[str, Any]:
        """Per group of models (the name before "-s"): mean and 95% t-interval over models of CKA with the base
        per layer and of the accuracy kept reverting one layer; each model's unreverted accuracy."""
        out: dict[str, Any] = {"full": self.full, "groups": {}}
        for g in dict.fromkeys(group_of(m) for m in self.cka):
            ms = [m for m in self.cka if group_of(m) == g]
            entry: dict[str, Any] = {"models": ms}
            for k in ("cka", "reversion"):
                mean, lo, hi = mean_ci(np.array([np.asarray(getattr(self, k)[m], float) for m in ms]))
                entry[k] = {"mean": mean.tolist(), "ci_low": lo.tolist(), "ci_high": hi.tolist()}
            out["groups"][g] = entry
        return out


@dataclass(frozen=True, eq=False)
class AttentionView(Result):
    """Attention patterns of chosen heads on one or more sequences (views, e.g. a clean trial and its corrupted
    version), shown with circuitsvis: `.html()` is one offline page (`interp.viz.attention_views_page`), `.show()`
    displays it in a notebook. patterns[v] is [head, dest, src] for `heads` in order."""

    heads: tuple[tuple[int, int], ...]
    titles: tuple[str, ...]
    texts: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...]
    patterns: tuple[np.ndarray, ...]
    title: str = "Attention"
    notes: tuple[str, ...] = ()

    @property
    def head_names(self) -> list[str]:
        return [head_label(l, h) for l, h in self.heads]

    def html(self) -> str:
        """The self-contained page (circuitsvis inlined, renders from disk without network)."""
        views = [{"title": t, "text": x, "tokens": list(k), "attention": p}
                 for t, x, k, p in zip(self.titles, self.texts, self.tokens, self.patterns)]
        return viz.attention_views_page(views, self.head_names, self.title, self.notes)

    def _repr_html_(self) -> str:
        return (f"<iframe srcdoc=\"{html.escape(self.html(), quote=True)}\" "
                "style='width:100%;height:720px;border:0' sandbox='allow-scripts'></iframe>")

    def save(self, path: str | Path) -> Path:
        atomic_write_text(Path(path), self.html())
        return Path(path)

    def show(self) -> Path | None:
        """In a notebook (IPython present): display the view inline, return None. Elsewhere: write it to a
        temporary HTML file (opened by nothing) and return its path."""
        try:
            from IPython.display import HTML, display
        except ImportError:
            import tempfile

            fd, name = tempfile.mkstemp(suffix=".html", prefix="attention-")
            with open(fd, "w", encoding="utf-8") as f:
                f.write(self.html())
            return Path(name)
        display(HTML(self._repr_html_()))
        return None

    def to_frame(self) -> pd.DataFrame:
        """One row per (view, head, dest, src) with src <= dest (attention is causal): view title, head name,
        dest and src positions and their tokens, weight."""
        rows = []
        for t, toks, p in zip(self.titles, self.tokens, self.patterns):
            for i, name in enumerate(self.head_names):
                for d in range(p.shape[1]):
                    rows += [{"view": t, "head": name, "dest": d, "src": s, "dest_token": toks[d],
                              "src_token": toks[s], "weight": float(p[i, d, s])} for s in range(d + 1)]
        return pd.DataFrame(rows)

    def plot(self, view: int = 0, head: int = 0) -> Any:
        """Heatmap of one head's pattern in one view: rows dest, columns src, labelled "i: token"."""
        toks = [f"{i}: {t}" for i, t in enumerate(self.tokens[view])]
        return viz.heatmap(self.patterns[view][head], toks, toks, f"{self.head_names[head]}: {self.titles[view]}",
                           "attention", zmid=None)


@dataclass(frozen=True, eq=False)
class Evaluation(Result):
    """Accuracy (answer logit > wrong logit), incongruent-trial accuracy and mean logit difference on a split,
    per condition of the task in `by_condition`; per_trial_logit_diff is [trial]."""

    split: str
    n: int
    seed: int
    accuracy: float
    incongruent_accuracy: float
    logit_diff: float
    by_condition: tuple[dict[str, Any], ...]
    per_trial_logit_diff: Float[np.ndarray, " trial"]
    model: str = "model"

    def to_frame(self) -> pd.DataFrame:
        """One row per condition: the task's condition variables, n, accuracy."""
        return pd.DataFrame(list(self.by_condition))

    def plot(self) -> Any:
        f = self.to_frame()
        cats = [condition_label(r) for r in self.by_condition]
        return viz.bars(cats, {self.model: (f["accuracy"].to_numpy(), np.zeros(len(f)))},
                        f"{self.model}: accuracy per condition ({self.split}, {self.n} trials; overall "
                        f"{self.accuracy:.3f})", "accuracy")

    def figures(self) -> dict[str, Any]:
        return {"accuracy_by_condition": self.plot()}

    def summary(self) -> dict[str, Any]:
        return {"split": self.split, "n": self.n, "seed": self.seed, "accuracy": self.accuracy,
                "incongruent_accuracy": self.incongruent_accuracy, "logit_diff": self.logit_diff,
                "by_condition": list(self.by_condition)}
