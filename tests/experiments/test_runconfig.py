"""`run` without a config is the packaged default.toml; the default rates are the validation sweep's choice; the
shipped base resolves by name from the installed package."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import pytest

from experiments.run.config import default_config_path, load_run_config
from experiments.training.train import ModelConfig
from interp.models import resolve_base
from tests.conftest import REPO


def test_no_config_means_the_packaged_default():
    assert default_config_path().samefile(REPO / "experiments" / "configs" / "default.toml")
    assert load_run_config(None) == load_run_config(REPO / "experiments" / "configs" / "default.toml")


def test_default_rates_come_from_the_recorded_sweep():
    cfg = load_run_config(None)
    sweep = json.loads((REPO / "experiments" / "configs" / "lr_sweep.json").read_text())
    assert sweep["chosen"] == {"pretrained": cfg["finetune"].lr, "scratch": cfg["scratch"].lr}
    assert {r["batch_size"] for r in sweep["rows"] if r["init"] == "pretrained"} == {cfg["finetune"].batch_size}
    assert {r["batch_size"] for r in sweep["rows"] if r["init"] == "scratch"} == {cfg["scratch"].batch_size}
    for init in ("pretrained", "scratch"):  # the rule, re-applied to the recorded rows
        ok = {}
        for r in sweep["rows"]:
            if r["init"] == init:
                ok.setdefault(r["lr"], []).append(r)
        best = min((sum(x["steps"] for x in rs) / len(rs), lr) for lr, rs in ok.items()
                   if all(x["met_criterion"] for x in rs))
        assert sweep["chosen"][init] == best[1]
    assert sweep["criterion"] == {"accuracy": cfg["finetune"].target_accuracy,
                                  "incongruent_accuracy": cfg["finetune"].target_incongruent, "split": "val"}


def test_the_shipped_base_resolves_by_name():
    assert ModelConfig().base == "cogbase-6l"
    assert (resolve_base("cogbase-6l") / "model.safetensors").is_file()
    assert resolve_base("./somewhere") == "./somewhere"


def test_a_wheel_carries_the_base_and_the_configs(tmp_path):
    had_build = (REPO / "build").exists()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(REPO)], check=True)
    finally:
        if not had_build:  # setuptools builds in the source tree: leave it as it was
            shutil.rmtree(REPO / "build", ignore_errors=True)
    names = zipfile.ZipFile(next(tmp_path.glob("cogcircuits-*.whl"))).namelist()
    for want in ("checkpoints/cogbase-6l/model.safetensors", "checkpoints/cogbase-6l/tokenizer.json",
                 "experiments/configs/default.toml", "experiments/configs/lr_sweep.json"):
        assert want in names, want


@pytest.mark.parametrize("name", ["default", "paper-gpt2", "paper-smollm2", "smollm2", "smollm2-cpu"])
def test_every_shipped_run_config_loads_and_is_consistent(name):
    """Each shipped run config parses, evaluates fine-tuned and scratch models at the same cadence on the same
    number of validation trials, and (for a GPU config) has more CKA trials than the base has features. Catches a
    config edited into a state `run` refuses, or one whose two inits are checked for the criterion differently."""
    cfg = load_run_config(REPO / "experiments" / "configs" / f"{name}.toml")
    ft, sc = cfg["finetune"], cfg["scratch"]
    assert ft.eval_size == sc.eval_size
    if name != "smollm2-cpu":  # the CPU budget checks its 30-layer scratch twin every 100 steps (its comment says so)
        assert ft.eval_every == sc.eval_every
    d_model = {"paper-gpt2": 768, "paper-smollm2": 576, "smollm2": 576}.get(name)
    if d_model:
        assert cfg["run"].n_compare > d_model


def test_setup_installs_torch_from_an_index_in_the_declared_range():
    """scripts/setup.sh installs torch within pyproject.toml's range and from package indexes only: no
    machine-local wheel folder, no exact pin that drifts from the range."""
    import re
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_dep = next(d for d in deps if re.match(r"torch\s*[<>=!~]", d))
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert f'TORCH_SPEC="{torch_dep}"' in setup, torch_dep
    assert "/opt/" not in setup and "torch==" not in setup and ".whl" not in setup


def test_an_option_added_later_leaves_the_hashes_of_recorded_runs_unchanged_until_set():
    """`train.hold_steps` came after runs were recorded: at its default a config hashes as it did without it (the
    committed SmolLM2 study's run.json still matches its config, so the study resumes), and set, it is hashed. A
    hash over every field would break the first; dropping the option always would break the second."""
    import hashlib

    from experiments.core.config import to_dict
    from experiments.run.context import config_hash
    from experiments.training.train import config_sha256

    study = REPO / "experiments" / "configs" / "smollm2-study.toml"
    cfg = load_run_config(study)
    stored = json.loads((REPO / "docs" / "smollm2-study" / "run" / "run.json").read_text())["config_hash"]
    assert config_hash(cfg) == stored
    before = {k: v for k, v in to_dict(cfg).items() if k != "executor"}
    later = ("hold_steps", "balanced_trials", "multiplicity", "shuffled", "shuffle_digits", "embed_from_base",
             "freeze_below")  # each added after the study was recorded
    for section in ("finetune", "scratch", "run", "model"):
        before[section] = {k: v for k, v in before[section].items() if k not in later}
    assert config_hash(cfg) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert config_hash(load_run_config(study, {"scratch": {"hold_steps": 1000}})) != stored
    assert config_hash(load_run_config(study, {"run": {"balanced_trials": True}})) != stored
    assert config_hash(load_run_config(study, {"run": {"multiplicity": "holm"}})) != stored
    assert config_hash(load_run_config(study, {"model": {"shuffled": True}})) != stored
    train = {"task": to_dict(cfg["task"]), "model": {"init": "scratch"}, "train": to_dict(cfg["scratch"])}
    held = {**train, "train": {**train["train"], "hold_steps": 5}}
    assert config_sha256(train) != config_sha256(held)
    old = {**train, "train": {k: v for k, v in train["train"].items()
                              if k not in ("hold_steps", "freeze_below", "device")}}
    assert config_sha256(train) == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()


def test_a_config_extends_a_run_only_by_appending_seeds():
    """`run --extend` accepts a config whose only change is seeds appended: the models it adds are named in the
    run's order. Catches an extension that accepts a dropped, reordered or replaced seed (whose record would then
    describe another model), one that ignores another changed option, and scratch seeds that default to `seeds`."""
    from experiments.run.extend import added_models

    old = {"run": {"name": "x", "seeds": [0, 1], "scratch_seeds": None, "n_pairs": 6}, "scratch": {"lr": 1e-3},
           "executor": {"kind": "serial"}}

    def new(**run):
        return {**old, "run": {**old["run"], **run}}

    assert added_models(old, new(seeds=[0, 1, 2])) == ["finetuned-s2", "scratch-s2"]  # scratch follows seeds
    assert added_models(old, new(scratch_seeds=[0, 1, 3])) == ["scratch-s3"]
    assert added_models(old, new(seeds=[0, 1], scratch_seeds=[0, 1])) == []
    assert added_models(old, {**new(seeds=[0, 1, 2]), "executor": {"kind": "local"}}) == ["finetuned-s2",
                                                                                         "scratch-s2"]
    for bad in (new(seeds=[0]), new(seeds=[1, 0, 2]), new(seeds=[0, 2]), new(scratch_seeds=[1, 2]),
                new(seeds=[0, 1, 2], n_pairs=5), {**new(seeds=[0, 1, 2]), "scratch": {"lr": 3e-4}}):
        assert added_models(old, bad) is None, bad
