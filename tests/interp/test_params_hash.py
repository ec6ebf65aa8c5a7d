"""What a weights hash covers (the referee's "retrained model, same numbers, other hash"): the learned tensors, not
the buffers a model class derives when it is built. The committed SmolLM2 records were hashed with TransformerLens
3.9's `HookedTransformer` (a full causal mask, 2,048 rotary rows); the same parameters in `HookedLM` (an empty mask,
8,192 rows) hashed differently although every metric was equal."""

from __future__ import annotations

import torch

from interp.arch import Arch
from interp.models import (build_scratch, is_derived_buffer, load_checkpoint, load_model, params_sha256,
                           read_checkpoint_meta, state_sha256)


def _llama(tokenizer, n_ctx: int):
    arch = Arch(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_vocab=len(tokenizer), n_ctx=n_ctx, family="llama",
                n_key_value_heads=2, act_fn="silu", initializer_range=0.05)
    return build_scratch(arch, tokenizer, seed=3)


def test_the_same_parameters_with_other_rotary_tables_hash_equal(digit_tokenizer):
    """Catches a hash over every state-dict entry (the old one, which the rotary tables' length changed)."""
    a, b = _llama(digit_tokenizer, 64), _llama(digit_tokenizer, 128)
    assert a.state_dict()["blocks.0.attn.rotary_sin"].shape != b.state_dict()["blocks.0.attn.rotary_sin"].shape
    assert params_sha256(a) == params_sha256(b)
    assert state_sha256(a) != state_sha256(b)


def test_one_ulp_in_any_parameter_changes_the_hash(digit_tokenizer):
    """Catches a hash that skips parameters (e.g. a derived-buffer test by substring that also drops 'W_K')."""
    model = _llama(digit_tokenizer, 64)
    before = params_sha256(model)
    for name, p in model.named_parameters():
        assert not is_derived_buffer(name), name
    with torch.no_grad():
        w = model.blocks[1].attn._W_K
        w.view(-1)[7] = torch.nextafter(w.view(-1)[7], torch.tensor(1.0))
    assert params_sha256(model) != before


def test_a_checkpoint_records_the_hashes_of_its_start_and_of_its_end(tiny_trained, tiny_base):
    """Catches the trained model's hash recorded as its start (or the other way round), and a hash taken before
    the last optimizer step."""
    meta = read_checkpoint_meta(tiny_trained)
    model = load_checkpoint(tiny_trained)[0]
    base = load_model(tiny_base)[0]
    assert meta["params_sha256"] == params_sha256(model)
    assert meta["init_params_sha256"] == params_sha256(base)
    assert meta["params_sha256"] != meta["init_params_sha256"]


def test_derived_buffers_are_the_only_entries_left_out(digit_tokenizer):
    """Catches leaving out a learned buffer or parameter: every entry outside the hash is one the class rebuilds."""
    model = _llama(digit_tokenizer, 64)
    out = [k for k in model.state_dict() if is_derived_buffer(k)]
    params = {n for n, _ in model.named_parameters()}
    assert out and not set(out) & params
    assert {k.rsplit(".", 1)[-1] for k in out} <= {"IGNORE", "mask", "rotary_sin", "rotary_cos"}
