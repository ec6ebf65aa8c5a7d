"""Fault injection for the executor tests, through the job runner's documented hook
(`experiments.jobs.runner`, $COGCIRCUITS_JOB_HOOK="this file:before_job"): the first attempt of the job named in
$KILL_JOB_ONCE dies as if killed, midway through its training, so that a retry must resume it. In the coordinator's
own process (the serial executor) it raises instead of ending the process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TARGET_ENV = "KILL_JOB_ONCE"


def before_job(run_dir: Path, job: Any, own_process: bool) -> None:
    from experiments.jobs.runner import run_train

    if os.environ.get(TARGET_ENV) != job.id:
        return
    marker = Path(run_dir) / "jobs" / f"{job.id}.killed-once"
    if marker.exists():
        return
    marker.write_text("killed once by the testing hook\n")
    if job.kind == "train":
        run_train(Path(run_dir), job, False, None, stop_after=max(1, job.inputs["train"]["steps"] // 2))
    if not own_process:
        raise RuntimeError("killed by the testing hook")
    os._exit(137)
