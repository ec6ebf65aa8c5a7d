"""Run a step's jobs on an executor: submit up to its capacity, watch, retry, report (the engines schedule).

A job's attempt is charged when the job itself fails or ends without its outputs. When a worker of the local
process pool dies, every job running in that pool breaks with it and nobody knows which one was at fault: the
broken jobs are not charged; each is queued again to run ALONE, so that a job that breaks the pool again is the
culprit and is charged. A job that keeps failing is reported with its log path; every finished job stays finished.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.jobs.executors import ExecutorConfig, make_executor
from experiments.jobs.spec import Job, JobStatus, jobs_dir, write_job, write_status


class JobsFailed(RuntimeError):
    """Some jobs kept failing; every job that finished is kept. `status` holds every job's record."""

    def __init__(self, message: str, status: dict[str, JobStatus]) -> None:
        super().__init__(message)
        self.status = status


def _initial_status(run_dir: Path, job: Job, kind: str) -> JobStatus:
    """A finished job keeps the record of where it ran; one finished without a record is 'skipped'."""
    path = jobs_dir(run_dir) / f"{job.id}.status.json"
    if job.done(run_dir):
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("state") == "done":
                return JobStatus(**{k: v for k, v in old.items() if k in JobStatus.__dataclass_fields__})
        return JobStatus(job.id, state="skipped", executor=kind, log=f"jobs/{job.id}.log")
    return JobStatus(job.id, executor=kind, log=f"jobs/{job.id}.log")


class _Dispatch:
    def __init__(self, run_dir: Path, cfg: ExecutorConfig, status: dict[str, JobStatus], queue: deque[Job],
                 log: Callable[[str], None]) -> None:
        self.run_dir, self.cfg, self.status, self.queue, self.log = run_dir, cfg, status, queue, log
        self.running: dict[str, list[Any]] = {}  # id -> [job, handle, start time, ran alone so far]
        self.alone: set[str] = set()  # jobs that broke a pool beside others: they run alone from now on

    def fill(self, ex: Any) -> None:
        while self.queue and len(self.running) < ex.capacity:
            job = self.queue[0]
            if job.id in self.alone and self.running:
                return  # a suspect waits until it can run alone
            if any(j in self.alone for j in self.running):
                return
            self.queue.popleft()
            st = self.status[job.id]
            st.attempts, st.state, st.executor = st.attempts + 1, "running", self.cfg.kind
            self.log(f"  {job.id}" + (f" (attempt {st.attempts})" if st.attempts > 1 else ""))
            write_status(self.run_dir, st)
            for other in self.running.values():
                other[3] = False  # it no longer runs alone
            t0, alone = time.time(), not self.running
            handle = ex.submit(job)
            st.refs.append(ex.ref(handle))
            self.running[job.id] = [job, handle, t0, alone]

    def check(self, ex: Any) -> None:
        for jid, (job, handle, t0, alone) in list(self.running.items()):
            state, value = ex.poll(handle)
            if state == "running":
                continue
            del self.running[jid]
            st = self.status[jid]
            st.wall_s = round(time.time() - t0, 3)
            if job.done(self.run_dir) and state in ("done", "interrupted"):
                st.state, st.error = "done", ""
            elif state == "interrupted" and not alone:
                st.attempts -= 1  # not charged: it may have been a bystander
                st.state, st.error = "queued", str(value)
                self.alone.add(jid)
                self.queue.appendleft(job)
            else:
                st.error = str(value) if state != "done" else "finished without its outputs"
                st.state = "queued" if st.attempts <= self.cfg.retries else "failed"
                if st.state == "queued":
                    self.queue.append(job)
            write_status(self.run_dir, st)


def run_jobs(run_dir: Path, jobs: list[Job], cfg: ExecutorConfig, progress: bool = True,
             log: Callable[[str], None] | None = None) -> dict[str, JobStatus]:
    """Write the jobs, run those not done yet on `cfg`'s executor (retrying each up to cfg.retries times) and
    return every job's status. Raises JobsFailed naming each job that kept failing and its log."""
    log = log or (lambda s: None)
    run_dir = Path(run_dir)
    status: dict[str, JobStatus] = {}
    queue: deque[Job] = deque()
    for job in jobs:
        write_job(run_dir, job)
        status[job.id] = _initial_status(run_dir, job, cfg.kind)
        if status[job.id].state not in ("done", "skipped"):
            queue.append(job)
    if not queue:
        return status
    d = _Dispatch(run_dir, cfg, status, queue, log)
    ex = make_executor(cfg, run_dir, progress)
    shown = ""
    try:
        while d.queue or d.running:
            d.fill(ex)
            d.check(ex)
            line = summary(status)
            if line != shown:
                log(f"  jobs: {line}")
                shown = line
            if d.running:
                time.sleep(cfg.poll_s)
    finally:
        ex.close()
    failed = [s for s in status.values() if s.state == "failed"]
    if failed:
        raise JobsFailed("; ".join(f"job {s.id} failed {s.attempts} times ({s.error}); log: {s.log}"
                                   for s in failed), status)
    return status


def summary(status: dict[str, JobStatus]) -> str:
    """One line: how many jobs are queued, running, done, failed (and were done before any record)."""
    states = ("queued", "running", "done", "failed", "skipped")
    return ", ".join(f"{sum(s.state == k for s in status.values())} {k}" for k in states)
