"""The controls' models: the planted base (the architecture trained from scratch on a sub-skill of the task), its
shuffled copy (each weight matrix's entries permuted: the same values and statistics, no function), and the three
arms trained on the task: fine-tuned from the planted base (positive control), fine-tuned from the shuffled base and
trained from scratch (negative controls). Every seed has its own planted base (so the seed null covers the base,
not only the fine-tuning). Each model is one training folder; a finished one is never retrained."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from experiments.training.train import ModelConfig, TrainConfig, train
from interp.models import (is_checkpoint, load_checkpoint, permute_within_tensors, read_checkpoint_meta,
                           save_checkpoint)


class ControlsError(RuntimeError):
    """The controls cannot be scored (e.g. a planted base did not learn its sub-skill)."""


ARMS = ("planted", "shuffled", "scratch")  # the positive control first
NEGATIVE = ("shuffled", "scratch")


def base_of(arm: str, seed: int) -> str:
    """The base folder (under out/bases) a model of `arm` with `seed` is measured against: each seed has its own
    planted base (and its own shuffled copy), so an arm's seed null covers the base as well as the fine-tuning; the
    scratch arm is measured against the planted base of its seed, which it never saw."""
    return f"shuffled-s{seed}" if arm == "shuffled" else f"planted-s{seed}"


@dataclass(frozen=True)
class ArmModel:
    """One trained model of an arm: where it is, and whether it met its criterion (only those are scored)."""
    arm: str
    seed: int
    path: Path
    met: bool
    steps: int
    test_accuracy: float


def _train_once(cfg: dict[str, Any], out: Path, progress: bool) -> dict[str, Any]:
    if is_checkpoint(out):
        return read_checkpoint_meta(out)["metrics"]
    return train(cfg, out, resume=(out / "state").exists(), overwrite=out.exists() and not (out / "state").exists(),
                 progress=progress)


def planted_base(cfg: dict[str, Any], out: Path, seed: int, progress: bool = True) -> dict[str, Any]:
    """Train the architecture of [model] base from scratch on the [skill] task with [pretrain] (seed
    controls.base_seed + seed) into out/bases/planted-s<seed>; returns its metrics."""
    c = cfg["controls"]
    tcfg = replace(cfg["pretrain"], seed=c.base_seed + seed, device=c.device)
    mcfg = ModelConfig(init="scratch", base=cfg["model"].base)
    return _train_once({"task": cfg["skill"], "model": mcfg, "train": tcfg}, out / "bases" / f"planted-s{seed}",
                       progress)


def shuffle_weights(src: Path, out: Path, seed: int) -> None:
    """A copy of checkpoint `src` whose every weight tensor has its entries permuted (one seeded permutation per
    tensor): each matrix keeps its values (so its mean, spread and norm) and loses its arrangement."""
    if is_checkpoint(out):
        return
    model, tok, meta = load_checkpoint(src)
    permute_within_tensors(model, seed)
    keep = {k: v for k, v in meta.items() if k not in ("format", "arch", "weights_sha256", "weights_stat",
                                                          "weight_processing")}
    save_checkpoint(model, out, {**keep, "shuffled_from": src.name, "shuffle_seed": seed}, tok)


def train_arm(cfg: dict[str, Any], out: Path, arm: str, seed: int, progress: bool = True) -> ArmModel:
    """One model of `arm` on [task]: fine-tuned from its base folder, or (scratch) from the planted base's
    architecture and tokenizer with its own initialisation."""
    c, base = cfg["controls"], out / "bases" / base_of(arm, seed)
    section = "scratch" if arm == "scratch" else "finetune"
    tcfg: TrainConfig = replace(cfg[section], seed=seed, device=c.device)
    mcfg = ModelConfig(init="scratch" if arm == "scratch" else "pretrained", base=str(base))
    path = out / "models" / f"{arm}-s{seed}"
    m = _train_once({"task": cfg["task"], "model": mcfg, "train": tcfg}, path, progress)
    return ArmModel(arm=arm, seed=seed, path=path, met=bool(m["met_criterion"]), steps=int(m["steps"]),
                    test_accuracy=float(m["test_accuracy"]))


def train_all(cfg: dict[str, Any], out: Path, progress: bool = True,
              log: Callable[[str], None] = lambda s: None) -> tuple[dict[int, dict[str, Any]], list[ArmModel]]:
    """Each seed's planted base and its shuffled copy, then every arm's models (each skipped when already
    trained). Returns the planted bases' metrics by seed and the models."""
    c, bases = cfg["controls"], {}
    for seed in c.seeds:
        bases[seed] = planted_base(cfg, out, seed, progress)
        log(f"planted-s{seed}: {'met' if bases[seed]['met_criterion'] else 'missed'} its criterion on the skill "
            f"(test accuracy {bases[seed]['test_accuracy']:.3f})")
        shuffle_weights(out / "bases" / f"planted-s{seed}", out / "bases" / f"shuffled-s{seed}", c.base_seed + seed)
    missed = [s for s, m in bases.items() if not m["met_criterion"]]
    if missed:
        raise ControlsError(f"the planted base of seed(s) {missed} did not meet its criterion on "
                            f"{cfg['skill'].name}: raise [pretrain] steps (no arm was trained)")
    models = []
    for arm in ARMS:
        for seed in c.seeds:
            m = train_arm(cfg, out, arm, seed, progress)
            log(f"{arm}-s{seed}: {'met' if m.met else 'missed'} the criterion in {m.steps} steps")
            models.append(m)
    return bases, models
