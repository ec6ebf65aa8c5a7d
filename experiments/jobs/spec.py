"""The independent units of a run as jobs: explicit inputs and outputs in the run folder, runnable by any
executor (`experiments.jobs.executors`), in any process, on any machine that sees the run folder.

runs/<name>/jobs/<id>.json         the job: kind, inputs (JSON only), outputs (paths relative to the run folder)
runs/<name>/jobs/<id>.status.json  attempts, state, executor and its job id, wall time, log path (relative)
runs/<name>/jobs/<id>.log          what the job printed, when an executor runs it outside this process

A job is done when all its outputs exist; a rerun of the run skips done jobs, so a killed coordinator resumes
without redoing them, and a retried training resumes from its last saved state. Nothing here unpickles: a
worker receives only the run folder and the job id, and reads the job's JSON.

Running a job is `experiments.jobs.runner`'s (`python -m experiments.jobs RUN_DIR JOB_ID`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.core.record import Record
from interp.store import atomic_write_json


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


@dataclass(frozen=True, kw_only=True)
class JobsRecord(Record):
    """results/jobs.json: the executor's settings and the last status of every job the run has run."""
    executor: dict[str, Any]
    jobs: tuple[JobStatus, ...]


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
