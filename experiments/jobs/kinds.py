"""The per-model analyses of a run as jobs: one model's patching / DLA / ablation / neurons ("analyse") and one
model's circuit discovery ("circuit"). Each reads its model from models/<id>/ and writes only its own typed
results (results/per_model/<id>/<stem>.json + .npz); the run's steps then gather their summaries, so any
executor can run them in any order, and a new analysis needs no code here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.analysis import stages
from experiments.core.config import build_task
from experiments.core.run_record import ModelAnalyses, ModelCircuit, Trials
from experiments.jobs.spec import Job
from experiments.training.train import pick_device
from interp.models import load_checkpoint
from interp.result_io import load_provenance, load_result
from interp.store import atomic_write_json, atomic_write_npz, versions

INDEX = "index.json"


def model_dir(mid: str) -> str:
    """Where a model's typed results live: <stem>.json + <stem>.npz each, the analyses' index, their inputs."""
    return f"results/per_model/{mid}"


def analysis_job(mid: str, task: dict[str, Any], params: dict[str, Any]) -> Job:
    """params: corruption, n_pairs, seed, ablation, detailed, device."""
    return Job(f"analyse-{mid}", "analyse", {"model_id": mid, "task": task, **params}, (f"{model_dir(mid)}/{INDEX}",))


def circuit_job(mid: str, task: dict[str, Any], params: dict[str, Any]) -> Job:
    """params: corruption, n_pairs, seed, method, ablation, n_random, level, overlap_fraction, device."""
    return Job(f"circuit-{mid}", "circuit", {"model_id": mid, "task": task, **params},
               (f"{model_dir(mid)}/circuit.json",))


def _load(run_dir: Path, inp: dict[str, Any], device: str | None) -> tuple[Any, Any, dict[str, Any]]:
    """The job's model and task, and the provenance every result it saves carries."""
    model, _, meta = load_checkpoint(run_dir / "models" / inp["model_id"], pick_device(device or inp["device"]))
    prov = {"model": inp["model_id"], "checkpoint": f"models/{inp['model_id']}",
            "weights_sha256": meta.get("weights_sha256"), "task": inp["task"], "versions": versions()}
    return model, build_task(inp["task"], f"job {inp['model_id']} task"), prov


def run_analysis(run_dir: Path, job: Job, progress: bool, device: str | None) -> None:
    """Every result of `stages.analyse_model` saved the same way (its files, the trials it covers as provenance,
    the token ids in inputs.npz); the index, written last, lists them."""
    inp, mid = job.inputs, job.inputs["model_id"]
    model, task, prov = _load(run_dir, inp, device)
    results, inputs = stages.analyse_model(model, task, inp["corruption"], inp["n_pairs"], seed=inp["seed"],
                                           ablation=inp["ablation"], detailed=inp["detailed"], progress=progress,
                                           name=mid)
    d = run_dir / model_dir(mid)
    atomic_write_npz(d / "inputs.npz", inputs)
    for stem, (res, covers) in results.items():
        res.to_files(d / stem, {**prov, "trials": covers, "inputs": "inputs.npz"})
    atomic_write_json(d / INDEX, {"results": list(results), "detailed": inp["detailed"]})


def run_circuit(run_dir: Path, job: Job, progress: bool, device: str | None) -> None:
    inp, mid = job.inputs, job.inputs["model_id"]
    model, task, prov = _load(run_dir, inp, device)
    res, pairs = stages.discover(model, task, inp["corruption"], inp["n_pairs"], inp["seed"], inp["method"],
                                 inp["ablation"], inp["n_random"], inp["level"], inp["overlap_fraction"], name=mid)
    d = run_dir / model_dir(mid)
    atomic_write_npz(d / "circuit_inputs.npz", {"clean_tokens": pairs.clean.tokens,
                                                "corrupt_tokens": pairs.corrupted.tokens,
                                                "answer_ids": pairs.clean.answer_ids, "wrong_ids": pairs.clean.wrong_ids})
    res.to_files(d / "circuit", {**prov, "trials": stages.trials("test", inp["n_pairs"], inp["seed"],
                                                                 inp["corruption"], task),
                                 "inputs": "circuit_inputs.npz"})


def saved_stems(run_dir: Path, mid: str) -> list[str]:
    """Every result saved for one model: its analyses in their order, then any other (e.g. its circuit)."""
    d = Path(run_dir) / model_dir(mid)
    listed = json.loads((d / INDEX).read_text())["results"] if (d / INDEX).exists() else []
    others = sorted(p.stem for p in d.glob("*.json") if p.name != INDEX and p.stem not in listed
                    and p.with_suffix(".npz").exists())
    return listed + others


def model_results(run_dir: Path, mid: str) -> dict[str, Any]:
    """{stem: typed result} of everything saved for one model."""
    return {stem: load_result(Path(run_dir) / model_dir(mid) / stem) for stem in saved_stems(run_dir, mid)}


def gather_analyses(run_dir: Path, ids: list[str]) -> dict[str, ModelAnalyses]:
    """Per model: each analysis's summary and the trials it covers."""
    out = {}
    for mid in ids:
        d = Path(run_dir) / model_dir(mid)
        index = json.loads((d / INDEX).read_text())
        out[mid] = ModelAnalyses(detailed=index["detailed"],
                                 results={stem: load_result(d / stem).summary() for stem in index["results"]},
                                 trials={stem: Trials.from_dict(load_provenance(d / stem)["trials"], f"{mid} {stem}")
                                         for stem in index["results"]})
    return out


def gather_circuits(run_dir: Path, ids: list[str]) -> dict[str, ModelCircuit]:
    """Per model: its circuit's summary (ranking, curves, exact check) and the trials it covers."""
    out = {}
    for mid in ids:
        stem = Path(run_dir) / model_dir(mid) / "circuit"
        out[mid] = ModelCircuit.from_dict({**load_result(stem).summary(), "trials": load_provenance(stem)["trials"]},
                                          f"{mid} circuit")
    return out
