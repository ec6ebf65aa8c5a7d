"""Verdicts follow the printed rule from planted contrasts: separated groups support a claim, reversed groups
refute it, overlap is inconclusive, and models that missed the criterion never enter a contrast."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from experiments.core.run_record import Contrast
from experiments.run import contrasts
from experiments.run.claims import judge, judge_group, judge_pair, verdict
from interp.stats import GroupContrast, PairContrast
from tests.helpers import records as R

FT = ["finetuned-s0", "finetuned-s1", "finetuned-s2"]
SC = ["scratch-s0", "scratch-s1", "scratch-s2"]


def _planted(ft_reliance: float, sc_reliance: float, ft_gen: float, same_mechanism: bool,
             eligible: list[str] | None = None):
    """Results of a run whose fine-tuned models rely on the base by `ft_reliance` (scratch `sc_reliance`), more
    in later layers when ft_reliance > sc_reliance."""
    rng = np.random.default_rng(0)
    ids = FT + SC
    models, per_model, maps = {}, {}, {"patching_map": {}, "ablation_map": {}}
    proto = {"finetuned": rng.normal(size=(2, 4)), "scratch": rng.normal(size=(2, 4))}
    for m in ids:
        g = m.split("-s")[0]
        ft = g == "finetuned"
        models[m] = R.model_eval(0.99, ft_gen if ft else 0.45, 300 if ft else 500)
        level = ft_reliance if ft else sc_reliance
        slope = 0.1 if ft and ft_reliance > sc_reliance else 0.0
        prof = [level + slope * l + 0.01 * rng.normal() for l in range(7)]
        rev = [level + 0.01 * rng.normal() for _ in range(6)]
        per_model[m] = R.model_comparison(prof, prof[:6], rev, None if ft else rev)
        key = "finetuned" if same_mechanism else g
        maps["patching_map"][m] = proto[key] + 0.05 * rng.normal(size=(2, 4))
        maps["ablation_map"][m] = proto[key] + 0.05 * rng.normal(size=(2, 4))
    pairs = {}
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            same = a.split("-s")[0] == b.split("-s")[0] or same_mechanism
            pairs[(a, b)] = [0.9 if same else 0.3] * 7
    nodes = [f"L{l}H{h}" for l in range(2) for h in range(4)] + ["MLP0", "MLP1"]
    sets = {"finetuned": nodes[:2], "scratch": nodes[5:7]}
    ci = R.circuits({m: R.model_circuit(sets["finetuned" if same_mechanism else m.split("-s")[0]], 0.5, nodes)
                     for m in ids}, nodes, 10)
    ev = R.evaluation(models, eligible or ids)
    return ev, contrasts.build(ev, R.comparison(per_model, pairs), ci, maps)


def test_planted_reliance_and_different_mechanisms_support_every_claim():
    ev, c = _planted(ft_reliance=0.8, sc_reliance=0.1, ft_gen=0.9, same_mechanism=False)
    claims = {cl.key: cl for cl in judge(ev, c)}
    assert [claims[k].verdict for k in "ABC"] == ["supported"] * 3, [(p.contrast, p.outcome) for k in "ABC"
                                                                     for p in claims[k].parts]
    overlap = c.entries["circuit_overlap"]
    assert overlap.result.chance == overlap.chance > 0
    assert len(c.entries["cka_between_models"].result.between) == 9


def test_reversed_groups_refute_and_shared_mechanisms_do_not_count_as_different():
    ev, c = _planted(ft_reliance=0.1, sc_reliance=0.8, ft_gen=0.4, same_mechanism=True)
    claims = {cl.key: cl for cl in judge(ev, c)}
    assert [claims[k].verdict for k in "ABC"] == ["not supported"] * 3
    outcomes = {p.contrast: p.outcome for p in claims["B"].parts}
    assert outcomes["circuit_overlap"] == outcomes["cka_between_models"] == "against"  # identical: no difference
    assert "in favour" not in outcomes.values()


def test_models_that_missed_the_criterion_are_left_out():
    ev, c = _planted(0.8, 0.1, 0.9, False, eligible=FT[:2] + SC)
    assert set(c.entries["cka_base_mean"].per_model) == set(FT[:2] + SC)
    assert all("finetuned-s2" not in (p.a, p.b) for p in c.entries["circuit_overlap"].pairs)
    ev, c = _planted(0.8, 0.1, 0.9, False, eligible=FT[:1] + SC)  # one fine-tuned model: no within-group null
    assert c.entries["cka_base_mean"].result is None and "undefined" in c.entries["cka_base_mean"].note
    claims = {cl.key: cl for cl in judge(ev, c)}
    assert claims["A"].verdict == "inconclusive" and claims["A"].parts[0].outcome == "undefined"


def _entry(kind: str, result) -> Contrast:
    return Contrast(key="k", kind=kind, measure="m", chance=None, result=result, note=None)


def test_part_rules():
    sep = GroupContrast(a=(3, 4), b=(1, 2), mean_a=3.5, mean_b=1.5, difference=2.0, direction="a>b", separated=True,
                        p_greater=1 / 6, p_less=1.0, p_two_sided=1 / 3, min_p=1 / 6, n_labelings=6)
    assert judge_group(_entry("group", sep), "finetuned>scratch")[0] == "in favour"
    assert judge_group(_entry("group", sep), "finetuned<scratch")[0] == "against"
    over = replace(sep, direction="overlap", separated=False)
    assert judge_group(_entry("group", over), "finetuned>scratch")[0] == "inconclusive"
    pair = PairContrast(between=(0.1, 0.5), within_a=(0.4,), within_b=(0.6,), mean_between=0.3, mean_within=0.5,
                        separated=False, p_value=0.3, min_p=0.1, n_models=(2, 2), chance=None)
    assert judge_pair(_entry("pair", pair))[0] == "inconclusive"
    assert judge_pair(_entry("pair", replace(pair, mean_between=0.5)))[0] == "against"
    assert judge_group(_entry("group", None), "finetuned>scratch")[0] == "undefined"
    assert verdict([]) == "inconclusive"


def test_a_part_reading_an_unvalidated_metric_counts_as_inconclusive():
    """With planted reliance every part of A is in favour; the controls' validation makes a part whose metric was
    not validated inconclusive (so A is no longer supported) and names the outcome it would have had, leaves a
    validated one as it is, and leaves parts the controls do not cover unmarked. Catches validation ignored,
    applied to the wrong part, or turning an unvalidated 'in favour' into a verdict of its own."""
    from experiments.core.run_record import Validation

    ev, c = _planted(ft_reliance=0.8, sc_reliance=0.1, ft_gen=0.9, same_mechanism=False)
    v = Validation(source="test", architecture="test", validated={"cka_base_mean": False, "cmap_mean": True,
                                                                  "cka_base_late_minus_early": True,
                                                                  "cmap_late_minus_early": True})
    claims = {cl.key: cl for cl in judge(ev, c, v)}
    parts = {p.contrast: p for p in claims["A"].parts}
    assert parts["cka_base_mean"].outcome == "inconclusive" and parts["cka_base_mean"].validation == "not validated"
    assert "NOT VALIDATED" in parts["cka_base_mean"].detail and "in favour" in parts["cka_base_mean"].detail
    assert parts["cmap_mean"].outcome == "in favour" and parts["cmap_mean"].validation == "validated"
    assert claims["A"].verdict == "inconclusive"
    assert claims["B"].verdict == claims["C"].verdict == "supported"
    assert all(p.validation is None for k in "BC" for p in claims[k].parts)
    every = Validation(source="t", architecture="t", validated={k: True for k in parts})
    assert [cl.verdict for cl in judge(ev, c, every)] == ["supported"] * 3
