"""The config of `cogcircuits run`: its [run] section and the loader (no config file = the packaged default.toml)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from experiments.core.config import ConfigError, build_task, load_sections
from experiments.jobs.executors import ExecutorConfig
from experiments.training.train import ModelConfig, TrainConfig
from tasks.base import check_finite
from tasks.registry import task_of

FORMATS = ("html", "png", "svg", "csv")


@dataclass(frozen=True)
class RunConfig:
    """n_eval: test / generalisation trials per model; n_pairs: clean/corrupted pairs for patching, attribution,
    ablation and circuits; n_compare: trials for CKA (at least d_model is advised); n_reliance: trials for weight
    reversion and cross-model patching; circuit_random: random circuits per size; overlap_fraction: circuits
    compared for overlap are each model's top nodes at this fraction of all nodes. scratch_seeds: the scratch
    models' seeds when they differ from the fine-tuned ones (e.g. one scratch twin of a large base on a CPU).
    detailed_maps: per-position patching maps and attribution patching for the first model of each init (costly
    on deep models: 30 layers x positions x heads). balanced_trials: the trial sets of patching, ablation,
    reliance and circuits hold equal numbers of each answer side (and, where the corruption allows, of congruent
    and incongruent trials), so that a model that always gives one answer scores chance exactly (off in configs
    written before it, whose records stand)."""

    name: str = "default"
    seeds: tuple[int, ...] = (0, 1, 2)
    scratch_seeds: tuple[int, ...] | None = None
    n_eval: int = 500
    n_pairs: int = 32
    n_compare: int = 256
    n_reliance: int = 128
    corruption: str = ""  # empty: the task's default corruption
    circuit_method: str = "eap-ig"
    ablation: str = "mean"
    circuit_ablation: str = "corrupted"
    circuit_random: int = 20
    circuit_level: float = 0.8
    overlap_fraction: float = 0.2
    device: str = "auto"
    attention_heads: int = 3
    detailed_maps: bool = True
    formats: tuple[str, ...] = ("html", "png", "csv")
    balanced_trials: bool = False
    multiplicity: str = "none"  # "holm": each claim's parts Holm-adjusted (experiments.run.claims.rule_text)

    def __post_init__(self) -> None:  # noqa: C901
        check_finite(self, "run.", ValueError)
        if not self.seeds:
            raise ValueError("run.seeds must list at least one seed")
        for name in ("seeds", "scratch_seeds"):
            v = getattr(self, name)
            if v is not None and len(set(v)) != len(v):
                raise ValueError(f"run.{name} has duplicates: {list(v)}")
        if self.scratch_seeds is not None and not self.scratch_seeds:
            raise ValueError("run.scratch_seeds must list at least one seed (or be left out)")
        if self.multiplicity not in ("none", "holm"):
            raise ValueError("run.multiplicity must be none or holm")
        if self.circuit_method not in ("eap", "eap-ig"):
            raise ValueError("run.circuit_method must be eap or eap-ig")
        if self.ablation not in ("zero", "mean", "resample"):
            raise ValueError("run.ablation must be zero, mean or resample")
        if self.circuit_ablation not in ("corrupted", "mean", "resample"):
            raise ValueError("run.circuit_ablation must be corrupted, mean or resample")
        if self.n_eval < 16 or self.n_pairs < 4 or self.n_compare < 16 or self.n_reliance < 16:
            raise ValueError("run.n_eval, run.n_compare and run.n_reliance must be >= 16 and run.n_pairs >= 4")
        if self.circuit_random < 1:
            raise ValueError("run.circuit_random must be >= 1")
        if not 0 < self.circuit_level < 1 or not 0 < self.overlap_fraction < 1:
            raise ValueError("run.circuit_level and run.overlap_fraction must lie strictly between 0 and 1")
        bad = set(self.formats) - set(FORMATS)
        if bad:
            raise ValueError(f"run.formats: unknown format(s) {sorted(bad)} (choose {', '.join(FORMATS)})")


SCHEMA = {"run": RunConfig, "task": build_task, "model": ModelConfig, "finetune": TrainConfig, "scratch": TrainConfig,
          "executor": ExecutorConfig}


def default_config_path() -> Path:
    """The packaged experiments/configs/default.toml (present in any install, editable or not)."""
    return Path(str(resources.files("experiments").joinpath("configs", "default.toml")))


def load_run_config(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """{section: frozen dataclass} from a run config; no path means the packaged default.toml."""
    cfg = load_sections(default_config_path() if path is None else path, SCHEMA, overrides=overrides)
    if cfg["model"].init != "pretrained":
        raise ConfigError("[model] init is not used by `run` (it trains both): remove it or set it to 'pretrained'")
    if not cfg["finetune"].is_default_init():
        raise ConfigError("[finetune] resid_init / embed_init_std: the initialisation recipe is for the scratch arm "
                          "only (put it in [scratch])")
    task = task_of(cfg["task"])
    corruption = cfg["run"].corruption or task.default_corruption
    if corruption not in task.corruptions:
        raise ConfigError(f"[run] corruption {corruption!r} is not a corruption of task {task.name} (choose from "
                          f"{', '.join(task.corruptions)})")
    if not task.corruptions[corruption].flips:
        raise ConfigError(f"[run] corruption {corruption!r} leaves the answer unchanged: patching needs a corruption "
                          "that changes it (" + ", ".join(k for k, c in task.corruptions.items() if c.flips) + ")")
    cfg["run"] = replace(cfg["run"], corruption=corruption)
    return cfg
