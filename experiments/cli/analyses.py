"""The analysis commands of the CLI: patch, attribute, ablate, neurons, compare, discover, run, suite, export.

Each computes one typed result (`interp.results`, through `experiments.api`) and writes it the same way: OUT/<stem>.json
and .npz (the result, loadable with `Type.from_files`, with its provenance: the model's hash, the task config, the
seed and the exact token ids used), OUT/<stem>.csv (its tidy table) and its figures under OUT/figures.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

import experiments.cli.figures as command_figures
from interp.model_id import ModelId
from interp.typing import TLModel


def finite_float(text: str) -> float:
    """argparse type of every float option: a number, and not NaN or +/-infinity (argparse then prints one
    `error: argument --level: must be a finite number, got 'nan'` line and exits with status 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def task_for(args: argparse.Namespace, info: dict[str, Any]) -> Any:
    """The task of --config, else --task's defaults, else the one the checkpoint was trained on (else the default
    task). Also settles --corruption: the task's default when not given, refused when the task has no such one
    (or when the command needs the answer to change and it does not)."""
    from experiments.core.config import build_task  # lazy: CLI start-up (no torch before a command needs it)
    from experiments.training.train import load_config  # lazy: CLI start-up (no torch before a command needs it)
    from tasks.registry import task_of  # lazy: CLI start-up (no torch before a command needs it)

    if getattr(args, "config", None):
        task = load_config(args.config)["task"]
    elif getattr(args, "task", None):
        task = build_task({"name": args.task}, "--task")
    else:
        task = build_task(info.get("config", {}).get("task"), f"{info.get('path', 'model')} task config")
    if hasattr(args, "corruption"):
        t = task_of(task)
        args.corruption = args.corruption or t.default_corruption
        t.check_corruption(args.corruption)
        if getattr(args, "needs_flip", False) and not t.corruptions[args.corruption].flips:
            raise ValueError(f"corruption {args.corruption!r} leaves the answer unchanged: {args.command} needs one "
                             "that changes it (" + ", ".join(k for k, c in t.corruptions.items() if c.flips) + ")")
    return task


def load(path: str, device: str) -> tuple[Any, dict[str, Any]]:
    """A model on `device` ("auto": CUDA, else MPS, else CPU) and what was loaded."""
    from experiments.training.train import pick_device  # lazy: CLI start-up (no torch before a command needs it)
    from interp.models import load_model  # lazy: CLI start-up (no torch before a command needs it)

    model, _, info = load_model(path, pick_device(device))
    return model, info


def _provenance(args: argparse.Namespace, info: dict[str, Any], task: Any, extra: dict[str, Any]) -> dict[str, Any]:
    from experiments.core.config import to_dict  # lazy: CLI start-up (no torch before a command needs it)
    from interp.store import portable, versions  # lazy: CLI start-up (no torch before a command needs it)

    model = getattr(args, "checkpoint", None)
    return {"command": args.command, "model": portable(model, Path(args.out)) if model else None, "weights_sha256":
            info.get("weights_sha256"), "task": to_dict(task), "seed": getattr(args, "seed", None),
            "versions": versions(), **extra}


def _check(args: argparse.Namespace) -> None:
    """Before any computation: refuse an existing output folder (without --overwrite) and figure formats that are
    unknown or cannot be written here. Nothing is created yet, so a later bad input leaves nothing behind."""
    from interp.store import prepare_out_dir  # lazy: CLI start-up (no torch before a command needs it)

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or not args.overwrite):
        prepare_out_dir(out)  # raises, touching nothing, unless `out` is an empty folder (then it is left as is)
    command_figures.check_formats(args.figures)


def _out(args: argparse.Namespace) -> Path:
    from interp.store import prepare_out_dir  # lazy: CLI start-up (no torch before a command needs it)

    return prepare_out_dir(Path(args.out), overwrite=args.overwrite)


def _figures(args: argparse.Namespace, out: Path, figs: dict[str, Any]) -> None:
    print(f"figures: {len(command_figures.write(out, figs, args.figures))} files under {out / 'figures'}")


def _save(args: argparse.Namespace, out: Path, stem: str, result: Any, provenance: dict[str, Any]) -> None:
    """Any typed result the same way: OUT/stem.json + .npz (the result and its provenance), OUT/stem.csv (its
    tidy table) and its figures under OUT/figures."""
    from interp.store import atomic_write_text  # lazy: CLI start-up (no torch before a command needs it)

    result.to_files(out / stem, provenance)
    atomic_write_text(out / f"{stem}.csv", result.to_frame().to_csv(index=False))
    _figures(args, out, result.figures())


def trials(*args: Any) -> dict[str, Any]:
    """What an analysis covers (split, n, seed; corruption and which pairs), as `cogcircuits run` records it."""
    from experiments.analysis.stages import trials as covered  # lazy: CLI start-up (no torch before a command needs it)

    return covered(*args)


def _model(model: TLModel, task: Any, info: dict[str, Any]) -> Any:
    from experiments.api import Model  # lazy: CLI start-up (no torch before a command needs it)

    return Model(model, task, str(info.get("name") or "model"), info)


def _inputs(**batches: Any) -> dict[str, Any]:
    """The exact token ids an analysis used (and the answer / wrong ids of the first batch)."""
    first = next(iter(batches.values()))
    return {**{f"{k}_tokens": b.tokens for k, b in batches.items()}, "answer_ids": first.answer_ids,
            "wrong_ids": first.wrong_ids}


def cmd_patch(args: argparse.Namespace) -> None:
    from experiments import api  # lazy: CLI start-up (no torch before a command needs it)

    _check(args)
    model, info = load(args.checkpoint, args.device)
    m = _model(model, task_for(args, info), info)
    pairs = api.pairs(m, args.n, seed=args.seed, corruption=args.corruption)
    res = api.patch(m, pairs, args.what, args.direction, progress=True)
    out = _out(args)
    _save(args, out, "patching", res, _provenance(args, info, m.task, {
        **_inputs(clean=pairs.clean, corrupt=pairs.corrupted), "trials": trials("test", args.n, args.seed,
                                                                                args.corruption, m.task)}))
    r = res.result
    print(f"patched {args.what} ({args.direction}, {args.corruption}, {args.n} pairs): clean logit diff "
          f"{r.clean_logit_diff:.3f}, corrupted {r.corrupt_logit_diff:.3f}")
    if not r.defined:
        print(f"normalised effects are undefined: clean and corrupted differ by only "
              f"{abs(r.clean_logit_diff - r.corrupt_logit_diff):.3f} logits (below 0.25; does the model do the task?); "
              f"the raw logit differences are written")
        print(f"wrote {out}")
        return
    print(f"largest effects ({'share of the clean run restored' if args.direction == 'denoise' else 'share of the clean run removed'}):")
    for idx, eff in r.top(5):
        print("  " + ", ".join(f"{a}={r.labels[a][k] if a in r.labels else k}" for a, k in zip(r.axes, idx))
              + f": {eff:+.3f}")
    print(f"wrote {out}")


def cmd_attribute(args: argparse.Namespace) -> None:
    from experiments import api  # lazy: CLI start-up (no torch before a command needs it)

    _check(args)
    model, info = load(args.checkpoint, args.device)
    m = _model(model, task_for(args, info), info)
    b = api.trials(m, args.n, seed=args.seed)
    res = api.attribute(m, b, neuron_layers=args.neuron_layers)
    out = _out(args)
    _save(args, out, "attribution", res, _provenance(args, info, m.task, {
        **_inputs(trials=b), "neuron_layers": args.neuron_layers, "trials": trials("test", args.n, args.seed)}))
    parts = res.to_frame()
    print(f"direct logit attribution on {args.n} trials: mean logit diff {res.logit_diff.mean():.3f} = sum of parts "
          f"{parts['value'].sum():.3f}")
    print("logit lens (mean logit diff read before each layer, then the output): "
          + " ".join(f"{v:.2f}" for v in res.logit_lens.mean(0)))
    for _, r in parts.reindex(parts["value"].abs().sort_values(ascending=False).index).head(5).iterrows():
        print(f"  {r['component']}: {r['value']:+.3f}")
    print(f"wrote {out}")


def _units(specs: list[str] | None) -> list[tuple[int, ...]]:
    return [tuple(int(x) for x in u.split(".")) for u in specs or []]


def cmd_ablate(args: argparse.Namespace) -> None:
    from experiments import api  # lazy: CLI start-up (no torch before a command needs it)
    from interp.ablation import Ablator  # lazy: CLI start-up (no torch before a command needs it)

    _check(args)
    model, info = load(args.checkpoint, args.device)
    m = _model(model, task_for(args, info), info)
    b, ref = api.trials(m, args.n, seed=args.seed), api.trials(m, args.n, seed=args.seed + 1)
    res = api.ablate(m, b, args.method, reference=ref, seed=args.seed, progress=True)
    extra: dict[str, Any] = {"method": args.method, **_inputs(trials=b, reference=ref), "trials": {
        **trials("test", args.n, args.seed), "reference": trials("test", args.n, args.seed + 1)}}
    if args.heads or args.neurons:
        ab = Ablator(model, b.tokens, b.answer_ids, b.wrong_ids, args.method, ref.tokens, args.seed)
        if args.heads:
            extra["set"] = {"heads": _units(args.heads), **ab.heads(_units(args.heads))}
        if args.neurons:
            extra["neuron_set"] = {"neurons": _units(args.neurons), **ab.neurons(_units(args.neurons))}
    out = _out(args)
    _save(args, out, "ablation", res, _provenance(args, info, m.task, extra))
    print(f"{args.method} ablation on {args.n} trials: baseline accuracy {res.baseline_accuracy:.3f}, logit diff "
          f"{res.baseline_logit_diff:.3f}")
    d = res.logit_diff - res.baseline_logit_diff
    for i in np.argsort(d.ravel())[:5]:
        l, h = np.unravel_index(i, d.shape)
        print(f"  L{l}H{h}: accuracy {res.accuracy[l, h]:.3f}, logit diff change {d[l, h]:+.3f}")
    for key in ("set", "neuron_set"):
        if key in extra:
            print(f"  {key}: accuracy {extra[key]['accuracy']:.3f}, logit diff {extra[key]['logit_diff']:.3f}")
    print(f"wrote {out}")


def cmd_neurons(args: argparse.Namespace) -> None:
    from experiments import api  # lazy: CLI start-up (no torch before a command needs it)

    _check(args)
    model, info = load(args.checkpoint, args.device)
    m = _model(model, task_for(args, info), info)
    b = api.trials(m, args.n, seed=args.seed)
    res = api.neurons(m, b, position=args.position, layers=args.layers or None, top_k=args.top_k, ablate_top=True)
    out = _out(args)
    _save(args, out, "neurons", res, _provenance(args, info, m.task, {**_inputs(trials=b),
                                                                     "trials": trials("test", args.n, args.seed)}))
    print(f"neuron selectivity at '{args.position}' on {args.n} trials (standardised betas):")
    for v in res.variables:
        t = res.top[v][:3]
        print(f"  {v}: top " + ", ".join(f"L{l}N{n} ({c:+.2f})" for l, n, c in t) +
              f"; mean-ablating the top {args.top_k}: accuracy {res.top_ablation[v]['accuracy']:.3f} "
              f"(unablated {res.ablation_baseline['accuracy']:.3f})")
    print(f"wrote {out}")


def cmd_compare(args: argparse.Namespace) -> None:
    from experiments import api  # lazy: CLI start-up (no torch before a command needs it)
    from interp.store import portable  # lazy: CLI start-up (no torch before a command needs it)

    _check(args)
    base_model, binfo = load(args.base, args.device)
    loaded = {}
    for kind, paths in (("finetuned", args.finetuned), ("scratch", args.scratch or [])):
        for i, p in enumerate(paths):
            loaded[str(ModelId(kind, i))] = load(p, args.device)
    task = task_for(args, next(iter(loaded.values()))[1])  # --config / --task, else the first fine-tuned model's
    models = {k: _model(mdl, task, info) for k, (mdl, info) in loaded.items()}
    base = _model(base_model, task, binfo)
    b, rel = api.trials(base, args.n, seed=args.seed), api.trials(base, args.n, seed=args.seed + 1)
    res = api.compare(models, base, b, reliance_trials=rel)
    out = _out(args)
    _save(args, out, "comparison", res, _provenance(args, binfo, task, {
        "finetuned": [portable(p, out) for p in args.finetuned],
        "scratch": [portable(p, out) for p in args.scratch or []],
        "base": portable(args.base, out), "weights_sha256_of": {k: i.get("weights_sha256") for k, (_, i) in
                                                                loaded.items()},
        **_inputs(trials=b, reliance=rel), "trials": {"cka": trials("test", args.n, args.seed),
                                                      "reliance": trials("test", args.n, args.seed + 1)}}))
    for kind in ("finetuned", "scratch"):
        keys = [k for k in res.cka if k.startswith(kind)]
        if keys:
            print(f"{kind}: debiased CKA with the base per layer (mean over {len(keys)} models) "
                  + " ".join(f"{v:.2f}" for v in np.mean([res.cka[k] for k in keys], 0)))
            print(f"{kind}: accuracy kept (chance-corrected) reverting one layer to the base "
                  + " ".join(f"{v:.2f}" for v in np.mean([res.reversion[k] for k in keys], 0)))
    print(f"wrote {out}")


def cmd_discover(args: argparse.Namespace) -> None:
    from experiments import api  # lazy: CLI start-up (no torch before a command needs it)
    from experiments.analysis import stages  # lazy: CLI start-up (no torch before a command needs it)

    _check(args)
    model, info = load(args.checkpoint, args.device)
    m = _model(model, task_for(args, info), info)
    pairs = api.pairs(m, args.n, seed=args.seed, corruption=args.corruption)
    res = api.discover(m, pairs, args.method, args.ablation, n_random=args.random, level=args.level,
                       fraction=args.fraction, seed=args.seed, progress=True)
    extra: dict[str, Any] = {**_inputs(clean=pairs.clean, corrupt=pairs.corrupted),
                             "trials": trials("test", args.n, args.seed, args.corruption, m.task)}
    if args.base:
        base_ranked = stages.base_ranking(load(args.base, args.device)[0], m.task, args.corruption, args.n, args.seed,
                                          args.method)
        k = len(res.top)
        extra["base_top"] = base_ranked[:k]
        extra["share_in_base_top"] = {"value": len(set(res.top) & set(base_ranked[:k])) / k,
                                      "chance": k / len(res.node_scores)}
    out = _out(args)
    _save(args, out, "circuit", res, _provenance(args, info, m.task, extra))
    for c in (res.node_curve, res.edge_curve):
        reached = c.level_reached
        print(f"{c.level}s: m(full) {c.m_full:.3f}, m(empty) {c.m_empty:.3f}; CPR {c.cpr:.3f} (random "
              f"{np.mean(c.random_cpr):.3f}), CMD {c.cmd:.3f}; size at {args.level:.0%}: "
              f"{reached['size'] if reached['size'] is not None else 'not reached by a proper sub-circuit'}"
              if c.defined else f"{c.level}s: faithfulness undefined (m(full) - m(empty) too small)")
    print(f"top {len(res.top)} nodes: {', '.join(res.top)}")
    if args.base:
        s = extra["share_in_base_top"]
        print(f"share among the base's top {len(res.top)}: {s['value']:.2f} (chance {s['chance']:.2f})")
    rho = res.summary()["exact_check"]["spearman"]
    print(f"exact-patching check of the top nodes: Spearman {rho:.2f}; wrote {out}")


def cmd_run(args: argparse.Namespace) -> None:
    import time

    from experiments.run.pipeline import Run, load_run_config  # lazy: CLI start-up (no torch before a command needs it)

    ov: dict[str, dict[str, Any]] = {}
    if args.seeds is not None:
        ov.setdefault("run", {})["seeds"] = list(range(args.seeds))
    if args.device:
        ov.setdefault("run", {})["device"] = args.device
    if args.base:
        ov.setdefault("model", {})["base"] = args.base
    ov.update(_executor_overrides(args))
    cfg = load_run_config(args.config, ov)
    out = Path(args.out) if args.out else Path("runs") / cfg["run"].name
    t0 = time.time()
    run = Run(cfg, out, overwrite=args.overwrite, progress=not args.quiet, log=print, extend=args.extend)
    if args.models:
        met = run.record_models(args.models)
        done, todo = run.recorded(), [m for m in run.ctx.model_ids() if m not in run.recorded()]
        print(f"recorded in {time.time() - t0:.0f} s: " + ", ".join(f"{m} ({'met' if ok else 'missed'} the criterion)"
                                                             for m, ok in met.items()))
        print(f"recorded so far: {', '.join(done) or 'none'}; still to record: {', '.join(todo) or 'none'} "
              f"(then run without --models for the report)")
        return
    report = run.run()
    print(f"finished in {time.time() - t0:.0f} s; report: {report}")


def _executor_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    ex = {k: v for k, v in (("kind", args.executor), ("workers", args.workers), ("retries", args.retries))
          if v is not None}
    return {"executor": ex} if ex else {}


def cmd_suite(args: argparse.Namespace) -> None:
    from experiments.run.suite import run_suite  # lazy: CLI start-up (no torch before a command needs it)

    page = run_suite(args.configs, Path(args.out), overwrite=args.overwrite, progress=not args.quiet, log=print,
                     overrides=_executor_overrides(args))
    print(f"suite page: {page}")


def cmd_export(args: argparse.Namespace) -> None:
    from experiments.report.figures import build_figures, export_run  # lazy: CLI start-up (no torch before a command needs it)

    run = Path(args.run_dir)
    if not (run / "run.json").exists():
        raise FileNotFoundError(f"{run} is not a finished run directory (run.json missing)")
    r = export_run(run, build_figures(run), args.format, strict=True)
    print(f"wrote {len(r['written'])} files under {run / 'figures'}")


def executor_options(p: argparse.ArgumentParser) -> None:
    from experiments.jobs.executors import KINDS  # lazy: CLI start-up (no torch before a command needs it)

    p.add_argument("--executor", choices=list(KINDS), help="where training jobs run (default: the config's "
                   "[executor] kind, else serial); slurm options live in the config's [executor] section")
    p.add_argument("--workers", type=int, help="jobs at once for local / submitit-local / ray")
    p.add_argument("--retries", type=int, help="further attempts of a job that dies or fails (default 1)")


def _figures_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--figures", nargs="+", default=["html"], choices=list(command_figures.FORMATS),
                   help="figure formats under OUT/figures (default html; png/svg need a Chromium)")


def _common(p: argparse.ArgumentParser, tasks: list[str], n: int = 64) -> None:
    """The options every one-model analysis command shares."""
    p.add_argument("checkpoint", help="checkpoint directory or local HF GPT-2 directory")
    p.add_argument("--config", help="task config (default: the checkpoint's own)")
    p.add_argument("--task", choices=tasks, help="a registered task with its default config (default: "
                   "the checkpoint's own)")
    p.add_argument("--n", type=int, default=n, help="trials (or trial pairs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    _figures_option(p)


def _register_model_analyses(sub: Any, tasks: list[str], variants: list[str]) -> None:
    p = sub.add_parser("patch", help="exact activation patching")
    _common(p, tasks)
    p.add_argument("--what", default="heads", choices=variants)
    p.add_argument("--corruption", help="one of the task's corruptions (default: the task's own default)")
    p.add_argument("--direction", default="denoise", choices=["denoise", "noise"])
    p.set_defaults(func=cmd_patch)

    p = sub.add_parser("attribute", help="direct logit attribution and logit lens")
    _common(p, tasks)
    p.add_argument("--neuron-layers", type=int, nargs="*", default=[])
    p.set_defaults(func=cmd_attribute)

    p = sub.add_parser("ablate", help="head (and neuron) ablation")
    _common(p, tasks)
    p.add_argument("--method", default="mean", choices=["zero", "mean", "resample"])
    p.add_argument("--heads", nargs="*", help="a set of heads to ablate together, as LAYER.HEAD")
    p.add_argument("--neurons", nargs="*", help="a set of neurons to ablate together, as LAYER.NEURON")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("neurons", help="neuron selectivity to task variables")
    _common(p, tasks, n=256)
    p.add_argument("--position", default="answer")
    p.add_argument("--layers", type=int, nargs="*")
    p.add_argument("--top-k", type=int, default=10)
    p.set_defaults(func=cmd_neurons)


def _register_compare_discover(sub: Any, tasks: list[str]) -> None:
    p = sub.add_parser("compare", help="fine-tuned vs scratch reliance on the base, per layer")
    p.add_argument("--finetuned", nargs="+", required=True)
    p.add_argument("--scratch", nargs="*")
    p.add_argument("--base", required=True)
    p.add_argument("--config", help="task config (default: the first fine-tuned model's own)")
    p.add_argument("--task", choices=tasks, help="a registered task with its default config")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    _figures_option(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("discover", help="circuit discovery (EAP / EAP-IG) with faithfulness")
    _common(p, tasks, n=32)
    p.add_argument("--method", default="eap-ig", choices=["eap", "eap-ig"])
    p.add_argument("--corruption", help="a corruption of the task that changes the answer (default: the task's)")
    p.add_argument("--ablation", default="corrupted", choices=["corrupted", "mean", "resample"])
    p.add_argument("--base", help="pretrained base, to rank the same nodes in it")
    p.add_argument("--random", type=int, default=20, help="random circuits per size (baseline)")
    p.add_argument("--level", type=finite_float, default=0.8, help="faithfulness level for 'size at level'")
    p.add_argument("--fraction", type=finite_float, default=0.2, help="share of nodes listed as the circuit's top set")
    p.set_defaults(func=cmd_discover, needs_flip=True)


def _register_runs(sub: Any) -> None:
    p = sub.add_parser("run", help="the whole fine-tuned vs scratch experiment and its report")
    p.add_argument("config", nargs="?", help="run config (default: the packaged experiments/configs/default.toml)")
    p.add_argument("--out", help="run directory (default: runs/<name>)")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    p.add_argument("--device")
    p.add_argument("--base", help="pretrained base (default: the shipped cogbase-6l); e.g. gpt2 on a GPU")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--extend", action="store_true",
                   help="accept a config that only appends seeds to the run in --out: the models recorded keep "
                        "their records (run.json records the extension)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help="train and record these models only (e.g. scratch-s0), for a study longer than one session: "
                        "each model's weights are needed only until its records are written")
    executor_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("suite", help="`run` on several task configs and one page comparing their verdicts")
    p.add_argument("configs", nargs="+", help="run configs, e.g. experiments/configs/{default,delay-comparison}.toml")
    p.add_argument("--out", required=True, help="suite folder: one run folder per config, suite.html, suite.json")
    p.add_argument("--overwrite", action="store_true", help="replace runs made with another config")
    p.add_argument("--quiet", action="store_true")
    executor_options(p)
    p.set_defaults(func=cmd_suite)

    p = sub.add_parser("export", help="re-export a finished run's figures without recomputing")
    p.add_argument("run_dir")
    p.add_argument("--format", nargs="+", default=["html"], choices=["html", "png", "svg", "csv"])
    p.set_defaults(func=cmd_export)


def register(sub: Any) -> None:
    """The analysis, comparison, discovery and run commands."""
    from interp.patching import VARIANTS  # lazy: CLI start-up (no torch before a command needs it)
    from tasks.registry import TASKS  # lazy: CLI start-up (no torch before a command needs it)

    _register_model_analyses(sub, list(TASKS), list(VARIANTS))
    _register_compare_discover(sub, list(TASKS))
    _register_runs(sub)
