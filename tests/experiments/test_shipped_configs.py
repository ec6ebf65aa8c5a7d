"""Every TOML under experiments/configs/ loads and validates through the loader of the command that reads it.

Parametrized over the glob, so a new config file is covered without editing this test. A config whose sections
are those of `cogcircuits pretrain` goes through `experiments.training.pretrain.load_config`; one with a [train] section
through `experiments.training.train.load_config` (`cogcircuits train --config`); one with a [controls] section
through `experiments.controls.config.load_controls_config` (`cogcircuits controls`); every other one through
`experiments.run.config.load_run_config`, the loader of `cogcircuits run` (and of `suite`), and then its [finetune]
and [scratch] sections must also build as the training jobs of that run build them, and as the [train] section of
`cogcircuits train --config`. Unknown keys are errors in every loader, so an option renamed in a dataclass but
not in a shipped config (or the other way round) fails here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from experiments.training import pretrain

from experiments.training import train
from experiments.controls.config import load_controls_config
from experiments.core.config import build, to_dict
from experiments.run.config import load_run_config
from experiments.training.train import TrainConfig
from tests.conftest import REPO

CONFIGS = sorted((REPO / "experiments" / "configs").glob("*.toml"))


def test_the_glob_finds_the_shipped_configs():
    names = {p.name for p in CONFIGS}
    assert {"default.toml", "base-small.toml", "paper-gpt2.toml", "multisensory.toml"} <= names, names


def _toml_table(d: dict) -> str:
    """A raw TOML table's body (the values tomllib read: strings, numbers, booleans, lists, inline tables)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        return repr(v)
    return "".join(f"{k} = {val(v)}\n" for k, v in d.items())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_validates(path: Path, tmp_path):
    raw = tomllib.loads(path.read_text("utf-8"))
    sections = set(raw)
    if sections <= set(pretrain.SCHEMA):
        cfg = pretrain.load_config(path)
        assert set(cfg) == set(pretrain.SCHEMA)
        return
    if "train" in sections:
        train.load_config(path)
        return
    if "controls" in sections:  # `cogcircuits controls`: each training section builds as its jobs build it
        cfg = load_controls_config(path)
        for section in ("pretrain", "finetune", "scratch"):
            for seed in (cfg["controls"].base_seed, *cfg["controls"].seeds):
                job = build(TrainConfig, {**to_dict(cfg[section]), "seed": seed, "device": cfg["controls"].device},
                            f"{path.name} [{section}] seed {seed}")
                assert job.lr == cfg[section].lr and job.steps == cfg[section].steps
        return
    cfg = load_run_config(path)
    run = cfg["run"]
    for section, init in (("finetune", "pretrained"), ("scratch", "scratch")):
        # as `run` builds each training job (experiments.run.steps.train_models -> experiments.jobs.runner.train_config)
        seeds = run.seeds if init == "pretrained" or run.scratch_seeds is None else run.scratch_seeds
        for seed in seeds:
            job = build(TrainConfig, {**to_dict(cfg[section]), "seed": seed, "device": run.device},
                        f"{path.name} [{section}] seed {seed}")
            assert job.lr == cfg[section].lr and job.steps == cfg[section].steps
        # the raw section, as the [train] section of `cogcircuits train --config` (with the run's task and base)
        model = {"init": init, "base": cfg["model"].base}
        text = (f"[task]\n{_toml_table(raw.get('task', {}))}[model]\n{_toml_table(model)}"
                f"[train]\n{_toml_table(raw.get(section, {}))}")
        (tmp_path / f"{section}.toml").write_text(text)
        tcfg = train.load_config(tmp_path / f"{section}.toml")
        assert tcfg["train"] == cfg[section] and tcfg["task"] == cfg["task"]
