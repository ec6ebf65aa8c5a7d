"""The shipped pretrained base: loads offline, matches transformers, and its perplexity matches its model card."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import SHIPPED

pytestmark = pytest.mark.skipif(not (SHIPPED / "model.safetensors").exists(), reason="shipped base not built")


def test_loads_offline_and_matches_transformers():
    from interp.models import load_hf_gpt2, load_model

    hf, tok = load_hf_gpt2(SHIPPED)
    model, _, info = load_model(SHIPPED)
    assert model.cfg.n_layers >= 4 and model.cfg.d_model >= 128
    x = torch.tensor([tok.encode(" In the beginning God created the heaven and the earth. 1 2 3")])
    with torch.no_grad():
        diff = (torch.log_softmax(hf(x).logits, -1) - torch.log_softmax(model(x), -1)).abs().max()
    assert diff < 1e-4
    assert (SHIPPED / "model.safetensors").stat().st_size < 25 * 2 ** 20


def test_heldout_perplexity_matches_the_model_card():
    from safetensors.torch import load_file

    from experiments.training.basecard import HELDOUT, perplexity
    from interp.models import load_hf_gpt2

    ev = json.loads((SHIPPED / "evidence.json").read_text())
    hf, _ = load_hf_gpt2(SHIPPED)
    windows = load_file(str(SHIPPED / HELDOUT))["windows"].long()[:64]
    ppl = perplexity(hf, windows)
    # a quarter of the card's windows: within 15% of the card's value, and far below the random twin's
    assert abs(ppl - ev["heldout_ppl"]) / ev["heldout_ppl"] < 0.15
    assert ppl < ev["random_ppl"] / 10 and ev["heldout_ppl"] < hf.config.vocab_size / 20
    card = (SHIPPED / "MODEL_CARD.md").read_text()
    assert f"{ev['heldout_ppl']:.2f}" in card


def test_task_symbols_are_single_tokens():
    from interp.models import load_tokenizer
    from tasks.cdm import CDMConfig, required_symbols

    tok = load_tokenizer(SHIPPED)
    assert all(len(tok.encode(s, add_special_tokens=False)) == 1 for s in required_symbols(CDMConfig()))


def test_train_without_base_uses_the_shipped_model(tmp_path):
    from experiments.cli.main import main
    from interp.store import file_sha256

    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nsteps = 1\neval_every = 1\neval_size = 16\nbatch_size = 4\nwarmup = 0\n")
    assert main(["train", "--init", "pretrained", "--config", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    meta = json.loads((tmp_path / "o" / "checkpoint.json").read_text())
    assert meta["base"]["weights_sha256"] == file_sha256(SHIPPED / "model.safetensors")


def test_fine_tuning_the_shipped_base_is_deterministic(tmp_path):
    """Two identical runs on the full-size base give bit-identical weights (needs deterministic kernels)."""
    import numpy as np
    from safetensors.numpy import load_file

    from experiments.training.train import load_config, train

    cfg = load_config(None, {"model": {"init": "pretrained"}, "train": {"steps": 12, "eval_every": 12,
                                                                         "eval_size": 16, "batch_size": 32,
                                                                         "warmup": 2}})
    for name in ("a", "b"):
        train(cfg, tmp_path / name, progress=False)
    a, b = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("a", "b"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
