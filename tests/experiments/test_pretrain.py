from __future__ import annotations

import json

import numpy as np

from experiments.training.corpus import check_no_task_text


def _tiny_corpus(d):
    d.mkdir()
    rng = np.random.default_rng(0)
    words = "the of and to in that he said unto them numbers chapter verse book year".split()
    for name in ("bible", "gcide"):
        text = "\n\n".join(" ".join([*rng.choice(words, 30), *map(str, rng.integers(0, 200, 8))]) for _ in range(200))
        (d / f"{name}.txt").write_text(text)
    (d / "manifest.json").write_text(json.dumps({"sources": [
        {"name": n, "package": "test", "licence": "test", "copyright_file": "", "chars": 1, "digit_chars": 1}
        for n in ("bible", "gcide")], "total_chars": 2}))
    return d


def test_pretraining_at_a_tiny_budget_gives_a_loadable_checkpoint(tmp_path):
    from experiments.training.pretrain import load_config, pretrain
    from interp.models import load_model

    corpus = _tiny_corpus(tmp_path / "corpus")
    cfg = load_config(None, {"tokenizer": {"vocab_size": 600},
                             "arch": {"n_layers": 1, "d_model": 32, "n_heads": 2, "d_mlp": 64, "n_ctx": 32},
                             "pretrain": {"steps": 3, "batch_size": 4, "seq_len": 16, "eval_every": 3,
                                          "eval_batches": 1, "checkpoint_every": 3, "warmup": 1}})
    log = pretrain(cfg, tmp_path / "base", progress=False, corpus_dir=corpus)
    assert log["steps"] == 3 and np.isfinite(log["final_heldout_loss"])
    model, tok, info = load_model(tmp_path / "base")
    assert info["kind"] == "hf" and model.cfg.n_layers == 1 and len(tok) <= 600
    assert (tmp_path / "base" / "heldout_tokens.safetensors").exists()


def test_task_shaped_text_is_detected():
    assert check_no_task_text("motion 43 51 color 62 58") == 1
    assert check_no_task_text("In the beginning 1 2 3 God created the heaven and the earth") == 0
