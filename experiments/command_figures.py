"""The figures of the analysis commands (patch, attribute, ablate, neurons, discover, compare), built with the
`interp.viz` builders and written by the run's export code (`experiments.figures.export_run`): under
OUT/figures/, HTML pages sharing one plotly.min.js from that folder (offline), PNG / SVG through kaleido and a
Chromium, CSV of the numbers behind each figure. Axes that are positions carry their token strings.

Axes: layer, head, pos (dest_pos), neuron; arrays as the analyses return them.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from interp import viz
from interp.stats import mean_ci

FORMATS = ("html", "png", "svg", "csv")


def check_formats(formats: Sequence[str]) -> None:
    """Refuse, before anything is computed, a format that is unknown or that this machine cannot write."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown figure format(s) {', '.join(map(repr, bad))} (choose from {', '.join(FORMATS)})")
    images = [f for f in formats if f in ("png", "svg")]
    if images and (importlib.util.find_spec("kaleido") is None or not viz.chromium_available()):
        raise RuntimeError(f"cannot write {' and '.join(images)} figures: they need kaleido and a Chromium (install "
                           "the Debian package `chromium`); use --figures html")


def write(out: Path, figs: dict[str, Any], formats: Sequence[str]) -> list[str]:
    """Every figure in `formats` under out/figures (with figures/index.json); returns the files written."""
    from experiments.figures import export_run

    return export_run(out, figs, list(dict.fromkeys(formats)), strict=True)["written"]


def _layers(n: int) -> list[str]:
    return [f"L{i}" for i in range(n)]


def _heads(n: int) -> list[str]:
    return [f"H{i}" for i in range(n)]


def patch(r: Any, model: str, corruption: str, n: int) -> dict[str, Any]:
    """A `PatchResult` as a heatmap: layer x head, layer x position, or (layer, head) x position."""
    unpatched = r.corrupt_logit_diff if r.direction == "denoise" else r.clean_logit_diff
    vals, unit = ((r.values, "normalised (0 corrupted, 1 clean)") if r.defined
                  else (r.raw - unpatched, "change in logit diff (normalised effect undefined)"))
    axes = list(r.axes)
    lab = {ax: r.labels.get(ax, [str(i) for i in range(vals.shape[k])]) for k, ax in enumerate(axes)}
    title = f"{model}: {r.direction} patching of {r.what} ({corruption}, {n} pairs)"
    if len(axes) == 2:
        fig = viz.heatmap(vals, lab[axes[0]], lab[axes[1]], title, unit)
    else:  # one row per head (layer-major), one column per position
        other = next(a for a in axes if a not in ("layer", "head"))
        v = np.moveaxis(vals, [axes.index("layer"), axes.index("head"), axes.index(other)], [0, 1, 2])
        rows = [f"L{l}H{h}" for l in range(v.shape[0]) for h in range(v.shape[1])]
        fig = viz.heatmap(v.reshape(len(rows), -1), rows, lab[other], title, unit)
    return {f"patch_{r.what}": fig}


def attribution(d: dict[str, Any], lens: np.ndarray, model: str) -> dict[str, Any]:
    """DLA per head (heatmap), per component (bars, 95% CI over trials) and the logit lens (line, 95% CI)."""
    L, H = d["heads"].shape[1:]
    n = d["heads"].shape[0]
    parts = {"embed": d["embed"], "pos_embed": d["pos_embed"]}
    for l in range(L):
        parts[f"L{l} attn"] = d["heads"][:, l].sum(1) + d["attn_bias"][:, l]
        parts[f"MLP{l}"] = d["mlp"][:, l]
    parts["bias"] = d["bias"]
    m, lo, hi = mean_ci(np.stack(list(parts.values()), 1))
    lm, llo, lhi = mean_ci(lens)
    return {
        "dla_heads": viz.heatmap(d["heads"].mean(0), _layers(L), _heads(H),
                                 f"{model}: direct logit attribution per head ({n} trials)", "logit diff"),
        "dla_components": viz.bars(list(parts), {"mean logit diff": (m, (hi - lo) / 2)},
                                   f"{model}: direct logit attribution per component (mean, 95% CI over {n} "
                                   f"trials; they sum to the logit diff {d['logit_diff'].mean():.3f})", "logit diff"),
        "logit_lens": viz.lines_ci([f"resid_pre L{i}" for i in range(L)] + ["final"], {"logit lens": (lm, llo, lhi)},
                                   f"{model}: logit lens (mean, 95% CI over {n} trials)", "read before layer",
                                   "logit diff")}


def ablation(each: dict[str, np.ndarray], baseline: dict[str, float], method: str, model: str, n: int
             ) -> dict[str, Any]:
    """Change in logit diff and accuracy with each head ablated alone: heatmaps [layer, head]."""
    L, H = each["logit_diff"].shape
    return {
        "ablation_heads_logit_diff": viz.heatmap(
            each["logit_diff"] - baseline["logit_diff"], _layers(L), _heads(H),
            f"{model}: change in logit diff when each head is {method}-ablated ({n} trials; unablated "
            f"{baseline['logit_diff']:.3f})", "delta logit diff"),
        "ablation_heads_accuracy": viz.heatmap(
            each["accuracy"], _layers(L), _heads(H),
            f"{model}: accuracy with each head {method}-ablated ({n} trials; unablated {baseline['accuracy']:.3f})",
            "accuracy", zmid=baseline["accuracy"])}


def neurons(sel: dict[str, Any], model: str, n: int) -> dict[str, Any]:
    """The top neurons' standardised betas per task variable, and R^2 of every neuron [layer, neuron]."""
    variables = list(sel["variables"])
    layer_row = {l: i for i, l in enumerate(sel["layers"])}
    top = list(dict.fromkeys((l, i) for v in variables for l, i, _ in sel["top"][v]))
    coef = np.array([sel["coef"][layer_row[l], i] for l, i in top]).reshape(len(top), len(variables))
    return {
        "neuron_top_coef": viz.heatmap(coef, [f"L{l}N{i}" for l, i in top], variables,
                                       f"{model}: standardised betas of the most selective neurons at "
                                       f"'{sel['position']}' ({n} trials)", "beta"),
        "neuron_r2": viz.heatmap(sel["r2"], [f"L{l}" for l in sel["layers"]],
                                 [str(i) for i in range(sel["r2"].shape[1])],
                                 f"{model}: R^2 of each neuron's regression on the task variables", "R^2", zmid=None)}


def circuit(r: dict[str, Any], model: str) -> dict[str, Any]:
    """The circuit's top nodes and strongest edges (graph) and its faithfulness curves beside random circuits."""
    from experiments.figures import _layout

    keep = set(r["overlap_set"]) | {"embed", "logits"}
    edges = [e for e in r["edges"] if e["from"] in keep and e["to"] in keep][:60]
    figs = {"circuit": viz.circuit_graph(_layout(r["overlap_set"], r["node_scores"]), edges,
                                         f"{model}: its top {len(r['overlap_set'])} nodes and their strongest edges "
                                         f"({r['method']})")}
    for level in ("node", "edge"):
        c = r[f"{level}_curve"]
        d = np.asarray(c["random_faithfulness"], float)  # [size, draw]
        with warnings.catch_warnings():  # undefined faithfulness is NaN everywhere: drawn as a gap
            warnings.simplefilter("ignore", RuntimeWarning)
            rnd = (np.nanmean(d, 1), np.nanpercentile(d, 2.5, axis=1), np.nanpercentile(d, 97.5, axis=1))
        figs[f"faithfulness_{level}"] = viz.faithfulness_curves(
            c["grid"], {model: c["faithfulness"]}, {"random": rnd},
            f"{model}: faithfulness of the top-ranked {level}s ({r['method']}, {r['ablation']} ablation), beside "
            f"{d.shape[1]} random circuits per size")
    return figs


def compare(per_model: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-layer profiles of every model against the base: CKA, cross-model patching, weight reversion (one layer
    and top down) and relative weight change."""
    if not per_model:
        return {}
    first = next(iter(per_model.values()))
    n = len(first["cka_base"]["debiased"]["resid"]["answer"])
    resid_x = [f"resid_pre L{i}" for i in range(n - 1)] + ["final"]
    layers = _layers(len(first["reliance_base"]["reversion_layer"]))
    kept = "(acc - 0.5) / (acc_full - 0.5)"
    def rel(key: str) -> dict[str, list[float]]:
        return {m: [x["accuracy_retained"] for x in p["reliance_base"][key]] for m, p in per_model.items()}

    return {
        "cka_base": viz.profiles(resid_x, {m: list(p["cka_base"]["debiased"]["resid"]["answer"])
                                           for m, p in per_model.items()},
                                 "Debiased CKA with the base: residual stream at the answer position", "layer", "CKA"),
        "cmap": viz.profiles(layers, rel("cmap_resid"), "Accuracy kept (chance-corrected) with the base's residual "
                             "stream patched in at each layer", "layer", kept, hline=0.0),
        "reversion": viz.profiles(layers, rel("reversion_layer"), "Accuracy kept (chance-corrected) reverting one "
                                  "layer to the base", "reverted layer", kept, hline=0.0),
        "reversion_top_down": viz.profiles(layers[::-1], rel("reversion_top_down"), "Accuracy kept reverting every "
                                           "layer from the top down to the base (x = lowest reverted layer)",
                                           "lowest reverted layer", kept, hline=0.0),
        "weight_change": viz.profiles(list(first["weight_change"]), {m: list(p["weight_change"].values())
                                                                     for m, p in per_model.items()},
                                      "Relative weight change from the base", "component",
                                      "||W - W_base|| / ||W_base||")}
