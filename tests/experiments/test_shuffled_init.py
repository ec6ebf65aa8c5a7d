"""The shuffled-base negative control of the referee's study: a fine-tune that starts from the base's tensors with
their entries permuted (the base's statistics, none of its machinery)."""

from __future__ import annotations

import torch

from experiments.training.start import ModelConfig, init_model
from experiments.training.train import TrainConfig
from interp.models import is_derived_buffer, load_model, params_sha256


def test_a_shuffled_start_keeps_each_tensors_values_and_moves_them(tiny_base):
    """Catches a shuffle that draws new values (other statistics), one that leaves tensors in place, one that
    permutes the derived buffers (a broken rotary table or mask), and a seed that is ignored."""
    base = load_model(tiny_base)[0].state_dict()
    a, _, info = init_model(ModelConfig(base=str(tiny_base), shuffled=True), TrainConfig(seed=3), "cpu")
    b = init_model(ModelConfig(base=str(tiny_base), shuffled=True), TrainConfig(seed=4), "cpu")[0]
    moved = 0
    for k, v in a.state_dict().items():
        if is_derived_buffer(k):
            assert torch.equal(v, base[k]), k
            continue
        assert torch.equal(v.flatten().sort().values, base[k].flatten().sort().values), k
        moved += int(not torch.equal(v, base[k]))
    varied = sum(1 for k in base if not is_derived_buffer(k) and base[k].unique().numel() > 1)  # not all 0 or 1
    assert varied > 10 and moved == varied
    assert params_sha256(a) != params_sha256(b)
    assert info["shuffled"] == {"seed": 3}


def test_the_unshuffled_start_is_the_base():
    """Catches the option defaulting to on (every fine-tune would start from noise)."""
    assert ModelConfig().shuffled is False


def test_shuffled_digits_move_only_the_digit_rows_and_none_stays(tiny_llama_base, digit_tokenizer):
    """Claim C's embedding confound: each digit token gets another digit's pretrained row. Catches a permutation
    with fixed points (a digit that keeps its own row), one that touches other rows, and rows swapped on W_U."""
    from experiments.training.start import digit_ids

    base = load_model(tiny_llama_base)[0]
    model, _, info = init_model(ModelConfig(base=str(tiny_llama_base), shuffle_digits=True), TrainConfig(seed=1), "cpu")
    ids = digit_ids(digit_tokenizer)
    mapping = info["shuffled_digits"]
    assert sorted(mapping) == sorted(mapping.values()) == [str(d) for d in range(10)]
    for d, src in mapping.items():
        assert d != src
        assert torch.equal(model.embed.W_E[ids[int(d)]], base.embed.W_E[ids[int(src)]])
    others = [i for i in range(base.embed.W_E.shape[0]) if i not in ids]
    assert torch.equal(model.embed.W_E[others], base.embed.W_E[others])
    assert torch.equal(model.unembed.W_U, base.unembed.W_U)


def test_a_scratch_twin_with_the_bases_embedding_differs_from_the_plain_twin_only_there(tiny_llama_base):
    """Catches copying more than the embedding (a fine-tune in disguise) or nothing, and a changed random draw for
    the other weights (the twin must be the plain twin of the same seed but for W_E)."""
    base = load_model(tiny_llama_base)[0]
    cfg = TrainConfig(seed=2)
    with_emb, _, info = init_model(ModelConfig(init="scratch", base=str(tiny_llama_base), embed_from_base=True), cfg,
                                   "cpu")
    plain = init_model(ModelConfig(init="scratch", base=str(tiny_llama_base)), cfg, "cpu")[0]
    assert torch.equal(with_emb.embed.W_E, base.embed.W_E) and info["embedding_from_base"]
    sp = plain.state_dict()
    for k, v in with_emb.state_dict().items():
        if k != "embed.W_E":
            assert torch.equal(v, sp[k]), k


def test_freezing_below_a_layer_keeps_the_embeddings_and_those_blocks(tmp_path, tiny_base):
    """The late-layer planted-reuse control trains a skill above frozen layers. Catches a freeze that misses the
    embeddings, one off by a layer, and one that freezes everything (nothing trained)."""
    from experiments.training.train import train
    from interp.models import load_checkpoint
    from tests.conftest import tiny_train_config

    out = tmp_path / "frozen"
    train(tiny_train_config(tiny_base, "pretrained", steps=10, lr=3e-3, freeze_below=1), out, progress=False)
    before, after = load_model(tiny_base)[0].state_dict(), load_checkpoint(out)[0].state_dict()
    for k in after:
        if is_derived_buffer(k):
            continue
        same = torch.equal(after[k], before[k])
        if k.startswith(("embed.", "pos_embed.", "blocks.0.")):
            assert same, k
        elif k.startswith("blocks.1.") and k.endswith(("W_Q", "W_in", "W_out")):
            assert not same, k
