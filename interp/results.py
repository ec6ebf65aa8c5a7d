"""Typed results of the analyses: frozen dataclasses that tabulate (`.to_frame()`, a tidy pandas DataFrame with
labelled columns), plot (`.plot()`, a plotly figure from `interp.viz`) and save themselves (`.to_files(stem)`,
`Type.from_files(stem)`: arrays as NPZ, the rest as JSON, never pickled; `interp.result_io`).

Each wraps what an `interp` function already returns (the functions and their return values are unchanged): a
`PatchResult`, the DLA / logit-lens arrays, `Ablator.each_head`, `neuron_selectivity`, an EAP `Graph` with its
`CircuitCurve`s, CKA and reliance profiles, attention patterns. `experiments.api` builds them.

Axes: trial, layer, head, pos (positions, labelled "name: token"), neuron, variable; `layer_plus_1` is the
residual stream read before each layer and after the last. Components are named "L{l}H{h}", "L{l} b_O",
"MLP{l}", "embed", "pos_embed", "bias".
"""

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
from interp.patching import PatchResult
from interp.stats import mean_ci


class Saved:
    """Saving and loading as files (`interp.result_io`): arrays as NPZ, the rest as JSON; never pickled."""

    def to_files(self, stem: str | Path, provenance: dict[str, Any] | None = None) -> tuple[Path, Path]:
        """Write `stem`.json and `stem`.npz; returns their paths."""
        from interp.result_io import save_result

        return save_result(self, stem, provenance)

    @classmethod
    def from_files(cls, stem: str | Path) -> Any:
        """The result saved at `stem` (refused if the files hold another type of result)."""
        from interp.result_io import load_result

        r = load_result(stem)
        if not isinstance(r, cls):
            raise TypeError(f"{stem} holds a {type(r).__name__}, not a {cls.__name__}")
        return r


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def _top_heads(scores: Float[np.ndarray, "layer head"], k: int) -> list[tuple[int, int]]:
    """The k (layer, head) with the largest |score| (NaN last, ties in layer-major order)."""
    mag = np.abs(np.nan_to_num(np.asarray(scores, float), nan=-1.0)).ravel()
    order = np.argsort(-mag, kind="stable")[:k]
    return [(int(i // scores.shape[1]), int(i % scores.shape[1])) for i in order]


def _layers(n: int) -> list[str]:
    return [f"L{i}" for i in range(n)]


def _heads(n: int) -> list[str]:
    return [f"H{i}" for i in range(n)]


@dataclass(frozen=True, eq=False)
class Patching(Saved):
    """Exact activation patching of one target (`interp.patching.patch_sweep`) on clean/corrupted pairs.

    `result.values` [*axes] are normalised (0 = corrupted run, 1 = clean run; NaN when undefined), `result.raw`
    [*axes] the mean logit differences; axes e.g. (layer, head) or (layer, pos, head)."""

    result: PatchResult
    model: str = "model"
    corruption: str = ""
    n_pairs: int = 0

    @property
    def values(self) -> np.ndarray:
        return self.result.values

    @property
    def axes(self) -> tuple[str, ...]:
        return self.result.axes

    def to_frame(self) -> pd.DataFrame:
        """One row per patched index: the axis indices and labels (layer, head, pos with its token), `component`
        ("L{l}H{h}" when patched per head), value (normalised), effect (share restored, or removed when
        noising) and logit_diff (raw)."""
        df = pd.DataFrame(self.result.rows())
        if "head" in self.axes:
            df.insert(0, "component", [head_label(l, h) for l, h in zip(df["layer"], df["head"])])
        return df

    def raw_change(self) -> np.ndarray:
        """[*axes] change in mean logit difference from the unpatched run (defined even when `values` are not)."""
        r = self.result
        return r.raw - (r.corrupt_logit_diff if r.direction == "denoise" else r.clean_logit_diff)

    def heads_effect(self) -> Float[np.ndarray, "layer head"]:
        """|effect| per head (|raw change| when normalised values are undefined), the largest over positions when
        patched per position."""
        if not {"layer", "head"} <= set(self.axes):
            raise ValueError(f"patching of {self.result.what} has no head axis")
        e = np.abs(self.result.effect if self.result.defined else self.raw_change())
        e = np.moveaxis(e, [self.axes.index("layer"), self.axes.index("head")], [0, 1])
        return np.nan_to_num(e.reshape(e.shape[0], e.shape[1], -1), nan=0.0).max(axis=2)

    def top_heads(self, k: int = 3) -> list[tuple[int, int]]:
        return _top_heads(self.heads_effect(), k)

    def plot(self) -> Any:
        """Heatmap: layer x head, layer x position, or (layer, head) rows x position columns. Normalised values;
        when undefined, the raw change in mean logit difference from the unpatched run."""
        r = self.result
        vals, unit = ((r.values, "normalised (0 corrupted, 1 clean)") if r.defined
                      else (self.raw_change(), "change in logit diff (normalised effect undefined)"))
        axes = list(r.axes)
        lab = {ax: r.labels.get(ax, [str(i) for i in range(vals.shape[k])]) for k, ax in enumerate(axes)}
        title = f"{self.model}: {r.direction} patching of {r.what} ({self.corruption}, {self.n_pairs} pairs)"
        if len(axes) == 2:
            return viz.heatmap(vals, lab[axes[0]], lab[axes[1]], title, unit)
        other = next(a for a in axes if a not in ("layer", "head"))
        v = np.moveaxis(vals, [axes.index("layer"), axes.index("head"), axes.index(other)], [0, 1, 2])
        rows = [head_label(l, h) for l in range(v.shape[0]) for h in range(v.shape[1])]
        return viz.heatmap(v.reshape(len(rows), -1), rows, lab[other], title, unit)


@dataclass(frozen=True, eq=False)
class Attribution(Saved):
    """Direct logit attribution of the answer-minus-wrong logit difference at the answer position, per trial, and
    the logit lens. The components sum to `logit_diff` exactly (`interp.attribution`)."""

    heads: Float[np.ndarray, "trial layer head"]
    attn_bias: Float[np.ndarray, "trial layer"]
    mlp: Float[np.ndarray, "trial layer"]
    embed: Float[np.ndarray, " trial"]
    pos_embed: Float[np.ndarray, " trial"]
    bias: Float[np.ndarray, " trial"]
    logit_diff: Float[np.ndarray, " trial"]
    logit_lens: Float[np.ndarray, "trial layer_plus_1"]
    neurons: dict[int, np.ndarray] = field(default_factory=dict)  # {layer: [trial, neuron]}
    model: str = "model"

    @classmethod
    def from_arrays(cls, dla: dict[str, Any], lens: np.ndarray, model: str = "model") -> Attribution:
        """From `direct_logit_attribution(...)` and `logit_lens(...)` on the same trials."""
        keys = ("heads", "attn_bias", "mlp", "embed", "pos_embed", "bias", "logit_diff")
        return cls(**{k: np.asarray(dla[k]) for k in keys}, logit_lens=np.asarray(lens),
                   neurons=dict(dla.get("neurons", {})), model=model)

    def components(self) -> dict[str, Float[np.ndarray, " trial"]]:
        """Every component's per-trial contribution, in forward order; they sum to `logit_diff`."""
        L, H = self.heads.shape[1:]
        out = {"embed": self.embed, "pos_embed": self.pos_embed}
        for l in range(L):
            out.update({head_label(l, h): self.heads[:, l, h] for h in range(H)})
            out[f"L{l} b_O"] = self.attn_bias[:, l]
            out[f"MLP{l}"] = self.mlp[:, l]
        out["bias"] = self.bias
        return out

    def to_frame(self, per_trial: bool = False) -> pd.DataFrame:
        """One row per component: component, kind (embed, pos_embed, head, attn_bias, mlp, bias), layer, head
        (<NA> where none) and value (mean over trials, or one row per trial with a `trial` column)."""
        rows = []
        for name, v in self.components().items():
            kind, layer, head = name, None, None
            if name.startswith("MLP"):
                kind, layer = "mlp", int(name[3:])
            elif name.endswith("b_O"):
                kind, layer = "attn_bias", int(name[1:name.index(" ")])
            elif name.startswith("L"):
                kind, layer, head = "head", int(name[1:name.index("H")]), int(name[name.index("H") + 1:])
            base = {"component": name, "kind": kind, "layer": layer, "head": head}
            rows += ([{**base, "trial": i, "value": float(x)} for i, x in enumerate(v)] if per_trial
                     else [{**base, "value": float(np.mean(v))}])
        df = pd.DataFrame(rows)
        return df.astype({"layer": "Int64", "head": "Int64"})

    def lens_frame(self) -> pd.DataFrame:
        """The logit lens: read_before ("resid_pre L{l}", then "final"), mean logit difference and 95% CI."""
        m, lo, hi = mean_ci(self.logit_lens)
        x = [f"resid_pre L{i}" for i in range(self.logit_lens.shape[1] - 1)] + ["final"]
        return pd.DataFrame({"read_before": x, "value": m, "ci_low": lo, "ci_high": hi})

    def top_heads(self, k: int = 3) -> list[tuple[int, int]]:
        return _top_heads(self.heads.mean(0), k)

    def plot(self, kind: str = "heads") -> Any:
        """"heads": heatmap of the mean DLA [layer, head]; "components": bars per component (heads summed per
        layer with b_O; mean, 95% CI over trials); "lens": the logit lens."""
        n, L, H = self.heads.shape
        if kind == "heads":
            return viz.heatmap(self.heads.mean(0), _layers(L), _heads(H),
                               f"{self.model}: direct logit attribution per head ({n} trials)", "logit diff")
        if kind == "components":
            parts = {"embed": self.embed, "pos_embed": self.pos_embed}
            for l in range(L):
                parts[f"L{l} attn"] = self.heads[:, l].sum(1) + self.attn_bias[:, l]
                parts[f"MLP{l}"] = self.mlp[:, l]
            parts["bias"] = self.bias
            m, lo, hi = mean_ci(np.stack(list(parts.values()), 1))
            return viz.bars(list(parts), {"mean logit diff": (m, (hi - lo) / 2)},
                            f"{self.model}: direct logit attribution per component ({n} trials; they sum to the "
                            f"logit diff {self.logit_diff.mean():.3f})", "logit diff")
        if kind == "lens":
            f = self.lens_frame()
            return viz.lines_ci(list(f["read_before"]), {"logit lens": (f["value"], f["ci_low"], f["ci_high"])},
                                f"{self.model}: logit lens ({n} trials)", "read before layer", "logit diff")
        raise ValueError(f"unknown plot {kind!r} (choose heads, components, lens)")


@dataclass(frozen=True, eq=False)
class Ablation(Saved):
    """Each head ablated alone (`interp.ablation.Ablator.each_head`): accuracy and mean logit difference
    [layer, head], beside the unablated model's."""

    method: str
    accuracy: Float[np.ndarray, "layer head"]
    logit_diff: Float[np.ndarray, "layer head"]
    baseline_accuracy: float
    baseline_logit_diff: float
    n_trials: int
    model: str = "model"

    def to_frame(self) -> pd.DataFrame:
        """One row per head: component, layer, head, accuracy, logit_diff and their changes from unablated."""
        L, H = self.accuracy.shape
        return pd.DataFrame([{"component": head_label(l, h), "layer": l, "head": h,
                              "accuracy": float(self.accuracy[l, h]), "logit_diff": float(self.logit_diff[l, h]),
                              "delta_accuracy": float(self.accuracy[l, h] - self.baseline_accuracy),
                              "delta_logit_diff": float(self.logit_diff[l, h] - self.baseline_logit_diff)}
                             for l in range(L) for h in range(H)])

    def top_heads(self, k: int = 3) -> list[tuple[int, int]]:
        return _top_heads(self.logit_diff - self.baseline_logit_diff, k)

    def plot(self, metric: str = "logit_diff") -> Any:
        """Heatmap [layer, head] of the change in mean logit difference ("logit_diff") or of accuracy."""
        L, H = self.accuracy.shape
        if metric == "logit_diff":
            return viz.heatmap(self.logit_diff - self.baseline_logit_diff, _layers(L), _heads(H),
                               f"{self.model}: change in logit diff, each head {self.method}-ablated "
                               f"({self.n_trials} trials; unablated {self.baseline_logit_diff:.3f})",
                               "delta logit diff")
        if metric == "accuracy":
            return viz.heatmap(self.accuracy, _layers(L), _heads(H),
                               f"{self.model}: accuracy, each head {self.method}-ablated ({self.n_trials} trials; "
                               f"unablated {self.baseline_accuracy:.3f})", "accuracy", zmid=self.baseline_accuracy)
        raise ValueError(f"unknown metric {metric!r} (choose logit_diff, accuracy)")


@dataclass(frozen=True, eq=False)
class Neurons(Saved):
    """Standardised regression of each MLP neuron at one position on the task variables, with the model's own
    choice (`coef`, `r2`; `interp.neurons.neuron_selectivity`)."""

    layers: tuple[int, ...]
    position: str
    variables: tuple[str, ...]
    coef: Float[np.ndarray, "layer neuron variable"]
    r2: Float[np.ndarray, "layer neuron"]
    coef_correct: Float[np.ndarray, "layer neuron variable"]
    top: dict[str, list[tuple[int, int, float]]]
    choice_is_correct: float
    n_trials: int
    model: str = "model"

    @classmethod
    def from_dict(cls, sel: dict[str, Any], n_trials: int, model: str = "model") -> Neurons:
        return cls(tuple(sel["layers"]), sel["position"], tuple(sel["variables"]), sel["coef"], sel["r2"],
                   sel["coef_correct"], sel["top"], sel["choice_is_correct"], n_trials, model)

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, neuron, variable): beta (model's choice), beta_correct and the neuron's r2."""
        Li, N, V = self.coef.shape
        return pd.DataFrame([{"layer": self.layers[i], "neuron": n, "variable": self.variables[v],
                              "beta": float(self.coef[i, n, v]), "beta_correct": float(self.coef_correct[i, n, v]),
                              "r2": float(self.r2[i, n])} for i in range(Li) for n in range(N) for v in range(V)])

    def plot(self) -> Any:
        """Heatmap of the most selective neurons' betas (rows "L{l}N{i}") per variable."""
        row = {l: i for i, l in enumerate(self.layers)}
        top = list(dict.fromkeys((l, i) for v in self.variables for l, i, _ in self.top[v]))
        coef = np.array([self.coef[row[l], i] for l, i in top]).reshape(len(top), len(self.variables))
        return viz.heatmap(coef, [f"L{l}N{i}" for l, i in top], list(self.variables),
                           f"{self.model}: standardised betas of the most selective neurons at '{self.position}' "
                           f"({self.n_trials} trials)", "beta")


def _node_layer(name: str) -> float:
    return float(name[3:]) + 0.5 if name.startswith("MLP") else float(name[1:name.index("H")])


@dataclass(frozen=True, eq=False)
class Circuit(Saved):
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


@dataclass(frozen=True, eq=False)
class Comparison(Saved):
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

    def _x(self, measure: str) -> list[str]:
        L = len(next(iter(self.reversion.values())))
        return {"cka": [f"resid_pre L{i}" for i in range(L)] + ["final"], "reversion": _layers(L),
                "cmap": _layers(L), "top_down": _layers(L)[::-1],
                "weight_change": list(next(iter(self.weight_change.values())))}[measure]

    def _series(self, measure: str) -> dict[str, list[float]]:
        if measure == "weight_change":
            return {m: list(d.values()) for m, d in self.weight_change.items()}
        return {m: list(np.asarray(v, float)) for m, v in getattr(self, measure).items()}

    def to_frame(self) -> pd.DataFrame:
        """One row per (model, measure, x): measure is cka, reversion, top_down, cmap or weight_change; x the
        layer (or component) label."""
        return pd.DataFrame([{"model": m, "measure": meas, "x": x, "value": float(y)}
                             for meas in ("cka", "reversion", "top_down", "cmap", "weight_change")
                             for m, ys in self._series(meas).items() for x, y in zip(self._x(meas), ys)])

    def plot(self, measure: str = "cka") -> Any:
        """One line per model (groups by the name before "-s", e.g. finetuned-s0) for one measure."""
        titles = {"cka": ("Debiased CKA with the base (residual stream, answer position)", "CKA"),
                  "reversion": ("Accuracy kept reverting one layer to the base", "(acc - 0.5) / (acc_full - 0.5)"),
                  "top_down": ("Accuracy kept reverting every layer from the top down", "accuracy kept"),
                  "cmap": ("Accuracy kept with the base's residual stream patched in", "accuracy kept"),
                  "weight_change": ("Relative weight change from the base", "||W - W_base|| / ||W_base||")}
        if measure not in titles:
            raise ValueError(f"unknown measure {measure!r} (choose {', '.join(titles)})")
        t, y = titles[measure]
        return viz.profiles(self._x(measure), self._series(measure), f"{t} ({self.base}, {self.n_trials} trials)",
                            "layer", y, hline=None if measure in ("cka", "weight_change") else 0.0, bands=False)


@dataclass(frozen=True, eq=False)
class AttentionView(Saved):
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
        from interp.store import atomic_write_text

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
class Evaluation(Saved):
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
        from interp.metrics import condition_label

        f = self.to_frame()
        cats = [condition_label(r) for r in self.by_condition]
        return viz.bars(cats, {self.model: (f["accuracy"].to_numpy(), np.zeros(len(f)))},
                        f"{self.model}: accuracy per condition ({self.split}, {self.n} trials; overall "
                        f"{self.accuracy:.3f})", "accuracy")
