"""The analysis commands of the CLI: patch, attribute, ablate, neurons, compare, discover, run, suite, export.

Each writes its arrays (NPZ and a tidy CSV with labels) and a JSON with the model's hash, the task config and the
exact token ids used, so anyone can recompute the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments import command_figures


def task_for(args: argparse.Namespace, info: dict[str, Any]) -> Any:
    """The task of --config, else --task's defaults, else the one the checkpoint was trained on (else the default
    task). Also settles --corruption: the task's default when not given, refused when the task has no such one
    (or when the command needs the answer to change and it does not)."""
    from experiments.config import build_task
    from experiments.train import load_config
    from tasks.registry import task_of

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
    from experiments.train import pick_device
    from interp.models import load_model

    model, _, info = load_model(path, pick_device(device))
    return model, info


def _provenance(args: argparse.Namespace, info: dict[str, Any], task: Any, extra: dict[str, Any]) -> dict[str, Any]:
    from experiments.config import to_dict
    from interp.store import portable, versions

    model = getattr(args, "checkpoint", None)
    return {"command": args.command, "model": portable(model, Path(args.out)) if model else None, "weights_sha256":
            info.get("weights_sha256"), "task": to_dict(task), "seed": getattr(args, "seed", None),
            "versions": versions(), **extra}


def _check(args: argparse.Namespace) -> None:
    """Before any computation: refuse an existing output folder (without --overwrite) and figure formats that are
    unknown or cannot be written here. Nothing is created yet, so a later bad input leaves nothing behind."""
    from interp.store import prepare_out_dir

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or not args.overwrite):
        prepare_out_dir(out)  # raises, touching nothing, unless `out` is an empty folder (then it is left as is)
    command_figures.check_formats(args.figures)


def _out(args: argparse.Namespace) -> Path:
    from interp.store import prepare_out_dir

    return prepare_out_dir(Path(args.out), overwrite=args.overwrite)


def _figures(args: argparse.Namespace, out: Path, figs: dict[str, Any]) -> None:
    print(f"figures: {len(command_figures.write(out, figs, args.figures))} files under {out / 'figures'}")


def cmd_patch(args: argparse.Namespace) -> None:
    from interp.patching import patch_sweep, position_token_labels
    from interp.store import atomic_write_csv, atomic_write_json, atomic_write_npz
    from tasks.registry import make_pairs

    _check(args)
    model, info = load(args.checkpoint, args.device)
    task = task_for(args, info)
    clean, bad = make_pairs(task, args.n, seed=args.seed, tokenizer=model.tokenizer, corruption=args.corruption)
    labels = position_token_labels(model.tokenizer, clean.tokens, clean.position_labels)
    r = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, args.what, args.direction,
                    position_labels=labels, progress=True)
    out = _out(args)
    atomic_write_npz(out / f"patch_{args.what}.npz", {"values": r.values, "raw": r.raw, "clean_tokens": clean.tokens,
                                                      "corrupt_tokens": bad.tokens, "answer_ids": clean.answer_ids,
                                                      "wrong_ids": clean.wrong_ids})
    atomic_write_csv(out / f"patch_{args.what}.csv", r.rows())
    atomic_write_json(out / "patch.json", _provenance(args, info, task, {
        "what": args.what, "direction": args.direction, "corruption": args.corruption, "axes": list(r.axes),
        "labels": r.labels, "clean_logit_diff": r.clean_logit_diff, "corrupt_logit_diff": r.corrupt_logit_diff,
        "clean_tokens": clean.tokens, "corrupt_tokens": bad.tokens}))
    _figures(args, out, command_figures.patch(r, info.get("name"), args.corruption, args.n))
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
    from interp.attribution import direct_logit_attribution, logit_lens
    from interp.store import atomic_write_csv, atomic_write_json, atomic_write_npz
    from tasks.registry import generate

    _check(args)
    model, info = load(args.checkpoint, args.device)
    task = task_for(args, info)
    b = generate(task, args.n, seed=args.seed, tokenizer=model.tokenizer, split="test")
    d = direct_logit_attribution(model, b.tokens, b.answer_ids, b.wrong_ids, neuron_layers=tuple(args.neuron_layers))
    lens = logit_lens(model, b.tokens, b.answer_ids, b.wrong_ids)
    out = _out(args)
    arrays = {"heads": d["heads"], "mlp": d["mlp"], "attn_bias": d["attn_bias"], "embed": d["embed"],
              "pos_embed": d["pos_embed"], "bias": d["bias"], "total": d["total"], "logit_diff": d["logit_diff"],
              "logit_lens": lens, "tokens": b.tokens, "answer_ids": b.answer_ids, "wrong_ids": b.wrong_ids}
    for l, v in d["neurons"].items():
        arrays[f"neurons_L{l}"] = v
    atomic_write_npz(out / "attribution.npz", arrays)
    heads = d["heads"].mean(0)
    rows = [{"component": f"L{l}H{h}", "layer": l, "head": h, "mean_logit_diff": float(heads[l, h])}
            for l in range(heads.shape[0]) for h in range(heads.shape[1])]
    rows += [{"component": f"MLP{l}", "layer": l, "head": "", "mean_logit_diff": float(v)}
             for l, v in enumerate(d["mlp"].mean(0))]
    rows += [{"component": c, "layer": "", "head": "", "mean_logit_diff": float(d[c].mean())}
             for c in ("embed", "pos_embed", "bias")]
    atomic_write_csv(out / "attribution.csv", rows)
    atomic_write_json(out / "attribution.json", _provenance(args, info, task, {"tokens": b.tokens,
                                                                              "neuron_layers": args.neuron_layers}))
    _figures(args, out, command_figures.attribution(d, lens, info.get("name")))
    print(f"direct logit attribution on {args.n} trials: mean logit diff {d['logit_diff'].mean():.3f} = sum of parts "
          f"{d['total'].mean():.3f}")
    print("logit lens (mean logit diff read before each layer, then the output): "
          + " ".join(f"{v:.2f}" for v in lens.mean(0)))
    for r in sorted(rows, key=lambda r: -abs(r["mean_logit_diff"]))[:5]:
        print(f"  {r['component']}: {r['mean_logit_diff']:+.3f}")
    print(f"wrote {out}")


def cmd_ablate(args: argparse.Namespace) -> None:
    from interp.ablation import Ablator
    from interp.store import atomic_write_csv, atomic_write_json, atomic_write_npz
    from tasks.registry import generate

    _check(args)
    model, info = load(args.checkpoint, args.device)
    task = task_for(args, info)
    b = generate(task, args.n, seed=args.seed, tokenizer=model.tokenizer, split="test")
    ref = generate(task, args.n, seed=args.seed + 1, tokenizer=model.tokenizer, split="test")
    ab = Ablator(model, b.tokens, b.answer_ids, b.wrong_ids, args.method, ref.tokens, args.seed)
    extra: dict[str, Any] = {"method": args.method, "baseline": ab.baseline, "tokens": b.tokens,
                             "reference_tokens": ref.tokens}
    if args.heads:
        units = [tuple(int(x) for x in u.split(".")) for u in args.heads]
        extra["set"] = {"heads": units, **ab.heads(units)}
    if args.neurons:
        units = [tuple(int(x) for x in u.split(".")) for u in args.neurons]
        extra["neuron_set"] = {"neurons": units, **ab.neurons(units)}
    each = ab.each_head(progress=True)
    out = _out(args)
    atomic_write_npz(out / "ablation_heads.npz", {"accuracy": each["accuracy"], "logit_diff": each["logit_diff"],
                                                  "tokens": b.tokens})
    atomic_write_csv(out / "ablation_heads.csv", [
        {"layer": l, "head": h, "accuracy": float(each["accuracy"][l, h]), "logit_diff": float(each["logit_diff"][l, h])}
        for l in range(each["accuracy"].shape[0]) for h in range(each["accuracy"].shape[1])])
    atomic_write_json(out / "ablation.json", _provenance(args, info, task, extra))
    _figures(args, out, command_figures.ablation(each, ab.baseline, args.method, info.get("name"), args.n))
    print(f"{args.method} ablation on {args.n} trials: baseline accuracy {ab.baseline['accuracy']:.3f}, logit diff "
          f"{ab.baseline['logit_diff']:.3f}")
    d = each["logit_diff"] - ab.baseline["logit_diff"]
    for i in np.argsort(d.ravel())[:5]:
        l, h = np.unravel_index(i, d.shape)
        print(f"  L{l}H{h}: accuracy {each['accuracy'][l, h]:.3f}, logit diff change {d[l, h]:+.3f}")
    for key in ("set", "neuron_set"):
        if key in extra:
            print(f"  {key}: accuracy {extra[key]['accuracy']:.3f}, logit diff {extra[key]['logit_diff']:.3f}")
    print(f"wrote {out}")


def cmd_neurons(args: argparse.Namespace) -> None:
    from interp.ablation import Ablator
    from interp.neurons import neuron_selectivity
    from interp.store import atomic_write_csv, atomic_write_json, atomic_write_npz
    from tasks.registry import generate

    _check(args)
    model, info = load(args.checkpoint, args.device)
    task = task_for(args, info)
    b = generate(task, args.n, seed=args.seed, tokenizer=model.tokenizer, split="test")
    sel = neuron_selectivity(model, b, position=args.position, layers=tuple(args.layers) if args.layers else None,
                             top_k=args.top_k)
    ab = Ablator(model, b.tokens, b.answer_ids, b.wrong_ids, "mean")
    variables = sel["variables"]
    effects = {v: ab.neurons([(l, i) for l, i, _ in sel["top"][v]]) for v in variables}
    out = _out(args)
    atomic_write_npz(out / "neurons.npz", {"coef": sel["coef"], "r2": sel["r2"], "tokens": b.tokens})
    atomic_write_csv(out / "neurons.csv", [
        {"layer": sel["layers"][li], "neuron": n, **{v: float(sel["coef"][li, n, k]) for k, v in enumerate(variables)},
         "r2": float(sel["r2"][li, n])} for li in range(sel["coef"].shape[0]) for n in range(sel["coef"].shape[1])])
    atomic_write_json(out / "neurons.json", _provenance(args, info, task, {
        "position": args.position, "top": sel["top"], "ablating_top": effects, "baseline": ab.baseline,
        "tokens": b.tokens}))
    _figures(args, out, command_figures.neurons(sel, info.get("name"), args.n))
    print(f"neuron selectivity at '{args.position}' on {args.n} trials (standardised betas):")
    for v in variables:
        t = sel["top"][v][:3]
        print(f"  {v}: top " + ", ".join(f"L{l}N{n} ({c:+.2f})" for l, n, c in t) +
              f"; mean-ablating the top {args.top_k}: accuracy {effects[v]['accuracy']:.3f} "
              f"(baseline {ab.baseline['accuracy']:.3f})")
    print(f"wrote {out}")


def cmd_compare(args: argparse.Namespace) -> None:
    from experiments import stages
    from interp.compare import check_same_shape
    from interp.store import atomic_write_json, portable
    from interp.stats import mean_ci

    _check(args)
    base, binfo = load(args.base, args.device)
    models = {}
    infos = []
    for kind, paths in (("finetuned", args.finetuned), ("scratch", args.scratch or [])):
        for i, p in enumerate(paths):
            models[f"{kind}-s{i}"], info = load(p, args.device)
            infos.append(info)
            check_same_shape(models[f"{kind}-s{i}"], base, f"comparing {p} with the base")
    task = task_for(args, infos[0])  # --config / --task, else the first fine-tuned model's own task
    _, reps = stages.representations_of({**models, "base": base}, task, args.n, args.seed)
    from tasks.registry import generate

    rel = generate(task, args.n, seed=args.seed + 1, tokenizer=base.tokenizer, split="test")
    per_model = {mid: {"cka_base": stages.cka_with(reps[mid], reps["base"]),
                       "reliance_base": stages.reliance(m, base, rel), "weight_change": stages.weight_change(m, base)}
                 for mid, m in models.items()}
    summary = {}
    for kind in ("finetuned", "scratch"):
        per = [v for k, v in per_model.items() if k.startswith(kind)]
        if per:
            cka = mean_ci(np.array([p["cka_base"]["debiased"]["resid"]["answer"] for p in per]))
            rev = mean_ci(np.array([[x["accuracy_retained"] for x in p["reliance_base"]["reversion_layer"]]
                                    for p in per]))
            summary[kind] = {"cka_resid_answer": [v.tolist() for v in cka], "reversion_layer": [v.tolist() for v in rev]}
    out = _out(args)
    atomic_write_json(out / "compare.json", _provenance(args, binfo, task, {
        "finetuned": [portable(p, out) for p in args.finetuned], "scratch": [portable(p, out) for p in args.scratch or []],
        "base": portable(args.base, out), "summary": summary, "per_model": per_model,
        "trials": {"cka": {"split": "test", "n": args.n, "seed": args.seed},
                   "reliance": {"split": "test", "n": args.n, "seed": args.seed + 1}}}))
    _figures(args, out, command_figures.compare(per_model))
    for kind, s in summary.items():
        print(f"{kind}: debiased CKA with the base per layer (mean over models) "
              + " ".join(f"{v:.2f}" for v in s["cka_resid_answer"][0]))
        print(f"{kind}: accuracy kept (chance-corrected) reverting one layer to the base "
              + " ".join(f"{v:.2f}" for v in s["reversion_layer"][0]))
    print(f"wrote {out}")


def cmd_discover(args: argparse.Namespace) -> None:
    from experiments import stages
    from interp.store import atomic_write_json

    _check(args)
    model, info = load(args.checkpoint, args.device)
    task = task_for(args, info)
    r = stages.discover(model, task, args.corruption, args.n, args.seed, args.method, args.ablation,
                        n_random=args.random, level=args.level, overlap_fraction=args.fraction, progress=True)
    if args.base:
        base_ranked = stages.base_ranking(load(args.base, args.device)[0], task, args.corruption, args.n, args.seed,
                                          args.method)
        k = len(r["overlap_set"])
        r["base_top"] = base_ranked[:k]
        r["share_in_base_top"] = {"value": len(set(r["overlap_set"]) & set(base_ranked[:k])) / k,
                                  "chance": k / r["n_nodes"]}
    out = _out(args)
    atomic_write_json(out / "circuit.json", _provenance(args, info, task, r))
    _figures(args, out, command_figures.circuit(r, info.get("name")))
    for level in ("node", "edge"):
        c = r[f"{level}_curve"]
        reached = c["level_reached"]
        rc = np.asarray(c["random_cpr"], float)
        print(f"{level}s: m(full) {c['m_full']:.3f}, m(empty) {c['m_empty']:.3f}; CPR {c['cpr']:.3f} (random "
              f"{np.mean(rc):.3f}), CMD {c['cmd']:.3f}; size at {args.level:.0%}: "
              f"{reached['size'] if reached['size'] is not None else 'not reached by a proper sub-circuit'}"
              if c["defined"] else f"{level}s: faithfulness undefined (m(full) - m(empty) too small)")
    print(f"top {len(r['overlap_set'])} nodes: {', '.join(r['overlap_set'])}")
    if args.base:
        s = r["share_in_base_top"]
        print(f"share among the base's top {len(r['overlap_set'])}: {s['value']:.2f} (chance {s['chance']:.2f})")
    print(f"exact-patching check of the top nodes: Spearman {r['exact_check']['spearman']:.2f}; wrote {out}")


def cmd_run(args: argparse.Namespace) -> None:
    import time

    from experiments.pipeline import Run, load_run_config

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
    report = Run(cfg, out, overwrite=args.overwrite, progress=not args.quiet, log=print).run()
    print(f"finished in {time.time() - t0:.0f} s; report: {report}")


def _executor_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    ex = {k: v for k, v in (("kind", args.executor), ("workers", args.workers), ("retries", args.retries))
          if v is not None}
    return {"executor": ex} if ex else {}


def cmd_suite(args: argparse.Namespace) -> None:
    from experiments.suite import run_suite

    page = run_suite(args.configs, Path(args.out), overwrite=args.overwrite, progress=not args.quiet, log=print,
                     overrides=_executor_overrides(args))
    print(f"suite page: {page}")


def cmd_export(args: argparse.Namespace) -> None:
    from experiments.figures import build_figures, export_run

    run = Path(args.run_dir)
    if not (run / "run.json").exists():
        raise FileNotFoundError(f"{run} is not a finished run directory (run.json missing)")
    r = export_run(run, build_figures(run), args.format, strict=True)
    print(f"wrote {len(r['written'])} files under {run / 'figures'}")


def executor_options(p: argparse.ArgumentParser) -> None:
    from experiments.executors import KINDS

    p.add_argument("--executor", choices=list(KINDS), help="where training jobs run (default: the config's "
                   "[executor] kind, else serial); slurm options live in the config's [executor] section")
    p.add_argument("--workers", type=int, help="jobs at once for local / submitit-local / ray")
    p.add_argument("--retries", type=int, help="further attempts of a job that dies or fails (default 1)")


def register(sub: Any) -> None:
    from interp.patching import VARIANTS
    from tasks.registry import TASKS

    def figures(p: argparse.ArgumentParser) -> None:
        p.add_argument("--figures", nargs="+", default=["html"], choices=list(command_figures.FORMATS),
                       help="figure formats under OUT/figures (default html; png/svg need a Chromium)")

    def common(p: argparse.ArgumentParser, n: int = 64) -> None:
        p.add_argument("checkpoint", help="checkpoint directory or local HF GPT-2 directory")
        p.add_argument("--config", help="task config (default: the checkpoint's own)")
        p.add_argument("--task", choices=list(TASKS), help="a registered task with its default config (default: "
                       "the checkpoint's own)")
        p.add_argument("--n", type=int, default=n, help="trials (or trial pairs)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
        p.add_argument("--out", required=True)
        p.add_argument("--overwrite", action="store_true")
        figures(p)

    p = sub.add_parser("patch", help="exact activation patching")
    common(p)
    p.add_argument("--what", default="heads", choices=list(VARIANTS))
    p.add_argument("--corruption", help="one of the task's corruptions (default: the task's own default)")
    p.add_argument("--direction", default="denoise", choices=["denoise", "noise"])
    p.set_defaults(func=cmd_patch)

    p = sub.add_parser("attribute", help="direct logit attribution and logit lens")
    common(p)
    p.add_argument("--neuron-layers", type=int, nargs="*", default=[])
    p.set_defaults(func=cmd_attribute)

    p = sub.add_parser("ablate", help="head (and neuron) ablation")
    common(p)
    p.add_argument("--method", default="mean", choices=["zero", "mean", "resample"])
    p.add_argument("--heads", nargs="*", help="a set of heads to ablate together, as LAYER.HEAD")
    p.add_argument("--neurons", nargs="*", help="a set of neurons to ablate together, as LAYER.NEURON")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("neurons", help="neuron selectivity to task variables")
    common(p, n=256)
    p.add_argument("--position", default="answer")
    p.add_argument("--layers", type=int, nargs="*")
    p.add_argument("--top-k", type=int, default=10)
    p.set_defaults(func=cmd_neurons)

    p = sub.add_parser("compare", help="fine-tuned vs scratch reliance on the base, per layer")
    p.add_argument("--finetuned", nargs="+", required=True)
    p.add_argument("--scratch", nargs="*")
    p.add_argument("--base", required=True)
    p.add_argument("--config", help="task config (default: the first fine-tuned model's own)")
    p.add_argument("--task", choices=list(TASKS), help="a registered task with its default config")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    figures(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("discover", help="circuit discovery (EAP / EAP-IG) with faithfulness")
    common(p, n=32)
    p.add_argument("--method", default="eap-ig", choices=["eap", "eap-ig"])
    p.add_argument("--corruption", help="a corruption of the task that changes the answer (default: the task's)")
    p.add_argument("--ablation", default="corrupted", choices=["corrupted", "mean", "resample"])
    p.add_argument("--base", help="pretrained base, to rank the same nodes in it")
    p.add_argument("--random", type=int, default=20, help="random circuits per size (baseline)")
    p.add_argument("--level", type=float, default=0.8, help="faithfulness level for 'size at level'")
    p.add_argument("--fraction", type=float, default=0.2, help="share of nodes listed as the circuit's top set")
    p.set_defaults(func=cmd_discover, needs_flip=True)

    p = sub.add_parser("run", help="the whole fine-tuned vs scratch experiment and its report")
    p.add_argument("config", nargs="?", help="run config (default: the packaged experiments/configs/default.toml)")
    p.add_argument("--out", help="run directory (default: runs/<name>)")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    p.add_argument("--device")
    p.add_argument("--base", help="pretrained base (default: the shipped cogbase-6l); e.g. gpt2 on a GPU")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
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
