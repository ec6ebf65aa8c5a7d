"""Every reuse metric of one model against a reference base, as the run computes it (`compare_with_base`: CKA,
reversion, the base's residual stream patched in; `base_ranking`: circuits as top node sets), plus the direct
intervention the positive control needs: ablating the planted component (the heads the planted base's sub-skill
relies on most) against ablating random head sets of the same size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float

from experiments.analysis import stages
from experiments.core.run_record import kept
from experiments.run.contrasts import finite_mean, late_minus_early
from interp.ablation import Ablator
from interp.typing import TLModel
from tasks.registry import generate, task_of

SEEDS = {"compare": 3000, "reliance": 3001, "circuits": 4000, "ablate": 5000}

# metric -> (what it measures, the run's contrast key it validates, or "" for a metric of the controls only)
METRICS: dict[str, tuple[str, str]] = {
    "cka_base_mean": ("debiased CKA with the base, residual stream at the answer: mean over layers", "cka_base_mean"),
    "cka_base_late_minus_early": ("the same: later-half minus earlier-half mean", "cka_base_late_minus_early"),
    "cmap_mean": ("accuracy kept (chance-corrected) with the base's residual stream patched in: mean over layers",
                  "cmap_mean"),
    "cmap_late_minus_early": ("the same: later-half minus earlier-half mean", "cmap_late_minus_early"),
    "reversion_mean": ("accuracy kept (chance-corrected) with one layer reverted to the reference base: mean over "
                       "layers (the run's reversion_start reverts a scratch model to its own initialisation instead: "
                       "not the same quantity, so it validates no run contrast)", ""),
    "share_in_base_top": ("share of the model's circuit (top nodes) in the base's circuit for this task",
                          "share_in_base_top"),
    "share_in_base_skill_top": ("share of the model's circuit in the base's circuit for the planted sub-skill", ""),
    "planted_ablation_excess": ("logit-difference drop from ablating the planted heads minus the mean drop from "
                                "random head sets matched to them layer by layer (each relative to the unablated "
                                "logit difference)", ""),
}


@dataclass(frozen=True)
class References:
    """What is computed once per reference base: its node rankings for the task, the sub-skill and the unrelated
    task (circuits), and its representations on the CKA trials."""
    ranking_task: list[str]
    ranking_skill: list[str]
    ranking_unrelated: list[str]


def ranking(model: TLModel, task: Any, n: int, method: str, corruption: str = "") -> list[str]:
    """A model's nodes ranked by |attribution| on the task's clean/corrupted pairs (its circuit's order)."""
    t = task_of(task)
    return stages.base_ranking(model, task, corruption or t.default_corruption, n, SEEDS["circuits"], method)


def references(base: TLModel, cfg: dict[str, Any]) -> References:
    c = cfg["controls"]
    return References(ranking_task=ranking(base, cfg["task"], c.n_pairs, c.method, c.corruption),
                      ranking_skill=ranking(base, cfg["skill"], c.n_pairs, c.method),
                      ranking_unrelated=ranking(base, cfg["unrelated"], c.n_pairs, c.method))


def top_share(model_rank: list[str], ref_rank: list[str], fraction: float) -> float:
    """|top-k of the model ∩ top-k of the reference| / k, k = round(fraction x nodes) (at least 1)."""
    k = max(1, round(fraction * len(model_rank)))
    return len(set(model_rank[:k]) & set(ref_rank[:k])) / k


def planted_heads(base: TLModel, skill: Any, n: int, k: int, seed: int) -> list[tuple[int, int]]:
    """The k heads whose mean ablation lowers the planted base's logit difference on its sub-skill most (ties: the
    lower layer, then head, first)."""
    test = generate(skill, n, seed=seed, tokenizer=base.tokenizer, split="test")
    ref = generate(skill, n, seed=seed + 1, tokenizer=base.tokenizer, split="test")
    ab = Ablator(base, test.tokens, test.answer_ids, test.wrong_ids, method="mean", reference_tokens=ref.tokens)
    drop: Float[np.ndarray, "layer head"] = ab.baseline["logit_diff"] - ab.each_head()["logit_diff"]
    order = np.argsort(-drop.ravel(), kind="stable")[:k]
    H = drop.shape[1]
    return [(int(i // H), int(i % H)) for i in order]


def ablation_excess(model: TLModel, task: Any, heads: list[tuple[int, int]], n: int, n_sets: int, seed: int
                    ) -> dict[str, float]:
    """Relative logit-difference drop from mean-ablating `heads` on the task's test trials, the mean drop over
    `n_sets` random head sets matched to them layer by layer (as many heads from each layer, drawn with `seed`),
    and their difference (the excess). Matching by layer matters: early heads matter more than late ones in any
    model of the task, so sets drawn from every layer made the shuffled-base arm's excess as large as the planted
    arm's (first controls run)."""
    test = generate(task, n, seed=seed, tokenizer=model.tokenizer, split="test")
    ref = generate(task, n, seed=seed + 1, tokenizer=model.tokenizer, split="test")
    ab = Ablator(model, test.tokens, test.answer_ids, test.wrong_ids, method="mean", reference_tokens=ref.tokens)
    full = ab.baseline["logit_diff"]
    rng = np.random.default_rng(seed)
    rand = []
    for _ in range(n_sets):
        rand.append((full - ab.heads(layer_matched(heads, model.cfg.n_heads, rng))["logit_diff"]) / abs(full))
    planted = (full - ab.heads(heads)["logit_diff"]) / abs(full)
    return {"planted_drop": float(planted), "random_drop": float(np.mean(rand)),
            "excess": float(planted - np.mean(rand)), "full_logit_diff": float(full)}


def layer_matched(heads: list[tuple[int, int]], n_heads: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """A random head set with as many heads from each layer as `heads` has (distinct heads within a layer)."""
    per_layer: dict[int, int] = {}
    for layer, _ in heads:
        per_layer[layer] = per_layer.get(layer, 0) + 1
    return [(layer, int(h)) for layer, k in sorted(per_layer.items())
            for h in rng.choice(n_heads, size=k, replace=False)]


def score(model: TLModel, base: TLModel, refs: References, heads: list[tuple[int, int]], cfg: dict[str, Any]
          ) -> tuple[dict[str, float], dict[str, tuple[float, ...]], dict[str, float]]:
    """(metrics by METRICS key, the per-layer profiles behind them, the ablation's parts) of `model` against
    `base`."""
    c, task = cfg["controls"], cfg["task"]
    _, reps = stages.representations_of({"model": model, "base": base}, task, c.n_compare, SEEDS["compare"])
    rel = generate(task, c.n_reliance, seed=SEEDS["reliance"], tokenizer=base.tokenizer, split="test")
    cmp = stages.compare_with_base(model, base, reps["model"], reps["base"], rel)
    prof = {"cka_base": cmp.cka_answer(), "cmap": kept(cmp.reliance_base.cmap_resid),
            "reversion": kept(cmp.reliance_base.reversion_layer)}
    own = ranking(model, task, c.n_pairs, c.method, c.corruption)
    ab = ablation_excess(model, task, heads, c.n_ablate, c.n_random_sets, SEEDS["ablate"])
    f = c.overlap_fraction
    metrics = {"cka_base_mean": finite_mean(prof["cka_base"]),
               "cka_base_late_minus_early": late_minus_early(prof["cka_base"]),
               "cmap_mean": finite_mean(prof["cmap"]), "cmap_late_minus_early": late_minus_early(prof["cmap"]),
               "reversion_mean": finite_mean(prof["reversion"]),
               "share_in_base_top": top_share(own, refs.ranking_task, f),
               "share_in_base_skill_top": top_share(own, refs.ranking_skill, f),
               "share_in_base_unrelated_top": top_share(own, refs.ranking_unrelated, f),
               "planted_ablation_excess": ab["excess"]}
    return metrics, {k: tuple(float(x) for x in v) for k, v in prof.items()}, ab
