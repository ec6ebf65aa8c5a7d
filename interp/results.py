"""Typed results of the per-component analyses: frozen dataclasses (`interp.result_base.Result`) that tabulate
(`.to_frame()`, a tidy pandas DataFrame with labelled columns), plot (`.plot()`, a plotly figure from
`interp.viz`), name the figures that describe them (`.figures()`), give their headline numbers (`.summary()`) and
save themselves (`.to_files(stem)`, `Type.from_files(stem)`: arrays as NPZ, the rest as JSON, never pickled;
`interp.result_io`). The whole-model results (Circuit, Comparison, AttentionView, Evaluation) live in
`interp.results_model` and are importable from here.

Each wraps what an `interp` function already returns (the functions and their return values are unchanged): a
`PatchResult`, attribution patching's estimate, the DLA / logit-lens arrays, `Ablator.each_head`,
`neuron_selectivity`, an EAP `Graph` with its `CircuitCurve`s, CKA and reliance profiles, attention patterns.
`experiments.api` builds them; the CLI's analysis commands and `cogcircuits run` save them (docs/analyses.md).

Axes: trial, layer, head, pos (positions, labelled "name: token"), neuron, variable; `layer_plus_1` is the
residual stream read before each layer and after the last. Components are named "L{l}H{h}", "L{l} b_O",
"MLP{l}", "embed", "pos_embed", "bias".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from interp import viz
from interp.patching import PatchResult
from interp.result_base import Result, head_label, head_labels, layer_labels
from interp.result_base import top_heads as top_heads_of
from interp.stats import mean_ci


@dataclass(frozen=True, eq=False)
class Patching(Result):
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
        return top_heads_of(self.heads_effect(), k)

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

    def figures(self) -> dict[str, Any]:
        return {f"patch_{self.result.what}": self.plot()}

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {"what": r.what, "direction": r.direction, "clean_logit_diff": r.clean_logit_diff,
                "corrupt_logit_diff": r.corrupt_logit_diff, "defined": r.defined, "first_diff": r.first_diff,
                "labels": r.labels, "n_pairs": self.n_pairs, "corruption": self.corruption}


@dataclass(frozen=True, eq=False)
class AttributionPatching(Result):
    """Attribution patching (`interp.atp.attribution_patch`: gradient x activation difference, "atp", or integrated
    gradients, "ig") of head outputs per position [layer, pos, head], normalised like exact patching, and, when
    exact patching of the same pairs was given, its agreement with it (`interp.atp.agreement`: Spearman and top-10
    recall over the positions that can differ)."""

    method: str
    values: Float[np.ndarray, "layer pos head"]
    position_labels: tuple[str, ...]
    agreement: dict[str, Any]
    model: str = "model"
    corruption: str = ""
    n_pairs: int = 0

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, pos, head): component, layer, pos, position label, head, value."""
        L, P, H = self.values.shape
        return pd.DataFrame([{"component": head_label(l, h), "layer": l, "pos": p, "position": self.position_labels[p],
                              "head": h, "value": float(self.values[l, p, h])}
                             for l in range(L) for p in range(P) for h in range(H)])

    def plot(self) -> Any:
        """Heatmap: rows (layer, head), columns positions with their tokens."""
        L, P, H = self.values.shape
        rows = [head_label(l, h) for l in range(L) for h in range(H)]
        agree = (f"; Spearman with exact patching {self.agreement['spearman']:.2f}"
                 if self.agreement.get("spearman") is not None else "")
        return viz.heatmap(self.values.transpose(0, 2, 1).reshape(L * H, P), rows, list(self.position_labels),
                           f"{self.model}: {self.method} estimate of head x position patching ({self.corruption}, "
                           f"{self.n_pairs} pairs{agree})", "normalised effect (estimate)")

    def figures(self) -> dict[str, Any]:
        return {f"{self.method}_heads_by_pos": self.plot()}

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "agreement": self.agreement, "n_pairs": self.n_pairs}


@dataclass(frozen=True, eq=False)
class Attribution(Result):
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
        return top_heads_of(self.heads.mean(0), k)

    def plot(self, kind: str = "heads") -> Any:
        """"heads": heatmap of the mean DLA [layer, head]; "components": bars per component (heads summed per
        layer with b_O; mean, 95% CI over trials); "lens": the logit lens."""
        n, L, H = self.heads.shape
        if kind == "heads":
            return viz.heatmap(self.heads.mean(0), layer_labels(L), head_labels(H),
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

    def figures(self) -> dict[str, Any]:
        return {"dla_heads": self.plot("heads"), "dla_components": self.plot("components"),
                "logit_lens": self.plot("lens")}

    def summary(self) -> dict[str, Any]:
        return {"logit_diff": float(self.logit_diff.mean()), "n_trials": int(self.heads.shape[0])}


@dataclass(frozen=True, eq=False)
class Ablation(Result):
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
        return top_heads_of(self.logit_diff - self.baseline_logit_diff, k)

    def plot(self, metric: str = "logit_diff") -> Any:
        """Heatmap [layer, head] of the change in mean logit difference ("logit_diff") or of accuracy."""
        L, H = self.accuracy.shape
        if metric == "logit_diff":
            return viz.heatmap(self.logit_diff - self.baseline_logit_diff, layer_labels(L), head_labels(H),
                               f"{self.model}: change in logit diff, each head {self.method}-ablated "
                               f"({self.n_trials} trials; unablated {self.baseline_logit_diff:.3f})",
                               "delta logit diff")
        if metric == "accuracy":
            return viz.heatmap(self.accuracy, layer_labels(L), head_labels(H),
                               f"{self.model}: accuracy, each head {self.method}-ablated ({self.n_trials} trials; "
                               f"unablated {self.baseline_accuracy:.3f})", "accuracy", zmid=self.baseline_accuracy)
        raise ValueError(f"unknown metric {metric!r} (choose logit_diff, accuracy)")

    def figures(self) -> dict[str, Any]:
        return {"ablation_heads_logit_diff": self.plot("logit_diff"), "ablation_heads_accuracy": self.plot("accuracy")}

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "baseline_accuracy": self.baseline_accuracy,
                "baseline_logit_diff": self.baseline_logit_diff, "n_trials": self.n_trials}


@dataclass(frozen=True, eq=False)
class Neurons(Result):
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
    r2_correct: Float[np.ndarray, "layer neuron"] | None = None
    top_ablation: dict[str, dict[str, float]] = field(default_factory=dict)  # {variable: accuracy, logit_diff}
    ablation_baseline: dict[str, float] = field(default_factory=dict)  # the same trials, nothing ablated

    @classmethod
    def from_dict(cls, sel: dict[str, Any], n_trials: int, model: str = "model",
                  top_ablation: dict[str, dict[str, float]] | None = None,
                  ablation_baseline: dict[str, float] | None = None) -> Neurons:
        """From `neuron_selectivity(...)`; `top_ablation`: each variable's top neurons ablated together, beside
        `ablation_baseline`, the unablated model on the same trials."""
        return cls(tuple(sel["layers"]), sel["position"], tuple(sel["variables"]), sel["coef"], sel["r2"],
                   sel["coef_correct"], sel["top"], sel["choice_is_correct"], n_trials, model,
                   sel.get("r2_correct"), dict(top_ablation or {}), dict(ablation_baseline or {}))

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, neuron, variable): beta (model's choice), beta_correct and the neuron's r2."""
        Li, N, V = self.coef.shape
        return pd.DataFrame([{"layer": self.layers[i], "neuron": n, "variable": self.variables[v],
                              "beta": float(self.coef[i, n, v]), "beta_correct": float(self.coef_correct[i, n, v]),
                              "r2": float(self.r2[i, n])} for i in range(Li) for n in range(N) for v in range(V)])

    def plot(self, kind: str = "top") -> Any:
        """"top": heatmap of the most selective neurons' betas (rows "L{l}N{i}") per variable; "r2": R^2 of every
        neuron's regression [layer, neuron]."""
        if kind == "r2":
            return viz.heatmap(self.r2, [f"L{l}" for l in self.layers], [str(i) for i in range(self.r2.shape[1])],
                               f"{self.model}: R^2 of each neuron's regression on the task variables "
                               f"({self.n_trials} trials)", "R^2", zmid=None)
        if kind != "top":
            raise ValueError(f"unknown plot {kind!r} (choose top, r2)")
        row = {l: i for i, l in enumerate(self.layers)}
        top = list(dict.fromkeys((l, i) for v in self.variables for l, i, _ in self.top[v]))
        coef = np.array([self.coef[row[l], i] for l, i in top]).reshape(len(top), len(self.variables))
        return viz.heatmap(coef, [f"L{l}N{i}" for l, i in top], list(self.variables),
                           f"{self.model}: standardised betas of the most selective neurons at '{self.position}' "
                           f"({self.n_trials} trials)", "beta")

    def figures(self) -> dict[str, Any]:
        return {"neuron_top_coef": self.plot("top"), "neuron_r2": self.plot("r2")}

    def summary(self) -> dict[str, Any]:
        return {"position": self.position, "variables": list(self.variables), "top": self.top,
                "choice_is_correct": self.choice_is_correct, "top_ablation": self.top_ablation,
                "ablation_baseline": self.ablation_baseline,
                "n_trials": self.n_trials}


from interp.results_model import AttentionView, Circuit, Comparison, Evaluation  # noqa: E402  (re-exported)

__all__ = ["Result", "Patching", "AttributionPatching", "Attribution", "Ablation", "Neurons", "Circuit",
           "Comparison", "AttentionView", "Evaluation", "head_label"]
