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


@pytest.hookimpl(tryfirst=True)  # before pytest's own `-m` selection, which must see the `unit` marks
def pytest_collection_modifyitems(config, items):
    """Every test not marked slow or integration is a `unit` test (`pytest -m unit`: the fast set); slow tests are
    skipped unless --runslow. `bash scripts/test.sh` runs the unit set; CI (`bash scripts/test.sh --all`) runs all but slow."""
    for item in items:
        if item.get_closest_marker("slow") is None and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.unit)
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


def build_digit_tokenizer(extra_words: str = ""):
    """A small byte-level BPE tokenizer that splits numbers into single digits, as SmolLM2's does (" 37" is
    "Ġ", "3", "7"), with the task's words (and `extra_words`) as single tokens and a BOS token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    words = " context motion color left right answer . the a of and is in" + extra_words
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([words] * 50 + [" 0 1 2 3 4 5 6 7 8 9"] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<eos>")


@pytest.fixture(scope="session")
def digit_tokenizer():
    return build_digit_tokenizer()


@pytest.fixture(scope="session")
def task_digit_tokenizer():
    """The digit tokenizer that also knows every registered task's words."""
    return build_digit_tokenizer(" first then second more less sound light sample test same different")


def make_tiny_base(path: Path, tokenizer, n_layers=2, d_model=64, n_heads=4, seed=0) -> Path:
    from interp.models import Arch, build_hf_gpt2, save_hf_dir

    arch = Arch(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_mlp=4 * d_model, d_vocab=len(tokenizer),
                n_ctx=32)
    save_hf_dir(build_hf_gpt2(arch, tokenizer, seed), tokenizer, path)
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, tokenizer) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("tiny_base"), tokenizer)


def make_tiny_llama_base(path: Path, tokenizer, seed=0) -> Path:
    """A tiny random Llama-architecture HF directory (grouped-query attention: 4 query heads share 2 key/value heads;
    rotary, RMSNorm, gated SiLU MLP, tied embeddings), like SmolLM2 in miniature."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=True, initializer_range=0.1,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_llama_base(tmp_path_factory, digit_tokenizer) -> Path:
    return make_tiny_llama_base(tmp_path_factory.mktemp("tiny_llama"), digit_tokenizer)


@pytest.fixture(scope="session")
def tiny_llama_trained(tmp_path_factory, tiny_llama_base) -> Path:
    """The tiny Llama fine-tuned briefly on the task (numbers are three tokens each with this tokenizer)."""
    from experiments.training.train import train

    out = tmp_path_factory.mktemp("tiny_llama_trained") / "ckpt"
    train(tiny_train_config(tiny_llama_base, "pretrained", steps=60, lr=3e-3), out, progress=False)
    return out


def tiny_train_config(base: Path, init: str, steps: int = 40, seed: int = 0, **train):
    from experiments.training.train import load_config

    t = {"steps": steps, "eval_every": 20, "eval_size": 64, "batch_size": 32, "warmup": 5, "seed": seed,
         "checkpoint_every": 10, "state_time_share": 1.0, **train}
    return load_config(None, {"model": {"init": init, "base": str(base)}, "train": t})


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory, tiny_base) -> Path:
    """A 2-layer model fine-tuned briefly from the tiny base (weights differ from the base)."""
    from experiments.training.train import train

    out = tmp_path_factory.mktemp("tiny_trained") / "ckpt"
    train(tiny_train_config(tiny_base, "pretrained", steps=60, lr=3e-3), out, progress=False)
    return out
