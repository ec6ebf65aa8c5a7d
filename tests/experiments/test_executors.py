"""Executors: a run's training jobs on a process pool, on submitit's local executor (and Ray, opt-in) give results
identical to the serial run; a job that dies is retried; one that keeps failing is reported with its log and
every finished job is kept; a rerun resumes without redoing finished jobs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.executors import ExecutorConfig, _need
from experiments.jobs import KILL_ONCE_ENV

TRAIN = ("steps = 8\neval_every = 4\neval_size = 32\nbatch_size = 16\nwarmup = 2\ntarget_accuracy = 0.01\n"
         "target_incongruent = 0.01\ncheckpoint_every = 2\n")
MODELS = ("finetuned-s0", "finetuned-s1", "scratch-s0")


def config(tmp: Path, base: Path, executor: str = "") -> Path:
    p = tmp / "ex.toml"
    p.write_text(f'[run]\nname = "ex"\nseeds = [0, 1]\nscratch_seeds = [0]\nn_eval = 32\nn_compare = 32\n'
                 f'n_reliance = 32\nn_pairs = 4\nattention_heads = 1\ncircuit_random = 1\ndetailed_maps = false\n'
                 f'formats = ["html"]\n[model]\nbase = "{base}"\n[finetune]\n{TRAIN}[scratch]\n{TRAIN}'
                 f'[task]\nheldout_number_range = [70, 99]\n{executor}')
    return p


def run(cfg: Path, out: Path, *extra: str) -> int:
    return main(["run", str(cfg), "--out", str(out), "--quiet", *extra])


def fingerprint(out: Path) -> dict[str, str]:
    """Every model's weights and every result file, except the record of where jobs ran."""
    files = [out / "models" / m / "model.safetensors" for m in MODELS]
    files += [f for f in sorted((out / "results").glob("*.json")) if f.name != "jobs.json"]
    return {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def serial(tmp_path_factory, tiny_base):
    tmp = tmp_path_factory.mktemp("serial")
    cfg = config(tmp, tiny_base)
    assert run(cfg, tmp / "run") == 0
    return cfg, fingerprint(tmp / "run")


@pytest.mark.parametrize("kind", ["local", "submitit-local"])
def test_parallel_executors_give_the_serial_results(serial, tiny_base, tmp_path, kind, monkeypatch):
    """On the process pool one job also dies midway (the testing hook): it is retried, resumes, and the run
    still gives exactly the serial results."""
    pytest.importorskip("submitit") if kind == "submitit-local" else None
    _, expected = serial
    # submitit starts a fresh Python per job: here it takes the training jobs only (the executor's `steps`)
    steps = '["train"]' if kind == "submitit-local" else '["train", "analyses", "circuits"]'
    cfg = config(tmp_path, tiny_base, f"[executor]\nsteps = {steps}\npoll_s = 0.1\n")
    if kind == "local":
        monkeypatch.setenv(KILL_ONCE_ENV, "train-finetuned-s1")
    assert run(cfg, tmp_path / "run", "--executor", kind, "--workers", "2") == 0
    assert fingerprint(tmp_path / "run") == expected
    jobs = json.loads((tmp_path / "run" / "results" / "jobs.json").read_text())
    assert jobs["executor"]["kind"] == kind and {j["state"] for j in jobs["jobs"]} == {"done"}
    assert all(j["refs"] and j["wall_s"] > 0 for j in jobs["jobs"])
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["executor"] == kind
    assert set(meta["jobs"]) == {f"{k}-{m}" for k in ("train", "analyse", "circuit") for m in MODELS}
    ran_here = {j["id"] for j in jobs["jobs"] if j["executor"] == kind}
    assert ran_here == {f"{k}-{m}" for k in (("train",) if kind == "submitit-local" else
                                             ("train", "analyse", "circuit")) for m in MODELS}
    assert f"<td>train-finetuned-s0</td><td>{kind}</td>" in (tmp_path / "run" / "report.html").read_text()
    assert not (tmp_path / "run" / "jobs" / "submitit").exists()  # submitit's pickles and paths: removed
    for f in (tmp_path / "run").rglob("*"):  # job records hold no absolute path (logs are diagnostics: not checked)
        if f.suffix in (".json", ".csv", ".html"):
            assert str(tmp_path.resolve()) not in f.read_text(), f
    if kind == "local":
        assert (tmp_path / "run" / "jobs" / "train-finetuned-s1.killed-once").exists()  # the hook really fired
        # submitted twice; the pool break is charged only if it ran alone (it may have been a bystander)
        assert len(meta["jobs"]["train-finetuned-s1"]["refs"]) >= 2


def test_a_job_that_keeps_failing_is_reported_and_finished_jobs_are_kept(serial, tmp_path, monkeypatch, capsys):
    cfg, expected = serial
    out = tmp_path / "run"
    monkeypatch.setenv(KILL_ONCE_ENV, "train-scratch-s0")
    assert run(cfg, out, "--retries", "0") == 2  # serial: the jobs run in order, in this process
    err = capsys.readouterr().err
    assert "job train-scratch-s0 failed 1 times" in err and "log: jobs/train-scratch-s0.log" in err
    assert "killed by the testing hook" in (out / "jobs" / "train-scratch-s0.log").read_text()  # the log exists
    failed = {j["id"]: j for j in json.loads((out / "results" / "jobs.json").read_text())["jobs"]}
    assert failed["train-scratch-s0"]["state"] == "failed"  # recorded even though the step failed
    assert (out / "models" / "finetuned-s0" / "checkpoint.json").exists()  # finished before the failure: kept
    monkeypatch.delenv(KILL_ONCE_ENV)
    assert run(cfg, out) == 0  # the coordinator again, serially: finished jobs are not redone
    st = {j["id"]: j for j in json.loads((out / "results" / "jobs.json").read_text())["jobs"]}
    assert st["train-scratch-s0"]["state"] == "done" and st["train-scratch-s0"]["attempts"] == 1  # this coordinator
    # not redone: its record still shows the first coordinator's single attempt and the time it took
    assert st["train-finetuned-s0"]["state"] == "done" and st["train-finetuned-s0"]["attempts"] == 1
    assert st["train-finetuned-s0"]["wall_s"] == failed["train-finetuned-s0"]["wall_s"]
    assert fingerprint(out) == expected


@pytest.mark.slow
def test_ray_gives_the_serial_results(serial, tmp_path):
    pytest.importorskip("ray")
    cfg, expected = serial
    assert run(cfg, tmp_path / "run", "--executor", "ray", "--workers", "2") == 0
    assert fingerprint(tmp_path / "run") == expected


def test_a_missing_engine_names_its_install_command():
    with pytest.raises(ImportError, match=r"pip install -e '\.\[slurm\]'"):
        _need("surely_not_installed_engine", "slurm")


@pytest.mark.parametrize("kwargs", [{"kind": "kubernetes"}, {"workers": 0}, {"retries": -1}, {"time_min": 0}])
def test_bad_executor_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="executor"):
        ExecutorConfig(**kwargs)


@pytest.mark.parametrize("partition", ["gpu", ""])
def test_slurm_settings_reach_the_sbatch_script(tmp_path, monkeypatch, partition):
    """No cluster here: a stand-in `srun` lets submitit build its Slurm executor, and the batch script it would
    submit must carry the [executor] settings (catches a parameter name submitit ignores or refuses)."""
    pytest.importorskip("submitit")
    from submitit.slurm import slurm

    from experiments.executors import make_executor

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    cfg = ExecutorConfig(kind="slurm", partition=partition, gpus_per_job=1, cpus_per_job=4, mem_gb=32, time_min=90,
                         array_parallelism=8)
    ex = make_executor(cfg, tmp_path / "run", progress=False)
    params = ex.ex._executor.parameters
    text = slurm._make_sbatch_string(command="python -m experiments.jobs", folder=str(tmp_path), **params)
    for line in ("--gpus-per-node=1", "--cpus-per-task=4", "--mem=32GB", "--time=90"):
        assert f"#SBATCH {line}" in text
    assert ("#SBATCH --partition=gpu" in text) == bool(partition)
    assert ex.capacity == 8


class _PoolThatBreaks:
    """A stand-in pool of two: job "bad" kills its worker every time, taking whatever runs beside it along."""

    capacity = 2

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.batch = run_dir, []

    def submit(self, job):
        self.batch.append(job.id)
        return job

    def poll(self, job):
        if "bad" in self.batch:  # the pool breaks: every job submitted to it so far is interrupted
            return ("interrupted", "a worker died")
        (self.run_dir / f"{job.id}.out").write_text("ok")
        self.batch.remove(job.id)
        return ("done", 0.0)

    def ref(self, job):
        return job.id

    def close(self):
        pass


def test_a_pool_break_charges_the_job_that_caused_it_not_its_bystanders(tmp_path, monkeypatch):
    """Catches charging every job in a broken pool (the bystander would fail with retries=1) and rebuilding
    without isolating the suspects (the culprit would never be identified)."""
    from experiments import dispatch
    from experiments.jobs import Job

    pool = _PoolThatBreaks(tmp_path)
    monkeypatch.setattr(dispatch, "make_executor", lambda cfg, run_dir, progress: pool)

    def fresh_pool_after_break(job):
        state = _PoolThatBreaks.poll(pool, job)
        if state[0] == "interrupted":
            pool.batch.remove(job.id)
        return state

    monkeypatch.setattr(pool, "poll", fresh_pool_after_break)
    jobs = [Job(i, "train", {}, (f"{i}.out",)) for i in ("good", "bad")]
    with pytest.raises(dispatch.JobsFailed, match="job bad failed 2 times") as e:
        dispatch.run_jobs(tmp_path, jobs, ExecutorConfig(kind="local", retries=1, poll_s=0.01))
    st = e.value.status
    assert st["good"].state == "done" and st["good"].attempts == 1  # interrupted once, not charged
    assert st["bad"].state == "failed" and st["bad"].attempts == 2
