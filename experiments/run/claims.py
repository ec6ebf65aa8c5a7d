"""The paper's three claims, each judged from this run's contrasts by a rule that the report prints.

Each claim has parts; each part reads one contrast (`experiments.run.contrasts`) and has an outcome:
  in favour     the groups are separated in the claimed direction (every fine-tuned model beyond every scratch
                model; for similarities, every between-group pair below every scratch-scratch pair: the
                fine-tuned models share the base, so their pairs are no null)
  against       the opposite: separated the other way, or (similarities) between-group pairs no less similar than
                within-group pairs on average
  inconclusive  the groups overlap
  undefined     too few models met the criterion (fewer than two per group)
A claim is SUPPORTED when every part is in favour, NOT SUPPORTED when any part is against, and INCONCLUSIVE
otherwise. A part whose metric the planted-reuse controls (`cogcircuits controls`, experiments/configs/
metric-validation.json) did not validate counts as inconclusive whatever its contrast shows (the outcome it would
have had is printed); parts whose metric the controls do not cover count as they are. "Separated" is the strongest statement a permutation test over model labels allows with this many
seeds: its p-value is printed beside it (with 3 seeds per group the smallest one-sided p is 0.05 for a group
contrast and 0.1 for a pair contrast).
"""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources

import numpy as np

from experiments.core.run_record import (Claim, Contrast, Contrasts, GroupContrast, PairContrast, Part, RunEvaluation,
                                         Validation)
from interp.model_id import ModelId
from interp.stats import holm, wilson

VALIDATION_FILE = "metric-validation.json"

RULE = ("SUPPORTED when every part is in favour; NOT SUPPORTED when any part is against; INCONCLUSIVE otherwise. "
        "A part is in favour when the groups are separated in the claimed direction (every fine-tuned model beyond "
        "every scratch model; for similarities, every fine-tuned-vs-scratch pair below every scratch-scratch pair, "
        "the pairs that share no initialisation: fine-tuned pairs share the base and are reported, not used as the "
        "null), against when they are separated the other way (for similarities: when fine-tuned-vs-scratch pairs "
        "are on average at least as similar as scratch-scratch pairs), inconclusive when they overlap, and "
        "undefined with fewer than two models per group that met the criterion. A part whose metric the "
        "planted-reuse controls did not validate counts as inconclusive, whatever its contrast shows (the outcome "
        "it would have had is printed); a part whose metric the controls do not cover counts as it is.")
MULTIPLICITY = ("none", "holm")
HOLM_RULE = (" Multiplicity: within each claim, the parts' permutation p-values (in the claimed direction) are "
             "Holm-adjusted; a part separated in the claimed direction is in favour only when its adjusted p is at "
             "most {alpha}, otherwise inconclusive. Per-layer maps and points are descriptive only.")


def rule_text(multiplicity: str = "none", alpha: float = 0.05) -> str:
    """The printed rule: `RULE`, and the multiplicity correction when there is one."""
    return RULE + (HOLM_RULE.format(alpha=alpha) if multiplicity == "holm" else "")


def _fmt(v: float) -> str:
    return f"{v:.3f}"


def _undefined(entry: Contrast | None) -> tuple[str, str]:
    return "undefined", (entry.note if entry is not None else None) or "not computed in this run"


def judge_group(entry: Contrast | None, expected: str) -> tuple[str, str]:
    if entry is None or not isinstance(entry.result, GroupContrast):
        return _undefined(entry)
    r = entry.result
    want = "a>b" if expected == "finetuned>scratch" else "a<b"
    p = r.p_greater if want == "a>b" else r.p_less
    detail = (f"fine-tuned {', '.join(map(_fmt, r.a))} (mean {_fmt(r.mean_a)}) vs scratch "
              f"{', '.join(map(_fmt, r.b))} (mean {_fmt(r.mean_b)}); permutation p = {p:.3f} "
              f"(smallest possible {r.min_p:.3f})")
    if r.direction == want:
        return "in favour", detail
    if r.separated:
        return "against", detail
    return "inconclusive", detail


def judge_pair(entry: Contrast | None) -> tuple[str, str]:
    if entry is None or not isinstance(entry.result, PairContrast):
        return _undefined(entry)
    r = entry.result
    scratch_only = r.reference == "within_b"
    within = tuple(r.within_b) if scratch_only else tuple(r.within_a) + tuple(r.within_b)
    chance = f"; chance level {_fmt(r.chance)}" if r.chance is not None else ""
    shared = (f"; fine-tuned pairs, which share the base and are no null: {_fmt(sum(r.within_a) / len(r.within_a))}"
              if scratch_only and r.within_a else "")
    detail = (f"between fine-tuned and scratch {_fmt(r.mean_between)} (range {_fmt(min(r.between))} to "
              f"{_fmt(max(r.between))}) vs {'scratch-scratch pairs' if scratch_only else 'within an init'} "
              f"{_fmt(r.mean_within)} (range {_fmt(min(within))} to {_fmt(max(within))}){chance}{shared}; "
              f"permutation p = {r.p_value:.3f} (smallest possible {r.min_p:.3f})")
    if r.separated:
        return "in favour", detail
    if r.mean_between >= r.mean_within - 1e-12:
        return "against", detail
    return "inconclusive", detail


def judge_above_chance(ev: RunEvaluation) -> tuple[str, str]:
    """Every fine-tuned model's accuracy on the generalisation split above chance: its Wilson 95% interval (over
    trials) lies above 0.5. Against when every fine-tuned model's interval reaches down to chance or below."""
    rows = [(m, g) for m in ev.eligible if ModelId.parse(m).is_finetuned and (g := ev.models[m].gen) is not None]
    if not rows:
        return "undefined", "no fine-tuned model met the criterion (or the task has no generalisation split)"
    ivs = [(m, r.accuracy, wilson(r.n_correct, r.trials.n)) for m, r in rows]
    detail = "; ".join(f"{m} {acc:.3f} (95% {lo:.3f} to {hi:.3f})" for m, acc, (lo, hi) in ivs)
    if all(lo > 0.5 for _, _, (lo, _) in ivs):
        return "in favour", detail
    if all(lo <= 0.5 for _, _, (lo, _) in ivs):
        return "against", detail
    return "inconclusive", detail


def verdict(parts: list[Part]) -> str:
    outcomes = [p.outcome for p in parts]
    if outcomes and all(o == "in favour" for o in outcomes):
        return "supported"
    if any(o == "against" for o in outcomes):
        return "not supported"
    return "inconclusive"


def load_validation() -> Validation:
    """The packaged record of which reuse metrics the planted-reuse controls validated
    (experiments/configs/metric-validation.json, written by `cogcircuits controls`)."""
    text = resources.files("experiments").joinpath("configs", VALIDATION_FILE).read_text("utf-8")
    return Validation.from_dict(json.loads(text), where=VALIDATION_FILE)


def _part(contrasts: Contrasts, key: str, says: str, expected: str, validation: Validation | None = None) -> Part:
    entry = contrasts.get(key)
    outcome, detail = judge_pair(entry) if expected == "between<within" else judge_group(entry, expected)
    status = None
    if validation is not None and key in validation.validated:
        status = "validated" if validation.validated[key] else "not validated"
        if not validation.validated[key] and outcome != "undefined":
            detail = (f"metric NOT VALIDATED by the planted-reuse controls, so inconclusive (its contrast alone: "
                      f"{outcome}); {detail}")
            outcome = "inconclusive"
    return Part(contrast=key, says=says, expected=expected, outcome=outcome, detail=detail, validation=status)


def caveats(ev: RunEvaluation) -> tuple[str, ...]:
    b = ev.base
    return (f"Model scale and base: the models have the base's shape ({b.n_layers} layers, d_model "
            f"{b.d_model}); the base is {b.name} (see its model card for what it was pretrained "
            "on). The paper used GPT-2 (12 layers, d_model 768, pretrained on WebText); conclusions may not transfer "
            "across scale.",
            "The unit of replication is the trained model: with k seeds per group a permutation test over model "
            "labels cannot give p below 1 / C(2k, k).")


def part_p(contrasts: Contrasts, part: Part) -> float:
    """The permutation p of a part's contrast in its claimed direction (NaN: none, e.g. a Wilson interval)."""
    entry = contrasts.get(part.contrast)
    r = entry.result if entry is not None else None
    if isinstance(r, PairContrast) and part.expected == "between<within":
        return r.p_value
    if isinstance(r, GroupContrast) and part.expected in ("finetuned>scratch", "finetuned<scratch"):
        return r.p_greater if part.expected == "finetuned>scratch" else r.p_less
    return float("nan")


def with_holm(parts: list[Part], contrasts: Contrasts, alpha: float) -> list[Part]:
    """The parts with their p and Holm-adjusted p; a part in favour whose adjusted p exceeds `alpha` becomes
    inconclusive (the detail says why)."""
    ps = [part_p(contrasts, p) for p in parts]
    adj = holm(ps)
    out = []
    for part, p, a in zip(parts, ps, adj):
        if not np.isfinite(p):
            out.append(part)
            continue
        part = replace(part, p=float(p), p_holm=float(a))
        if part.outcome == "in favour" and a > alpha:
            part = replace(part, outcome="inconclusive", detail=f"separated in the claimed direction, but the "
                           f"Holm-adjusted p = {a:.3f} > {alpha} across this claim's parts; {part.detail}")
        out.append(part)
    return out


def judge(ev: RunEvaluation, contrasts: Contrasts, validation: Validation | None = None, multiplicity: str = "none",
          alpha: float = 0.05) -> list[Claim]:
    """The three claims, judged from the run's evaluation and contrasts (and, given `validation`, with the parts
    whose metric the planted-reuse controls did not validate counted as inconclusive; with `multiplicity` "holm",
    with each claim's parts Holm-adjusted: `with_holm`)."""
    if multiplicity not in MULTIPLICITY:
        raise ValueError(f"multiplicity must be one of {', '.join(MULTIPLICITY)}, not {multiplicity!r}")
    v = validation
    adjust = (lambda parts: with_holm(parts, contrasts, alpha)) if multiplicity == "holm" else (lambda ps: ps)
    a_parts = [
        _part(contrasts, "cka_base_mean", "the fine-tuned models' representations are more similar to the base's "
              "than the scratch models' are (CKA, mean over layers)", "finetuned>scratch", v),
        _part(contrasts, "cmap_mean", "the fine-tuned models keep more of their accuracy than the scratch models "
              "when the base's residual stream replaces theirs (mean over layers)", "finetuned>scratch", v),
        _part(contrasts, "cka_base_late_minus_early", "that excess similarity is larger in the later half of the "
              "layers than in the earlier half (later minus earlier CKA, compared with scratch)", "finetuned>scratch", v),
        _part(contrasts, "cmap_late_minus_early", "the base's representations are more usable in the later half "
              "than in the earlier half (later minus earlier kept accuracy, compared with scratch)",
              "finetuned>scratch", v)]
    b_parts = [
        _part(contrasts, "circuit_overlap", "fine-tuned and scratch circuits overlap less than circuits of the same "
              "init (Jaccard of the top nodes)", "between<within", v),
        _part(contrasts, "patching_map_similarity", "their head patching maps agree less than maps of the same init",
              "between<within", v),
        _part(contrasts, "ablation_map_similarity", "their head ablation maps agree less than maps of the same init",
              "between<within", v),
        _part(contrasts, "cka_between_models", "their representations are less similar to each other than "
              "representations of the same init (CKA)", "between<within", v)]
    c_out, c_detail = judge_above_chance(ev)
    c_parts = [
        _part(contrasts, "gen_accuracy", "the fine-tuned models are more accurate than the scratch models on "
              "numbers never seen in training", "finetuned>scratch", v),
        Part(contrast="gen_accuracy", says="every fine-tuned model is above chance on those numbers",
             expected="above chance", outcome=c_out, detail=c_detail)]
    a_parts, b_parts, c_parts = adjust(a_parts), adjust(b_parts), adjust(c_parts)
    seeds = "the spread between seeds of the same init (permutation over model labels)"
    return [
        _claim("A", "The fine-tuned model relies on the pretrained model's representations, more in later layers.",
               a_parts, ("cka_base", "cmap", "reversion"),
               f"the scratch models (same architecture, never pretrained) and {seeds}",
               caveats(ev) + ("CKA and cross-model patching measure reliance on the base's representations; weight "
                              "reversion (shown, not part of the verdict) measures reliance on its weights.",)),
        _claim("B", "The scratch model builds different, task-specific mechanisms.", b_parts,
               ("pair_contrasts", "cka_between"),
               f"{seeds}; circuit overlap beside the overlap of random node sets of the same size",
               caveats(ev) + ("'Different' is what the parts test; 'task-specific' is not measured separately.",)),
        _claim("C", "Generic representations carry to numbers never seen in fine-tuning.", c_parts,
               ("accuracy_by_split",), f"chance (50%) and {seeds}",
               caveats(ev) + ("Only models that met the training criterion count; the held-out numbers never appear "
                              "in their training, validation or test trials.",))]


def _claim(key: str, statement: str, parts: list[Part], figures: tuple[str, ...], null: str,
           caveats: tuple[str, ...]) -> Claim:
    return Claim(key=key, statement=statement, verdict=verdict(parts), parts=tuple(parts), figures=figures, null=null,
                 caveats=caveats)
