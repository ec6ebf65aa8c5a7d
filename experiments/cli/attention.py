"""`cogcircuits attention`: circuitsvis views of chosen heads, or of the top K by a score computed on task pairs, on a
task trial (clean and corrupted side by side) or on any text, written as one offline HTML file.

Every check that needs no computation (output file, head syntax, trial index, empty prompt) runs before the model
is loaded; those that need the model (head and context sizes) run before anything is scored.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _refuse_output(out: Path, overwrite: bool) -> None:
    from interp.store import OutputExistsError  # lazy: CLI start-up (no torch before a command needs it)

    if out.is_dir():
        raise OutputExistsError(f"--out {out} is a directory: give the HTML file to write (e.g. attention.html)")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output file {out} already exists: pass --overwrite to replace it")


def _check_args(args: argparse.Namespace) -> list[tuple[int, int]] | None:
    from experiments.analysis.attention import parse_heads  # lazy: CLI start-up (no torch before a command needs it)

    _refuse_output(Path(args.out), args.overwrite)
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.top is not None and args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    if args.trial is not None and not 0 <= args.trial < args.n:
        raise ValueError(f"--trial {args.trial} is out of range: the trials are the --n {args.n} pairs 0..{args.n - 1}"
                         " (pass a larger --n)")
    if args.prompt is not None and not args.prompt.strip():
        raise ValueError("--prompt is empty")
    return parse_heads(args.heads) if args.heads is not None else None


def cmd_attention(args: argparse.Namespace) -> None:
    from experiments.analysis import attention as A  # lazy: CLI start-up (no torch before a command needs it)
    from experiments.cli.analyses import load, task_for  # lazy: CLI start-up (no torch before a command needs it)
    from interp.store import atomic_write_text  # lazy: CLI start-up (no torch before a command needs it)

    heads = _check_args(args)
    model, info = load(args.checkpoint, args.device)
    task = task_for(args, info)
    page = A.attention_page_of(model, info, task, heads=heads, top=args.top, by=args.by, trial=args.trial,
                               n=args.n, seed=args.seed, corruption=args.corruption, prompt=args.prompt)
    atomic_write_text(Path(args.out), page.html)
    scores = page.scores
    print(f"heads {', '.join(page.names)}" + (f" (by {scores.by}: " + ", ".join(f"{scores.values[h]:+.3f}"
                                                                                  for h in page.heads) + ")"
                                               if scores is not None else ""))
    print(f"wrote {args.out}")


def register(sub: Any) -> None:
    from experiments.analysis.attention import SCORES  # lazy: CLI start-up (no torch before a command needs it)
    from tasks.registry import TASKS  # lazy: CLI start-up (no torch before a command needs it)

    p = sub.add_parser("attention", help="circuitsvis views of chosen or top heads on a task trial or any text")
    p.add_argument("checkpoint", help="checkpoint directory, local HF GPT-2 directory or shipped base name")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--trial", type=int, help="show pair I (0-based) of the --n task pairs, clean and corrupted")
    what.add_argument("--prompt", help="show this text (no corrupted version)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--heads", help="heads to show, e.g. L0H2,L3H1")
    which.add_argument("--top", type=int, help="show the K heads with the largest |score| (default 3)")
    p.add_argument("--by", choices=list(SCORES), help="score ranking the heads for --top (default patching); with "
                   "--heads, shown beside them")
    p.add_argument("--corruption", help="one of the task's corruptions (default: the task's own default)")
    p.add_argument("--n", type=int, default=16, help="task pairs drawn for --trial and for the scores")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="task config (default: the checkpoint's own)")
    p.add_argument("--task", choices=list(TASKS), help="a registered task with its default config")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_attention)
