"""The config of `cogcircuits controls`: its [controls] section and the loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.core.config import ConfigError, build_task, load_sections
from experiments.training.train import ModelConfig, TrainConfig
from tasks.base import check_finite
from tasks.registry import task_of


@dataclass(frozen=True)
class ControlsConfig:
    """seeds: the seeds of every arm (fine-tuned from the planted base, fine-tuned from the shuffled base, scratch);
    base_seed: the planted base's training seed (and the shuffle's); n_compare: trials for CKA; n_reliance: trials
    for reversion and base-residual patching; n_pairs: clean/corrupted pairs for the node rankings (circuits);
    n_ablate: trials for the planted-head ablation; planted_heads: how many of the planted base's heads (ranked
    by their ablation effect on the skill) form the planted component; n_random_sets: random head sets of that
    size, the ablation's baseline; overlap_fraction: a circuit is a model's top nodes at this fraction of all
    nodes."""

    name: str = "controls"
    seeds: tuple[int, ...] = (0, 1, 2)
    base_seed: int = 100
    n_compare: int = 128
    n_reliance: int = 64
    n_pairs: int = 16
    n_ablate: int = 128
    planted_heads: int = 4
    n_random_sets: int = 20
    corruption: str = ""  # the task's default
    method: str = "eap-ig"
    overlap_fraction: float = 0.2
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_finite(self, "controls.", ValueError)
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("controls.seeds must list at least two distinct seeds (the null is their spread)")
        if min(self.n_compare, self.n_reliance, self.n_ablate) < 16 or self.n_pairs < 4:
            raise ValueError("controls.n_compare, n_reliance and n_ablate must be >= 16, n_pairs >= 4")
        if self.planted_heads < 1 or self.n_random_sets < 1:
            raise ValueError("controls.planted_heads and controls.n_random_sets must be >= 1")
        if not 0 < self.overlap_fraction < 1:
            raise ValueError("controls.overlap_fraction must lie strictly between 0 and 1")
        if self.method not in ("eap", "eap-ig"):
            raise ValueError("controls.method must be eap or eap-ig")


SCHEMA = {"controls": ControlsConfig, "task": build_task, "skill": build_task, "unrelated": build_task,
          "model": ModelConfig, "pretrain": TrainConfig, "finetune": TrainConfig, "scratch": TrainConfig}


def load_controls_config(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """{section: frozen dataclass}: [task] the task the arms learn, [skill] the planted base's sub-skill, [unrelated]
    a task of the suite for the cross-task circuit baseline, [model] the architecture (its base), [pretrain] the
    planted base's training, [finetune] and [scratch] the arms'."""
    cfg = load_sections(path, SCHEMA, overrides=overrides)
    names = [task_of(cfg[s]).name for s in ("task", "skill", "unrelated")]
    if len(set(names)) != 3:
        raise ConfigError(f"{path}: [task], [skill] and [unrelated] must be three different tasks, got {names}")
    task = task_of(cfg["task"])
    corruption = cfg["controls"].corruption or task.default_corruption
    if corruption not in task.corruptions or not task.corruptions[corruption].flips:
        raise ConfigError(f"{path}: [controls] corruption {corruption!r} is not an answer-flipping corruption of "
                          f"{task.name}")
    return cfg
