"""`cogcircuits controls CONFIG --out DIR`: the planted-reuse controls and the validation of the reuse metrics."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def cmd_controls(args: argparse.Namespace) -> None:
    from experiments.controls.config import load_controls_config  # lazy: CLI start-up (no torch before a command needs it)
    from experiments.controls.runner import run_controls  # lazy: CLI start-up (no torch before a command needs it)

    cfg = load_controls_config(args.config)
    out = Path(args.out) if args.out else Path("runs") / cfg["controls"].name
    t0 = time.time()
    rec = run_controls(cfg, out, overwrite=args.overwrite, progress=not args.quiet, log=print)
    print(f"\n{rec.rule}\n")
    for c in rec.checks:
        seps = ", ".join(f"vs {arm}: {'separated' if s else 'not separated'}" for arm, s in c.separated.items())
        print(f"{c.metric:28s} {'VALIDATED' if c.validated else 'NOT VALIDATED':14s} ({seps})")
    print(f"\nfinished in {time.time() - t0:.0f} s; table: {out / 'validation.md'}")


def register(sub: Any) -> None:
    p = sub.add_parser("controls", help="planted-reuse controls: which reuse metrics detect reuse where it is planted")
    p.add_argument("config", help="a controls config, e.g. experiments/configs/controls.toml")
    p.add_argument("--out", help="output folder (default: runs/<name>); a rerun resumes it")
    p.add_argument("--overwrite", action="store_true", help="replace controls made with another config")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_controls)
