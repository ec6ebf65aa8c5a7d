"""The steps of `cogcircuits run`, in order. Each takes the run's context, computes with `experiments.analysis.stages`
and stores its results; `Run` marks each finished step so that a rerun resumes after the last one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from experiments.analysis import stages
from experiments.core.config import to_dict
from experiments.core.run_record import (AttentionPage, AttentionRecord, BaseInfo, CKAPair, ClaimsRecord, Criterion,
                                         JobBrief, ModelEvaluation, RunAnalyses, RunCircuits,
                                         RunComparison, RunEvaluation, TaskInfo, Trials)
from experiments.jobs.dispatch import JobsFailed, run_jobs
from experiments.jobs.executors import ExecutorConfig
from experiments.jobs.kinds import (analysis_job, attention_job, circuit_job, cka_between, compare_job, evaluate_job,
                                    gather_analyses, gather_circuits, gather_comparisons, gather_evaluations, model_dir)
from experiments.jobs.spec import JobsRecord, train_job
from experiments.report.figures import export_run, firsts
from experiments.report.report import write_report
from experiments.run import contrasts
from experiments.run.claims import judge, load_validation, rule_text
from experiments.run.context import RunContext
from experiments.training.train import ModelConfig, TrainConfig, criterion_of
from interp.model_id import ModelId
from interp.results import Ablation, Patching
from interp.store import atomic_write_csv, atomic_write_text, portable
from interp.viz import attention_views_page
from tasks.registry import bayes_optimal_accuracy, generate, task_of

SEEDS = {"evaluate": 1000, "analyses": 2000, "compare": 3000, "reliance": 3001, "circuits": 4000}


def train_models(ctx: RunContext, ids: list[str] | None = None) -> None:
    """One job per model (init x seed; `ids`: these only), run on the config's executor; results/jobs.json records
    where and how long each ran."""
    _run_jobs(ctx, [_train_job(ctx, mid) for mid in (ids or ctx.model_ids())], "train")


def _train_job(ctx: RunContext, mid: str) -> Any:
    m = ModelId.parse(mid)
    tcfg = ctx.cfg["finetune" if m.is_finetuned else "scratch"]
    tcfg = TrainConfig(**{**to_dict(tcfg), "seed": m.seed, "device": ctx.rc.device})  # resolved by the worker
    mc = ctx.cfg["model"]
    mcfg = ModelConfig(init="pretrained" if m.is_finetuned else "scratch", base=portable(mc.base, ctx.out),
                       shuffled=mc.shuffled and m.is_finetuned, shuffle_digits=mc.shuffle_digits and m.is_finetuned,
                       embed_from_base=mc.embed_from_base and not m.is_finetuned)
    later = ("shuffled", "shuffle_digits", "embed_from_base")  # absent when off: earlier jobs' inputs as before
    model = {k: v for k, v in to_dict(mcfg).items() if k not in later or v}
    return train_job(mid, to_dict(ctx.task), model, to_dict(tcfg))


def record_models(ctx: RunContext, ids: list[str]) -> dict[str, bool]:
    """Train and record the models `ids` only, each model's jobs in turn: training, evaluation and, when it met the
    criterion, its analyses, comparison with the base and circuit (and, when it is the first of its init to meet
    it, the per-position maps and the attention page). Once recorded, a model's weights are no longer needed: the
    run's steps gather its records. Returns {model: met the criterion}."""
    order = ctx.model_ids()
    unknown = [m for m in ids if m not in order]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} not in this run's models ({', '.join(order)})")
    met = {}
    for mid in sorted(ids, key=order.index):
        first = _first_so_far(ctx, mid, order)
        train_models(ctx, [mid])
        task = to_dict(ctx.task)
        _run_jobs(ctx, [evaluate_job(mid, task, job_params(ctx, "evaluate"))], "evaluate")
        met[mid] = _met(ModelEvaluation.load(ctx.out / model_dir(mid) / "evaluation.json"))
        if not met[mid]:
            continue
        jobs = [analysis_job(mid, task, job_params(ctx, "analyse") | {"detailed": ctx.rc.detailed_maps and first}),
                compare_job(mid, task, job_params(ctx, "compare")), circuit_job(mid, task, job_params(ctx, "circuit"))]
        if first:
            jobs.append(attention_job(mid, task, attention_page(mid), job_params(ctx, "attention")))
        for job in jobs:
            _run_jobs(ctx, [job], {"analyse": "analyses", "circuit": "circuits"}.get(job.kind, job.kind))
    return met


def model_recorded(ctx: RunContext, mid: str) -> bool:
    """Whether every per-model job of `mid` is done: its evaluation, and (when it met the criterion) its analyses,
    comparison and circuit."""
    d = ctx.out / model_dir(mid)
    if not (d / "evaluation.json").exists():
        return False
    if not _met(ModelEvaluation.load(d / "evaluation.json")):
        return True
    return all((d / f).exists() for f in ("index.json", "comparison.json", "circuit.json"))


def _first_so_far(ctx: RunContext, mid: str, order: list[str]) -> bool:
    """Whether `mid` would be the first analysed model of its init: every earlier model of its init is recorded
    and missed the criterion (an earlier one not recorded yet is an error: the first gets the detailed maps)."""
    group = ModelId.parse(mid).group
    for other in order[:order.index(mid)]:
        if ModelId.parse(other).group != group:
            continue
        rec = ctx.out / model_dir(other) / "evaluation.json"
        if not rec.exists():
            raise ValueError(f"record {other} before {mid}: the first model of each init to meet the criterion gets "
                             "the per-position maps and the attention page")
        if _met(ModelEvaluation.load(rec)):
            return False
    return True


def job_params(ctx: RunContext, kind: str) -> dict[str, Any]:
    """What every per-model job of `kind` is given (`experiments.jobs.kinds`), besides its model and task."""
    rc = ctx.rc
    balanced = {"balanced": True} if rc.balanced_trials else {}  # absent when off: earlier jobs' inputs unchanged
    return {"evaluate": {"n_eval": rc.n_eval, "seed": SEEDS["evaluate"]},
            "analyse": {"corruption": rc.corruption, "n_pairs": rc.n_pairs, "seed": SEEDS["analyses"],
                        "ablation": rc.ablation},
            "compare": {"base": portable(ctx.cfg["model"].base, ctx.out), "n_compare": rc.n_compare,
                        "seed_compare": SEEDS["compare"], "n_reliance": rc.n_reliance,
                        "seed_reliance": SEEDS["reliance"]},
            "circuit": {"corruption": rc.corruption, "n_pairs": rc.n_pairs, "seed": SEEDS["circuits"],
                        "method": rc.circuit_method, "ablation": rc.circuit_ablation, "n_random": rc.circuit_random,
                        "level": rc.circuit_level, "overlap_fraction": rc.overlap_fraction},
            "attention": {"heads": rc.attention_heads, "n_pairs": rc.n_pairs, "seed": SEEDS["analyses"],
                          "corruption": rc.corruption}}[kind] | {"device": rc.device} \
        | (balanced if kind in ("analyse", "compare", "circuit") else {})


def evaluate(ctx: RunContext) -> None:
    """Every model (one job each) and the base on the test and generalisation splits; which models met the
    criterion (the analysed ones)."""
    ids = ctx.model_ids()
    _run_jobs(ctx, [evaluate_job(mid, to_dict(ctx.task), job_params(ctx, "evaluate")) for mid in ids], "evaluate")
    models = gather_evaluations(ctx.out, ids)
    models["base"] = stages.evaluate_model(ctx.model("base"), ctx.task, ctx.rc.n_eval, seed=SEEDS["evaluate"])
    eligible = [m for m in ids if _met(models[m])]
    t = task_of(ctx.task)
    probe = generate(ctx.task, 1, 0, ctx.model("base").tokenizer, "test")
    b = ctx.model("base").cfg
    ev = RunEvaluation(
        bayes_optimal_accuracy=bayes_optimal_accuracy(ctx.task), chance=0.5,
        task=TaskInfo(name=t.name, shortcut=t.shortcut, answer_words=tuple(probe.answer_words), group=probe.group,
                      corruption=ctx.rc.corruption,
                      corruption_description=t.corruptions[ctx.rc.corruption].description),
        criterion={i: Criterion(**criterion_of(ctx.cfg[s]), max_steps=ctx.cfg[s].max_steps)
                   for i, s in (("finetuned", "finetune"), ("scratch", "scratch"))},
        models=models, eligible=tuple(eligible),
        excluded={m: _excluded_because(models[m]) for m in ids if m not in eligible},
        base=BaseInfo(name=ctx.run_meta().base.name, n_layers=b.n_layers, d_model=b.d_model, n_heads=b.n_heads))
    ctx.save("evaluate", ev)
    rows = [{"model": mid, "split": split, **row} for mid, r in ev.models.items()
            for split, sc in (("test", r.test), ("gen", r.gen)) if sc is not None for row in sc.by_condition]
    atomic_write_csv(ctx.out / "arrays" / "accuracy_by_condition.csv", rows)


def _met(e: ModelEvaluation) -> bool:
    return bool(e.training and e.training.met_criterion)


def _excluded_because(e: ModelEvaluation) -> str:
    last = e.curve[-1] if e.curve else None
    acc, inc = (last.val_accuracy, last.val_incongruent_accuracy) if last else (float("nan"), float("nan"))
    steps = e.training.steps if e.training else 0
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
    jobs = [analysis_job(mid, to_dict(ctx.task), job_params(ctx, "analyse") | {"detailed": _detailed(ctx, mid, ids)})
            for mid in ids]
    _run_jobs(ctx, jobs, "analyses")
    ctx.save("analyses", RunAnalyses(corruption=ctx.rc.corruption, n_pairs=ctx.rc.n_pairs, ablation=ctx.rc.ablation,
                                     models=gather_analyses(ctx.out, ids)))


def _detailed(ctx: RunContext, mid: str, eligible: list[str]) -> bool:
    """Per-position maps and attribution patching: for the first analysed model of each init."""
    return ctx.rc.detailed_maps and mid in firsts(eligible)


def compare(ctx: RunContext) -> None:
    """CKA with the base, reliance on the base (and on the scratch models' own initialisations) and weight change,
    one job per model; CKA between every two models from the Gram matrices the jobs stored: results/compare.json,
    the one record of the comparison."""
    ids = ctx.eligible()
    _run_jobs(ctx, [compare_job(mid, to_dict(ctx.task), job_params(ctx, "compare")) for mid in ids], "compare")
    per_model = gather_comparisons(ctx.out, ids)
    pairs = tuple(CKAPair(a=a, b=b, cka=cka_between(ctx.out, a, b)) for i, a in enumerate(ids) for b in ids[i + 1:])
    ctx.save("compare", RunComparison(
        per_model=per_model, pairs=pairs,
        components=tuple(next(iter(per_model.values())).weight_change) if per_model else (),
        trials={"cka": Trials.from_dict(stages.trials("test", ctx.rc.n_compare, SEEDS["compare"])),
                "reliance": Trials.from_dict(stages.trials("test", ctx.rc.n_reliance, SEEDS["reliance"],
                                                           balanced=ctx.rc.balanced_trials))}))


def circuits(ctx: RunContext) -> None:
    """Every analysed model's circuit, one job each; then the base's ranking of the same nodes."""
    ids = ctx.eligible()
    params = job_params(ctx, "circuit")
    _run_jobs(ctx, [circuit_job(mid, to_dict(ctx.task), params) for mid in ids], "circuits")
    models = gather_circuits(ctx.out, ids)
    ranked = stages.base_ranking(ctx.model("base"), ctx.task, ctx.rc.corruption, ctx.rc.n_pairs, SEEDS["circuits"],
                                 ctx.rc.circuit_method, balanced=ctx.rc.balanced_trials)
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
    v = load_validation()
    mult = ctx.rc.multiplicity
    ctx.save("claims", ClaimsRecord(rule=rule_text(mult), claims=tuple(judge(ev, c, v, multiplicity=mult)),
                                    validation=v))


def figures(ctx: RunContext) -> None:
    export_run(ctx.out, ctx.figures(), ctx.rc.formats, strict=False)


def attention(ctx: RunContext) -> None:
    """The page `cogcircuits attention` makes, for the first analysed fine-tuned model (attention.html) and the first
    analysed scratch model (attention-<model>.html), one job each (`experiments.jobs.kinds.run_attention`)."""
    shown = firsts(ctx.eligible())
    if not shown:
        atomic_write_text(ctx.out / "attention.html", attention_views_page(
            [], [], "No model met the criterion: no attention views"))
        ctx.save("attention", AttentionRecord(pages={}))
        return
    pages = {attention_page(mid): mid for mid in shown}
    _run_jobs(ctx, [attention_job(mid, to_dict(ctx.task), page, job_params(ctx, "attention"))
                    for page, mid in pages.items()], "attention")
    ctx.save("attention", AttentionRecord(pages={page: AttentionPage.load(ctx.out / model_dir(mid) / "attention.json")
                                                 for page, mid in pages.items()}))


def attention_page(mid: str) -> str:
    """attention.html for the first fine-tuned model, attention-<model>.html for the first scratch model."""
    return "attention.html" if ModelId.parse(mid).is_finetuned else f"attention-{mid}.html"


def report(ctx: RunContext) -> None:
    write_report(ctx.out, ctx.figures())


STEPS: list[tuple[str, Callable[[RunContext], None]]] = [
    ("train", train_models), ("evaluate", evaluate), ("analyses", analyses), ("compare", compare),
    ("circuits", circuits), ("claims", claims), ("figures", figures), ("attention", attention), ("report", report)]
