"""Every figure of a run, rebuilt from the run's stored results (so `cogcircuits export` needs no recomputation):
the run-level figures that set models side by side (training, accuracy, comparisons with the base, contrasts,
faithfulness over seeds), then each typed per-model result's own figures (`Result.figures()`). Intervals are the
project's one definition (`interp.stats.mean_ci`: 95% t-interval over seeds)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from experiments.core.run_record import Contrasts, RunCircuits, RunComparison, RunEvaluation, RunRecord
from experiments.jobs.kinds import model_results
from interp import viz
from interp.metrics import condition_label
from interp.model_id import GROUPS, group_of
from interp.stats import mean_ci
from interp.store import atomic_write_json


def firsts(ids: list[str]) -> list[str]:
    """The first analysed model of each group (the one whose maps are drawn)."""
    return [m for m in (next((i for i in ids if group_of(i) == g), None) for g in GROUPS) if m]


def _ci_bars(rows: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    m, lo, hi = mean_ci(np.asarray(rows, dtype=float))
    return m, (hi - lo) / 2


def _training(ev: RunEvaluation, figs: dict[str, Any]) -> None:
    traces = []
    for mid, r in ev.models.items():
        if mid == "base":
            continue
        curve = r.curve or ()
        steps = [c.step for c in curve]
        traces.append({"name": f"{mid} overall", "x": steps, "y": [c.val_accuracy for c in curve],
                       "group": group_of(mid)})
        traces.append({"name": f"{mid} incongruent", "x": steps, "y": [c.val_incongruent_accuracy for c in curve],
                       "group": group_of(mid), "dash": "dot"})
    crit = ev.criterion["finetuned"]
    figs["learning_curves"] = viz.curves(traces, f"Validation accuracy during training (criterion: >= "
                                                 f"{crit.accuracy:.0%} overall and >= "
                                                 f"{crit.incongruent_accuracy:.0%} on incongruent trials)",
                                         "step", "accuracy")
    figs["steps_to_criterion"] = steps_figure(ev)


def steps_figure(ev: RunEvaluation) -> Any:
    """One strip per arm: each model's training steps (to the criterion, or its whole budget when it missed), the
    arm's step budget as a dash, on a log axis (fine-tuning takes tens of steps, scratch training thousands)."""
    points: dict[str, list[tuple[str, float, str]]] = {}
    for m, r in ev.models.items():
        if r.training is not None:
            met = "met the criterion" if r.training.met_criterion else "missed it"
            points.setdefault(group_of(m), []).append((f"{m}: {met}", float(r.training.steps), group_of(m)))
    budgets = {g: float(c.max_steps) if (c := ev.criterion.get(g)) is not None and c.max_steps else None
               for g in points}
    return viz.strips(list(points), points, "Training steps used per arm (to the criterion, or the whole budget when "
                                            "it was missed; dash: the arm's budget)", "steps (log scale)",
                      chance=budgets, line_name="budget", log_y=True)


def _accuracy(ev: RunEvaluation, figs: dict[str, Any]) -> None:
    cols = [("test", "accuracy", "test"), ("test", "incongruent_accuracy", "test, incongruent")]
    if all(r.gen is not None for r in ev.models.values()):
        cols += [("gen", "accuracy", "held-out numbers"), ("gen", "incongruent_accuracy", "held-out, incongruent")]
    groups, conds = {}, None
    by_cond = {}
    for init in (*GROUPS, "base"):
        rows = [r for mid, r in ev.models.items() if group_of(mid) == init and (init == "base" or mid in ev.eligible)]
        if not rows:
            continue
        groups[f"{init} ({len(rows)})"] = _ci_bars([[getattr(getattr(r, s), k) for s, k, _ in cols] for r in rows])
        by = [{condition_label(c): c["accuracy"] for c in r.test.by_condition} for r in rows]
        conds = conds or sorted(by[0])
        by_cond[f"{init} ({len(rows)})"] = _ci_bars([[b.get(k, np.nan) for k in conds] for b in by])
    figs["accuracy_by_split"] = viz.bars([c[2] for c in cols], groups, "Accuracy of the models that met the "
                                         "criterion (mean, 95% CI over seeds; chance 50%)", "accuracy")
    figs["accuracy_by_split"].update_yaxes(range=[0, 1.05])
    labels = list(conds or [])
    figs["accuracy_by_condition"] = viz.bars(labels, by_cond, "Test accuracy per condition (mean, 95% CI over seeds)",
                                             "accuracy")
    figs["accuracy_by_condition"].update_yaxes(range=[0, 1.05])
    shown = firsts(list(ev.eligible)) + ["base"]
    word = ev.task.answer_words[1].strip()
    group = ev.task.group
    for kind in ev.models["base"].psychometric:
        traces = [{"name": mid + (f" {group}={g}" if group else ""), "x": list(d.x), "y": list(d.p),
                   "group": group_of(mid)} for mid in shown for g, d in ev.models[mid].psychometric[kind].items()]
        figs[f"psychometric_{kind}"] = viz.curves(
            traces, f"Psychometric curves: P({word}) against {kind}", kind, f"P(choice = {word})")


def _compare(co: RunComparison, base_name: str, figs: dict[str, Any]) -> None:
    """The comparison with the base (its typed result's own figures), and CKA between every two models."""
    if not co.per_model:
        return
    cmp = co.to_result(base_name)
    figs.update(cmp.figures())
    pairs, grp = {}, {}
    for p in co.pairs:
        name = f"{p.a} ~ {p.b}"
        pairs[name] = list(p.cka)
        grp[name] = "between" if group_of(p.a) != group_of(p.b) else f"within {group_of(p.a)}"
    if pairs:
        figs["cka_between"] = viz.profiles(
            cmp.x_labels("cka"), pairs, "Debiased CKA between two trained models (residual stream at the answer): "
            "pairs within an init vs between (thin: each pair; thick: mean over pairs, which share models, so no "
            "interval)", "layer", "CKA", group=grp, bands=False)


def _contrasts(c: Contrasts, figs: dict[str, Any]) -> None:
    keys = [k for k in ("circuit_overlap", "patching_map_similarity", "ablation_map_similarity",
                        "cka_between_models") if k in c.entries]
    points = {k: [(f"{p.a} ~ {p.b}", p.value, p.relation if p.relation == "between" else f"within {group_of(p.a)}")
                  for p in c.entries[k].pairs or ()] for k in keys}
    if keys:
        figs["pair_contrasts"] = viz.strips(keys, points, "Similarity of two models: pairs of the same init vs "
                                            "fine-tuned-vs-scratch pairs (dash: chance level)", "similarity",
                                            {k: c.entries[k].chance for k in keys})


def _circuits(ci: RunCircuits, figs: dict[str, Any]) -> None:
    for level in ("node", "edge"):
        per_model = {m: list(r.curve(level).faithfulness) for m, r in ci.models.items()}
        rnd = {}
        for g in GROUPS:
            draws = [np.asarray(r.curve(level).random_faithfulness, float) for m, r in ci.models.items()
                     if group_of(m) == g]
            if draws:
                d = np.concatenate(draws, axis=1)  # [size, draw]
                with warnings.catch_warnings():  # undefined faithfulness is NaN everywhere: drawn as a gap
                    warnings.simplefilter("ignore", RuntimeWarning)
                    rnd[g] = (np.nanmean(d, 1), np.nanpercentile(d, 2.5, axis=1), np.nanpercentile(d, 97.5, axis=1))
        grid = list(next(iter(ci.models.values())).curve(level).grid)
        figs[f"faithfulness_{level}"] = viz.faithfulness_curves(
            grid, per_model, rnd, f"Faithfulness of the top-ranked {level}s ({ci.method}, {ci.ablation} "
                                  f"ablation; MIB grid), beside {ci.n_random} random circuits per size")


def _per_model(run: Path, ids: list[str], figs: dict[str, Any]) -> None:
    """Every figure of every typed result saved for the first analysed model of each init, named
    "<figure>_<model>": whatever analyses the models ran, each result says which figures describe it."""
    for mid in firsts(ids):
        for stem, res in model_results(run, mid).items():
            for name, fig in res.figures().items():
                key = f"{name}_{mid}" if f"{name}_{mid}" not in figs else f"{stem}-{name}_{mid}"  # 2 of one kind
                figs[key] = fig


def build_figures(run: Path) -> dict[str, Any]:
    """{name: plotly figure} for everything the run has computed so far."""
    run = Path(run)
    figs: dict[str, Any] = {}
    rec = RunRecord.load(run)
    ev, co, ci, c = rec.evaluate, rec.compare, rec.circuits, rec.contrasts
    if ev:
        _training(ev, figs)
        _accuracy(ev, figs)
    if co:
        _compare(co, rec.meta.base.name, figs)
    if c:
        _contrasts(c, figs)
    if ci and ci.models:
        _circuits(ci, figs)
    _per_model(run, list(ev.eligible) if ev else [], figs)
    return figs


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
