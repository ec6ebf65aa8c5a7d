"""Every figure of a run, rebuilt from the run's stored results (so `cogcircuits export` needs no recomputation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from interp import viz
from interp.store import atomic_write_json


def _load(run: Path, name: str) -> dict[str, Any]:
    p = run / "results" / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _arr(run: Path, name: str) -> np.ndarray:
    with np.load(run / "arrays" / f"{name}.npz") as z:
        return z["values"]


def _band(d: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.array(d["mean"]), np.array(d["low"]), np.array(d["high"])


def build_figures(run: Path) -> dict[str, Any]:  # noqa: C901
    """{name: plotly figure} for everything the run has computed so far."""
    run = Path(run)
    figs: dict[str, Any] = {}
    ev, an, co, ci = _load(run, "evaluate"), _load(run, "analyses"), _load(run, "compare"), _load(run, "circuits")
    if ev:
        traces = [{"name": mid, "x": [c["step"] for c in r["curve"]], "y": [c["val_accuracy"] for c in r["curve"]],
                   "group": mid.split("-")[0]} for mid, r in ev["models"].items() if mid != "base"]
        figs["learning_curves"] = viz.curves(traces, "Validation accuracy during training", "step", "accuracy")
        conds, groups = None, {}
        for init in ("finetuned", "scratch", "base"):
            rows = [r for mid, r in ev["models"].items() if mid.split("-")[0] == init]
            by = [{(c["context"], c["relevant_coherence"], c["congruent"]): c["accuracy"]
                   for c in r["test"]["by_condition"]} for r in rows]
            conds = conds or sorted(by[0])
            vals = np.array([[b.get(k, np.nan) for k in conds] for b in by])
            err = vals.std(0, ddof=1) * 1.96 / np.sqrt(len(vals)) if len(vals) > 1 else np.zeros(len(conds))
            groups[init] = (vals.mean(0), err)
        labels = [f"ctx{c} coh{h} {'cong' if g else 'incong'}" for c, h, g in conds]
        figs["accuracy_by_condition"] = viz.bars(labels, groups, "Test accuracy per condition (mean over seeds)",
                                                 "accuracy")
        splits = [s for s in ("test", "gen") if all(s in r for r in ev["models"].values())]
        sg = {}
        for init in ("finetuned", "scratch", "base"):
            rows = [r for mid, r in ev["models"].items() if mid.split("-")[0] == init]
            vals = np.array([[r[s]["accuracy"] for s in splits] for r in rows])
            err = vals.std(0, ddof=1) * 1.96 / np.sqrt(len(vals)) if len(vals) > 1 else np.zeros(len(splits))
            sg[init] = (vals.mean(0), err)
        figs["accuracy_by_split"] = viz.bars(splits, sg, "Accuracy on the test and generalisation splits", "accuracy")
        for kind in ("relevant", "irrelevant"):
            traces = []
            for mid, r in ev["models"].items():
                if not (mid.endswith("-s0") or mid == "base" or mid.endswith(f"-s{_first_seed(ev)}")):
                    continue
                for ctx, d in r["psychometric"][kind].items():
                    traces.append({"name": f"{mid} ctx{ctx}", "x": d["signed_coherence"], "y": d["p_right"],
                                   "group": mid.split("-")[0]})
            figs[f"psychometric_{kind}"] = viz.curves(
                traces, f"Psychometric curves: P(right) vs signed coherence of the {kind} modality",
                f"signed coherence of the {kind} modality (+ = right)", "P(choice = right)")
    if an:
        for mid, s in an["models"].items():
            L_labels = None
            pos_labels = s["position_labels"]
            heads = _arr(run, f"patch_heads_{mid}")
            L_labels = [f"L{i}" for i in range(heads.shape[0])]
            H_labels = [f"H{i}" for i in range(heads.shape[1])]
            figs[f"patch_heads_{mid}"] = viz.heatmap(heads, L_labels, H_labels,
                                                     f"{mid}: denoising patching of head outputs ({an['corruption']})",
                                                     "normalised effect")
            for what in ("resid_pre", "attn_out", "mlp_out"):
                figs[f"patch_{what}_{mid}"] = viz.heatmap(_arr(run, f"patch_{what}_{mid}"), L_labels, pos_labels,
                                                          f"{mid}: denoising patching of {what} per layer x position",
                                                          "normalised effect")
            hp = _arr(run, f"patch_heads_by_pos_{mid}")  # [layer, pos, head]
            figs[f"patch_heads_by_pos_{mid}"] = viz.heatmap(
                hp.transpose(0, 2, 1).reshape(-1, hp.shape[1]), [f"L{l}H{h}" for l in range(hp.shape[0])
                                                                for h in range(hp.shape[2])], pos_labels,
                f"{mid}: head x position patching", "normalised effect")
            figs[f"dla_heads_{mid}"] = viz.heatmap(_arr(run, f"dla_heads_{mid}"), L_labels, H_labels,
                                                   f"{mid}: direct logit attribution per head", "logit diff")
            base_ld = s["ablation_baseline"]["logit_diff"]
            figs[f"ablation_heads_{mid}"] = viz.heatmap(_arr(run, f"ablation_heads_logit_diff_{mid}") - base_ld,
                                                        L_labels, H_labels,
                                                        f"{mid}: change in logit diff when each head is "
                                                        f"{an['ablation']}-ablated", "delta logit diff")
    if co:
        L = len(next(iter(co["layers"].values()))["cka_resid_answer"]["mean"])
        for key, title, xs in (
                ("cka_resid_answer", "CKA with the pretrained base: residual stream at the answer position",
                 [f"resid_pre L{i}" for i in range(L - 1)] + ["final"]),
                ("cka_mlp_answer", "CKA with the base: MLP outputs at the answer position", None),
                ("reversion_layer", "Accuracy retained when one layer is reverted to the base's weights", None),
                ("reversion_top_down", "Accuracy retained reverting layers top-down (x = lowest reverted layer)", None),
                ("reversion_bottom_up", "Accuracy retained reverting layers bottom-up (x = highest reverted layer)",
                 None),
                ("cmap_resid", "Accuracy retained patching the base's residual stream into the model", None),
                ("cmap_mlp", "Accuracy retained patching the base's MLP output into the model", None)):
            series = {k: _band(v[key]) for k, v in co["layers"].items() if key in v}
            n = len(next(iter(series.values()))[0])
            x = xs or ([f"L{i}" for i in range(n - 1, -1, -1)] if key == "reversion_top_down" else
                       [f"L{i}" for i in range(n)])
            figs[key] = viz.lines_ci(x, series, title + " (mean, 95% CI over seeds)", "layer", "value")
        series = {k: _band(v["weight_change"]) for k, v in co["layers"].items() if "weight_change" in v}
        figs["weight_change"] = viz.lines_ci(co["components"], series, "Relative weight change from the base",
                                             "component", "||W - W_base|| / ||W_base||")
    if ci:
        traces = [{"name": mid, "x": r["faithfulness"]["sizes"], "y": r["faithfulness"]["faithfulness"],
                   "group": mid.split("-")[0]} for mid, r in ci["models"].items()]
        figs["faithfulness"] = viz.curves(traces, f"Faithfulness vs circuit size ({ci['method']}, "
                                                  f"{ci['ablation']} ablation)", "nodes kept", "faithfulness")
        for mid in ci["models"]:
            full = json.loads((run / "circuits" / f"{mid}.json").read_text())
            nodes = _layout(full["nodes_80"], full["node_scores"])
            figs[f"circuit_{mid}"] = viz.circuit_graph(nodes, full["circuit_edges"],
                                                       f"{mid}: circuit at 80% faithfulness "
                                                       f"({len(full['nodes_80'])} nodes)")
    return figs


def _first_seed(ev: dict[str, Any]) -> str:
    seeds = sorted(int(m.split("-s")[1]) for m in ev["models"] if "-s" in m)
    return str(seeds[0]) if seeds else "0"


def _layout(names: list[str], scores: dict[str, float]) -> list[dict[str, Any]]:
    nodes = [{"name": "embed", "x": -1, "y": 0, "score": 0.0}, {"name": "logits", "x": 99, "y": 0, "score": 0.0}]
    per_layer: dict[float, int] = {}
    for n in names:
        x = float(n[3:]) + 0.5 if n.startswith("MLP") else float(n[1:n.index("H")])
        per_layer[x] = per_layer.get(x, 0) + 1
        nodes.append({"name": n, "x": x, "y": per_layer[x], "score": scores.get(n, 0.0)})
    top = max([n["x"] for n in nodes if n["name"] != "logits"] + [0])
    nodes[1]["x"] = top + 1
    return nodes


def export_run(run: Path, figs: dict[str, Any], formats: tuple[str, ...] | list[str], strict: bool = True
               ) -> dict[str, Any]:
    """Write every figure in `formats` under run/figures; records what was written in figures/index.json.
    Without a Chromium, PNG/SVG are skipped (strict=False) or raise after the HTML is written (strict=True)."""
    out = Path(run) / "figures"
    skipped: list[str] = []
    written = []
    wants_images = [f for f in formats if f in ("png", "svg")]
    can_images = viz.chromium_available()
    for name, fig in figs.items():
        fmts = [f for f in formats if f in ("html", "csv")]
        written += [str(p.relative_to(run)) for p in viz.export_figure(fig, out / name, fmts)]
    for fmt in wants_images if can_images else []:
        written += [str(p.relative_to(run)) for p in viz.export_images(figs, out, fmt)]
    if wants_images and not can_images:
        skipped = wants_images
    atomic_write_json(out / "index.json", {"figures": sorted(figs), "files": written, "skipped_formats": skipped})
    if skipped and strict:
        raise RuntimeError(f"no Chromium found: {', '.join(skipped)} not written (install the Debian package "
                           "`chromium`); HTML was written")
    return {"written": written, "skipped": skipped}
