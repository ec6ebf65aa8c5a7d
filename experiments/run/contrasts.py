"""Every fine-tuned vs scratch contrast of a run, each beside its within-group null (see `interp.stats`).

Built from the stored results only (no model is loaded), over the models that met the training criterion.
Group contrasts compare one number per model; pair contrasts compare the similarity of two models between the
groups with the similarity within them. Each entry records its measure, its per-model (or per-pair) values and
the statistics; the claims of the report cite entries by key.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from experiments.core.run_record import (Contrast, Contrasts, ModelComparison, ModelEvaluation, PairValue, Reliance,
                                         RunCircuits, RunComparison, RunEvaluation, TrainingSummary, kept)
from interp.model_id import GROUPS, group_of  # noqa: F401  (GROUPS: the groups contrasted)
from interp.stats import expected_jaccard, group_contrast, jaccard, pair_contrast, spearman

def halves(profile: Any) -> tuple[np.ndarray, np.ndarray]:
    """Earlier and later halves of a per-layer profile (the middle point of an odd count is in neither)."""
    p = np.asarray(profile, dtype=float)
    h = len(p) // 2
    return p[:h], p[len(p) - h:]


def finite_mean(values: Any) -> float:
    """Mean of the finite values (NaN, quietly, when there are none: e.g. every retained share undefined)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def late_minus_early(profile: Any) -> float:
    early, late = halves(profile)
    return finite_mean(late) - finite_mean(early)


def _group_entry(key: str, measure: str, per_model: dict[str, float], chance: float | None = None) -> Contrast:
    ft = [v for m, v in per_model.items() if group_of(m) == "finetuned"]
    sc = [v for m, v in per_model.items() if group_of(m) == "scratch"]
    enough = len([v for v in ft if np.isfinite(v)]) >= 2 and len([v for v in sc if np.isfinite(v)]) >= 2
    res = group_contrast(ft, sc) if enough else None
    note = (f"undefined: needs a defined value for at least two models per group (defined for {_n_finite(ft)} "
            f"fine-tuned and {_n_finite(sc)} scratch models that met the criterion)")
    return Contrast(key=key, kind="group", measure=measure, per_model=per_model, chance=chance, result=res,
                    note=None if res else note)


def _n_finite(values: list[float]) -> int:
    return int(np.isfinite(np.asarray(values, dtype=float)).sum())


PAIR_NULL = ("between-init pairs are set against scratch-scratch pairs only: the fine-tuned models share their "
             "initialisation (the base), so their similarity to each other is inflated by it and is no null")


def _pair_entry(key: str, measure: str, models: list[str], sim: Callable[[str, str], float],
                chance: float | None = None) -> Contrast:
    n = len(models)
    S = np.full((n, n), np.nan)
    pairs = []
    for i, j in itertools.combinations(range(n), 2):
        S[i, j] = S[j, i] = v = sim(models[i], models[j])
        rel = "within" if group_of(models[i]) == group_of(models[j]) else "between"
        pairs.append(PairValue(a=models[i], b=models[j], value=v, relation=rel))
    res = pair_contrast(S, [group_of(m) for m in models], chance=chance, reference="within_b")  # see `PAIR_NULL`
    return Contrast(key=key, kind="pair", measure=measure, pairs=tuple(pairs), chance=chance, result=res,
                    note=None if res else "undefined: needs at least two models per group that met the criterion")


def _training_entries(ev: RunEvaluation, models: list[str]) -> list[Contrast]:
    r = ev.models
    out = [_group_entry("steps_to_criterion", "training steps to the criterion",
                        {m: float(_trained(r[m]).steps_to_criterion) for m in models}),
           _group_entry("test_accuracy", "test accuracy", {m: r[m].test.accuracy for m in models}, 0.5)]
    gen = {m: r[m].gen for m in models}
    if all(g is not None for g in gen.values()):
        out.append(_group_entry("gen_accuracy", "accuracy on the generalisation split (held-out numbers)",
                                {m: g.accuracy for m, g in gen.items() if g is not None}, 0.5))
    return out


def _trained(e: ModelEvaluation) -> TrainingSummary:
    if e.training is None:
        raise ValueError("a trained model's evaluation has no training summary")
    return e.training


def _profile_entries(name: str, prof: dict[str, Any], what: str) -> list[Contrast]:
    """A per-layer profile per model: its mean, its later-minus-earlier half, and each point."""
    out = [_group_entry(f"{name}_mean", f"{what}: mean over layers", {m: finite_mean(v) for m, v in prof.items()}),
           _group_entry(f"{name}_late_minus_early", f"{what}: later-half minus earlier-half mean",
                        {m: late_minus_early(v) for m, v in prof.items()})]
    n_layers = len(next(iter(prof.values()))) if prof else 0
    out += [_group_entry(f"{name}_layer{l}", f"{what}: point {l}", {m: float(v[l]) for m, v in prof.items()})
            for l in range(n_layers)]
    return out


def _start(p: ModelComparison, mid: str) -> Reliance:
    """Reliance on the model's own starting weights: the base (fine-tuned), its initialisation (scratch)."""
    if group_of(mid) == "scratch":
        if p.reliance_init is None:
            raise ValueError(f"{mid}: the comparison has no reliance on its initialisation")
        return p.reliance_init
    return p.reliance_base


def _comparison_entries(co: RunComparison, models: list[str]) -> list[Contrast]:
    pm = co.per_model
    profiles = (
        ("cka_base", {m: pm[m].cka_answer() for m in models},
         "debiased CKA with the base, residual stream at the answer"),
        ("cmap", {m: kept(pm[m].reliance_base.cmap_resid) for m in models},
         "chance-corrected accuracy kept with the base's residual stream patched in"),
        ("reversion_start", {m: kept(_start(pm[m], m).reversion_layer) for m in models},
         "chance-corrected accuracy kept reverting the layer to the model's own starting weights (base / init)"))
    out = [e for name, prof, what in profiles for e in _profile_entries(name, prof, what)]
    pair_cka = {(p.a, p.b): p.cka for p in co.pairs}

    def cka_between(a: str, b: str) -> float:
        v = pair_cka.get((a, b), pair_cka.get((b, a)))
        return finite_mean(v) if v is not None else float("nan")

    out.append(_pair_entry("cka_between_models", "debiased CKA between two models (residual stream at the answer, "
                                                 "mean over layers)", models, cka_between))
    return out


def _circuit_entries(ci: RunCircuits, models: list[str]) -> list[Contrast]:
    cm = ci.models
    k, n_nodes = len(next(iter(cm.values())).overlap_set) if cm else 0, ci.n_nodes or 0
    sets = {m: cm[m].overlap_set for m in models if m in cm}
    out = []
    if sets and n_nodes:
        out.append(_pair_entry("circuit_overlap", f"Jaccard overlap of the top {k} of {n_nodes} circuit nodes",
                               [m for m in models if m in sets], lambda a, b: jaccard(sets[a], sets[b]),
                               chance=expected_jaccard(k, k, n_nodes)))
        base_top = set(ci.base_ranked[:k])
        out.append(_group_entry("share_in_base_top", f"share of the top {k} circuit nodes among the base's top {k} "
                                "on the same pairs", {m: len(set(s) & base_top) / k for m, s in sets.items()},
                                chance=k / n_nodes))
    out.append(_group_entry("cpr_node", "CPR (area under node faithfulness)",
                            {m: cm[m].node_curve.cpr for m in models if m in cm}))
    return out


def _map_entries(maps: dict[str, dict[str, np.ndarray]], models: list[str]) -> list[Contrast]:
    out = []
    for name, what in (("patching_map", "Spearman correlation of the head patching maps"),
                       ("ablation_map", "Spearman correlation of the head ablation maps")):
        mm = maps.get(name, {})
        if mm:
            ms = [m for m in models if m in mm]
            out.append(_pair_entry(f"{name}_similarity", what, ms, lambda a, b, mm=mm: spearman(mm[a], mm[b])))
    return out


def build(ev: RunEvaluation, co: RunComparison | None, ci: RunCircuits | None,
          maps: dict[str, dict[str, np.ndarray]]) -> Contrasts:
    """All contrasts: `ev`, `co`, `ci` are the evaluate / compare / circuits records; `maps[name][model]` the
    per-model head maps (patching effect, ablation effect)."""
    models = [m for m in ev.eligible if group_of(m) in GROUPS]
    entries = _training_entries(ev, models)
    entries += _comparison_entries(co, models) if co else []
    entries += _circuit_entries(ci, models) if ci else []
    entries += _map_entries(maps, models)
    return Contrasts(entries={e.key: e for e in entries})
