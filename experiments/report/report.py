"""The self-contained HTML report of a run, organised by the paper's claims: each claim's verdict first (derived by
the printed rule from this run's contrasts), then its parts with their numbers and nulls, its figures and caveats;
then the models and the criterion, circuits, the descriptive analyses, which trials each analysis covers, and the
config and versions. The plotly bundle is inlined once. Every dynamic string is escaped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.core.run_record import (OUTCOMES, Claim, ClaimsRecord, Contrast, Contrasts, FaithfulnessCurve,
                                         GroupContrast, RunAnalyses, RunCircuits, RunComparison, RunEvaluation, RunMeta,
                                         RunRecord, Trials, Validation)
from experiments.jobs.spec import JobsRecord
from experiments.report.figures import build_figures, firsts
from interp.stats import wilson
from interp.store import atomic_write_text
from interp.viz import esc, figure_div, plotly_bundle
from tasks.registry import DEFAULT_TASK

STYLE = ("body{font-family:sans-serif;max-width:1150px;margin:24px auto;line-height:1.45}"
         "table{border-collapse:collapse;margin:10px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:.88em;"
         "vertical-align:top}pre{background:#f5f5f5;padding:10px;overflow-x:auto;font-size:.8em}"
         ".v{font-weight:bold;padding:2px 8px;border-radius:4px}.supported,.in-favour{background:#d4edda}"
         ".not-supported,.against{background:#f8d7da}.inconclusive,.undefined{background:#fff3cd}"
         ".rule{background:#f0f4fa;padding:8px 12px;border-left:4px solid #7a9cc6}")


def _table(rows: list[list[Any]], header: list[str]) -> str:
    h = "".join(f"<th>{esc(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _badge(text: str) -> str:
    return f"<span class='v {esc(text.replace(' ', '-'))}'>{esc(text)}</span>"


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    return "undefined" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)


def _models(ev: RunEvaluation) -> str:
    rows = []
    for mid, r in ev.models.items():
        t, gen = r.training, r.gen
        lo, hi = wilson(r.test.n_correct, r.test.trials.n)
        rows.append([mid, "yes" if mid in ev.eligible else ("reference" if mid == "base" else "NO: excluded"),
                     f"{r.test.accuracy:.3f} ({lo:.3f}-{hi:.3f})", _num(r.test.incongruent_accuracy),
                     _num(gen.accuracy) if gen else "-", _num(gen.incongruent_accuracy) if gen else "-",
                     t.steps if t else "-", (t.steps_to_criterion if t else None) or "-"])
    ft, sc = ev.criterion["finetuned"], ev.criterion["scratch"]
    parts = [f"<p>Training criterion (validation split, checked every {ft.checked_every} steps on "
             f"{ft.n_trials} trials): accuracy &ge; {ft.accuracy:.0%} overall and "
             f"&ge; {ft.incongruent_accuracy:.0%} on incongruent trials, those where the task's "
             f"shortcut ({esc(ev.task.shortcut)}) fails "
             "(scratch: "
             f"{sc.accuracy:.0%} / {sc.incongruent_accuracy:.0%}). Only models that "
             f"met it are analysed. Chance is {ev.chance:.0%}; the Bayes-optimal accuracy is "
             f"{ev.bayes_optimal_accuracy:.1%}. Test accuracy with the Wilson 95% interval over trials.</p>",
             _table(rows, ["model", "analysed", "test accuracy", "test incongruent", "held-out numbers",
                           "held-out incongruent", "steps", "steps to criterion"])]
    if ev.excluded:
        parts.append("<p><b>Excluded</b> (left out of every mechanistic contrast): " + "; ".join(
            f"{esc(m)}: {esc(why)}" for m, why in ev.excluded.items()) + "</p>")
    else:
        parts.append("<p>Every model met the criterion.</p>")
    return "\n".join(parts)


def _claim(cl: Claim, figs: dict[str, Any]) -> str:
    rows = [[p.says, p.outcome, p.detail, p.contrast, p.validation or "not covered"] for p in cl.parts]
    parts = [f"<h2 id='claim-{esc(cl.key)}'>Claim {esc(cl.key)}: {esc(cl.statement)} "
             f"{_badge(cl.verdict)}</h2>", f"<p><b>Tested against:</b> {esc(cl.null)}.</p>",
             _table(rows, ["part", "outcome", "numbers (per model; p from a permutation test over model labels)",
                           "contrast", "metric on the planted-reuse controls"])]
    for name in cl.figures:
        if name in figs:
            parts.append(f"<h4>{esc(name)}</h4>{figure_div(figs[name])}")
    parts.append("<p><b>Caveats.</b></p><ul>" + "".join(f"<li>{esc(c)}</li>" for c in cl.caveats) + "</ul>")
    return "\n".join(parts)


def _random_cpr(c: FaithfulnessCurve) -> str:
    rc = np.asarray(c.random_cpr, float)
    mean = float(np.mean(rc)) if rc.size and np.isfinite(rc).all() else None
    lo, hi = (float(np.min(rc)), float(np.max(rc))) if rc.size else (None, None)
    return f"{_num(mean)} ({_num(lo)}-{_num(hi)})"


def _circuits(ci: RunCircuits, figs: dict[str, Any]) -> str:
    rows = []
    for mid, r in ci.models.items():
        for level in ("node", "edge"):
            c = r.curve(level)
            reached = c.level_reached
            rows.append([mid, level, c.n_items, _num(c.m_full, "{:.2f}"), _num(c.m_empty, "{:.2f}"),
                         "0 / 1" if c.defined else "undefined", _num(c.cpr), _num(c.cmd), _random_cpr(c),
                         _num(reached.cpr_percentile_among_random, "{:.0%}"),
                         reached.size if reached.size is not None else "not reached",
                         _num(reached.random_share_reaching, "{:.0%}")])
    lvl = f"{ci.level:.0%}"
    out = [f"<h2 id='circuits'>Circuits</h2><p>{esc(ci.method)} scores; faithfulness f(C) = (m(C) - m(empty)) / "
           f"(m(full) - m(empty)) with {esc(ci.ablation)} ablation of everything outside C, on MIB's size grid; "
           "CPR = area under f, CMD = area under |1 - f| (trapezoid rule). f is undefined when m(full) - m(empty) is "
           "not above 0.25 logits and 3 standard errors. 'Size at " + lvl + "' is the smallest grid size below the "
           "full graph reaching it (the full graph reaches 1 by definition and is not counted).</p>",
           _table(rows, ["model", "level", "items", "m(full)", "m(empty)", "f(empty) / f(full)", "CPR", "CMD",
                         f"random CPR mean (range, {ci.n_random} draws)", "CPR beats random", f"size at {lvl}",
                         "random sets of that size reaching it"])]
    for name in ("faithfulness_node", "faithfulness_edge"):
        if name in figs:
            out.append(f"<h4>{esc(name)}</h4>{figure_div(figs[name])}")
    return "\n".join(out)


def _analyses(an: RunAnalyses, figs: dict[str, Any]) -> str:
    rows = []
    for mid, s in an.models.items():
        r = s.results  # each analysis's own summary
        if {"atp", "ig", "neurons"} <= set(r):
            atp, ig = r["atp"]["agreement"], r["ig"]["agreement"]
            rows.append([mid, _num(atp["spearman"], "{:.2f}"), _num(atp["top_k_recall"], "{:.0%}"),
                         _num(ig["spearman"], "{:.2f}"), _num(ig["top_k_recall"], "{:.0%}"), atp["n_compared"],
                         _num(r["neurons"]["choice_is_correct"], "{:.1%}")])
    out = ["<h2 id='analyses'>Descriptive analyses</h2><p>Attribution patching against exact head x position "
           "patching, over the positions at or after the first token where clean and corrupted inputs differ "
           "(earlier ones are zero in both by construction); top-10 recall = share of exact patching's 10 largest "
           "effects that the estimate also ranks in its top 10. Neuron regressions use the model's own choice and, "
           "separately, the correct answer: they coincide on the share of trials shown.</p>",
           _table(rows, ["model", "AtP Spearman", "AtP top-10 recall", "IG Spearman", "IG top-10 recall",
                         "entries compared", "model choice = correct answer"]),
           "<p>Per-position maps and attribution patching are computed for the first analysed model of each init; "
           "head patching, DLA, head ablation, neurons and the circuit for every analysed model. Below, every figure "
           "of every result saved for the first model of each init (results/per_model/&lt;model&gt;/).</p>"]
    for mid in firsts(list(an.models)):
        names = [n for n in figs if n.endswith(f"_{mid}")]
        out.append(f"<h3 id='model-{esc(mid)}'>{esc(mid)}</h3>" + "".join(
            f"<h4>{esc(n)}</h4>{figure_div(figs[n])}" for n in names))
    return "\n".join(out)


def _trials(t: Trials) -> str:
    return json.dumps(t.to_dict())


def _coverage(ev: RunEvaluation, an: RunAnalyses | None, co: RunComparison | None, ci: RunCircuits | None) -> str:
    rows = []
    first = next(iter(ev.models.values()))
    rows.append(["evaluation (accuracy, psychometric curves)", "every model and the base",
                 _trials(first.test.trials) + ("; " + _trials(first.gen.trials) if first.gen else "")])
    if an and an.models:
        for what, t in next(iter(an.models.values())).trials.items():
            rows.append([what.replace("_", " "), "each analysed model", _trials(t)])
    for what, t in (co.trials if co else {}).items():
        rows.append([f"comparison: {what}", "each analysed model and the base", _trials(t)])
    if ci and ci.models:
        rows.append(["circuits", "each analysed model (the base ranked on the same pairs)",
                     _trials(next(iter(ci.models.values())).trials)])
    return "<h2 id='trials'>Which trials each analysis covers</h2>" + _table(rows, ["analysis", "models", "trials"])


def _contrast_row(k: str, e: Contrast) -> list[Any]:
    r, base = e.result, "" if e.chance is None else f"chance {e.chance:.3f}"
    if r is None:
        return [k, e.kind, e.measure, "-", "-", "-", e.note or ""]
    if isinstance(r, GroupContrast):
        return [k, "group", e.measure, f"{r.mean_a:.3f} vs {r.mean_b:.3f}", r.direction,
                f"{r.p_two_sided:.3f} (min {2 * r.min_p:.3f})", base]
    return [k, "pair", e.measure, f"between {r.mean_between:.3f} vs within {r.mean_within:.3f}",
            "separated" if r.separated else "overlap", f"{r.p_value:.3f} (min {r.min_p:.3f})", base]


def _all_contrasts(c: Contrasts, v: Validation | None) -> str:
    status = {k: "validated" if ok else "NOT VALIDATED" for k, ok in (v.validated if v else {}).items()}
    rows = [_contrast_row(k, e) + [status.get(k, "not covered")] for k, e in c.entries.items()]
    src = f" (planted-reuse controls: {esc(v.source)}, on {esc(v.architecture)})" if v else ""
    return ("<h2 id='contrasts'>Every contrast</h2><p>Group contrasts: fine-tuned vs scratch means, two-sided "
            "permutation p over model labels. Pair contrasts: between-init vs within-init similarity, one-sided "
            f"permutation p. Last column: whether the contrast's metric was validated{src}.</p>"
            + _table(rows, ["contrast", "kind", "measure", "values", "groups", "permutation p", "baseline",
                            "metric validated"]))


def task_name(meta: RunMeta) -> str:
    """The run's task name from its recorded config (runs made before there were several tasks: the default)."""
    return str(meta.config.get("task", {}).get("name", DEFAULT_TASK))


def _header(rec: RunRecord) -> list[str]:
    meta = rec.meta
    name = meta.config["run"]["name"]
    pages = rec.attention.pages if rec.attention else {}
    links = ", ".join(f"<a href='{esc(f)}'>{esc(v.model)}</a>" for f, v in pages.items())
    return ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>cogcircuits report: {esc(name)}</title><style>{STYLE}</style>",
            f"<script>{plotly_bundle()}</script></head><body>",
            f"<h1>Fine-tuned vs scratch on {esc(task_name(meta))}: {esc(name)}</h1>",
            f"<p>Run created {esc(meta.created)} on {esc(meta.device)}; config hash {esc(meta.config_hash)}; "
            f"fine-tuned seeds {esc(meta.config['run']['seeds'])}, scratch seeds "
            f"{esc(meta.config['run'].get('scratch_seeds') or meta.config['run']['seeds'])}; base {esc(meta.base.name)} (weights sha256 "
            f"{esc(str(meta.base.weights_sha256)[:16])}...). Interactive attention views (the page "
            "<code>cogcircuits attention</code> makes): "
            + (links or "<a href='attention.html'>attention.html</a>") + ".</p>"]


def _verdicts(cl: ClaimsRecord) -> list[str]:
    rows = [[f"{x.key}: {x.statement}", x.verdict, x.tally(OUTCOMES)] for x in cl.claims]
    return ["<h2>Verdicts</h2>", _table(rows, ["claim", "verdict", "parts"]),
            f"<p class='rule'><b>Rule.</b> {esc(cl.rule)}</p>"]


def _jobs(jobs: JobsRecord) -> str:
    rows = [[j.id, j.executor, ", ".join(j.refs) or "-", j.attempts, j.state, _num(j.wall_s, "{:.1f}")]
            for j in jobs.jobs]
    return ("<h2>Jobs</h2><p>Where each training ran (a job done before this coordinator started is 'skipped').</p>"
            + _table(rows, ["job", "executor", "executor job ids", "attempts", "state", "wall s (last attempt)"]))


def _figures(figs: dict[str, Any], names: list[str]) -> str:
    return "".join(f"<h4>{esc(n)}</h4>{figure_div(figs[n])}" for n in names if n in figs)


def write_report(run: Path, figs: dict[str, Any] | None = None) -> Path:
    """run/report.html from the run's record; `figs` are its figures when already built (else built here)."""
    run = Path(run)
    rec = RunRecord.load(run)
    ev, an, co, ci, c, cl = rec.evaluate, rec.analyses, rec.compare, rec.circuits, rec.contrasts, rec.claims
    figs = build_figures(run) if figs is None else figs
    parts = _header(rec) + (_verdicts(cl) if cl else [])
    if ev:
        parts += ["<h2 id='models'>Models, training criterion, accuracy</h2>", _models(ev)]
        parts += [_figures(figs, [n]) for n in ("learning_curves", "accuracy_by_split", "steps_to_criterion")
                  if n in figs]
    parts += [_claim(x, figs) for x in (cl.claims if cl else ())]
    if ci and ci.models:
        parts.append(_circuits(ci, figs))
    if an and an.models:
        parts.append(_analyses(an, figs))
    rest = [n for n in ("reversion_top_down", "weight_change", "accuracy_by_condition") if n in figs]
    rest += sorted(n for n in figs if n.startswith("psychometric_"))
    if rest:
        parts.append("<h2>More figures</h2>" + _figures(figs, rest))
    if c:
        parts.append(_all_contrasts(c, cl.validation if cl else None))
    if ev:
        parts.append(_coverage(ev, an, co, ci))
    jobs = run / "results" / "jobs.json"
    if jobs.exists():
        parts.append(_jobs(JobsRecord.load(jobs)))
    parts.append("<h2>Config</h2><pre>" + esc(json.dumps(rec.meta.config, indent=2)) + "</pre>")
    parts.append("<h2>Package versions</h2><pre>" + esc(json.dumps(rec.meta.versions, indent=2)) + "</pre>")
    parts.append("</body></html>")
    out = run / "report.html"
    atomic_write_text(out, "\n".join(parts))
    return out
