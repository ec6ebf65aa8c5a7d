"""Shared fixtures: the shipped tokenizer, a tiny random GPT-2 saved as a local HF directory, tiny trained models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "cogbase-6l"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow-marked tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def shipped_tokenizer_dir() -> Path:
    if (SHIPPED / "tokenizer.json").exists():
        return SHIPPED
    return SHIPPED / ".work" / "tokenizer"


@pytest.fixture(scope="session")
def tokenizer():
    from interp.models import load_tokenizer

    return load_tokenizer(shipped_tokenizer_dir())


def make_tiny_base(path: Path, tokenizer, n_layers=2, d_model=64, n_heads=4, seed=0) -> Path:
    from interp.models import Arch, build_hf_gpt2, save_hf_dir

    arch = Arch(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_mlp=4 * d_model, d_vocab=len(tokenizer),
                n_ctx=32)
    save_hf_dir(build_hf_gpt2(arch, tokenizer, seed), tokenizer, path)
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, tokenizer) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("tiny_base"), tokenizer)


def tiny_train_config(base: Path, init: str, steps: int = 40, seed: int = 0, **train):
    from experiments.train import load_config

    t = {"steps": steps, "eval_every": 20, "eval_size": 64, "batch_size": 32, "warmup": 5, "seed": seed,
         "checkpoint_every": 10, **train}
    return load_config(None, {"model": {"init": init, "base": str(base)}, "train": t})


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory, tiny_base) -> Path:
    """A 2-layer model fine-tuned briefly from the tiny base (weights differ from the base)."""
    from experiments.train import train

    out = tmp_path_factory.mktemp("tiny_trained") / "ckpt"
    train(tiny_train_config(tiny_base, "pretrained", steps=60, lr=3e-3), out, progress=False)
    return out
