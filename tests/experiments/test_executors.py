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
    assert kind in (tmp_path / "run" / "report.html").read_text()
    if kind == "local":
        assert (tmp_path / "run" / "jobs" / "train-finetuned-s1.killed-once").exists()  # the hook really fired
        assert meta["jobs"]["train-finetuned-s1"]["attempts"] >= 2


def test_a_job_that_keeps_failing_is_reported_and_finished_jobs_are_kept(serial, tmp_path, monkeypatch, capsys):
    cfg, expected = serial
    out = tmp_path / "run"
    monkeypatch.setenv(KILL_ONCE_ENV, "train-scratch-s0")
    assert run(cfg, out, "--retries", "0") == 2  # serial: the jobs run in order, in this process
    err = capsys.readouterr().err
    assert "job train-scratch-s0 failed 1 times" in err and "log: jobs/train-scratch-s0.log" in err
    assert (out / "models" / "finetuned-s0" / "checkpoint.json").exists()  # finished before the failure: kept
    monkeypatch.delenv(KILL_ONCE_ENV)
    assert run(cfg, out) == 0  # the coordinator again, serially: finished jobs are not redone
    st = {j["id"]: j["state"] for j in json.loads((out / "results" / "jobs.json").read_text())["jobs"]}
    assert st["train-finetuned-s0"] == "skipped" and st["train-scratch-s0"] == "done"
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
