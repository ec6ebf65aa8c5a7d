from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from interp.models import (Arch, ModelLoadError, build_scratch, load_checkpoint, load_hf_gpt2, load_model,
                           save_checkpoint)


def test_local_hf_directory_matches_transformers(tiny_base):
    hf, tok = load_hf_gpt2(tiny_base)
    model, _, info = load_model(tiny_base)
    assert info["kind"] == "hf"
    x = torch.randint(0, len(tok), (3, 12))
    with torch.no_grad():
        ref = torch.log_softmax(hf(x).logits, -1)
        got = torch.log_softmax(model(x), -1)
    assert (ref - got).abs().max() < 1e-4


def test_llama_directory_matches_transformers(tiny_llama_base):
    """Rotary, RMSNorm, gated MLP and grouped-query attention converted through TransformerLens's Llama conversion."""
    hf, tok = load_hf_gpt2(tiny_llama_base)
    model, _, info = load_model(tiny_llama_base)
    assert model.cfg.n_key_value_heads == 2 and model.cfg.ungroup_grouped_query_attention
    x = torch.randint(0, len(tok), (3, 12))
    with torch.no_grad():
        ref = torch.log_softmax(hf(x).logits, -1)
        got = torch.log_softmax(model(x), -1)
    assert (ref - got).abs().max() < 1e-4


def test_llama_scratch_twin_and_checkpoint_round_trip(tiny_llama_base, tmp_path):
    from interp.models import arch_of, base_arch_and_tokenizer

    base, tok, _ = load_model(tiny_llama_base)
    arch, _ = base_arch_and_tokenizer(tiny_llama_base)
    assert arch == arch_of(base) and arch.family == "llama" and arch.initializer_range == 0.1
    twin = build_scratch(arch, tok, 4)
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in base.state_dict().items()}
    w = twin.blocks[0].attn.W_Q.detach()
    assert abs(float(w.std()) - 0.1) < 0.01 and float(twin.blocks[0].ln1.w.detach().min()) == 1.0  # Llama init
    save_checkpoint(twin, tmp_path / "ck", {}, tok)
    again, _, _ = load_checkpoint(tmp_path / "ck")
    x = torch.randint(0, len(tok), (2, 10))
    assert torch.equal(twin(x), again(x))


def test_other_architectures_are_refused_by_name(tmp_path, tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(str(tmp_path / "bert"))
    with pytest.raises(ModelLoadError, match="model_type 'bert' is not supported.*GPT-2 and Llama"):
        load_model(tmp_path / "bert")


def test_scratch_model_shares_the_base_architecture_and_is_seeded(tiny_base, tokenizer):
    base, tok, _ = load_model(tiny_base)
    arch = Arch(n_layers=2, d_model=64, n_heads=4, d_mlp=256, d_vocab=len(tok), n_ctx=32)
    a, b, c = build_scratch(arch, tok, 1), build_scratch(arch, tok, 1), build_scratch(arch, tok, 2)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in base.state_dict().items()}
    assert torch.equal(a.W_E, b.W_E) and not torch.equal(a.W_E, c.W_E)


def test_checkpoint_round_trip(tiny_base, tmp_path):
    model, tok, _ = load_model(tiny_base)
    save_checkpoint(model, tmp_path / "ck", {"seed": 3, "note": "x"}, tok)
    again, tok2, meta = load_checkpoint(tmp_path / "ck")
    x = torch.randint(0, len(tok), (2, 10))
    assert torch.equal(model(x), again(x))
    assert meta["seed"] == 3 and meta["weight_processing"] == "none" and len(tok2) == len(tok)


@pytest.fixture()
def ckpt(tiny_base, tmp_path):
    model, tok, _ = load_model(tiny_base)
    save_checkpoint(model, tmp_path / "ck", {}, tok)
    return tmp_path / "ck"


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_missing_weights(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="weights file model.safetensors missing"):
        load_checkpoint(ckpt)


def test_truncated_weights(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated or modified"):
        load_checkpoint(ckpt)


def test_same_size_rewrite_is_caught(ckpt):
    """One byte changed in place (same size): the stat differs, so the weights are re-hashed and refused."""
    import time

    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    time.sleep(0.01)
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="truncated or modified"):
        load_checkpoint(ckpt)


def test_untouched_weights_are_hashed_once(ckpt, monkeypatch):
    """Loading an untouched checkpoint does not hash its weights again (they were hashed when written)."""
    import interp.models as models

    calls = []
    monkeypatch.setattr(models, "file_sha256", lambda p: calls.append(p) or "x")
    load_checkpoint(ckpt)
    assert calls == []


def test_corrupted_weights_without_hash(ckpt):
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    meta.pop("weights_sha256")
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="cannot read model.safetensors"):
        load_checkpoint(ckpt)


def test_weights_that_do_not_match_the_config(ckpt):
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    meta["arch"]["d_mlp"] = 128
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="do not match the config"):
        load_checkpoint(ckpt)


def test_tokenizer_that_does_not_match(ckpt):
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    meta["arch"]["d_vocab"] = 100
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="tokenizer does not match"):
        load_checkpoint(ckpt)


def test_pickled_weights_are_refused(tiny_base, tmp_path):
    d = tmp_path / "pickled"
    shutil.copytree(tiny_base, d)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickled"):
        load_model(d)


def test_not_a_model_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json missing"):
        load_model(tmp_path / "empty")


def test_invalid_checkpoint_json(ckpt):
    (ckpt / "checkpoint.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_checkpoint(ckpt)


def test_atomic_writes_have_the_usual_permissions(tmp_path):
    """Outputs are readable by others as any file the user writes (mkstemp alone would leave them 0600)."""
    import os

    from interp.store import atomic_write_text

    atomic_write_text(tmp_path / "x.txt", "hi")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_gpt2_activation_is_the_fused_tanh_gelu(tiny_base):
    """Models built here compute GPT-2's "gelu_new" with PyTorch's fused tanh GELU: equal to TransformerLens's own
    element-wise formula to float rounding over the range activations take (the exact, erf-based GELU differs by up
    to ~1e-3 there, the identity or a ReLU by far more), and its gradient too."""
    from transformer_lens.utilities.activation_functions import gelu_new

    model, _, _ = load_model(tiny_base)
    act = model.blocks[0].mlp.act_fn
    assert act is not gelu_new
    x = torch.linspace(-8, 8, 4001, dtype=torch.float64, requires_grad=True)
    y, ref = act(x), gelu_new(x)
    assert float((y - ref).detach().abs().max()) < 1e-12
    (g,), (g_ref,) = torch.autograd.grad(y.sum(), x), torch.autograd.grad(gelu_new(x).sum(), x)
    assert float((g - g_ref).abs().max()) < 1e-12
    assert float((torch.nn.functional.gelu(x) - ref).detach().abs().max()) > 1e-4  # the test tells the two GELUs apart
