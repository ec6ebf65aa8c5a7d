"""The per-model analyses of a run as jobs: one model's patching / DLA / ablation / neurons ("analyse") and one
model's circuit discovery ("circuit"). Each reads its model from models/<id>/ and writes only its own files;
the run's steps then gather them, so any executor can run them in any order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments import stages
from experiments.jobs import Job
from interp.store import atomic_write_csv, atomic_write_json, atomic_write_npz

ARRAY_KEYS = ("atp_heads_by_pos", "ig_heads_by_pos", "dla_heads", "dla_mlp", "ablation_heads_accuracy",
              "ablation_heads_logit_diff", "neuron_coef", "neuron_r2", "neuron_coef_correct", "neuron_r2_correct")
CIRCUIT_KEYS = ("node_curve", "edge_curve", "overlap_set", "exact_check", "ranked", "node_scores", "trials",
                "clean_logit_diff", "corrupt_logit_diff")


def summary_path(mid: str) -> str:
    return f"results/per_model/analyses-{mid}.json"


def analysis_job(mid: str, task: dict[str, Any], params: dict[str, Any]) -> Job:
    """params: corruption, n_pairs, seed, ablation, detailed, device."""
    return Job(f"analyse-{mid}", "analyse", {"model_id": mid, "task": task, **params}, (summary_path(mid),))


def circuit_job(mid: str, task: dict[str, Any], params: dict[str, Any]) -> Job:
    """params: corruption, n_pairs, seed, method, ablation, n_random, level, overlap_fraction, device."""
    return Job(f"circuit-{mid}", "circuit", {"model_id": mid, "task": task, **params}, (f"circuits/{mid}.json",))


def _load(run_dir: Path, inp: dict[str, Any], device: str | None) -> tuple[Any, Any]:
    from experiments.config import build_task
    from experiments.train import pick_device
    from interp.models import load_checkpoint

    model = load_checkpoint(run_dir / "models" / inp["model_id"], pick_device(device or inp["device"]))[0]
    return model, build_task(inp["task"], f"job {inp['model_id']} task")


def _save_arrays(run_dir: Path, name: str, arrays: dict[str, np.ndarray], rows: list[dict] | None = None) -> None:
    atomic_write_npz(run_dir / "arrays" / f"{name}.npz", arrays)
    if rows is not None:
        atomic_write_csv(run_dir / "arrays" / f"{name}.csv", rows)


def run_analysis(run_dir: Path, job: Job, progress: bool, device: str | None) -> None:
    inp, mid = job.inputs, job.inputs["model_id"]
    model, task = _load(run_dir, inp, device)
    r = stages.analyse_model(model, task, inp["corruption"], inp["n_pairs"], seed=inp["seed"],
                             ablation=inp["ablation"], detailed=inp["detailed"], progress=progress)
    inputs = {k: r[k] for k in ("clean_tokens", "corrupt_tokens", "answer_ids", "wrong_ids")}
    for what in stages.PATCHED:
        if f"patch_{what}" in r:
            pr = r[f"patch_{what}"]
            _save_arrays(run_dir, f"patch_{what}_{mid}", {"values": pr.values, "raw": pr.raw, **inputs}, pr.rows())
    for key in ARRAY_KEYS:
        if key in r:
            _save_arrays(run_dir, f"{key}_{mid}", {"values": np.asarray(r[key])})
    pr = r["patch_heads"]
    atomic_write_json(run_dir / summary_path(mid), {
        "position_labels": r["position_labels"], "clean_logit_diff": pr.clean_logit_diff,
        "corrupt_logit_diff": pr.corrupt_logit_diff, "first_diff": pr.first_diff, "detailed": inp["detailed"],
        "ablation_baseline": r["ablation_baseline"], "neuron_top": r["neuron_top"],
        "neuron_top_ablation": r["neuron_top_ablation"], "neuron_choice_is_correct": r["neuron_choice_is_correct"],
        "trials": r["trials"], **{k: r[k] for k in ("atp_agreement", "ig_agreement") if k in r}})


def run_circuit(run_dir: Path, job: Job, progress: bool, device: str | None) -> None:
    inp, mid = job.inputs, job.inputs["model_id"]
    model, task = _load(run_dir, inp, device)
    r = stages.discover(model, task, inp["corruption"], inp["n_pairs"], inp["seed"], inp["method"], inp["ablation"],
                        inp["n_random"], inp["level"], inp["overlap_fraction"], progress=False)
    _save_arrays(run_dir, f"circuit_inputs_{mid}", {"clean_tokens": r.pop("clean_tokens"),
                                                    "corrupt_tokens": r.pop("corrupt_tokens")})
    atomic_write_json(run_dir / "circuits" / f"{mid}.json", r)


def gather_analyses(run_dir: Path, ids: list[str]) -> dict[str, Any]:
    return {mid: json.loads((run_dir / summary_path(mid)).read_text()) for mid in ids}


def gather_circuits(run_dir: Path, ids: list[str]) -> tuple[dict[str, Any], int | None]:
    models, n_nodes = {}, None
    for mid in ids:
        r = json.loads((run_dir / "circuits" / f"{mid}.json").read_text())
        models[mid] = {k: r[k] for k in CIRCUIT_KEYS}
        n_nodes = r["n_nodes"]
    return models, n_nodes
