"""The steps of `cogcircuits run`, in order. Each takes the run's context, computes with `experiments.analysis.stages`
and stores its results; `Run` marks each finished step so that a rerun resumes after the last one."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from experiments.analysis import stages
from experiments.analysis.attention import attention_page_of
from experiments.core.config import to_dict
from experiments.core.run_record import (AttentionPage, AttentionRecord, BaseInfo, CKAPair, ClaimsRecord, Criterion,
                                         CurvePoint, JobBrief, ModelEvaluation, RunAnalyses, RunCircuits,
                                         RunComparison, RunEvaluation, TaskInfo, TrainingSummary, Trials)
from experiments.jobs.dispatch import JobsFailed, run_jobs
from experiments.jobs.executors import ExecutorConfig
from experiments.jobs.kinds import analysis_job, circuit_job, gather_analyses, gather_circuits, model_dir
from experiments.jobs.spec import JobsRecord, train_job
from experiments.report.figures import export_run, firsts
from experiments.report.report import write_report
from experiments.run import contrasts
from experiments.run.claims import RULE, judge
from experiments.run.context import RunContext
from experiments.training.train import ModelConfig, TrainConfig, criterion_of
from interp.compare import check_same_shape, layer_cka
from interp.model_id import ModelId
from interp.models import base_arch_and_tokenizer, build_scratch, state_sha256
from interp.results import Ablation, Patching
from interp.store import atomic_write_csv, atomic_write_text, file_sha256, portable
from interp.viz import attention_views_page
from tasks.registry import bayes_optimal_accuracy, generate, task_of

SEEDS = {"evaluate": 1000, "analyses": 2000, "compare": 3000, "reliance": 3001, "circuits": 4000}


def train_models(ctx: RunContext) -> None:
    """One job per model (init x seed), run on the config's executor; results/jobs.json records where and how
    long each ran."""
    jobs = []
    for mid in ctx.model_ids():
        m = ModelId.parse(mid)
        tcfg = ctx.cfg["finetune" if m.is_finetuned else "scratch"]
        tcfg = TrainConfig(**{**to_dict(tcfg), "seed": m.seed, "device": ctx.rc.device})  # resolved by the worker
        mcfg = ModelConfig(init="pretrained" if m.is_finetuned else "scratch",
                           base=portable(ctx.cfg["model"].base, ctx.out))
        jobs.append(train_job(mid, to_dict(ctx.task), to_dict(mcfg), to_dict(tcfg)))
    _run_jobs(ctx, jobs, "train")


def evaluate(ctx: RunContext) -> None:
    """Every model on the test and generalisation splits; which models met the criterion (the analysed ones)."""
    t = task_of(ctx.task)
    probe = generate(ctx.task, 1, 0, ctx.model("base").tokenizer, "test")
    models: dict[str, ModelEvaluation] = {}
    eligible, excluded = [], {}
    for mid in ctx.model_ids() + ["base"]:
        r = stages.evaluate_model(ctx.model(mid), ctx.task, ctx.rc.n_eval, seed=SEEDS["evaluate"])
        if mid != "base":
            meta = json.loads((ctx.out / "models" / mid / "checkpoint.json").read_text())
            m = meta["metrics"]
            r = replace(r, training=TrainingSummary(steps=m["steps"], met_criterion=m.get("met_criterion"),
                                                    steps_to_criterion=m.get("steps_to_criterion")),
                        curve=tuple(CurvePoint.from_dict(c, f"{mid} curve") for c in meta["curve"]))
            if m.get("met_criterion"):
                eligible.append(mid)
            else:
                excluded[mid] = _excluded_because(m["steps"], r.curve)
        models[mid] = r
    b = ctx.model("base").cfg
    ev = RunEvaluation(
        bayes_optimal_accuracy=bayes_optimal_accuracy(ctx.task), chance=0.5,
        task=TaskInfo(name=t.name, shortcut=t.shortcut, answer_words=tuple(probe.answer_words), group=probe.group,
                      corruption=ctx.rc.corruption,
                      corruption_description=t.corruptions[ctx.rc.corruption].description),
        criterion={i: Criterion(**criterion_of(ctx.cfg[s])) for i, s in (("finetuned", "finetune"),
                                                                         ("scratch", "scratch"))},
        models=models, eligible=tuple(eligible), excluded=excluded,
        base=BaseInfo(name=ctx.run_meta().base.name, n_layers=b.n_layers, d_model=b.d_model,
                      n_heads=b.n_heads))
    ctx.save("evaluate", ev)
    rows = [{"model": mid, "split": split, **row} for mid, r in ev.models.items()
            for split, sc in (("test", r.test), ("gen", r.gen)) if sc is not None for row in sc.by_condition]
    atomic_write_csv(ctx.out / "arrays" / "accuracy_by_condition.csv", rows)


def _excluded_because(steps: int, curve: tuple[CurvePoint, ...] | None) -> str:
    last = curve[-1] if curve else None
    acc, inc = (last.val_accuracy, last.val_incongruent_accuracy) if last else (float("nan"), float("nan"))
    return (f"missed the criterion within {steps} steps (last validation accuracy {acc:.3f}, incongruent "
            f"{inc:.3f})")


def _run_jobs(ctx: RunContext, jobs: list[Any], step: str) -> None:
    """Run a step's jobs on the config's executor (serially here when the executor does not take this step) and
    record where and how long each ran (results/jobs.json, and the provenance in run.json), failed or not."""
    ex = ctx.executor if step in ctx.executor.steps else ExecutorConfig()
    ctx.log(f"  {len(jobs)} {step} jobs on the {ex.kind} executor")
    try:
        status = run_jobs(ctx.out, jobs, ex, progress=ctx.progress, log=ctx.log)
    except JobsFailed as e:
        _record_jobs(ctx, e.status)
        raise
    _record_jobs(ctx, status)


def _record_jobs(ctx: RunContext, status: dict[str, Any]) -> None:
    p = ctx.out / "results" / "jobs.json"
    old = JobsRecord.load(p).jobs if p.exists() else ()
    jobs = tuple(j for j in old if j.id not in status) + tuple(status.values())
    ctx.save("jobs", JobsRecord(executor=to_dict(ctx.executor), jobs=jobs))
    meta = ctx.run_meta()
    brief = {j.id: JobBrief(executor=j.executor, refs=tuple(j.refs), attempts=j.attempts, wall_s=j.wall_s,
                            state=j.state) for j in jobs}
    replace(meta, executor=ctx.executor.kind, jobs=brief).save(ctx.out / "run.json")


def analyses(ctx: RunContext) -> None:
    """Every analysed model, one job each: head patching, DLA, head ablation, neurons (what the contrasts compare);
    the first model of each init also gets the per-position maps and attribution patching (what the report
    draws)."""
    ids = ctx.eligible()
    params = {"corruption": ctx.rc.corruption, "n_pairs": ctx.rc.n_pairs, "seed": SEEDS["analyses"],
              "ablation": ctx.rc.ablation, "device": ctx.rc.device}
    jobs = [analysis_job(mid, to_dict(ctx.task), {**params, "detailed": ctx.rc.detailed_maps and mid in firsts(ids)})
            for mid in ids]
    _run_jobs(ctx, jobs, "analyses")
    ctx.save("analyses", RunAnalyses(corruption=ctx.rc.corruption, n_pairs=ctx.rc.n_pairs, ablation=ctx.rc.ablation,
                                     models=gather_analyses(ctx.out, ids)))


def compare(ctx: RunContext) -> None:
    """CKA with the base and between models, reliance on the base (and on the scratch models' own
    initialisations), and weight change: results/compare.json, the one record of the comparison."""
    ids = ctx.eligible()
    base = ctx.model("base")
    models = {mid: ctx.model(mid) for mid in ids}
    for mid, m in models.items():
        check_same_shape(m, base, f"comparing {mid} with the base")
    _, reps = stages.representations_of({**models, "base": base}, ctx.task, ctx.rc.n_compare, SEEDS["compare"])
    rel = generate(ctx.task, ctx.rc.n_reliance, seed=SEEDS["reliance"], tokenizer=base.tokenizer, split="test")
    per_model = {}
    for mid, m in models.items():
        ctx.log(f"  comparing {mid} with the base")
        p = stages.compare_with_base(m, base, reps[mid], reps["base"], rel)
        if ModelId.parse(mid).is_scratch:
            p = replace(p, reliance_init=stages.reliance(m, _initialisation(ctx, mid), rel, cmap=False))
        per_model[mid] = p
    pairs = []
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            sub = lambda r: {"resid": {"answer": r["resid"]["answer"]}}  # noqa: E731
            cka = layer_cka(sub(reps[a]), sub(reps[b]), debiased=True)["resid"]["answer"]
            pairs.append(CKAPair(a=a, b=b, cka=tuple(float(x) for x in cka)))
    ctx.save("compare", RunComparison(
        per_model=per_model, pairs=tuple(pairs),
        components=tuple(next(iter(per_model.values())).weight_change) if per_model else (),
        trials={"cka": Trials.from_dict(stages.trials("test", ctx.rc.n_compare, SEEDS["compare"])),
                "reliance": Trials.from_dict(stages.trials("test", ctx.rc.n_reliance, SEEDS["reliance"]))}))


def _initialisation(ctx: RunContext, mid: str) -> Any:
    """A scratch model's initial weights, rebuilt from its recorded seed and recipe (checked against their hash)."""
    arch, tok = base_arch_and_tokenizer(ctx.cfg["model"].base)
    meta = json.loads((ctx.out / "models" / mid / "checkpoint.json").read_text())
    recipe = {k: v for k, v in meta["config"]["train"].items() if k in ("resid_init", "embed_init_std")}
    init = build_scratch(arch, tok, int(meta["seed"]), ctx.device, **recipe)
    if meta.get("init_state_sha256") and state_sha256(init) != meta["init_state_sha256"]:
        raise RuntimeError(f"{mid}: rebuilding its initialisation did not give the weights it was trained from")
    return init


def circuits(ctx: RunContext) -> None:
    """Every analysed model's circuit, one job each; then the base's ranking of the same nodes."""
    ids = ctx.eligible()
    params = {"corruption": ctx.rc.corruption, "n_pairs": ctx.rc.n_pairs, "seed": SEEDS["circuits"],
              "method": ctx.rc.circuit_method, "ablation": ctx.rc.circuit_ablation, "n_random": ctx.rc.circuit_random,
              "level": ctx.rc.circuit_level, "overlap_fraction": ctx.rc.overlap_fraction, "device": ctx.rc.device}
    _run_jobs(ctx, [circuit_job(mid, to_dict(ctx.task), params) for mid in ids], "circuits")
    models = gather_circuits(ctx.out, ids)
    ranked = stages.base_ranking(ctx.model("base"), ctx.task, ctx.rc.corruption, ctx.rc.n_pairs, SEEDS["circuits"],
                                 ctx.rc.circuit_method)
    ctx.save("circuits", RunCircuits(models=models, method=ctx.rc.circuit_method, ablation=ctx.rc.circuit_ablation,
                                     level=ctx.rc.circuit_level, n_random=ctx.rc.circuit_random,
                                     n_nodes=next(reversed(models.values())).n_nodes if models else None,
                                     base_ranked=tuple(ranked)))


def head_maps(ctx: RunContext) -> dict[str, dict[str, np.ndarray]]:
    """Per-model head maps compared between models: patching effect and ablation effect, both [layer, head]."""
    maps: dict[str, dict[str, np.ndarray]] = {"patching_map": {}, "ablation_map": {}}
    for mid in ctx.record("analyses", RunAnalyses).models:
        d = ctx.out / model_dir(mid)
        maps["patching_map"][mid] = Patching.from_files(d / "patch_heads").values
        ab = Ablation.from_files(d / "ablation")
        maps["ablation_map"][mid] = ab.logit_diff - ab.baseline_logit_diff
    return maps


def claims(ctx: RunContext) -> None:
    ev = ctx.record("evaluate", RunEvaluation)
    c = contrasts.build(ev, ctx.record("compare", RunComparison), ctx.record("circuits", RunCircuits), head_maps(ctx))
    ctx.save("contrasts", c)
    ctx.save("claims", ClaimsRecord(rule=RULE, claims=tuple(judge(ev, c))))


def figures(ctx: RunContext) -> None:
    export_run(ctx.out, ctx.figures(), ctx.rc.formats, strict=False)


def attention(ctx: RunContext) -> None:
    """The page `cogcircuits attention` makes, for the first fine-tuned model (attention.html) and the first scratch
    model (attention-<model>.html): each model's top heads by its own denoising patching effect, on the first of
    the analyses' pairs (clean and corrupted)."""
    ids = ctx.eligible()
    shown = firsts(ids)
    if not shown:
        atomic_write_text(ctx.out / "attention.html", attention_views_page(
            [], [], "No model met the criterion: no attention views"))
        ctx.save("attention", AttentionRecord(pages={}))
        return
    pages = {}
    for i, mid in enumerate(shown):
        info = {"name": mid, "weights_sha256": file_sha256(ctx.out / "models" / mid / "model.safetensors")}
        page = attention_page_of(ctx.model(mid), info, ctx.task, top=ctx.rc.attention_heads, by="patching",
                                 trial=0, n=ctx.rc.n_pairs, seed=SEEDS["analyses"], corruption=ctx.rc.corruption)
        name = "attention.html" if i == 0 else f"attention-{mid}.html"
        atomic_write_text(ctx.out / name, page.html)
        pages[name] = AttentionPage(model=mid, heads=tuple(tuple(h) for h in page.heads),
                                    chosen_by=f"|denoising patching effect| of {mid}")
    ctx.save("attention", AttentionRecord(pages=pages))


def report(ctx: RunContext) -> None:
    write_report(ctx.out, ctx.figures())


STEPS: list[tuple[str, Callable[[RunContext], None]]] = [
    ("train", train_models), ("evaluate", evaluate), ("analyses", analyses), ("compare", compare),
    ("circuits", circuits), ("claims", claims), ("figures", figures), ("attention", attention), ("report", report)]
