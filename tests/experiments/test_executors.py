"""Executors: a run's training jobs on a process pool, on submitit's local executor (and Ray, opt-in) give results
identical to the serial run; a job that dies is retried; one that keeps failing is reported with its log and
every finished job is kept; a rerun resumes without redoing finished jobs."""

from __future__ import annotations

import fnmatch
import hashlib
import html
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from experiments.cli.main import main
from experiments.jobs.executors import ExecutorConfig, _need
from experiments.jobs.runner import HOOK_ENV
from tests.helpers.kill_once import TARGET_ENV

KILL_ONCE_HOOK = f"{Path(__file__).resolve().parents[1] / 'helpers' / 'kill_once.py'}:before_job"


def kill_once(monkeypatch: pytest.MonkeyPatch, job_id: str) -> None:
    """The first attempt of `job_id` dies midway (tests/helpers/kill_once.py, through the runner's hook)."""
    monkeypatch.setenv(HOOK_ENV, KILL_ONCE_HOOK)
    monkeypatch.setenv(TARGET_ENV, job_id)

pytestmark = pytest.mark.integration

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


WORKERS = 2  # the parallel runs' --workers

# JSON keys (at any depth, in every JSON file and in the config the report embeds) that legitimately differ between
# two runs of one config on two executors; everything else must be identical.
VOLATILE = (
    "created",  # run.json: when the run started
    "seconds",  # stages/*.json: how long each step took
    "wall_s",  # job records (jobs/*.status.json, results/jobs.json, run.json) and models' metrics: time a job took
    "executor",  # where the jobs ran: the executor's name in run.json and the job records, and the [executor]
    #              config section itself (kind, poll_s, steps: the one thing the two configs differ in)
    "refs",  # the executor's id of each attempt (a pid, a pool counter, a submitit job id); a retried job has more
    "attempts",  # charged attempts: the killed job's pool break is charged only if it happened to run alone
    "resumed_from_step",  # models' metrics: the step a training resumed from (the job the testing hook killed)
    "weights_stat",  # models/*/checkpoint.json: (size, mtime_ns) of the weights, a cache key for re-hashing them
    #                  (the weights themselves and their weights_sha256 are compared)
    "outputs",  # stages/*.json: sha256 of the record files a step wrote (their bytes hold the volatile fields above;
    #             the files themselves are compared, field by field)
)
# Files not compared: only the parallel run has them, by design. What a job printed (a worker's stdout / stderr; a
# serial job prints to the coordinator's own output, so there is no log) and the testing hook's marker of the job
# it killed. Diagnostics, not results; every other file of both run folders is compared.
UNCOMPARED = ("jobs/*.log", "jobs/*.killed-once")
# The report's jobs table: the columns that are not VOLATILE (executor, executor job ids, attempts, wall s are)
REPORT_JOB_COLUMNS = ("job", "state")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # plotly's random div ids
CREATED = re.compile(r"Run created \d{4}-\d\d-\d\d \d\d:\d\d:\d\d on ")  # the report's run.json `created`


def _strip(x: Any) -> Any:
    """Parsed JSON without the VOLATILE keys, at any depth."""
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _json(text: str) -> Any:
    # NaN, Infinity as strings: NaN == NaN is False, and a NaN where the serial run has one is no difference
    return _strip(json.loads(text, parse_constant=lambda c: f"<{c}>"))


def _html(text: str, name: str) -> str:
    """An HTML page without plotly's random div ids; the report also without the run's creation time, with its jobs
    table reduced to REPORT_JOB_COLUMNS and the config it embeds parsed and stripped of VOLATILE keys."""
    text = UUID.sub("<uuid>", text)
    if name != "report.html":
        return text
    text, n = CREATED.subn("Run created <created> on ", text)
    assert n == 1, f"report.html: {n} creation times"

    def jobs(m: re.Match) -> str:
        rows = [re.findall(r"<t[hd]>(.*?)</t[hd]>", r) for r in re.findall(r"<tr>(.*?)</tr>", m.group(0))]
        keep = [i for i, h in enumerate(rows[0]) if h in REPORT_JOB_COLUMNS]
        assert len(keep) == len(REPORT_JOB_COLUMNS), f"report.html: jobs table columns {rows[0]}"
        return "<jobs>" + json.dumps([[r[i] for i in keep] for r in rows])

    def cfg(m: re.Match) -> str:
        return "<config>" + json.dumps(_json(html.unescape(m.group(1))), sort_keys=True)

    text, n_jobs = re.subn(r"<h2>Jobs</h2>.*?</table>", jobs, text, flags=re.S)
    text, n_cfg = re.subn(r"<h2>Config</h2><pre>(.*?)</pre>", cfg, text, flags=re.S)
    assert (n_jobs, n_cfg) == (1, 1), "report.html: no jobs table or no config"
    return text


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where or '/'}: keys {sorted(a.keys() ^ b.keys())} in one only"
        return next((d for k in a if (d := _first_difference(a[k], b[k], f"{where}/{k}"))), None)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = enumerate(zip(a, b))
        return next((d for i, (x, y) in pairs if (d := _first_difference(x, y, f"{where}[{i}]"))), None)
    return None if a == b else f"{where or '/'}: {a!r:.80} != {b!r:.80}"


def _difference(got: Path, want: Path) -> str | None:
    """How one file of the parallel run differs from the serial run's (None: it does not): JSON parsed without
    VOLATILE keys, NPZ array by array (names, dtypes, shapes, values: exactly, NaN where NaN), HTML without volatile
    values (`_html`), every other file (weights, CSVs, tokenizers, scripts) byte for byte."""
    if got.suffix == ".json":
        return _first_difference(_json(got.read_text()), _json(want.read_text()))
    if got.suffix == ".npz":
        with np.load(got) as g, np.load(want) as w:
            if sorted(g.files) != sorted(w.files):
                return f"arrays {sorted(g.files)} != {sorted(w.files)}"
            for k in w.files:
                if g[k].dtype != w[k].dtype or g[k].shape != w[k].shape:
                    return f"{k}: {g[k].dtype}{g[k].shape} != {w[k].dtype}{w[k].shape}"
                if not np.array_equal(g[k], w[k], equal_nan=g[k].dtype.kind in "fc"):
                    return f"{k}: values differ at {np.argwhere(g[k] != w[k])[:3].tolist()}"
        return None
    if got.suffix == ".html":
        g, w = _html(got.read_text(), got.name), _html(want.read_text(), want.name)
        i = next((i for i, (x, y) in enumerate(zip(g, w)) if x != y), min(len(g), len(w)))
        return None if g == w else f"from character {i}: {g[i:i + 80]!r} != {w[i:i + 80]!r}"
    return None if got.read_bytes() == want.read_bytes() else "bytes differ"


def assert_same_run(got: Path, want: Path) -> None:
    """Run folder `got` holds exactly the files of `want` (UNCOMPARED aside), each with the same content
    (`_difference`)."""

    def files(d: Path) -> set[str]:
        rel = (p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
        return {r for r in rel if not any(fnmatch.fnmatch(r, pat) for pat in UNCOMPARED)}

    g, w = files(got), files(want)
    assert g == w, f"only in {got}: {sorted(g - w)}; only in {want}: {sorted(w - g)}"
    assert len(w) > 50, sorted(w)  # a whole run folder (a step that wrote nothing would be missed otherwise)
    diffs = {r: d for r in sorted(w) if (d := _difference(got / r, want / r))}
    assert not diffs, "\n".join(f"{r}: {d}" for r, d in diffs.items())


@pytest.fixture(scope="module")
def worker_threads():
    """Every run of this module computes with the torch thread count a worker of `--workers WORKERS` gets
    (`experiments.jobs.executors`: cores // workers): CPU kernels (the backward pass's reductions) sum in an order that
    depends on the thread count, so a serial run with all cores differs from a worker's in the last bits."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORKERS))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def serial(tmp_path_factory, tiny_base, worker_threads):
    tmp = tmp_path_factory.mktemp("serial")
    cfg = config(tmp, tiny_base)
    assert run(cfg, tmp / "run") == 0
    return cfg, fingerprint(tmp / "run"), tmp / "run"


@pytest.mark.parametrize("kind", ["local", pytest.param("submitit-local", marks=pytest.mark.slow)])  # slow: .ci/run
def test_parallel_executors_give_the_serial_results(serial, tiny_base, tmp_path, kind, monkeypatch):
    """On the process pool one job also dies midway (the testing hook): it is retried, resumes, and the run
    still gives exactly the serial results: the whole run folder, file by file (`assert_same_run`: weights, per-model
    results and their arrays, circuits, figures and the data they plot, the report, CSVs, job definitions), all but
    the VOLATILE fields (times, executor names and ids, attempts, the step the killed training resumed from, a
    file's mtime) and the UNCOMPARED files (worker logs, the testing hook's marker).

    Catches e.g. a job that writes a per-model result differently in a worker process (its provenance, an array's
    dtype) while the gathered summaries stay the same: comparing only the weights and results/*.json missed it."""
    pytest.importorskip("submitit") if kind == "submitit-local" else None
    _, _, serial_run = serial
    # submitit starts a fresh Python per job: here it takes the training jobs only (the executor's `steps`)
    steps = '["train"]' if kind == "submitit-local" else '["train", "analyses", "circuits"]'
    cfg = config(tmp_path, tiny_base, f"[executor]\nsteps = {steps}\npoll_s = 0.1\n")
    if kind == "local":
        kill_once(monkeypatch, "train-finetuned-s1")
    assert run(cfg, tmp_path / "run", "--executor", kind, "--workers", str(WORKERS)) == 0
    assert_same_run(tmp_path / "run", serial_run)
    jobs = json.loads((tmp_path / "run" / "results" / "jobs.json").read_text())
    assert jobs["executor"]["kind"] == kind and {j["state"] for j in jobs["jobs"]} == {"done"}
    assert all(j["refs"] and j["wall_s"] > 0 for j in jobs["jobs"])
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["executor"] == kind
    assert set(meta["jobs"]) == ({f"{k}-{m}" for k in ("train", "evaluate", "analyse", "compare", "circuit")
                                  for m in MODELS} | {"attention-finetuned-s0", "attention-scratch-s0"})
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
    cfg, expected, _ = serial
    out = tmp_path / "run"
    kill_once(monkeypatch, "train-scratch-s0")
    assert run(cfg, out, "--retries", "0") == 2  # serial: the jobs run in order, in this process
    err = capsys.readouterr().err
    assert "job train-scratch-s0 failed 1 times" in err and "log: jobs/train-scratch-s0.log" in err
    assert "killed by the testing hook" in (out / "jobs" / "train-scratch-s0.log").read_text()  # the log exists
    failed = {j["id"]: j for j in json.loads((out / "results" / "jobs.json").read_text())["jobs"]}
    assert failed["train-scratch-s0"]["state"] == "failed"  # recorded even though the step failed
    assert (out / "models" / "finetuned-s0" / "checkpoint.json").exists()  # finished before the failure: kept
    monkeypatch.delenv(TARGET_ENV)
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
    cfg, expected, _ = serial
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

    from experiments.jobs.executors import make_executor

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
    from experiments.jobs import dispatch
    from experiments.jobs.spec import Job

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
