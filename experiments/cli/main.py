"""The `cogcircuits` command: parse, call the library, print. Nothing else lives here.

Every expected failure (bad config, bad input, missing file, existing output) prints one line `error: ...` to
stderr and exits with status 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from experiments.cli.analyses import register as register_analyses
from experiments.cli.attention import register as register_attention
from experiments.cli.controls import register as register_controls

EXIT_USAGE = 2


def _overrides(args: argparse.Namespace, mapping: dict[str, tuple[str, str]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for attr, (section, key) in mapping.items():
        v = getattr(args, attr, None)
        if v is not None:
            out.setdefault(section, {})[key] = v
    return out


def cmd_task_list(args: argparse.Namespace) -> None:
    from tasks.registry import TASKS  # lazy: CLI start-up (no torch before a command needs it)

    for name, t in TASKS.items():
        print(f"{name:<24} {t.summary}")


def cmd_task_show(args: argparse.Namespace) -> None:
    from experiments.core.config import to_dict  # lazy: CLI start-up (no torch before a command needs it)
    from experiments.training.train import load_config  # lazy: CLI start-up (no torch before a command needs it)
    from interp.models import base_arch_and_tokenizer  # lazy: CLI start-up (no torch before a command needs it)
    from tasks.base import render_text  # lazy: CLI start-up (no torch before a command needs it)
    from tasks.registry import bayes_optimal_accuracy, generate, task_of  # lazy: CLI start-up (no torch before a command needs it)

    args.task = args.name
    ov = _overrides(args, {"base": ("model", "base"), "task": ("task", "name")})
    cfg = load_config(args.config, ov)
    task, t = cfg["task"], task_of(cfg["task"])
    _, tok = base_arch_and_tokenizer(cfg["model"].base)
    b = generate(task, args.n, seed=args.seed, tokenizer=tok, split=args.split)
    print(f"{t.name}: {t.summary}\nNeuroGym: {t.neurogym}\nshortcut (incongruent trials are where it fails): "
          f"{t.shortcut}\ncorruptions (default {t.default_corruption}):")
    for k, c in t.corruptions.items():
        print(f"  {k}: {c.description} [{c.pairs}]")
    print(f"config: {to_dict(task)}\n{args.n} {args.split} trials:")
    for i in range(len(b)):
        shown = {k: b.meta[key][i].tolist() for k, key in b.variables.items()}
        print(f"  {render_text(b, tok, i)!r} -> {tok.decode([int(b.answer_ids[i])])!r}   "
              f"{shown} congruent={bool(b.meta['congruent'][i])}")
    print(f"positions: {' '.join(b.position_labels)}")
    print(f"Bayes-optimal accuracy: {bayes_optimal_accuracy(task):.4f}")


def cmd_train(args: argparse.Namespace) -> None:
    from experiments.training.train import load_config, train  # lazy: CLI start-up (no torch before a command needs it)

    ov = _overrides(args, {"task": ("task", "name"), "init": ("model", "init"), "base": ("model", "base"),
                           "seed": ("train", "seed"),
                           "steps": ("train", "steps"), "device": ("train", "device")})
    if args.bf16:
        ov.setdefault("train", {})["bf16"] = True
    if args.steps is not None:  # a --steps shorter than the warmup shortens the warmup to match
        warmup = load_config(args.config, {k: v for k, v in ov.items() if k != "train"})["train"].warmup
        if warmup > args.steps:
            ov["train"]["warmup"] = args.steps
    cfg = load_config(args.config, ov)
    m = train(cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    if m.get("resumed_from_step") is not None:
        print(f"resumed from the state saved at step {m['resumed_from_step']}: trained steps "
              f"{m['resumed_from_step'] + 1}..{m['steps']} in this process")
    print(f"trained {cfg['model'].init} model for {m['steps']} steps in {m['wall_s']:.1f} s: "
          f"test accuracy {m['test_accuracy']:.4f}, mean logit diff {m['test_logit_diff']:.3f}"
          + (f", generalisation accuracy {m['gen_accuracy']:.4f}" if "gen_accuracy" in m else ""))
    print(f"checkpoint: {args.out}")


def cmd_eval(args: argparse.Namespace) -> None:
    from experiments import api  # lazy: CLI start-up (no torch before a command needs it)
    from experiments.training.train import load_config  # lazy: CLI start-up (no torch before a command needs it)

    task = load_config(args.config)["task"] if args.config else None
    e = api.evaluate(api.load(args.checkpoint, args.device, task=task), args.n, args.seed, args.split)
    r = {"split": e.split, "n": e.n, "seed": e.seed, "accuracy": e.accuracy,
         "incongruent_accuracy": e.incongruent_accuracy, "logit_diff": e.logit_diff,
         "by_condition": list(e.by_condition)}
    print(f"{args.checkpoint} [{args.split}, n={args.n}]: accuracy {r['accuracy']:.4f}, "
          f"mean logit diff {r['logit_diff']:.3f}")
    from interp.metrics import condition_label  # lazy: CLI start-up (no torch before a command needs it)

    print(f"{'condition':<40} {'n':>5} {'accuracy':>8}")
    for row in r["by_condition"]:
        print(f"{condition_label(row):<40} {row['n']:>5} {row['accuracy']:>8.3f}")
    if args.json:
        print(json.dumps(r))


def cmd_corpus(args: argparse.Namespace) -> None:
    from experiments.training.corpus import prepare  # lazy: CLI start-up (no torch before a command needs it)

    m = prepare(Path(args.out), install=args.install)
    for s in m["sources"]:
        print(f"{s['name']:>9}: {s['chars']:>11,} chars ({s['package']}; {s['licence']})")
    print(f"total: {m['total_chars']:,} chars in {args.out}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from experiments.training.pretrain import load_config, pretrain  # lazy: CLI start-up (no torch before a command needs it)

    cfg = load_config(args.config, _overrides(args, {"steps": ("pretrain", "steps")}))
    log = pretrain(cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                   corpus_dir=Path(args.corpus) if args.corpus else None)
    print(f"pretrained {log['steps']} steps ({log['tokens_seen']:,} tokens) in {log['wall_s']:.0f} s: "
          f"held-out loss {log['final_heldout_loss']:.3f}, perplexity {log['final_heldout_ppl']:.1f}")


def cmd_base_card(args: argparse.Namespace) -> None:
    from experiments.training.basecard import write_model_card  # lazy: CLI start-up (no torch before a command needs it)

    ev = write_model_card(Path(args.checkpoint), corpus_dir=Path(args.corpus), finetune=args.finetune,
                          progress=not args.quiet)
    print(f"wrote {Path(args.checkpoint) / 'MODEL_CARD.md'}: held-out perplexity {ev['heldout_ppl']:.1f} "
          f"(random twin {ev['random_ppl']:.1f}), counting {ev['counting_accuracy']:.2f} "
          f"(random {ev['random_counting_accuracy']:.2f}), magnitude probe R^2 {ev['probe_r2']:.3f} "
          f"(random {ev['random_probe_r2']:.3f})")


def _add_common_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config (sections [task], [model], [train])")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from the last saved state in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _register_tasks_and_training(sub: Any, tasks: list[str]) -> None:
    task = sub.add_parser("task", help="the registered tasks").add_subparsers(dest="task_cmd", required=True)
    task.add_parser("list", help="the registered tasks").set_defaults(func=cmd_task_list)
    show = task.add_parser("show", help="a task's definition and sample trials with their answers")
    show.add_argument("name", nargs="?", choices=tasks, help="a registered task (default: the config's, "
                      "else ContextDecisionMaking)")
    show.add_argument("--config")
    show.add_argument("--base", help="model whose tokenizer renders the trials (default: the shipped base)")
    show.add_argument("--n", type=int, default=6)
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--split", default="train", choices=["train", "val", "test", "gen"])
    show.set_defaults(func=cmd_task_show)

    tr = sub.add_parser("train", help="fine-tune a pretrained base or train from scratch")
    tr.add_argument("--task", choices=tasks, help="a registered task (default: the config's)")
    tr.add_argument("--init", choices=["pretrained", "scratch"])
    tr.add_argument("--base", help="local HF GPT-2 directory, checkpoint, or hub name (default: shipped base)")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--steps", type=int)
    tr.add_argument("--device", help="auto (default), cpu, cuda, mps")
    tr.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    _add_common_train(tr)
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="accuracy overall and per condition of the task")
    ev.add_argument("checkpoint")
    ev.add_argument("--config", help="task config to evaluate on (default: the checkpoint's own)")
    ev.add_argument("--split", default="test", choices=["train", "val", "test", "gen"])
    ev.add_argument("--n", type=int, default=1000)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    ev.add_argument("--json", action="store_true", help="also print the result as JSON")
    ev.set_defaults(func=cmd_eval)


def _register_pretraining(sub: Any) -> None:
    co = sub.add_parser("corpus", help="extract the generic pretraining corpus from Debian packages")
    co.add_argument("--out", default="data/corpus")
    co.add_argument("--install", action="store_true", help="apt-get install the source packages first")
    co.set_defaults(func=cmd_corpus)

    pt = sub.add_parser("pretrain", help="train the tokenizer and base LM on the corpus")
    pt.add_argument("--steps", type=int)
    pt.add_argument("--corpus", help="corpus directory (default: the config's corpus.dir)")
    _add_common_train(pt)
    pt.set_defaults(func=cmd_pretrain)

    bc = sub.add_parser("base-card", help="measure a pretrained base and write its MODEL_CARD.md")
    bc.add_argument("checkpoint")
    bc.add_argument("--corpus", default="data/corpus")
    bc.add_argument("--finetune", action="store_true", help="also fine-tune vs scratch on the held-out range")
    bc.add_argument("--quiet", action="store_true")
    bc.set_defaults(func=cmd_base_card)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cogcircuits", description=__doc__.splitlines()[0])
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True)

    from tasks.registry import TASKS  # lazy: CLI start-up (no torch before a command needs it)

    _register_tasks_and_training(sub, list(TASKS))
    _register_pretraining(sub)
    register_analyses(sub)
    register_attention(sub)
    register_controls(sub)
    _debug_anywhere(ap)
    return ap


def _debug_anywhere(parser: argparse.ArgumentParser) -> None:
    """Accept --debug after any subcommand too (SUPPRESS keeps a --debug given before it)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                if not any("--debug" in a.option_strings for a in sp._actions):
                    sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                    help="show tracebacks")
                _debug_anywhere(sp)


CUBLAS_DETERMINISTIC = ":4096:8"  # the cuBLAS workspace setting deterministic matmuls need (CUDA >= 10.2)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)  # before CUDA starts (deterministic cuBLAS)
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)  # every command: same seed, same numbers on CPU
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line for every failure; the traceback only with --debug
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
