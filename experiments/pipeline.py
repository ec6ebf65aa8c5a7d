"""`cogcircuits run`: the whole fine-tuned vs scratch experiment, as resumable stages.

runs/<name>/
  run.json                    config, seeds, base model hash, package versions
  models/<init>-s<seed>/      checkpoints (with curve.csv/json and metrics.json)
  results/*.json              evaluation, analyses, comparison and circuit summaries
  arrays/*.npz, arrays/*.csv  every array behind a figure, with labels and the token ids used
  figures/*.html|png|svg      plotly figures;  attention.html (circuitsvis);  report.html
  stages/<stage>.json         a stage's completion marker: a rerun skips finished stages

Every file is written atomically. A rerun with the same config resumes; a different config needs --overwrite.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments import stages
from experiments.config import ConfigError, load_sections, to_dict
from experiments.train import ModelConfig, TrainConfig, pick_device, train
from interp.models import load_checkpoint, load_model
from interp.store import (OutputExistsError, atomic_write_csv, atomic_write_json, atomic_write_npz, prepare_out_dir,
                          versions)
from tasks.cdm import CORRUPTIONS, CDMConfig

STAGES = ("train", "evaluate", "analyses", "compare", "circuits", "figures", "attention", "report")


@dataclass(frozen=True)
class RunConfig:
    name: str = "default"
    seeds: tuple[int, ...] = (0, 1, 2)
    n_eval: int = 500
    n_pairs: int = 32
    n_compare: int = 200
    corruption: str = "context-flip"
    circuit_method: str = "eap-ig"
    ablation: str = "mean"
    circuit_ablation: str = "mean"
    device: str = "auto"
    attention_heads: int = 3
    formats: tuple[str, ...] = ("html", "png", "svg", "csv")

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("run.seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"run.seeds has duplicates: {list(self.seeds)}")
        if self.corruption not in CORRUPTIONS:
            raise ValueError(f"run.corruption must be one of {', '.join(CORRUPTIONS)}")
        if self.corruption == "irrelevant-flip":
            raise ValueError("run.corruption 'irrelevant-flip' leaves the answer unchanged: patching needs a "
                             "corruption that changes it (context-flip or relevant-flip)")
        if self.circuit_method not in ("eap", "eap-ig"):
            raise ValueError("run.circuit_method must be eap or eap-ig")
        if self.ablation not in ("zero", "mean", "resample"):
            raise ValueError("run.ablation must be zero, mean or resample")
        if self.circuit_ablation not in ("corrupted", "mean", "resample"):
            raise ValueError("run.circuit_ablation must be corrupted, mean or resample")
        if self.n_eval < 16 or self.n_pairs < 4 or self.n_compare < 16:
            raise ValueError("run.n_eval and run.n_compare must be >= 16 and run.n_pairs >= 4")
        bad = set(self.formats) - {"html", "png", "svg", "csv"}
        if bad:
            raise ValueError(f"run.formats: unknown format(s) {sorted(bad)} (choose html, png, svg, csv)")


SCHEMA = {"run": RunConfig, "task": CDMConfig, "model": ModelConfig, "finetune": TrainConfig, "scratch": TrainConfig}


def load_run_config(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    cfg = load_sections(path, SCHEMA, overrides=overrides)
    if cfg["model"].init != "pretrained":
        raise ConfigError("[model] init is not used by `run` (it trains both): remove it or set it to 'pretrained'")
    return cfg


def config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


class Run:
    def __init__(self, cfg: dict[str, Any], out: Path, overwrite: bool = False, progress: bool = True,
                 log: Callable[[str], None] | None = None) -> None:
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.log = log or (lambda s: None)
        self.rc: RunConfig = cfg["run"]
        self.task: CDMConfig = cfg["task"]
        self.device = pick_device(self.rc.device)
        h = config_hash(cfg)
        existing = self.out / "run.json"
        if existing.exists() and not overwrite:
            old = json.loads(existing.read_text())
            if old.get("config_hash") != h:
                raise OutputExistsError(f"{self.out} holds a run with another config: pass --overwrite to replace "
                                        "it, or choose another --out")
            prepare_out_dir(self.out, resume=True)
        else:
            prepare_out_dir(self.out, overwrite=overwrite)
            atomic_write_json(existing, {"config": to_dict(cfg), "config_hash": h, "versions": versions(),
                                         "device": self.device, "created": time.strftime("%Y-%m-%d %H:%M:%S")})
        self.hash = h
        self._models: dict[str, Any] = {}

    # ------------------------------------------------------------ bookkeeping
    def done(self, stage: str) -> bool:
        p = self.out / "stages" / f"{stage}.json"
        return p.exists() and json.loads(p.read_text()).get("config_hash") == self.hash

    def mark(self, stage: str, seconds: float) -> None:
        atomic_write_json(self.out / "stages" / f"{stage}.json", {"config_hash": self.hash, "seconds": seconds})

    def model_ids(self) -> list[str]:
        return [f"{init}-s{s}" for init in ("finetuned", "scratch") for s in self.rc.seeds]

    def model(self, mid: str) -> Any:
        if mid not in self._models:
            if mid == "base":
                self._models[mid] = load_model(self.cfg["model"].base, self.device)[0]
            else:
                self._models[mid] = load_checkpoint(self.out / "models" / mid, self.device)[0]
        return self._models[mid]

    def save_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.out / "results" / f"{name}.json", obj)

    def save_arrays(self, name: str, arrays: dict[str, np.ndarray], rows: list[dict[str, Any]] | None = None) -> None:
        atomic_write_npz(self.out / "arrays" / f"{name}.npz", arrays)
        if rows is not None:
            atomic_write_csv(self.out / "arrays" / f"{name}.csv", rows)

    # ------------------------------------------------------------ stages
    def stage_train(self) -> None:
        for mid in self.model_ids():
            init, seed = mid.split("-s")
            tcfg = self.cfg["finetune" if init == "finetuned" else "scratch"]
            tcfg = TrainConfig(**{**to_dict(tcfg), "seed": int(seed), "device": self.device})
            mcfg = ModelConfig(init="pretrained" if init == "finetuned" else "scratch", base=self.cfg["model"].base)
            out = self.out / "models" / mid
            if (out / "checkpoint.json").exists():
                continue
            self.log(f"  training {mid}")
            train({"task": self.task, "model": mcfg, "train": tcfg}, out, resume=out.exists(), progress=self.progress)

    def stage_evaluate(self) -> None:
        res: dict[str, Any] = {"bayes_optimal_accuracy": stages.bayes_reference(self.task), "models": {}}
        for mid in self.model_ids() + ["base"]:
            r = stages.evaluate_model(self.model(mid), self.task, self.rc.n_eval, seed=1000)
            if mid != "base":
                meta = json.loads((self.out / "models" / mid / "checkpoint.json").read_text())
                r["steps"], r["curve"] = meta["metrics"]["steps"], meta["curve"]
            res["models"][mid] = r
        self.save_json("evaluate", res)
        rows = [{"model": mid, "split": split, **row} for mid, r in res["models"].items()
                for split in ("test", "gen") if split in r for row in r[split]["by_condition"]]
        atomic_write_csv(self.out / "arrays" / "accuracy_by_condition.csv", rows)

    def analysed(self) -> list[str]:
        return [f"finetuned-s{self.rc.seeds[0]}", f"scratch-s{self.rc.seeds[0]}", "base"]

    def stage_analyses(self) -> None:
        summary = {}
        for mid in self.analysed():
            self.log(f"  analysing {mid}")
            r = stages.analyse_model(self.model(mid), self.task, self.rc.corruption, self.rc.n_pairs, seed=2000,
                                     ablation=self.rc.ablation, progress=self.progress)
            arrays = {"clean_tokens": r["clean_tokens"], "corrupt_tokens": r["corrupt_tokens"],
                      "answer_ids": r["answer_ids"], "wrong_ids": r["wrong_ids"]}
            for what in ("heads", "heads_by_pos", "resid_pre", "attn_out", "mlp_out"):
                pr = r[f"patch_{what}"]
                self.save_arrays(f"patch_{what}_{mid}", {"values": pr.values, "raw": pr.raw, **arrays}, pr.rows())
            for key in ("atp_heads_by_pos", "ig_heads_by_pos", "dla_heads", "dla_mlp", "ablation_heads_accuracy",
                        "ablation_heads_logit_diff", "neuron_coef", "neuron_r2"):
                self.save_arrays(f"{key}_{mid}", {"values": np.asarray(r[key])})
            pr = r["patch_heads"]
            summary[mid] = {"position_labels": r["position_labels"], "clean_logit_diff": pr.clean_logit_diff,
                            "corrupt_logit_diff": pr.corrupt_logit_diff,
                            "atp_rank_correlation": r["atp_rank_correlation"],
                            "ig_rank_correlation": r["ig_rank_correlation"], "ablation_baseline": r["ablation_baseline"],
                            "neuron_top": r["neuron_top"], "neuron_top_ablation": r["neuron_top_ablation"],
                            "neuron_ablation_baseline": r["neuron_ablation_baseline"]}
        self.save_json("analyses", {"corruption": self.rc.corruption, "n_pairs": self.rc.n_pairs,
                                    "ablation": self.rc.ablation, "models": summary})

    def stage_compare(self) -> None:
        models = {mid: self.model(mid) for mid in self.model_ids()}
        res = stages.compare_to_base(models, self.model("base"), self.task, self.rc.n_compare, seed=3000,
                                     progress=self.progress)
        layers: dict[str, Any] = {}
        for init in ("finetuned", "scratch"):
            per = [res["per_model"][f"{init}-s{s}"] for s in self.rc.seeds]
            layers[init] = {
                "cka_resid_answer": stages.summarise_layers([p["cka"]["resid"]["answer"] for p in per]),
                "cka_resid_context": stages.summarise_layers([p["cka"]["resid"]["context"] for p in per]),
                "cka_mlp_answer": stages.summarise_layers([p["cka"]["mlp_out"]["answer"] for p in per]),
                "cka_attn_answer": stages.summarise_layers([p["cka"]["attn_out"]["answer"] for p in per]),
                "reversion_layer": stages.summarise_layers(
                    [np.array([v["accuracy_retained"] for v in p["reversion"]["layer"].values()]) for p in per]),
                "reversion_top_down": stages.summarise_layers(
                    [np.array([v["accuracy_retained"] for v in p["reversion"]["top_down"]]) for p in per]),
                "reversion_bottom_up": stages.summarise_layers(
                    [np.array([v["accuracy_retained"] for v in p["reversion"]["bottom_up"]]) for p in per]),
                "weight_change": stages.summarise_layers([np.array(list(p["weight_change"].values())) for p in per]),
                "cmap_resid": stages.summarise_layers([np.array([v["accuracy_retained"] for v in p["cmap"]["resid"]])
                                                       for p in per]),
                "cmap_mlp": stages.summarise_layers([np.array([v["accuracy_retained"] for v in p["cmap"]["mlp_out"]])
                                                     for p in per]),
                "cmap_attn": stages.summarise_layers([np.array([v["accuracy_retained"] for v in p["cmap"]["attn_out"]])
                                                      for p in per]),
            }
        pair_vals = [v["resid"]["answer"] for v in res["pairs"].values()]
        if pair_vals:
            layers["ft-vs-scratch"] = {"cka_resid_answer": stages.summarise_layers(pair_vals)}
        comps = list(next(iter(res["per_model"].values()))["weight_change"].keys())
        self.save_json("compare", {"layers": layers, "components": comps, "per_model": res["per_model"],
                                   "base_reference": res["base_reference"], "n_trials": self.rc.n_compare})

    def stage_circuits(self) -> None:
        out: dict[str, Any] = {"models": {}}
        base_graph = None
        for mid in self.model_ids():
            self.log(f"  discovering the circuit of {mid}")
            r = stages.discover(self.model(mid), self.model("base"), self.task, self.rc.corruption, self.rc.n_pairs,
                                seed=4000, method=self.rc.circuit_method, ablation=self.rc.circuit_ablation,
                                progress=False, base_scores=base_graph)
            base_graph = r["base_node_scores"]  # same pairs for every model: the base is ranked once
            self.save_arrays(f"circuit_inputs_{mid}", {"clean_tokens": r.pop("clean_tokens"),
                                                       "corrupt_tokens": r.pop("corrupt_tokens")})
            atomic_write_json(self.out / "circuits" / f"{mid}.json", r)
            out["models"][mid] = {k: r[k] for k in ("size_80", "nodes_80", "faithfulness", "exact_check",
                                                     "in_base_top", "ranked", "node_scores")}
        overlaps = {}
        for s in self.rc.seeds:
            a, b = set(out["models"][f"finetuned-s{s}"]["nodes_80"]), set(out["models"][f"scratch-s{s}"]["nodes_80"])
            overlaps[str(s)] = len(a & b) / len(a | b) if a | b else float("nan")
        out["jaccard_ft_scratch"] = overlaps
        out["method"], out["ablation"] = self.rc.circuit_method, self.rc.circuit_ablation
        self.save_json("circuits", out)

    def stage_figures(self) -> None:
        from experiments.figures import build_figures, export_run

        export_run(self.out, build_figures(self.out), self.rc.formats, strict=False)

    def stage_attention(self) -> None:
        from interp.viz import attention_page
        from interp.store import atomic_write_text

        summary = json.loads((self.out / "results" / "analyses.json").read_text())
        mid = self.analysed()[0]
        vals = np.load(self.out / "arrays" / f"patch_heads_{mid}.npz")["values"]
        order = np.argsort(-np.abs(np.nan_to_num(vals)).ravel())[: self.rc.attention_heads]
        heads = [(int(i // vals.shape[1]), int(i % vals.shape[1])) for i in order]
        models = {mid: self.model(mid) for mid in self.analysed()}
        panels = stages.attention_panels(models, self.task, self.rc.corruption, heads, seed=2000)
        atomic_write_text(self.out / "attention.html",
                          attention_page(panels, f"Attention of the top {len(heads)} heads by patching effect "
                                                 f"({summary['corruption']})"))
        self.save_json("attention", {"heads": heads, "chosen_by": f"|denoising patching effect| of {mid}"})

    def stage_report(self) -> None:
        from experiments.report import write_report

        write_report(self.out)

    def run(self) -> Path:
        torch.manual_seed(0)
        for stage in STAGES:
            if self.done(stage):
                self.log(f"[{stage}] already done: skipped")
                continue
            self.log(f"[{stage}] ...")
            t0 = time.time()
            getattr(self, f"stage_{stage}")()
            self.mark(stage, time.time() - t0)
            self.log(f"[{stage}] done in {time.time() - t0:.1f} s")
        return self.out / "report.html"
