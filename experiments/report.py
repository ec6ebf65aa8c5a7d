"""The self-contained HTML report of a run: findings as sentences computed from this run's numbers, figures
(plotly bundle inlined once), tables, and the config, seeds and package versions. Every dynamic string is escaped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.figures import _load, build_figures
from interp.compare import mean_ci
from interp.store import atomic_write_text
from interp.viz import esc, figure_div, plotly_bundle


def _ci(values: list[float], fmt: str = "{:.1%}") -> str:
    """Mean and 95% t-interval over seeds; accuracies (percent format) are clipped to [0, 1]."""
    v = np.asarray(values, dtype=float)
    m, lo, hi = mean_ci(v[:, None])
    if "%" in fmt:
        lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
    if len(v) < 2:
        return fmt.format(m[0]) + " (one seed)"
    return f"{fmt.format(m[0])} (95% CI {fmt.format(lo[0])} to {fmt.format(hi[0])}, {len(v)} seeds)"


def _cmp(a: float, b: float, more: str, less: str, tol: float = 1e-9) -> str:
    return more if a > b + tol else less if a < b - tol else "the same as"


def findings(run: Path) -> list[str]:  # noqa: C901
    ev, an, co, ci = _load(run, "evaluate"), _load(run, "analyses"), _load(run, "compare"), _load(run, "circuits")
    out: list[str] = []
    if ev:
        groups = {init: [r for mid, r in ev["models"].items() if mid.split("-")[0] == init]
                  for init in ("finetuned", "scratch")}
        acc = {k: [r["test"]["accuracy"] for r in v] for k, v in groups.items()}
        steps = {k: [r["steps"] for r in v] for k, v in groups.items()}
        out.append(f"Test accuracy: fine-tuned {_ci(acc['finetuned'])}; from scratch {_ci(acc['scratch'])}; the "
                   f"pretrained base before training {ev['models']['base']['test']['accuracy']:.1%} (chance 50%, "
                   f"Bayes-optimal {ev['bayes_optimal_accuracy']:.1%}).")
        out.append(f"Training steps used (stopping at the target validation accuracy or the step budget): fine-tuned "
                   f"{np.mean(steps['finetuned']):.0f} on average (range {min(steps['finetuned'])}-"
                   f"{max(steps['finetuned'])}), scratch {np.mean(steps['scratch']):.0f} (range "
                   f"{min(steps['scratch'])}-{max(steps['scratch'])}): the fine-tuned models used "
                   f"{_cmp(np.mean(steps['finetuned']), np.mean(steps['scratch']), 'more', 'fewer').replace('the same as', 'as many')} "
                   "steps as the scratch models.")
        if all("gen" in r for v in groups.values() for r in v):
            gen = {k: [r["gen"]["accuracy"] for r in v] for k, v in groups.items()}
            out.append(f"Generalisation split (held-out conditions never seen in training): fine-tuned "
                       f"{_ci(gen['finetuned'])}, scratch {_ci(gen['scratch'])}, base "
                       f"{ev['models']['base']['gen']['accuracy']:.1%}.")
        for init, rows in groups.items():
            inc = [np.mean([c["accuracy"] for c in r["test"]["by_condition"] if not c["congruent"]]) for r in rows]
            con = [np.mean([c["accuracy"] for c in r["test"]["by_condition"] if c["congruent"]]) for r in rows]
            out.append(f"{init}: accuracy on congruent trials {np.mean(con):.1%}, on incongruent trials "
                       f"{np.mean(inc):.1%} (mean over seeds and coherences).")
    if co:
        f = np.array(co["layers"]["finetuned"]["cka_resid_answer"]["mean"], dtype=float)
        s = np.array(co["layers"]["scratch"]["cka_resid_answer"]["mean"], dtype=float)
        names = [f"before layer {i}" for i in range(len(f) - 1)] + ["after the last layer"]
        ok = np.isfinite(f) & np.isfinite(s)
        if ok.any():
            k = int(np.argmax(np.where(ok, np.abs(f - s), -np.inf)))
            idx = np.nonzero(ok)[0]
            early, late = idx[: len(idx) // 2], idx[len(idx) // 2:]
            out.append(f"Residual-stream CKA with the base at the answer position, averaged over layers: fine-tuned "
                       f"{f[ok].mean():.3f}, scratch {s[ok].mean():.3f}. The largest difference is {names[k]} "
                       f"(fine-tuned {f[k]:.3f}, scratch {s[k]:.3f}).")
            if len(early) and len(late):
                out.append(f"For the fine-tuned models this similarity is {_cmp(f[late].mean(), f[early].mean(), 'higher', 'lower')} "
                           f"in the later half of the network ({f[late].mean():.3f}) than in the earlier half "
                           f"({f[early].mean():.3f}); for the scratch models {s[late].mean():.3f} vs {s[early].mean():.3f}.")
            if "ft-vs-scratch" in co["layers"]:
                fs = np.array(co["layers"]["ft-vs-scratch"]["cka_resid_answer"]["mean"], dtype=float)
                out.append(f"Fine-tuned vs scratch CKA (same seed) averaged over layers: {np.nanmean(fs[ok]):.3f}.")
        for init in ("finetuned", "scratch"):
            r = np.array(co["layers"][init]["reversion_layer"]["mean"])
            k = int(np.argmin(r))
            out.append(f"Weight reversion ({init}): reverting one layer to the base's weights keeps {np.mean(r):.1%} "
                       f"of the accuracy on average; layer {k} matters most (keeps {r[k]:.1%}).")
            c = np.array(co["layers"][init]["cmap_resid"]["mean"])
            out.append(f"Cross-model patching ({init}): the base's residual stream patched in at layer l keeps "
                       f"{', '.join(f'L{i} {v:.0%}' for i, v in enumerate(c))} of the accuracy.")
        wf = np.array(co["layers"]["finetuned"]["weight_change"]["mean"])
        ws = np.array(co["layers"]["scratch"]["weight_change"]["mean"])
        out.append(f"Relative distance of the weights from the base (median over components): fine-tuned "
                   f"{np.median(wf):.3f}, scratch {np.median(ws):.3f}; the fine-tuned model changed most in "
                   f"{co['components'][int(np.argmax(wf))]} ({wf.max():.3f}).")
        out.append(f"Reference: the base itself scores {co['base_reference']['accuracy']:.1%} on these trials.")
    if an:
        for mid, s in an["models"].items():
            out.append(f"{mid}: attribution patching agrees with exact patching (head x position, Spearman) at "
                       f"{s['atp_rank_correlation']:.2f}; its integrated-gradients variant at "
                       f"{s['ig_rank_correlation']:.2f}.")
    if ci:
        for init in ("finetuned", "scratch"):
            rows = [r for mid, r in ci["models"].items() if mid.startswith(init)]
            sizes = [r["size_80"] for r in rows if r["size_80"] is not None]
            layers = [int(n[3:]) if n.startswith("MLP") else int(n[1:n.index("H")]) for r in rows for n in r["nodes_80"]]
            n_total = len(rows[0]["ranked"]) if rows else 0
            if sizes:
                out.append(f"Circuit ({init}, {ci['method']}, {ci['ablation']} ablation): {np.mean(sizes):.1f} of "
                           f"{n_total} nodes reach 80% faithfulness on average ({len(sizes)}/{len(rows)} seeds reach "
                           f"it); its nodes sit at layers {', '.join(f'L{l}: {layers.count(l)}' for l in sorted(set(layers)))}.")
            else:
                out.append(f"Circuit ({init}): no circuit size reached 80% faithfulness in any seed.")
            frac = [len(r["in_base_top"]) / len(r["nodes_80"]) for r in rows if r["nodes_80"]]
            if init == "finetuned" and frac:
                out.append(f"Of the fine-tuned circuits' nodes, {np.mean(frac):.0%} are also among the base model's "
                           f"equally many top-ranked nodes on the same trial pairs.")
            checks = [r["exact_check"]["rank_correlation"] for r in rows]
            out.append(f"Exact-patching check of the top of the {init} ranking: Spearman "
                       f"{', '.join(f'{c:.2f}' for c in checks)} (per seed).")
        j = [v for v in ci["jaccard_ft_scratch"].values() if v == v]
        if j:
            out.append(f"Overlap (Jaccard) between the fine-tuned and scratch circuits of the same seed: "
                       f"{np.mean(j):.2f} on average (per seed: {', '.join(f'{v:.2f}' for v in j)}).")
    return out


def _table(rows: list[list[Any]], header: list[str]) -> str:
    h = "".join(f"<th>{esc(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def write_report(run: Path) -> Path:
    run = Path(run)
    meta = json.loads((run / "run.json").read_text())
    ev = _load(run, "evaluate")
    figs = build_figures(run)
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             f"<title>cogcircuits report: {esc(meta['config']['run']['name'])}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:24px auto;line-height:1.45}"
             "table{border-collapse:collapse;margin:10px 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "font-size:.9em}pre{background:#f5f5f5;padding:10px;overflow-x:auto;font-size:.8em}"
             "li{margin:4px 0}</style>",
             f"<script>{plotly_bundle()}</script></head><body>",
             f"<h1>Fine-tuned vs scratch on the context-dependent decision task: {esc(meta['config']['run']['name'])}</h1>",
             f"<p>Run created {esc(meta['created'])} on {esc(meta['device'])}; config hash {esc(meta['config_hash'])}; "
             f"seeds {esc(meta['config']['run']['seeds'])}; base model {esc(meta['config']['model']['base'])}.</p>",
             "<h2>Findings (computed by this run)</h2><ul>"]
    parts += [f"<li>{esc(s)}</li>" for s in findings(run)]
    parts.append("</ul><p>Interactive attention views: <a href='attention.html'>attention.html</a>.</p>")
    if ev:
        rows = [[mid, f"{r['test']['accuracy']:.3f}", f"{r['test']['logit_diff']:.2f}",
                 f"{r['gen']['accuracy']:.3f}" if "gen" in r else "-", r.get("steps", "-")]
                for mid, r in ev["models"].items()]
        parts.append("<h2>Models</h2>" + _table(rows, ["model", "test accuracy", "mean logit diff",
                                                        "generalisation accuracy", "steps"]))
    parts.append("<h2>Figures</h2>")
    for name, fig in figs.items():
        parts.append(f"<h3>{esc(name)}</h3>{figure_div(fig)}")
    parts.append("<h2>Config</h2><pre>" + esc(json.dumps(meta["config"], indent=2)) + "</pre>")
    parts.append("<h2>Package versions</h2><pre>" + esc(json.dumps(meta["versions"], indent=2)) + "</pre>")
    parts.append("</body></html>")
    out = run / "report.html"
    atomic_write_text(out, "\n".join(parts))
    return out
