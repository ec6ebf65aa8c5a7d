"""The independent units of a run as jobs: explicit inputs and outputs in the run folder, runnable by any
executor (`experiments.executors`), in any process, on any machine that sees the run folder.

runs/<name>/jobs/<id>.json         the job: kind, inputs (JSON only), outputs (paths relative to the run folder)
runs/<name>/jobs/<id>.status.json  attempts, state, executor and its job id, wall time, log path (relative)
runs/<name>/jobs/<id>.log          what the job printed, when an executor runs it outside this process

A job is done when all its outputs exist; a rerun of the run skips done jobs, so a killed coordinator resumes
without redoing them, and a retried training resumes from its last saved state. Nothing here unpickles: a
worker receives only the run folder and the job id, and reads the job's JSON.

`python -m experiments.jobs RUN_DIR JOB_ID` runs one job (what a cluster worker does).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.store import atomic_write_json

KILL_ONCE_ENV = "COGCIRCUITS_KILL_JOB_ONCE"  # testing hook: "<job id>" makes that job's first attempt die


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    inputs: dict[str, Any]
    outputs: tuple[str, ...]

    def done(self, run_dir: Path) -> bool:
        return all((Path(run_dir) / o).exists() for o in self.outputs)


@dataclass
class JobStatus:
    """What the coordinator recorded about one job (also stored as jobs/<id>.status.json)."""

    id: str
    state: str = "queued"  # queued, running, done, failed, skipped (done before this coordinator started)
    attempts: int = 0  # charged attempts: the job failed, or ended without its outputs, that many times
    executor: str = ""
    refs: list[str] = field(default_factory=list)  # the executor's job id of each attempt
    wall_s: float | None = None
    log: str = ""
    error: str = ""


def jobs_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "jobs"


def write_job(run_dir: Path, job: Job) -> None:
    atomic_write_json(jobs_dir(run_dir) / f"{job.id}.json", {"id": job.id, "kind": job.kind, "inputs": job.inputs,
                                                             "outputs": list(job.outputs)})


def read_job(run_dir: Path, job_id: str) -> Job:
    d = json.loads((jobs_dir(run_dir) / f"{job_id}.json").read_text())
    return Job(d["id"], d["kind"], d["inputs"], tuple(d["outputs"]))


def write_status(run_dir: Path, st: JobStatus) -> None:
    atomic_write_json(jobs_dir(run_dir) / f"{st.id}.status.json", st.__dict__)


def train_job(mid: str, task: dict[str, Any], model: dict[str, Any], train: dict[str, Any]) -> Job:
    """One training (one init, seed, base and task) into models/<mid>/."""
    return Job(f"train-{mid}", "train", {"model_id": mid, "task": task, "model": model, "train": train},
               (f"models/{mid}/checkpoint.json",))


def _resolve_base(base: str, run_dir: Path) -> str:
    """A base recorded relative to the run folder (as every output records paths) back to a usable path."""
    p = Path(run_dir) / base
    return str(p) if not os.path.isabs(base) and p.exists() else base


def _train_config(run_dir: Path, job: Job, device: str | None) -> dict[str, Any]:
    """A training job's config, its base resolved against the run folder and `device` (if given) imposed."""
    from experiments.config import build, build_task
    from experiments.train import ModelConfig, TrainConfig

    inp = job.inputs
    model = dict(inp["model"], base=_resolve_base(inp["model"]["base"], run_dir))
    tcfg = dict(inp["train"], **({"device": device} if device else {}))
    return {"task": build_task(inp["task"], f"job {job.id} task"), "model": build(ModelConfig, model, "job model"),
            "train": build(TrainConfig, tcfg, f"job {job.id} train")}


def _run_train(run_dir: Path, job: Job, progress: bool, device: str | None,
               stop_after: int | None = None) -> None:
    from experiments.train import train

    out = Path(run_dir) / "models" / job.inputs["model_id"]
    train(_train_config(run_dir, job, device), out, resume=out.exists(), progress=progress, stop_after=stop_after)


def _runner(kind: str) -> Any:
    if kind == "train":
        return _run_train
    from experiments import model_jobs

    return {"analyse": model_jobs.run_analysis, "circuit": model_jobs.run_circuit}[kind]


def run_job(run_dir: str | Path, job_id: str, progress: bool = False, device: str | None = None,
            threads: int | None = None, own_process: bool = True) -> float:
    """Run one job in this process; returns its wall time. Raises when it fails or leaves an output missing.
    `own_process` False: the caller is the coordinator itself (the serial executor)."""
    run_dir = Path(run_dir)
    job = read_job(run_dir, job_id)
    if threads:
        import torch

        torch.set_num_threads(threads)
    _maybe_die(run_dir, job_id, own_process)
    t0 = time.time()
    _runner(job.kind)(run_dir, job, progress, device)
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


def _maybe_die(run_dir: Path, job_id: str, own_process: bool) -> None:
    """Testing hook: the first attempt of the job named in $COGCIRCUITS_KILL_JOB_ONCE dies as if killed, midway
    through its training, so that a retry must resume it (in the coordinator's own process it raises instead)."""
    if os.environ.get(KILL_ONCE_ENV) != job_id:
        return
    marker = jobs_dir(run_dir) / f"{job_id}.killed-once"
    if marker.exists():
        return
    marker.write_text("killed once by the testing hook\n")
    job = read_job(run_dir, job_id)
    if job.kind == "train":
        _run_train(run_dir, job, False, None, stop_after=max(1, job.inputs["train"]["steps"] // 2))
    if not own_process:
        raise RuntimeError("killed by the testing hook")
    os._exit(137)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m experiments.jobs RUN_DIR JOB_ID", file=sys.stderr)
        return 2
    run_job(args[0], args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
