"""The computations of each `cogcircuits run` stage, one model (or one model and its reference) at a time. The
per-model analyses return typed results (`interp.results`, through `experiments.analysis.analyses`, the notebook API's
functions) with the trials each covers; evaluation and the comparison with the base return the run record's typed
parts (`experiments.core.run_record`); the pipeline decides where they are stored. Models are identified as
"finetuned-s{seed}", "scratch-s{seed}", "base".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.analysis import analyses
from experiments.core.run_record import ModelEvaluation, PsychometricCurve, SplitScore, Trials
from experiments.analysis.reliance import (cka_with, compare_with_base,  # noqa: F401  (a stage's computations)
                                           reliance)
from interp.ablation import Ablator
from interp.circuits import edge_attribution
from interp.compare import representations
from interp.result_base import Result
from interp.results import Circuit
from interp.stats import spearman
from tasks.registry import generate, make_pairs, task_of
from interp.typing import TLModel

PATCHED = ("heads", "heads_by_pos", "resid_pre", "attn_out", "mlp_out")


def trials(split: str, n: int, seed: int, corruption: str | None = None, task: Any = None, balanced: bool = False
           ) -> dict[str, Any]:
    """What an analysis covers, recorded beside its numbers."""
    d: dict[str, Any] = {"split": split, "n": n, "seed": seed} | ({"balanced": True} if balanced else {})
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


def _split_eval(model: TLModel, task: Any, n: int, seed: int, split: str
                ) -> tuple[Any, np.ndarray, SplitScore]:
    batch = generate(task, n, seed=seed, tokenizer=model.tokenizer, split=split)
    e = analyses.evaluation_of(model, batch, seed)
    ld = e.per_trial_logit_diff
    return batch, ld, SplitScore(accuracy=e.accuracy, incongruent_accuracy=e.incongruent_accuracy,
                                 n_correct=int((ld > 0).sum()), logit_diff=e.logit_diff,
                                 by_condition=tuple(e.by_condition),
                                 trials=Trials.from_dict(trials(split, n, seed, task=task)))


def evaluate_model(model: TLModel, task: Any, n: int, seed: int) -> ModelEvaluation:
    """Accuracy (overall, incongruent, per condition) on the test split and, when the task has one, on the
    generalisation split; psychometric curves on the test split."""
    test, ld, out = _split_eval(model, task, n, seed, "test")
    psy = {kind: {g: PsychometricCurve.from_dict(c) for g, c in by_group.items()}
           for kind, by_group in psychometric(test, ld).items()}
    return ModelEvaluation(test=out, psychometric=psy,
                           gen=_split_eval(model, task, n, seed, "gen")[2] if task.has_gen else None)


def analyse_model(model: TLModel, task: Any, corruption: str, n: int, seed: int, ablation: str,
                  detailed: bool = True, progress: bool = False, name: str = "model", balanced: bool = False
                  ) -> tuple[dict[str, tuple[Result, dict[str, Any]]], dict[str, np.ndarray]]:
    """Exact patching of head outputs, DLA per head with the logit lens, head ablation and neuron selectivity;
    `detailed` adds patching per position (head x position, residual stream, attention and MLP outputs) and
    attribution patching with its agreement with exact patching. `balanced`: pairs and trial sets balanced by
    answer side (`tasks.base.TokenTask.cells`). Returns {name: (typed result, the trials it covers)} and the
    token ids of those trials."""
    m = analyses.Model(model, task, name)
    pairs = analyses.pairs(m, n, seed=seed, corruption=corruption, balanced=balanced)
    on_pairs = trials("test", n, seed, corruption, task, balanced)
    out: dict[str, tuple[Result, dict[str, Any]]] = {}
    for what in PATCHED if detailed else ("heads",):
        out[f"patch_{what}"] = analyses.patch(m, pairs, what, progress=progress), on_pairs
    if detailed:
        exact = out["patch_heads_by_pos"][0]
        for method, steps in (("atp", 1), ("ig", 8)):
            out[method] = analyses.attribution_patching(m, pairs, method, steps, exact=exact), on_pairs  # type: ignore
    test, ref = analyses.trials(m, n, seed, balanced=balanced), analyses.trials(m, n, seed + 1, balanced=balanced)
    out["attribution"] = analyses.attribute(m, test), trials("test", n, seed, balanced=balanced)
    out["ablation"] = (analyses.ablate(m, test, ablation, reference=ref, progress=progress),
                       {**trials("test", n, seed, balanced=balanced),
                        "reference": trials("test", n, seed + 1, balanced=balanced)})
    big = analyses.trials(m, max(4 * n, 128), seed + 2)
    ab = Ablator(model, test.tokens, test.answer_ids, test.wrong_ids, method=ablation, reference_tokens=ref.tokens)
    out["neurons"] = (analyses.neurons(m, big, position="answer", top_k=10, ablator=ab),
                      {**trials("test", len(big), seed + 2),
                       "top_neurons_ablated_on": trials("test", n, seed, balanced=balanced)})
    inputs = {"clean_tokens": pairs.clean.tokens, "corrupt_tokens": pairs.corrupted.tokens,
              "answer_ids": pairs.clean.answer_ids, "wrong_ids": pairs.clean.wrong_ids, "test_tokens": test.tokens,
              "reference_tokens": ref.tokens, "neuron_tokens": big.tokens}
    return out, inputs


def representations_of(models: dict[str, Any], task: Any, n: int, seed: int) -> tuple[Any, dict[str, Any]]:
    """Residual stream, attention and MLP outputs of every model on the same test trials (at the answer position
    and the task's key position, e.g. the context cue)."""
    first = next(iter(models.values()))
    test = generate(task, n, seed=seed, tokenizer=first.tokenizer, split="test")
    pos = {"answer": test.positions["answer"], test.key_position: test.positions[test.key_position]}
    return test, {mid: representations(m, test.tokens, pos) for mid, m in models.items()}


def map_similarity(maps: dict[str, np.ndarray], order: list[str]) -> np.ndarray:
    """Spearman correlation between every two models' maps (e.g. head patching effects [layer, head])."""
    n = len(order)
    sim = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            if i != j:
                sim[i, j] = spearman(maps[order[i]], maps[order[j]])
    return sim


def discover(model: TLModel, task: Any, corruption: str, n: int, seed: int, method: str, ablation: str,
             n_random: int, level: float, overlap_fraction: float, progress: bool = False, name: str = "model",
             balanced: bool = False) -> tuple[Circuit, Any]:
    """EAP / EAP-IG graph; MIB faithfulness curves over nodes and over edges beside random circuits; the top
    `overlap_fraction` of nodes (the set compared across models); and an exact-patching check of the ranking.
    Returns the circuit and the pairs it was found on."""
    m = analyses.Model(model, task, name)
    pairs = analyses.pairs(m, n, seed=seed, corruption=corruption, balanced=balanced)
    return analyses.discover(m, pairs, method, ablation, n_random=n_random, level=level, fraction=overlap_fraction,
                        seed=seed, progress=progress), pairs


def base_ranking(base: TLModel, task: Any, corruption: str, n: int, seed: int, method: str, balanced: bool = False
                 ) -> list[str]:
    """The base's own node ranking on the same pairs as the trained models' circuits."""
    clean, bad = make_pairs(task, n, seed=seed, tokenizer=base.tokenizer, corruption=corruption, balanced=balanced)
    ns = edge_attribution(base, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, method=method,
                          steps=8).node_scores()
    return sorted(ns, key=lambda k: -abs(ns[k]))
