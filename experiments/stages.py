"""The computations of each `cogcircuits run` stage, one model (or one model and its reference) at a time. Each
returns plain results (numbers, arrays, typed results' dicts) and says which trials it covers; the pipeline
decides where they are stored. Models are identified as "finetuned-s{seed}", "scratch-s{seed}", "base".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from interp.ablation import Ablator
from interp.atp import agreement, attribution_patch
from interp.attribution import direct_logit_attribution
from interp.circuits import edge_attribution, exact_node_effects
from interp.compare import cross_model_patching, layer_cka, relative_weight_change, representations, weight_reversion
from interp.faithfulness import CircuitEvaluator, curve
from interp.metrics import accuracy_by_condition, evaluate_batch, incongruent_accuracy
from interp.neurons import neuron_selectivity
from interp.patching import patch_sweep, position_token_labels
from interp.stats import spearman
from tasks.registry import generate, make_pairs, task_of

PATCHED = ("heads", "heads_by_pos", "resid_pre", "attn_out", "mlp_out")


def trials(split: str, n: int, seed: int, corruption: str | None = None, task: Any = None) -> dict[str, Any]:
    """What an analysis covers, recorded beside its numbers."""
    d: dict[str, Any] = {"split": split, "n": n, "seed": seed}
    if corruption:
        d["corruption"] = corruption
        info = task_of(task).corruptions.get(corruption) if task is not None else None
        d["pairs"] = info.pairs if info else "all trials"
    return d


def psychometric(batch: Any, per_trial_ld: np.ndarray) -> dict[str, Any]:
    """P(choice = answer_words[1]) against each of the task's signed evidence variables (`batch.evidence`), one
    curve per value of `batch.group` (e.g. per context): {evidence: {group value: {x, p, n}}}."""
    m = batch.meta
    second = np.where(batch.labels == 1, per_trial_ld > 0, per_trial_ld <= 0)
    groups = np.asarray(m[batch.group]) if batch.group else np.zeros(len(batch), dtype=np.int64)
    out: dict[str, Any] = {}
    for kind, key in batch.evidence.items():
        ev = np.asarray(m[key])
        out[kind] = {}
        for g in sorted(set(groups.tolist())):
            xs = sorted(set(ev[groups == g].tolist()))
            sel = [(groups == g) & (ev == x) for x in xs]
            out[kind][str(g)] = {"x": xs, "p": [float(second[s].mean()) for s in sel], "n": [int(s.sum()) for s in sel]}
    return out


def _split_eval(model: Any, task: Any, n: int, seed: int, split: str
                ) -> tuple[Any, np.ndarray, dict[str, Any]]:
    batch = generate(task, n, seed=seed, tokenizer=model.tokenizer, split=split)
    ev = evaluate_batch(model, batch)
    ld = ev["per_trial_logit_diff"]
    return batch, ld, {"accuracy": ev["accuracy"], "incongruent_accuracy": incongruent_accuracy(batch, ld),
                       "n_correct": int((ld > 0).sum()), "logit_diff": ev["logit_diff"],
                       "by_condition": accuracy_by_condition(batch, ld), "trials": trials(split, n, seed, task=task)}


def evaluate_model(model: Any, task: Any, n: int, seed: int) -> dict[str, Any]:
    """Accuracy (overall, incongruent, per condition) on the test split and, when the task has one, on the
    generalisation split; psychometric curves on the test split."""
    test, ld, out = _split_eval(model, task, n, seed, "test")
    result = {"test": out, "psychometric": psychometric(test, ld)}
    if task.has_gen:
        result["gen"] = _split_eval(model, task, n, seed, "gen")[2]
    return result


def analyse_model(model: Any, task: Any, corruption: str, n: int, seed: int, ablation: str,
                  detailed: bool = True, progress: bool = False) -> dict[str, Any]:
    """Exact patching of head outputs, DLA per head, head ablation and neuron selectivity; `detailed` adds
    patching per position (head x position, residual stream, attention and MLP outputs) and attribution patching
    with its agreement with exact patching."""
    tok = model.tokenizer
    clean, bad = make_pairs(task, n, seed=seed, tokenizer=tok, corruption=corruption)
    args = (model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids)
    labels = position_token_labels(tok, clean.tokens, clean.position_labels)
    res: dict[str, Any] = {"position_labels": labels, "clean_tokens": clean.tokens, "corrupt_tokens": bad.tokens,
                           "answer_ids": clean.answer_ids, "wrong_ids": clean.wrong_ids}
    for what in PATCHED if detailed else ("heads",):
        res[f"patch_{what}"] = patch_sweep(*args, what=what, position_labels=labels, progress=progress)
    if detailed:
        exact = res["patch_heads_by_pos"]
        for method, steps in (("atp", 1), ("ig", 8)):
            est = attribution_patch(*args, nodes="heads", method=method, steps=steps)
            res[f"{method}_heads_by_pos"] = est["values"]
            res[f"{method}_agreement"] = agreement(est["values"], exact.values, exact.first_diff, pos_axis=1)
    test = generate(task, n, seed=seed, tokenizer=tok, split="test")
    dla = direct_logit_attribution(model, test.tokens, test.answer_ids, test.wrong_ids)
    res["dla_heads"], res["dla_mlp"] = dla["heads"].mean(0), dla["mlp"].mean(0)
    ref = generate(task, n, seed=seed + 1, tokenizer=tok, split="test")
    ab = Ablator(model, test.tokens, test.answer_ids, test.wrong_ids, method=ablation, reference_tokens=ref.tokens)
    each = ab.each_head(progress=progress)
    res["ablation_heads_accuracy"], res["ablation_heads_logit_diff"] = each["accuracy"], each["logit_diff"]
    res["ablation_baseline"] = ab.baseline
    big = generate(task, max(4 * n, 128), seed=seed + 2, tokenizer=tok, split="test")
    sel = neuron_selectivity(model, big, position="answer", top_k=10)
    for k in ("coef", "r2", "coef_correct", "r2_correct"):
        res[f"neuron_{k}"] = sel[k]
    res["neuron_top"], res["neuron_choice_is_correct"] = sel["top"], sel["choice_is_correct"]
    res["neuron_top_ablation"] = {v: ab.neurons([(l, i) for l, i, _ in sel["top"][v]]) for v in sel["top"]}
    res["trials"] = {"patching_and_attribution_patching": trials("test", n, seed, corruption, task),
                     "dla_and_ablation": trials("test", n, seed), "ablation_reference": trials("test", n, seed + 1),
                     "neurons": trials("test", len(big), seed + 2)}
    return res


def representations_of(models: dict[str, Any], task: Any, n: int, seed: int) -> tuple[Any, dict[str, Any]]:
    """Residual stream, attention and MLP outputs of every model on the same test trials (at the answer position
    and the task's key position, e.g. the context cue)."""
    first = next(iter(models.values()))
    test = generate(task, n, seed=seed, tokenizer=first.tokenizer, split="test")
    pos = {"answer": test.positions["answer"], test.key_position: test.positions[test.key_position]}
    return test, {mid: representations(m, test.tokens, pos) for mid, m in models.items()}


def cka_with(rep: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Per-layer CKA of one model's representations with a reference's: debiased (the estimator the verdicts
    use) and the plain biased one."""
    return {"debiased": layer_cka(rep, ref, debiased=True), "biased": layer_cka(rep, ref)}


def reliance(model: Any, reference: Any, batch: Any, cmap: bool = True) -> dict[str, Any]:
    """Chance-corrected performance kept when each layer (and every layer from the top down) is reverted to the
    reference's weights, and when the reference's residual stream replaces the model's at each layer."""
    args = (batch.tokens, batch.answer_ids, batch.wrong_ids)
    rev = weight_reversion(model, reference, *args, singles=False, bottom_up=False)
    out = {"reversion_layer": [rev["layer"][f"L{l}"] for l in range(model.cfg.n_layers)],
           "reversion_top_down": rev["top_down"], "full": rev["full"]}
    if cmap:
        out["cmap_resid"] = cross_model_patching(model, reference, *args, sites=("resid",))["resid"]
    return out


def weight_change(model: Any, base: Any) -> dict[str, float]:
    return relative_weight_change(model, base)


def map_similarity(maps: dict[str, np.ndarray], order: list[str]) -> np.ndarray:
    """Spearman correlation between every two models' maps (e.g. head patching effects [layer, head])."""
    n = len(order)
    sim = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            if i != j:
                sim[i, j] = spearman(maps[order[i]], maps[order[j]])
    return sim


def discover(model: Any, task: Any, corruption: str, n: int, seed: int, method: str, ablation: str,
             n_random: int, level: float, overlap_fraction: float, progress: bool = False) -> dict[str, Any]:
    """EAP / EAP-IG graph; MIB faithfulness curves over nodes and over edges beside random circuits; the top
    `overlap_fraction` of nodes (the set compared across models); and an exact-patching check of the ranking."""
    tok = model.tokenizer
    clean, bad = make_pairs(task, n, seed=seed, tokenizer=tok, corruption=corruption)
    args = (clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids)
    g = edge_attribution(model, *args, method=method, steps=8)
    ns = g.node_scores()
    ranked = sorted(ns, key=lambda k: -abs(ns[k]))
    edges = g.edges()
    ev = CircuitEvaluator(model, *args, ablation=ablation, seed=seed)
    node_curve = curve(ev, ranked, "node", n_random=n_random, seed=seed, at_level=level, progress=progress)
    edge_curve = curve(ev, [(u, v) for u, v, _ in edges], "edge", n_random=n_random, seed=seed + 1,
                       at_level=level, progress=progress)
    top = ranked[:min(8, len(ranked))]
    exact = exact_node_effects(model, *args, top)
    k = max(1, int(round(overlap_fraction * len(ranked))))
    return {"method": method, "ablation": ablation, "corruption": corruption, "n_pairs": n,
            "trials": trials("test", n, seed, corruption, task),
            "clean_logit_diff": g.clean_logit_diff, "corrupt_logit_diff": g.corrupt_logit_diff,
            "node_scores": ns, "ranked": ranked, "node_curve": node_curve.to_dict(),
            "edge_curve": edge_curve.to_dict(), "overlap_set": ranked[:k], "n_nodes": len(ranked),
            "edges": [{"from": u, "to": v, "score": s} for u, v, s in edges],
            "exact_check": {"nodes": top, "eap": [ns[t] for t in top], "exact": [exact[t] for t in top],
                            "spearman": spearman([ns[t] for t in top], [exact[t] for t in top])},
            "clean_tokens": clean.tokens, "corrupt_tokens": bad.tokens}


def base_ranking(base: Any, task: Any, corruption: str, n: int, seed: int, method: str) -> list[str]:
    """The base's own node ranking on the same pairs as the trained models' circuits."""
    clean, bad = make_pairs(task, n, seed=seed, tokenizer=base.tokenizer, corruption=corruption)
    ns = edge_attribution(base, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, method=method,
                          steps=8).node_scores()
    return sorted(ns, key=lambda k: -abs(ns[k]))


def attention_panels(models: dict[str, Any], task: Any, corruption: str, heads: list[tuple[int, int]],
                     seed: int) -> list[dict[str, Any]]:
    """circuitsvis panels: for two trials (clean and corrupted), each model, the chosen heads."""
    panels = []
    first = next(iter(models.values()))
    clean, bad = make_pairs(task, 2, seed=seed, tokenizer=first.tokenizer, corruption=corruption)
    for name, m in models.items():
        tok = m.tokenizer
        for label, batch in (("clean", clean), ("corrupted", bad)):
            with torch.no_grad():
                _, cache = m.run_with_cache(torch.tensor(batch.tokens[:1]), return_type=None,
                                            names_filter=lambda n: n.endswith("hook_pattern"))
            att = np.stack([cache[f"blocks.{l}.attn.hook_pattern"][0, h].cpu().numpy() for l, h in heads])
            panels.append({"title": f"{name} | {label} trial | heads {', '.join(f'L{l}H{h}' for l, h in heads)}",
                           "tokens": [tok.decode([int(t)]) for t in batch.tokens[0]], "attention": att,
                           "head_names": [f"L{l}H{h}" for l, h in heads]})
    return panels
