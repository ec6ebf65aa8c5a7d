"""Running one job (`experiments.jobs.spec`) in this process: what the serial executor does in the coordinator
and what every worker process does (`python -m experiments.jobs RUN_DIR JOB_ID`).

The job's kind picks its runner (`RUNNERS`: training here, per-model analyses and circuits in
`experiments.jobs.kinds`). A run's outputs never depend on the process a job ran in (`experiments.jobs.executors`).

Hook interface (documented, off unless set): `COGCIRCUITS_JOB_HOOK="path/to/file.py:function"` calls
`function(run_dir, job, own_process)` before each job. Fault injection for tests lives in the test tree
(`tests/helpers/kill_once.py`) and reaches worker processes through this variable only.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from experiments.core.config import build, build_task
from experiments.jobs import kinds
from experiments.jobs.spec import Job, jobs_dir, read_job
from experiments.training.train import ModelConfig, TrainConfig, train

HOOK_ENV = "COGCIRCUITS_JOB_HOOK"


def train_config(run_dir: Path, job: Job, device: str | None) -> dict[str, Any]:
    """A training job's config, its base resolved against the run folder and `device` (if given) imposed."""
    inp = job.inputs
    model = dict(inp["model"], base=kinds.resolve_base(inp["model"]["base"], run_dir))
    tcfg = dict(inp["train"], **({"device": device} if device else {}))
    return {"task": build_task(inp["task"], f"job {job.id} task"), "model": build(ModelConfig, model, "job model"),
            "train": build(TrainConfig, tcfg, f"job {job.id} train")}


def run_train(run_dir: Path, job: Job, progress: bool, device: str | None, stop_after: int | None = None) -> None:
    out = Path(run_dir) / "models" / job.inputs["model_id"]
    train(train_config(run_dir, job, device), out, resume=out.exists(), progress=progress, stop_after=stop_after)


RUNNERS: dict[str, Callable[[Path, Job, bool, str | None], None]] = {
    "train": run_train, "evaluate": kinds.run_evaluate, "analyse": kinds.run_analysis, "compare": kinds.run_compare,
    "circuit": kinds.run_circuit, "attention": kinds.run_attention}


def _hook() -> Callable[[Path, Job, bool], None] | None:
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return None
    path, _, name = spec.rpartition(":")
    mod_spec = importlib.util.spec_from_file_location("cogcircuits_job_hook", path)
    if not path or mod_spec is None or mod_spec.loader is None:
        raise RuntimeError(f"${HOOK_ENV}={spec!r}: expected path/to/file.py:function")
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return getattr(mod, name)


def run_job(run_dir: str | Path, job_id: str, progress: bool = False, device: str | None = None,
            threads: int | None = None, own_process: bool = True) -> float:
    """Run one job in this process; returns its wall time. Raises when it fails or leaves an output missing.
    `own_process` False: the caller is the coordinator itself (the serial executor)."""
    run_dir = Path(run_dir)
    job = read_job(run_dir, job_id)
    if threads:
        torch.set_num_threads(threads)
    hook = _hook()
    if hook is not None:
        hook(run_dir, job, own_process)
    t0 = time.time()
    RUNNERS[job.kind](run_dir, job, progress, device)
    missing = [o for o in job.outputs if not (run_dir / o).exists()]
    if missing:
        raise RuntimeError(f"job {job_id} finished without writing {', '.join(missing)}")
    return time.time() - t0


def run_job_logged(run_dir: str, job_id: str, device: str | None = None, threads: int | None = None) -> float:
    """`run_job` with stdout and stderr appended to jobs/<id>.log (what a worker process runs)."""
    log = jobs_dir(Path(run_dir)) / f"{job_id}.log"
    with open(log, "a", buffering=1) as f:
        fd_out, fd_err = os.dup(1), os.dup(2)
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            return run_job(run_dir, job_id, device=device, threads=threads)
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(fd_out, 1)
            os.dup2(fd_err, 2)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m experiments.jobs RUN_DIR JOB_ID", file=sys.stderr)
        return 2
    run_job(args[0], args[1])
    return 0
