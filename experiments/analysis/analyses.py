"""The notebook API's functions (re-exported by `experiments.api`, whose docstring shows them in use): load or
train a model, draw task trials and clean/corrupted pairs, run each analysis, and get typed results
(`interp.results`). Every analysis takes a `Model` (from `load` or `train`: the hooked model with its task
config and name) or a bare hooked model (`interp.hooked_lm.HookedLM`, then the default task). The computations are the library's
(`interp.*`), the same as the CLI's commands and `cogcircuits run`; nothing here prints or writes except `train`
(its checkpoint folder).

Axes: trial, layer, head, pos, neuron; see `interp.results`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Int

from experiments.analysis import attention as A
from experiments.analysis.reliance import compare_with_base
from experiments.core.run_record import kept
from experiments.core.config import build_task, to_dict
from experiments.training.train import load_config, pick_device, train as train_checkpoint
from interp.ablation import Ablator
from interp.atp import agreement, attribution_patch
from interp.attribution import direct_logit_attribution, logit_lens
from interp.circuits import edge_attribution, exact_node_effects
from interp.compare import check_same_shape, representations
from interp.faithfulness import CircuitEvaluator, curve
from interp.metrics import accuracy_by_condition, evaluate_batch, incongruent_accuracy
from interp.models import load_model
from interp.neurons import neuron_selectivity
from interp.patching import patch_sweep, position_token_labels
from interp.results import (Ablation, AttentionView, Attribution, AttributionPatching, Circuit, Comparison,
                            Evaluation, Neurons, Patching)
from tasks.base import TrialBatch
from tasks.registry import generate, make_pairs, task_of
from interp.typing import TLModel

__all__ = ["Model", "Pairs", "load", "train", "evaluate", "trials", "pairs", "patch", "attribution_patching",
           "attribute", "ablate", "neurons", "discover", "compare", "attention"]


@dataclass(frozen=True, eq=False)
class Model:
    """A loaded model and what the analyses need besides its weights.

    model: the hooked model (TransformerLens's HookedTransformer interface: run_with_cache, hooks, to_tokens ...);
    task: the task config it was trained on (the default task for a base); name: for titles; info: what
    `interp.models.load_model` recorded (for a checkpoint: config, curve, metrics, hashes)."""

    model: TLModel = field(repr=False)
    task: Any = field(repr=False)
    name: str
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def metrics(self) -> dict[str, Any] | None:
        """Training metrics (steps, met_criterion, test_accuracy ...) of a trained checkpoint, else None."""
        return self.info.get("metrics")


@dataclass(frozen=True, eq=False)
class Pairs:
    """Clean and corrupted trials of equal length and aligned positions (`tasks.registry.make_pairs`); unpacks as
    `clean, corrupted = pairs`. tokens are [trial, pos]; the answer and wrong ids are the CLEAN trials'."""

    clean: TrialBatch
    corrupted: TrialBatch
    corruption: str

    def __iter__(self) -> Iterator[TrialBatch]:
        return iter((self.clean, self.corrupted))

    def __len__(self) -> int:
        return len(self.clean)


def _parts(model: Model | Any) -> tuple[Any, Any, str]:
    if isinstance(model, Model):
        return model.model, model.task, model.name
    if not hasattr(model, "run_with_cache"):
        raise TypeError(f"expected a cc.Model or a hooked model (HookedLM), got {type(model).__name__}")
    return model, _task(None, {}), "model"


def _task(task: Any, info: dict[str, Any]) -> Any:
    """An explicit task (a task config, a registered task name, or a dict of a task config's fields with an
    optional "name"), else the checkpoint's own, else the default task."""

    if isinstance(task, str):
        return build_task({"name": task}, "task")
    if isinstance(task, Mapping):
        return build_task(dict(task), "task")
    if task is not None:
        return task
    return build_task(info.get("config", {}).get("task"), f"{info.get('name', 'model')} task config")


def load(path_or_name: str | Path, device: str = "auto", task: Any = None
         ) -> Model:
    """A shipped base by name ("cogbase-6l", offline), a project checkpoint folder, a local Hugging Face GPT-2 /
    Llama folder or a hub name, on `device` ("auto": CUDA, else MPS, else CPU). Its task is `task`, else the one
    the checkpoint was trained on, else the default task."""

    model, _, info = load_model(path_or_name, pick_device(device))
    return Model(model, _task(task, info), str(info.get("name") or Path(str(path_or_name)).name), info)


def train(out: str | Path, init: str = "pretrained", base: str | Path = "cogbase-6l", steps: int | None = None,
          task: Any = None, config: str | Path | None = None,
          overwrite: bool = False, resume: bool = False, progress: bool = False, **train_options: Any) -> Model:
    """Train on the task (`experiments.training.train.train`: answer-token cross-entropy, AdamW with a cosine schedule over
    `steps`, early stop at the criterion) and load the result, as `cogcircuits train` does. init "pretrained"
    fine-tunes `base`, "scratch" trains its architecture from a fresh initialisation.

    `config` is a TOML file with [task] / [model] / [train] tables (default: none, i.e. TrainConfig's defaults);
    `init`, `base`, `task` (a task config, a registered task name, or a dict of its fields with "name") and
    `train_options` (TrainConfig fields: batch_size, lr, warmup, eval_every, eval_size, seed, device, ...) override it and are checked like a config file's. A `steps` shorter
    than the warmup shortens the warmup, as on the command line. `out` becomes a checkpoint folder (refused if it
    exists, unless `overwrite` or `resume`)."""

    options = dict(train_options)
    if steps is not None:
        options["steps"] = steps
        if "warmup" not in options:
            options["warmup"] = min(steps, load_config(config)["train"].warmup)
    overrides: dict[str, dict[str, Any]] = {"model": {"init": init, "base": str(base)}, "train": options}
    if task is not None:
        overrides["task"] = (to_dict(task) if dataclasses.is_dataclass(task) else {"name": task}
                             if isinstance(task, str) else dict(task))
    cfg = load_config(config, overrides)
    train_checkpoint(cfg, Path(out), resume=resume, overwrite=overwrite, progress=progress)
    return load(out, device=cfg["train"].device)


def trials(model: Model | Any, n: int = 64, seed: int = 0, split: str = "test", balanced: bool = False
           ) -> TrialBatch:
    """n trials of the model's task with its tokenizer (tokens [trial, pos]; answer_ids, wrong_ids [trial];
    meta, named positions). Splits: train, val, test, gen (held-out conditions, when the task has them)."""

    m, task, _ = _parts(model)
    return generate(task, n, seed=seed, tokenizer=m.tokenizer, split=split, balanced=balanced)


def pairs(model: Model | Any, n: int = 16, seed: int = 0, corruption: str | None = None, split: str = "test",
          balanced: bool = False) -> Pairs:
    """n clean/corrupted pairs by one of the task's corruptions (`tasks.registry.get_task(name).corruptions`;
    default: the task's default), e.g. for ContextDecisionMaking "context-flip" (the other cue; incongruent
    trials, the answer flips), "relevant-flip" (the answer flips) or "irrelevant-flip" (a control)."""

    m, task, _ = _parts(model)
    corruption = corruption or task_of(task).default_corruption
    clean, bad = make_pairs(task, n, seed=seed, tokenizer=m.tokenizer, corruption=corruption, split=split,
                            balanced=balanced)
    return Pairs(clean, bad, corruption)


def evaluation_of(model: TLModel, batch: TrialBatch, seed: int, name: str = "model") -> Evaluation:
    """The one evaluation: accuracy overall, on incongruent trials and per condition, and the mean logit
    difference, of a hooked model on a batch of trials (what runs, the CLI and the notebook report)."""
    ev = evaluate_batch(model, batch)
    ld = ev["per_trial_logit_diff"]
    return Evaluation(batch.split, len(batch), seed, ev["accuracy"], incongruent_accuracy(batch, ld),
                      ev["logit_diff"], tuple(accuracy_by_condition(batch, ld)), ld, name)


def evaluate(model: Model | Any, n: int = 512, seed: int = 0, split: str = "test") -> Evaluation:
    """Accuracy overall, on incongruent trials (where the task's shortcut fails) and per condition on n trials."""
    m, _, name = _parts(model)
    return evaluation_of(m, trials(model, n, seed, split), seed, name)


def _pair_args(p: Pairs | Sequence[TrialBatch]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    clean, bad = p
    return clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids


def patch(model: Model | Any, pairs: Pairs | Sequence[TrialBatch], what: str = "heads", direction: str = "denoise",
          progress: bool = False) -> Patching:
    """Exact activation patching of `what` (heads, heads_by_pos, resid_pre, attn_out, mlp_out, q, k, v, ...;
    `interp.patching.VARIANTS`) over every index, denoising (clean into corrupted) or noising, on the pairs."""

    m, _, name = _parts(model)
    clean = pairs[0] if not isinstance(pairs, Pairs) else pairs.clean
    labels = position_token_labels(m.tokenizer, clean.tokens, clean.position_labels)
    r = patch_sweep(m, *_pair_args(pairs), what=what, direction=direction, position_labels=labels, progress=progress)
    return Patching(r, name, getattr(pairs, "corruption", ""), len(clean))


def attribution_patching(model: Model | Any, pairs: Pairs | Sequence[TrialBatch], method: str = "atp", steps: int = 8,
                         exact: Patching | None = None) -> AttributionPatching:
    """Attribution patching of head outputs per position ("atp": one gradient; "ig": integrated gradients over
    `steps`), and with `exact` (exact patching of "heads_by_pos" on the same pairs) its agreement with it."""

    m, _, name = _parts(model)
    clean = pairs[0] if not isinstance(pairs, Pairs) else pairs.clean
    est = attribution_patch(m, *_pair_args(pairs), nodes="heads", method=method, steps=steps)
    agree: dict[str, Any] = {}
    if exact is not None:
        if exact.result.what != "heads_by_pos":
            raise ValueError(f"agreement needs exact patching of heads_by_pos, got {exact.result.what}")
        agree = agreement(est["values"], exact.values, exact.result.first_diff, pos_axis=1)
    labels = position_token_labels(m.tokenizer, clean.tokens, clean.position_labels)
    return AttributionPatching(method, est["values"], tuple(labels), agree, name, getattr(pairs, "corruption", ""),
                               len(clean))


def attribute(model: Model | Any, trials: TrialBatch, neuron_layers: Sequence[int] = ()) -> Attribution:
    """Direct logit attribution per trial (embeddings, each head, each b_O, each MLP, bias; neurons of
    `neuron_layers`) and the logit lens, on the trials."""

    m, _, name = _parts(model)
    args = (trials.tokens, trials.answer_ids, trials.wrong_ids)
    return Attribution.from_arrays(direct_logit_attribution(m, *args, neuron_layers=tuple(neuron_layers)),
                                   logit_lens(m, *args), name)


def ablate(model: Model | Any, trials: TrialBatch, method: str = "mean", reference: TrialBatch | None = None,
           seed: int = 0, progress: bool = False) -> Ablation:
    """Each head ablated alone ("zero", "mean" or "resample", over `reference` trials: the trials themselves
    when None; the CLI uses other trials of the same split)."""

    m, _, name = _parts(model)
    ab = Ablator(m, trials.tokens, trials.answer_ids, trials.wrong_ids, method,
                 None if reference is None else reference.tokens, seed)
    each = ab.each_head(progress=progress)
    return Ablation(method, each["accuracy"], each["logit_diff"], ab.baseline["accuracy"], ab.baseline["logit_diff"],
                    len(trials), name)


def neurons(model: Model | Any, trials: TrialBatch, position: str = "answer", layers: Sequence[int] | None = None,
            top_k: int = 10, ablate_top: bool = False, ablator: Any = None) -> Neurons:
    """Each MLP neuron's standardised regression on the task's variables and the model's choice, at a named
    position (needs at least 8 trials; a few hundred for stable betas). `ablate_top`: also each variable's
    `top_k` neurons mean-ablated together on the same trials (`top_ablation`; or with `ablator`, an
    `interp.ablation.Ablator` of the caller's own trials and method)."""

    m, _, name = _parts(model)
    sel = neuron_selectivity(m, trials, position=position, layers=None if layers is None else tuple(layers),
                             top_k=top_k)
    effects, baseline = None, None
    if ablate_top or ablator is not None:
        ab = ablator or Ablator(m, trials.tokens, trials.answer_ids, trials.wrong_ids, "mean")
        effects = {v: ab.neurons([(l, i) for l, i, _ in sel["top"][v]]) for v in sel["top"]}
        baseline = {k: float(v) for k, v in ab.baseline.items()}
    return Neurons.from_dict(sel, len(trials), name, effects, baseline)


def discover(model: Model | Any, pairs: Pairs | Sequence[TrialBatch], method: str = "eap-ig",
             ablation: str = "corrupted", n_random: int = 20, level: float = 0.8, fraction: float = 0.2,
             steps: int = 8, seed: int = 0, progress: bool = False) -> Circuit:
    """EAP / EAP-IG edge scores on the pairs, and MIB faithfulness of the top-ranked nodes and edges over MIB's
    size grid beside `n_random` random circuits per size; the same computation as `cogcircuits discover`."""

    m, _, name = _parts(model)
    args = _pair_args(pairs)
    g = edge_attribution(m, *args, method=method, steps=steps)
    scores = g.node_scores()
    ranked = sorted(scores, key=lambda k: -abs(scores[k]))
    edges = g.edges()
    ev = CircuitEvaluator(m, *args, ablation=ablation, seed=seed)
    node_curve = curve(ev, ranked, "node", n_random=n_random, seed=seed, at_level=level, progress=progress)
    edge_curve = curve(ev, [(u, v) for u, v, _ in edges], "edge", n_random=n_random, seed=seed + 1, at_level=level,
                       progress=progress)
    top = tuple(ranked[:max(1, int(round(fraction * len(ranked))))])
    exact = exact_node_effects(m, *args, ranked[:min(8, len(ranked))])
    return Circuit(method, ablation, getattr(pairs, "corruption", ""), len(args[0]), g.clean_logit_diff,
                   g.corrupt_logit_diff, scores, tuple(edges), node_curve, edge_curve, top, exact, name)


def compare(models: Mapping[str, Model | Any] | Sequence[Model], base: Model | Any, trials: TrialBatch,
            cmap: bool = True, reliance_trials: TrialBatch | None = None) -> Comparison:
    """Each model against `base`: debiased CKA of the residual stream at the answer position on `trials`;
    accuracy kept reverting layers to the base (one layer; top down) and with the base's residual stream patched
    in (`cmap`) on `reliance_trials` (default: the same trials); relative weight change. Models must have the
    base's shape; name them "finetuned-s0" etc. for grouped plots (a sequence of Models is named by their
    `name`)."""

    named = dict(models) if isinstance(models, Mapping) else {m.name: m for m in models}
    b, _, bname = _parts(base)
    pos = {"answer": trials.positions["answer"]}
    rep_b = representations(b, trials.tokens, pos)
    rel_trials = trials if reliance_trials is None else reliance_trials
    out: dict[str, dict[str, Any]] = {k: {} for k in ("cka", "reversion", "top_down", "cmap", "weight_change",
                                                      "full")}
    for key, model in named.items():
        m = _parts(model)[0]
        check_same_shape(m, b, f"comparing {key} with the base")
        c = compare_with_base(m, b, representations(m, trials.tokens, pos), rep_b, rel_trials, cmap=cmap)
        rel = c.reliance_base
        out["cka"][key] = c.cka_answer()
        out["full"][key] = {"accuracy": float(rel.full.accuracy), "logit_diff": float(rel.full.logit_diff)}
        out["reversion"][key], out["top_down"][key] = kept(rel.reversion_layer), kept(rel.reversion_top_down)
        if cmap:
            out["cmap"][key] = kept(rel.cmap_resid)
        out["weight_change"][key] = c.weight_change
    return Comparison(bname, **out, n_trials=len(trials), n_reliance_trials=len(rel_trials))


def attention(model: Model | Any, tokens_or_prompt: str | Pairs | TrialBatch | Sequence[int] | Int[np.ndarray, " pos"],
              heads: str | Sequence[tuple[int, int]], trial: int = 0) -> AttentionView:
    """Attention patterns of `heads` ("L0H2,L3H1" or [(0, 2), (3, 1)], e.g. a result's `.top_heads(3)`) on a
    prompt (text or token ids), on trial `trial` of a TrialBatch, or on pair `trial` of Pairs (clean and
    corrupted side by side). `.show()` / `.html()` give the circuitsvis view."""

    m, _, name = _parts(model)
    hs = A.parse_heads(heads) if isinstance(heads, str) else [(int(l), int(h)) for l, h in heads]
    A.check_heads(hs, m.cfg.n_layers, m.cfg.n_heads)
    x = tokens_or_prompt
    if isinstance(x, (Pairs, TrialBatch)) and not 0 <= trial < len(x):
        raise ValueError(f"trial {trial} is out of range: there are {len(x)} trials")
    if isinstance(x, Pairs):
        views = A.trial_views(m, (x.clean, x.corrupted), trial, hs)
    elif isinstance(x, TrialBatch):
        views = [{**A.prompt_views(m, x.tokens[trial], hs)[0], "title": f"{x.split} trial {trial}"}]
    else:
        toks = A.prompt_tokens(m, x) if isinstance(x, str) else np.asarray(x, dtype=np.int64).reshape(-1)
        if not 0 < len(toks) <= m.cfg.n_ctx:
            raise ValueError(f"need 1 to {m.cfg.n_ctx} tokens (the model's context), got {len(toks)}")
        views = A.prompt_views(m, toks, hs)
    return AttentionView(tuple(hs), tuple(v["title"] for v in views), tuple(v["text"] for v in views),
                         tuple(tuple(v["tokens"]) for v in views), tuple(np.asarray(v["attention"]) for v in views),
                         f"Attention of {', '.join(A.head_name(h) for h in hs)} in {name}")
