"""Which reuse metrics the controls validate, by a printed rule, and the table and figure that show it."""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.controls.arms import NEGATIVE
from experiments.controls.metrics import METRICS
from experiments.controls.records import MetricCheck, ScoredModel
from interp import viz
from interp.stats import group_contrast

RULE = ("A metric is VALIDATED when, against every negative control (the shuffled-weights base fine-tuned, and the "
        "scratch arm measured against the planted base of its seed), every seed of the positive control (fine-tuned from the "
        "planted base) scores above every seed of that negative control, in the direction the run's verdict reads "
        "the metric (higher = more reuse); otherwise it is NOT VALIDATED. The exact permutation p-value over seed "
        "labels is printed beside each comparison (with 3 seeds per arm the smallest possible is 0.05). Only "
        "models that met the training criterion count; with fewer than two in an arm the metric is NOT VALIDATED "
        "(undefined).")


def _values(models: list[ScoredModel], arm: str, metric: str) -> tuple[float, ...]:
    """The finite values of `metric` of the arm's models that met the criterion (an undefined one is no seed)."""
    return tuple(v for m in models if m.arm == arm and m.met_criterion and m.metrics is not None
                 and np.isfinite(v := m.metrics[metric]))


def check(models: list[ScoredModel], metric: str) -> MetricCheck:
    """The metric's values per arm and whether the positive control separates above each negative one."""
    pos = _values(models, "planted", metric)
    negs = {arm: _values(models, arm, metric) for arm in NEGATIVE}
    separated, p, min_p = {}, {}, None
    for arm, vals in negs.items():
        r = group_contrast(list(pos), list(vals)) if len(pos) >= 2 and len(vals) >= 2 else None
        separated[arm] = bool(r is not None and r.direction == "a>b")
        p[arm] = float(r.p_greater) if r is not None else None
        min_p = float(r.min_p) if r is not None else min_p
    what, key = METRICS[metric]
    return MetricCheck(metric=metric, description=what, validates=key, positive=pos, negatives=negs,
                       separated=separated, p_greater=p, min_p=min_p, validated=all(separated.values()))


def _fmt(vals: tuple[float, ...]) -> str:
    return ", ".join(f"{v:.3f}" for v in vals) if vals else "none met the criterion"


def table_rows(checks: list[MetricCheck]) -> list[dict[str, Any]]:
    """metric x control rows: the values, the null (the negative control's seeds), separated yes/no, p."""
    rows = []
    for c in checks:
        for arm in NEGATIVE:
            p = c.p_greater[arm]
            rows.append({"metric": c.metric, "run_contrast": c.validates or "-", "control": arm,
                         "positive": _fmt(c.positive), "null": _fmt(c.negatives[arm]),
                         "separated": "yes" if c.separated[arm] else "no",
                         "p_greater": "undefined" if p is None else f"{p:.3f}",
                         "validated": "VALIDATED" if c.validated else "NOT VALIDATED"})
    return rows


def table_markdown(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def figure(models: list[ScoredModel], chance_share: float, checks: list[MetricCheck]) -> Any:
    """Each metric's value per model, side by side by arm (dash: a random circuit's expected share); each metric
    labelled validated or not."""
    status = {c.metric: "validated" if c.validated else "not validated" for c in checks}
    metrics = list(METRICS) + ["share_in_base_unrelated_top"]
    label = {m: f"{m} ({status.get(m, 'cross-task baseline')})" for m in metrics}
    points = {label[m]: [(f"{s.arm}-s{s.seed}", s.metrics[m], s.arm) for s in models
                         if s.met_criterion and s.metrics is not None and np.isfinite(s.metrics[m])] for m in metrics}
    chance = {label[m]: chance_share for m in metrics if m.startswith("share_")}
    fig = viz.strips([label[m] for m in metrics], points, "Reuse metrics: planted base (positive) vs shuffled base "
                     "and scratch (negative)", "metric value", chance)
    fig.update_layout(height=620, width=1100, margin={"r": 230, "b": 260})  # room for the long metric labels
    return fig
