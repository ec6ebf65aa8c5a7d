"""Where a run's jobs execute: this process (serial), a process pool on this machine (local), a Slurm cluster
through submitit (slurm, or submitit's own local executor for testing), or a Ray cluster (ray). Existing engines
do the scheduling; `experiments.jobs.dispatch.run_jobs` only submits, watches, retries and reports.

Every executor gives each job only the run folder and the job id (`experiments.jobs.runner.run_job`), so results do not
depend on where a job ran, with one caveat: CPU kernels sum in an order that depends on the number of torch threads,
so two executors give bit-identical weights only when their jobs run with the same thread count (serial uses this
process's threads; local gives each worker cores / workers). At different thread counts the weights differ in the
last bits (~1e-7 after a step) and the numbers downstream by as much as training amplifies it: measured on the
shipped base, 12 scratch steps at 1 and at 2 threads gave different weights with both fused and foreach AdamW.
Optional engines are extras: `pip install -e .[slurm]` (submitit), `.[ray]`.
"""

from __future__ import annotations

import os
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.jobs.runner import run_job, run_job_logged
from experiments.jobs.spec import Job, jobs_dir
from tasks.base import check_finite

KINDS = ("serial", "local", "slurm", "submitit-local", "ray")
STEPS = ("train", "evaluate", "analyses", "compare", "circuits", "attention")  # the run steps made of per-model jobs
DEFAULT_STEPS = ("train", "analyses", "circuits")  # those worth an executor: the long ones


@dataclass(frozen=True)
class ExecutorConfig:
    """kind: serial (default: in this process, as `run` always did), local (a process pool of `workers`), slurm
    (submitit on Slurm), submitit-local (submitit's local executor: each job a subprocess; for testing), ray
    (`ray_address`: an existing cluster, empty = start a local one). retries: further attempts of a job that
    dies or fails. Slurm: partition, gpus_per_job, cpus_per_job, mem_gb, time_min, array_parallelism (jobs
    queued at once). steps: which of the run's job steps use this executor (the others run serially here).
    poll_s: seconds between checks of running jobs."""

    kind: str = "serial"
    workers: int = 2
    retries: int = 1
    partition: str = ""
    gpus_per_job: int = 0
    cpus_per_job: int = 2
    mem_gb: int = 16
    time_min: int = 60
    array_parallelism: int = 64
    ray_address: str = ""
    steps: tuple[str, ...] = DEFAULT_STEPS
    poll_s: float = 0.5

    def __post_init__(self) -> None:
        check_finite(self, "executor.", ValueError)
        if self.kind not in KINDS:
            raise ValueError(f"executor.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.workers < 1 or self.retries < 0 or self.array_parallelism < 1:
            raise ValueError("executor.workers and executor.array_parallelism must be >= 1, executor.retries >= 0")
        if not self.steps or set(self.steps) - set(STEPS):
            raise ValueError(f"executor.steps must be a non-empty subset of {', '.join(STEPS)}, got {list(self.steps)}")
        if self.gpus_per_job < 0 or self.cpus_per_job < 1 or self.mem_gb < 1 or self.time_min < 1 or self.poll_s <= 0:
            raise ValueError("executor: gpus_per_job >= 0, cpus_per_job, mem_gb and time_min >= 1, poll_s > 0")


def _need(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"executor needs `{module}`: pip install -e '.[{extra}]' (or pip install {module})") from None


class Serial:
    """In this process, one job after another, with the usual progress bars."""

    capacity = 1

    def __init__(self, cfg: ExecutorConfig, run_dir: Path, progress: bool) -> None:
        self.run_dir, self.progress = run_dir, progress

    def submit(self, job: Job) -> Any:
        try:
            return ("done", run_job(self.run_dir, job.id, progress=self.progress, own_process=False))
        except Exception as e:  # noqa: BLE001  (a failed attempt is retried, then reported)
            with open(jobs_dir(self.run_dir) / f"{job.id}.log", "a") as f:
                f.write(traceback.format_exc())
            return ("failed", f"{type(e).__name__}: {e}")

    def poll(self, handle: Any) -> tuple[str, Any]:
        return handle

    def ref(self, handle: Any) -> str:
        return f"pid{os.getpid()}"

    def close(self) -> None:
        pass


class Local:
    """A process pool on this machine: `workers` jobs at once in worker processes (spawned, then reused, as the
    serial executor reuses its one process), each with cores / workers threads (and, with several GPUs, GPU
    number slot % count). A worker that dies breaks the pool: the pool is rebuilt and every job that was running
    is retried."""

    def __init__(self, cfg: ExecutorConfig, run_dir: Path, progress: bool) -> None:
        import multiprocessing

        self.run_dir, self.capacity = run_dir, cfg.workers
        self.threads = max(1, (os.cpu_count() or 1) // cfg.workers)
        self.ctx = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(cfg.workers, mp_context=self.ctx)
        self.slot = self.n_submitted = 0

    def _device(self) -> str | None:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.slot += 1
        return f"cuda:{self.slot % n}" if n > 1 else None

    def submit(self, job: Job) -> tuple[Future, ProcessPoolExecutor]:
        if getattr(self.pool, "_broken", False):
            self._rebuild()
        fut = self.pool.submit(run_job_logged, str(self.run_dir), job.id, self._device(), self.threads)
        return fut, self.pool

    def _rebuild(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = ProcessPoolExecutor(self.capacity, mp_context=self.ctx)

    def poll(self, handle: tuple[Future, ProcessPoolExecutor]) -> tuple[str, Any]:
        fut, pool = handle
        if not fut.done():
            return ("running", None)
        if fut.cancelled():
            return ("interrupted", "cancelled when its worker pool broke")
        e = fut.exception()
        if e is None:
            return ("done", fut.result())
        if isinstance(e, BrokenProcessPool):  # a worker died (killed, or out of memory): every job running broke
            if pool is self.pool:
                self._rebuild()
            return ("interrupted", "a worker process of the pool died (killed, or out of memory)")
        return ("failed", f"{type(e).__name__}: {e}")

    def ref(self, handle: tuple[Future, ProcessPoolExecutor]) -> str:
        self.n_submitted += 1
        return f"local-{self.n_submitted}"

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class Submitit:
    """submitit: Slurm (`kind = "slurm"`) or its local executor (`"submitit-local"`, each job a subprocess).
    submitit's own folder (jobs/submitit: its pickled calls, absolute paths, engine logs) is removed once every
    job it ran has succeeded; after a failure it stays, for the engine's view of what went wrong."""

    def __init__(self, cfg: ExecutorConfig, run_dir: Path, progress: bool) -> None:
        submitit = _need("submitit", "slurm")
        self.run_dir = run_dir
        folder = jobs_dir(run_dir) / "submitit"
        if cfg.kind == "slurm":
            self.ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
            self.ex.update_parameters(slurm_partition=cfg.partition or None, gpus_per_node=cfg.gpus_per_job,
                                      cpus_per_task=cfg.cpus_per_job, mem_gb=cfg.mem_gb, timeout_min=cfg.time_min,
                                      nodes=1, tasks_per_node=1, slurm_array_parallelism=cfg.array_parallelism)
            self.capacity = cfg.array_parallelism
        else:
            self.ex = submitit.LocalExecutor(folder=str(folder))
            self.ex.update_parameters(timeout_min=cfg.time_min)
            self.capacity = cfg.workers
        self.threads = cfg.cpus_per_job if cfg.kind == "slurm" else max(1, (os.cpu_count() or 1) // cfg.workers)
        self.folder, self.failed = folder, False

    def submit(self, job: Job) -> Any:
        return self.ex.submit(run_job_logged, str(self.run_dir), job.id, None, self.threads)

    def poll(self, sj: Any) -> tuple[str, Any]:
        if not sj.done():
            return ("running", None)
        try:
            return ("done", sj.result())
        except Exception as e:  # noqa: BLE001  (submitit raises the job's error or its death)
            self.failed = True
            return ("failed", f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}")

    def ref(self, sj: Any) -> str:
        return str(sj.job_id)

    def close(self) -> None:
        if not self.failed:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)


class Ray:
    """Ray: an existing cluster (`ray_address`) or a local one; each job a task with its own CPUs / GPUs."""

    def __init__(self, cfg: ExecutorConfig, run_dir: Path, progress: bool) -> None:
        ray = _need("ray", "ray")
        self.ray, self.run_dir, self.capacity = ray, run_dir, cfg.workers
        if not ray.is_initialized():
            ray.init(address=cfg.ray_address or None, include_dashboard=False, log_to_driver=False)
        self.remote = ray.remote(num_cpus=cfg.cpus_per_job, num_gpus=cfg.gpus_per_job, max_retries=0)(run_job_logged)

    def submit(self, job: Job) -> Any:
        return self.remote.remote(str(self.run_dir), job.id, None, None)

    def poll(self, ref: Any) -> tuple[str, Any]:
        done, _ = self.ray.wait([ref], timeout=0)
        if not done:
            return ("running", None)
        try:
            return ("done", self.ray.get(ref))
        except Exception as e:  # noqa: BLE001
            return ("failed", f"{type(e).__name__}: {e}")

    def ref(self, ref: Any) -> str:
        return ref.hex()

    def close(self) -> None:
        pass


def make_executor(cfg: ExecutorConfig, run_dir: Path, progress: bool) -> Any:
    cls = {"serial": Serial, "local": Local, "slurm": Submitit, "submitit-local": Submitit, "ray": Ray}[cfg.kind]
    return cls(cfg, Path(run_dir).resolve(), progress)  # workers may start elsewhere: never a relative path
