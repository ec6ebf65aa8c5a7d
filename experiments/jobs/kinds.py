"""Everything of a run that needs a trained model's weights, as one job per model: its evaluation ("evaluate"),
its patching / DLA / ablation / neurons ("analyse"), its comparison with the base ("compare"), its circuit
("circuit") and its attention page ("attention"). Each reads its model from models/<id>/ and writes only its own
records (results/per_model/<id>/...); the run's steps then gather them. So any executor can run them in any order,
a new analysis needs no code here, and once a model's jobs are done its weights are no longer needed: a study can
train and record its models one at a time, across sessions, keeping only the records (`cogcircuits run --models`).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from experiments.analysis import stages
from experiments.core.config import build, build_task
from experiments.analysis.attention import attention_page_of
from experiments.core.run_record import (AttentionPage, CurvePoint, ModelAnalyses, ModelCircuit, ModelComparison,
                                         ModelEvaluation, TrainingSummary, Trials)
from experiments.jobs.spec import Job
from experiments.training.start import ModelConfig, init_model
from experiments.training.train import TrainConfig, pick_device
from interp.compare import ShapeMismatchError, check_same_shape, cka_from_grams, is_constant, relative_weight_change
from interp.model_id import ModelId
from interp.models import (base_arch_and_tokenizer, build_scratch, load_checkpoint, load_model, params_sha256,
                           read_checkpoint_meta, state_sha256)
from interp.result_io import load_provenance, load_result
from interp.store import atomic_write_json, atomic_write_npz, atomic_write_text, versions
from tasks.registry import generate

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


def evaluate_job(mid: str, task: dict[str, Any], params: dict[str, Any]) -> Job:
    """params: n_eval, seed, device."""
    return Job(f"evaluate-{mid}", "evaluate", {"model_id": mid, "task": task, **params},
               (f"{model_dir(mid)}/evaluation.json",))


def compare_job(mid: str, task: dict[str, Any], params: dict[str, Any]) -> Job:
    """params: base (as recorded), n_compare, seed_compare, n_reliance, seed_reliance, device."""
    return Job(f"compare-{mid}", "compare", {"model_id": mid, "task": task, **params},
               (f"{model_dir(mid)}/comparison.json", f"{model_dir(mid)}/{GRAM}"))


def attention_job(mid: str, task: dict[str, Any], page: str, params: dict[str, Any]) -> Job:
    """params: heads (how many), n_pairs, seed, corruption, device; `page` the HTML file written at the run's top."""
    return Job(f"attention-{mid}", "attention", {"model_id": mid, "task": task, "page": page, **params},
               (page, f"{model_dir(mid)}/attention.json"))


def resolve_base(base: str, run_dir: Path) -> str:
    """A base recorded relative to the run folder (as every output records paths) back to a usable path."""
    p = Path(run_dir) / base
    return str(p) if not os.path.isabs(base) and p.exists() else base


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
                                           name=mid, balanced=inp.get("balanced", False))
    d = run_dir / model_dir(mid)
    atomic_write_npz(d / "inputs.npz", inputs)
    for stem, (res, covers) in results.items():
        res.to_files(d / stem, {**prov, "trials": covers, "inputs": "inputs.npz"})
    atomic_write_json(d / INDEX, {"results": list(results), "detailed": inp["detailed"]})


def run_circuit(run_dir: Path, job: Job, progress: bool, device: str | None) -> None:
    inp, mid = job.inputs, job.inputs["model_id"]
    model, task, prov = _load(run_dir, inp, device)
    res, pairs = stages.discover(model, task, inp["corruption"], inp["n_pairs"], inp["seed"], inp["method"],
                                 inp["ablation"], inp["n_random"], inp["level"], inp["overlap_fraction"], name=mid,
                                 balanced=inp.get("balanced", False))
    d = run_dir / model_dir(mid)
    atomic_write_npz(d / "circuit_inputs.npz", {"clean_tokens": pairs.clean.tokens,
                                                "corrupt_tokens": pairs.corrupted.tokens,
                                                "answer_ids": pairs.clean.answer_ids, "wrong_ids": pairs.clean.wrong_ids})
    res.to_files(d / "circuit", {**prov, "trials": stages.trials("test", inp["n_pairs"], inp["seed"],
                                                                 inp["corruption"], task, inp.get("balanced", False)),
                                 "inputs": "circuit_inputs.npz"})


def run_evaluate(run_dir: Path, job: Job, progress: bool, device: str | None) -> None:
    """The model on the test and generalisation splits, with its training summary and curve."""
    inp, mid = job.inputs, job.inputs["model_id"]
    model, task, _ = _load(run_dir, inp, device)
    meta = read_checkpoint_meta(Path(run_dir) / "models" / mid)
    m = meta["metrics"]
    ev = replace(stages.evaluate_model(model, task, inp["n_eval"], seed=inp["seed"]),
                 training=TrainingSummary(steps=m["steps"], met_criterion=m["met_criterion"],
                                          steps_to_criterion=m.get("steps_to_criterion")),
                 curve=tuple(CurvePoint.from_dict(c, f"{mid} curve") for c in meta["curve"]))
    ev.save(Path(run_dir) / model_dir(mid) / "evaluation.json")


def run_compare(run_dir: Path, job: Job, progress: bool, device: str | None) -> None:
    """The model against the base (CKA, reliance, weight change; a scratch model also against its own
    initialisation) and the Gram matrices of its residual stream at the answer, which CKA between two models
    needs (so that it needs neither model's weights later)."""
    inp, mid = job.inputs, job.inputs["model_id"]
    model, task, _ = _load(run_dir, inp, device)
    base = load_model(resolve_base(inp["base"], run_dir), model.cfg.device)[0]
    check_same_shape(model, base, f"comparing {mid} with the base")
    _, reps = stages.representations_of({mid: model, "base": base}, task, inp["n_compare"], inp["seed_compare"])
    rel = generate(task, inp["n_reliance"], seed=inp["seed_reliance"], tokenizer=base.tokenizer, split="test",
                   balanced=inp.get("balanced", False))
    cmp = stages.compare_with_base(model, base, reps[mid], reps["base"], rel)
    if ModelId.parse(mid).is_scratch:
        init = initialisation(Path(run_dir) / "models" / mid, inp["base"], run_dir, model.cfg.device)
        cmp = replace(cmp, reliance_init=stages.reliance(model, init, rel, cmap=False))
    start = starting_weights(Path(run_dir) / "models" / mid, run_dir, model.cfg.device)
    if start is not None:
        cmp = replace(cmp, weight_change_start=relative_weight_change(model, start))
    d = Path(run_dir) / model_dir(mid)
    atomic_write_npz(d / GRAM, grams(reps[mid]["resid"]["answer"]))
    cmp.save(d / "comparison.json")


def run_attention(run_dir: Path, job: Job, progress: bool, device: str | None) -> None:
    """The page `cogcircuits attention` makes: the model's top heads by its own denoising patching effect, on the
    first of the analyses' pairs (clean and corrupted)."""
    inp, mid = job.inputs, job.inputs["model_id"]
    model, task, prov = _load(run_dir, inp, device)
    info = {"name": mid, "weights_sha256": prov["weights_sha256"]}
    page = attention_page_of(model, info, task, top=inp["heads"], by="patching", trial=0, n=inp["n_pairs"],
                             seed=inp["seed"], corruption=inp["corruption"])
    atomic_write_text(Path(run_dir) / inp["page"], page.html)
    AttentionPage(model=mid, heads=tuple(tuple(h) for h in page.heads),
                  chosen_by=f"|denoising patching effect| of {mid}").save(Path(run_dir) / model_dir(mid) /
                                                                          "attention.json")


def initialisation(checkpoint: Path, base: str, run_dir: Path, device: str) -> Any:
    """A scratch model's initial weights, rebuilt from its recorded seed and recipe (checked against their hash)."""
    arch, tok = base_arch_and_tokenizer(resolve_base(base, run_dir))
    meta = read_checkpoint_meta(checkpoint)
    recipe = {k: v for k, v in meta["config"]["train"].items() if k in ("resid_init", "embed_init_std")}
    init = build_scratch(arch, tok, int(meta["seed"]), device, **recipe)
    recorded = meta.get("init_params_sha256") or meta.get("init_state_sha256")  # the latter: records made before
    rebuilt = params_sha256(init) if meta.get("init_params_sha256") else state_sha256(init)
    if recorded and rebuilt != recorded:
        raise RuntimeError(f"{checkpoint.name}: rebuilding its initialisation did not give the weights it was "
                           "trained from")
    return init


def starting_weights(checkpoint: Path, run_dir: Path, device: str) -> Any:
    """The weights a model was trained from (the base, a scratch draw, a shuffled base ...), rebuilt from its
    recorded model and training config and checked against the recorded `init_params_sha256`; None for records
    made before that hash."""
    meta = read_checkpoint_meta(checkpoint)
    if not meta.get("init_params_sha256"):
        return None
    cfg = meta["config"]
    mcfg = build(ModelConfig, dict(cfg["model"], base=resolve_base(cfg["model"]["base"], checkpoint)), "model")
    start = init_model(mcfg, build(TrainConfig, cfg["train"], "train"), device)[0]
    if params_sha256(start) != meta["init_params_sha256"]:
        raise RuntimeError(f"{checkpoint.name}: rebuilding its starting weights did not give the weights it was "
                           "trained from")
    return start


GRAM = "cka_gram.npz"


def grams(rep: Float[np.ndarray, "layer trials d_model"]) -> dict[str, np.ndarray]:
    """Per layer, the upper triangle (diagonal included) of the Gram matrix X X^T of the trials' representations,
    in float32 (what debiased CKA reads: n(n+1)/2 numbers a layer; 1 MB for SmolLM2's 31 points at 128 trials), and
    whether the representation is constant across trials (CKA undefined there)."""
    x = np.asarray(rep, dtype=np.float64)
    iu = np.triu_indices(x.shape[1])
    return {"gram_upper": np.stack([(v @ v.T)[iu] for v in x]).astype(np.float32),
            "constant": np.array([is_constant(v) for v in x])}


def _full_grams(upper: np.ndarray) -> np.ndarray:
    """[layer, n(n+1)/2] upper triangles back to symmetric [layer, n, n] float64 matrices."""
    n = int((np.sqrt(8 * upper.shape[1] + 1) - 1) / 2)
    out = np.zeros((upper.shape[0], n, n))
    iu = np.triu_indices(n)
    out[:, iu[0], iu[1]] = upper
    out[:, iu[1], iu[0]] = upper
    return out


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


def gather_evaluations(run_dir: Path, ids: list[str]) -> dict[str, ModelEvaluation]:
    return {mid: ModelEvaluation.load(Path(run_dir) / model_dir(mid) / "evaluation.json") for mid in ids}


def gather_comparisons(run_dir: Path, ids: list[str]) -> dict[str, ModelComparison]:
    return {mid: ModelComparison.load(Path(run_dir) / model_dir(mid) / "comparison.json") for mid in ids}


def cka_between(run_dir: Path, a: str, b: str) -> tuple[float, ...]:
    """Debiased CKA per layer between two models' residual streams at the answer, from their stored Gram matrices
    (`interp.compare.layer_cka` on their representations to float32 rounding of the Gram matrices: tests)."""
    with np.load(Path(run_dir) / model_dir(a) / GRAM) as za, np.load(Path(run_dir) / model_dir(b) / GRAM) as zb:
        ka, kb = _full_grams(za["gram_upper"]), _full_grams(zb["gram_upper"])
        ca, cb = za["constant"], zb["constant"]
    if ka.shape != kb.shape:
        raise ShapeMismatchError(f"{a} and {b} have Gram matrices of shapes {ka.shape} and {kb.shape}: per-layer CKA "
                                 "needs equal depth and the same trials")
    return tuple(float("nan") if ca[l] or cb[l] else cka_from_grams(ka[l], kb[l])
                 for l in range(len(ka)))
