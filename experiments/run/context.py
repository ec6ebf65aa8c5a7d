"""What every step of a run shares (`RunContext`: config, output folder, device, loaded models, the results
files), and the config's hash and portable form that run.json records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from experiments.core.config import hashed_form, to_dict
from experiments.core.record import Record
from experiments.core.run_record import RunEvaluation, RunMeta, load_step
from experiments.jobs.executors import ExecutorConfig
from experiments.report.figures import build_figures
from experiments.run.config import RunConfig
from experiments.training.train import pick_device
from interp.model_id import model_ids
from interp.models import load_checkpoint, load_model
from interp.store import portable

R = TypeVar("R", bound=Record)


def config_hash(cfg: dict[str, Any]) -> str:
    """What the results depend on: every section but [executor] (where jobs run does not change them)."""
    d = {k: v for k, v in hashed_form(to_dict(cfg)).items() if k != "executor"}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def portable_config(cfg: dict[str, Any], root: Path) -> dict[str, Any]:
    """The config as recorded in outputs: a base given as a path is written relative to `root`."""
    d = to_dict(cfg)
    d["model"]["base"] = portable(d["model"]["base"], root)
    return d


class RunContext:
    """What every step of a run shares: config, output folder, device, loaded models and the save helpers."""

    def __init__(self, cfg: dict[str, Any], out: Path, progress: bool, log: Callable[[str], None]) -> None:
        self.cfg, self.out, self.progress, self.log = cfg, Path(out), progress, log
        self.rc: RunConfig = cfg["run"]
        self.task = cfg["task"]
        self.executor = cfg.get("executor") or ExecutorConfig()
        self.device = pick_device(self.rc.device)
        self._models: dict[str, Any] = {}
        self._figures: dict[str, Any] | None = None

    def model_ids(self) -> list[str]:
        scratch = self.rc.scratch_seeds if self.rc.scratch_seeds is not None else self.rc.seeds
        return [str(m) for m in model_ids(list(self.rc.seeds), list(scratch))]

    def eligible(self) -> list[str]:
        """The models that met the training criterion (the only ones analysed)."""
        return list(self.record("evaluate", RunEvaluation).eligible)

    def model(self, mid: str) -> Any:
        if mid not in self._models:
            if mid == "base":
                self._models[mid] = load_model(self.cfg["model"].base, self.device)[0]
            else:
                self._models[mid] = load_checkpoint(self.out / "models" / mid, self.device)[0]
        return self._models[mid]

    def figures(self) -> dict[str, Any]:
        """The run's figures, built once per process from its results (the figures and report steps share them;
        every step that changes results runs before them)."""
        if self._figures is None:
            self._figures = build_figures(self.out)
        return self._figures

    def record(self, name: str, cls: type[R]) -> R:
        """The record an earlier step wrote (results/<name>.json), typed."""
        rec = load_step(self.out, name, cls)
        if rec is None:
            raise FileNotFoundError(f"results/{name}.json is missing: the {name} step has not run in {self.out.name}")
        return rec

    def save(self, name: str, rec: Record) -> None:
        rec.save(self.out / "results" / f"{name}.json")

    def run_meta(self) -> RunMeta:
        return RunMeta.load(self.out / "run.json")
