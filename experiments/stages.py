"""The computations of each `cogcircuits run` stage. Each returns plain results (dicts of numbers and arrays); the
pipeline decides where they are stored. Models are identified as "finetuned-s{seed}", "scratch-s{seed}", "base".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from interp.ablation import Ablator
from interp.atp import attribution_patch, rank_correlation
from interp.attribution import direct_logit_attribution
from interp.circuits import Faithfulness, edge_attribution, exact_node_effects, select, size_for
from interp.compare import (cross_model_patching, layer_cka, mean_ci, relative_weight_change, representations,
                            weight_reversion)
from interp.metrics import accuracy_by_condition, evaluate_batch
from interp.neurons import neuron_selectivity
from interp.patching import patch_sweep, position_token_labels
from tasks.cdm import CDMConfig, bayes_optimal_accuracy, generate, make_pairs


def psychometric(batch: Any, per_trial_ld: np.ndarray) -> dict[str, Any]:
    """P(choice = right) against the signed coherence of the relevant and of the irrelevant modality, per context."""
    m = batch.meta
    right = np.where(batch.labels == 1, per_trial_ld > 0, per_trial_ld <= 0)
    out: dict[str, Any] = {}
    for kind in ("relevant", "irrelevant"):
        sc = m[f"{kind}_signed_coherence"]
        out[kind] = {}
        for ctx in (0, 1):
            xs = sorted(set(sc[m["context"] == ctx].tolist()))
            out[kind][str(ctx)] = {"signed_coherence": xs,
                                   "p_right": [float(right[(m["context"] == ctx) & (sc == x)].mean()) for x in xs],
                                   "n": [int(((m["context"] == ctx) & (sc == x)).sum()) for x in xs]}
    return out


def evaluate_model(model: Any, task: CDMConfig, n: int, seed: int) -> dict[str, Any]:
    tok = model.tokenizer
    test = generate(task, n, seed=seed, tokenizer=tok, split="test")
    ev = evaluate_batch(model, test)
    out = {"test": {"accuracy": ev["accuracy"], "logit_diff": ev["logit_diff"],
                    "by_condition": accuracy_by_condition(test, ev["per_trial_logit_diff"])},
           "psychometric": psychometric(test, ev["per_trial_logit_diff"])}
    if task.has_gen:
        gen = generate(task, n, seed=seed, tokenizer=tok, split="gen")
        g = evaluate_batch(model, gen)
        out["gen"] = {"accuracy": g["accuracy"], "logit_diff": g["logit_diff"],
                      "by_condition": accuracy_by_condition(gen, g["per_trial_logit_diff"])}
    return out


def bayes_reference(task: CDMConfig) -> float:
    return bayes_optimal_accuracy(task)


def analyse_model(model: Any, task: CDMConfig, corruption: str, n: int, seed: int, ablation: str,
                  progress: bool = False) -> dict[str, Any]:
    """Patching (heads, head x position, residual stream, attention and MLP outputs), attribution patching and
    its agreement with exact patching, DLA per head, head ablation, neuron selectivity."""
    tok = model.tokenizer
    clean, bad = make_pairs(task, n, seed=seed, tokenizer=tok, corruption=corruption)
    args = (model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids)
    labels = position_token_labels(tok, clean.tokens, clean.position_labels)
    res: dict[str, Any] = {"position_labels": labels, "clean_tokens": clean.tokens, "corrupt_tokens": bad.tokens,
                           "answer_ids": clean.answer_ids, "wrong_ids": clean.wrong_ids}
    for what in ("heads", "heads_by_pos", "resid_pre", "attn_out", "mlp_out"):
        r = patch_sweep(*args, what=what, position_labels=labels, progress=progress)
        res[f"patch_{what}"] = r
    atp = attribution_patch(*args, nodes="heads", method="atp")
    ig = attribution_patch(*args, nodes="heads", method="ig", steps=8)
    exact = res["patch_heads_by_pos"].values  # [layer, pos, head]
    res["atp_heads_by_pos"], res["ig_heads_by_pos"] = atp["values"], ig["values"]
    res["atp_rank_correlation"] = rank_correlation(atp["values"], exact)
    res["ig_rank_correlation"] = rank_correlation(ig["values"], exact)
    test = generate(task, n, seed=seed, tokenizer=tok, split="test")
    dla = direct_logit_attribution(model, test.tokens, test.answer_ids, test.wrong_ids)
    res["dla_heads"] = dla["heads"].mean(0)
    res["dla_mlp"] = dla["mlp"].mean(0)
    ref = generate(task, n, seed=seed + 1, tokenizer=tok, split="test")
    ab = Ablator(model, test.tokens, test.answer_ids, test.wrong_ids, method=ablation, reference_tokens=ref.tokens)
    each = ab.each_head(progress=progress)
    res["ablation_heads_accuracy"], res["ablation_heads_logit_diff"] = each["accuracy"], each["logit_diff"]
    res["ablation_baseline"] = ab.baseline
    big = generate(task, max(4 * n, 128), seed=seed + 2, tokenizer=tok, split="test")
    sel = neuron_selectivity(model, big, position="answer", top_k=10)
    res["neuron_coef"], res["neuron_r2"] = sel["coef"], sel["r2"]
    res["neuron_top"] = sel["top"]
    res["neuron_top_ablation"] = {v: ab.neurons([(l, i) for l, i, _ in sel["top"][v]]) for v in sel["top"]}
    res["neuron_ablation_baseline"] = ab.baseline
    return res


def compare_to_base(models: dict[str, Any], base: Any, task: CDMConfig, n: int, seed: int,
                    progress: bool = False) -> dict[str, Any]:
    """Per model: CKA with the base per layer (resid, attn_out, mlp_out at the answer and context positions),
    weight reversion, relative weight change, cross-model patching; and fine-tuned vs scratch CKA per seed."""
    from interp.compare import check_same_shape

    for mid, m in models.items():
        check_same_shape(m, base, f"comparing {mid} with the base (weight reversion, cross-model patching)")
    tok = base.tokenizer
    test = generate(task, n, seed=seed, tokenizer=tok, split="test")
    pos = {"answer": test.positions["answer"], "context": test.positions["context"]}
    base_rep = representations(base, test.tokens, pos)
    out: dict[str, Any] = {"per_model": {}, "pairs": {}}
    reps = {}
    for mid, m in tqdm(models.items(), desc="compare", disable=not progress):
        reps[mid] = representations(m, test.tokens, pos)
        out["per_model"][mid] = {
            "cka": layer_cka(reps[mid], base_rep), "cka_debiased": layer_cka(reps[mid], base_rep, debiased=True),
            "reversion": weight_reversion(m, base, test.tokens, test.answer_ids, test.wrong_ids),
            "weight_change": relative_weight_change(m, base),
            "cmap": cross_model_patching(m, base, test.tokens, test.answer_ids, test.wrong_ids)}
    for mid in models:
        if mid.startswith("finetuned-"):
            twin = mid.replace("finetuned-", "scratch-")
            if twin in reps:
                out["pairs"][f"{mid}~{twin}"] = layer_cka(reps[mid], reps[twin])
    ev = evaluate_batch(base, test)
    out["base_reference"] = {"accuracy": ev["accuracy"], "logit_diff": ev["logit_diff"]}
    return out


def summarise_layers(values_by_seed: list[np.ndarray]) -> dict[str, list[float]]:
    m, lo, hi = mean_ci(np.stack(values_by_seed))
    return {"mean": m.tolist(), "low": lo.tolist(), "high": hi.tolist(), "n_seeds": len(values_by_seed)}


def discover(model: Any, base: Any, task: CDMConfig, corruption: str, n: int, seed: int, method: str,
             ablation: str, progress: bool = False, base_scores: dict[str, float] | None = None) -> dict[str, Any]:
    """EAP / EAP-IG graph, a faithfulness curve over circuit size (nodes ranked by |score|), the circuit at 80%
    faithfulness, an exact-patching check of the ranking, and the base's own node ranking on the same pairs."""
    tok = model.tokenizer
    clean, bad = make_pairs(task, n, seed=seed, tokenizer=tok, corruption=corruption)
    args = (clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids)
    g = edge_attribution(model, *args, method=method, steps=8)
    ns = g.node_scores()
    ranked = sorted(ns, key=lambda k: -abs(ns[k]))
    f = Faithfulness(model, *args, ablation=ablation, seed=seed)
    curve = f.curve(ranked, progress=progress)
    k80 = size_for(curve, 0.8)
    nodes80 = ranked[:k80] if k80 is not None else ranked
    top = ranked[:min(8, len(ranked))]
    exact = exact_node_effects(model, *args, top)
    bns = base_scores if base_scores is not None else edge_attribution(base, *args, method=method, steps=8).node_scores()
    base_ranked = sorted(bns, key=lambda k: -abs(bns[k]))
    k = len(nodes80)
    circuit_edges = select(g, top_n=max(1, min(3 * k, len(g.edges()))))
    return {
        "method": method, "ablation": ablation, "corruption": corruption, "n_pairs": n,
        "clean_logit_diff": g.clean_logit_diff, "corrupt_logit_diff": g.corrupt_logit_diff,
        "node_scores": ns, "ranked": ranked, "faithfulness": curve, "size_80": k80, "nodes_80": nodes80,
        "edges": [{"from": u, "to": v, "score": s} for u, v, s in g.edges()],
        "circuit_edges": circuit_edges["edges"],
        "exact_check": {"nodes": top, "eap": [ns[t] for t in top], "exact": [exact[t] for t in top],
                        "rank_correlation": rank_correlation(np.array([ns[t] for t in top]),
                                                             np.array([exact[t] for t in top]))},
        "base_node_scores": bns,
        "in_base_top": [n for n in nodes80 if n in set(base_ranked[:k])],
        "clean_tokens": clean.tokens, "corrupt_tokens": bad.tokens,
    }


def attention_panels(models: dict[str, Any], task: CDMConfig, corruption: str, heads: list[tuple[int, int]],
                     seed: int) -> list[dict[str, Any]]:
    """circuitsvis panels: for two trials (clean and corrupted), each model, the chosen heads."""
    panels = []
    first = next(iter(models.values()))
    clean, bad = make_pairs(task, 2, seed=seed, tokenizer=first.tokenizer, corruption=corruption)
    for name, m in models.items():
        tok = m.tokenizer
        for label, batch in (("clean", clean), ("corrupted", bad)):
            with torch.no_grad():
                _, cache = m.run_with_cache(torch.tensor(batch.tokens[:1]),
                                            names_filter=lambda n: n.endswith("hook_pattern"))
            att = np.stack([cache[f"blocks.{l}.attn.hook_pattern"][0, h].cpu().numpy() for l, h in heads])
            panels.append({"title": f"{name} | {label} trial | heads {', '.join(f'L{l}H{h}' for l, h in heads)}",
                           "tokens": [tok.decode([int(t)]) for t in batch.tokens[0]], "attention": att,
                           "head_names": [f"L{l}H{h}" for l, h in heads]})
    return panels
