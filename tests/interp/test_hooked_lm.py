"""interp.hooked_lm.HookedLM against TransformerLens 3's HookedTransformer, the model it replaces (TransformerLens 4
removed it), where TransformerLens 3 is installed: the same parameter names, shapes and buffers (checkpoints load
either way), the same initial draw for a seed, and the same logits, cached activations and gradients, with and
without the split q/k/v inputs, the MLP-input hook and per-head results. Under TransformerLens 4 these are skipped;
the comparisons with Hugging Face's forwards (test_models) and with TransformerLens's own patching functions
(test_patching) run under both."""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest
import torch

from interp.arch import Arch
from interp.hooked_lm import HookedLM, gelu_tanh
from interp.models import _lm_config, hf_to_hooked, load_hf

TL3 = importlib.util.find_spec("transformer_lens.HookedTransformer") is not None
pytestmark = pytest.mark.skipif(not TL3, reason="TransformerLens 3 (HookedTransformer) is not installed")

ARCHS = {"gpt2": Arch(n_layers=2, d_model=16, n_heads=4, d_mlp=32, d_vocab=50, n_ctx=32, act_fn="gelu_new",
                      eps=1e-5, family="gpt2"),
         "llama": Arch(n_layers=2, d_model=16, n_heads=4, d_mlp=32, d_vocab=50, n_ctx=32, act_fn="silu", eps=1e-5,
                       family="llama", n_key_value_heads=2, rotary_base=10000.0, initializer_range=0.02)}


def transformer_lens_model(arch: Arch, seed: int):  # noqa: ANN201
    """TransformerLens 3.9's HookedTransformer of `arch`, as this project built it before HookedLM: GPT-2's
    "gelu_new" as PyTorch's fused tanh GELU (test_models: equal to TransformerLens's formula to 1e-12)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model = HookedTransformer(HookedTransformerConfig(**arch.tl_kwargs(), device="cpu", seed=seed),
                              move_to_device=False)
    if arch.family == "gpt2":
        for block in model.blocks:
            block.mlp.act_fn = gelu_tanh
    return model.eval()


@pytest.mark.parametrize("family", ARCHS)
def test_same_parameters_and_initial_draw_as_transformerlens(family):
    """A parameter registered in another order draws other values; a missing buffer (IGNORE, rotary tables) or a
    renamed one breaks loading checkpoints across versions; the generators must be left as TransformerLens leaves
    them (later draws in a run depend on it)."""
    ref = transformer_lens_model(ARCHS[family], seed=3)
    after_ref = (torch.rand(3), torch.tensor(np.random.rand(2)), torch.tensor(random.random()))
    ours = HookedLM(_lm_config(ARCHS[family], "cpu", seed=3))
    after_ours = (torch.rand(3), torch.tensor(np.random.rand(2)), torch.tensor(random.random()))
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    a, b = ref.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(after_ref, after_ours))
    assert float(b["blocks.0.attn.W_Q"].std()) > 0  # drawn, not left at zero


def _random_biases(model: torch.nn.Module, seed: int) -> None:
    """Non-zero biases and norm weights: zeros would hide a bias missed or added in the wrong place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] in ("b", "w") or ".b_" in name or name.startswith("b_"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if name.endswith(".w") else 0.0))


@pytest.mark.parametrize("flags", ["plain", "split-qkv-and-mlp-in", "attn-result"])
@pytest.mark.parametrize("family", ARCHS)
def test_same_forward_cache_and_gradients_as_transformerlens(family, flags):
    ref = transformer_lens_model(ARCHS[family], seed=5)
    ours = HookedLM(_lm_config(ARCHS[family], "cpu", seed=5))
    _random_biases(ref, 1)
    _random_biases(ours, 1)
    for m in (ref, ours):
        m.set_use_split_qkv_input(flags == "split-qkv-and-mlp-in")
        m.set_use_hook_mlp_in(flags == "split-qkv-and-mlp-in")
        m.set_use_attn_result(flags == "attn-result")
    tokens = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (l_ref, c_ref), (l_ours, c_ours) = ref.run_with_cache(tokens), ours.run_with_cache(tokens)
        assert torch.equal(l_ref, l_ours)
        assert set(c_ref.keys()) == set(c_ours.keys())
        assert [k for k in c_ref.keys() if not torch.equal(c_ref[k], c_ours[k])] == []
        assert torch.equal(ref(tokens, stop_at_layer=1), ours(tokens, stop_at_layer=1))  # the residual, not logits
    loss_ref, loss_ours = ref(tokens, return_type="loss"), ours(tokens, return_type="loss")
    assert torch.equal(loss_ref, loss_ours)
    loss_ref.backward()
    loss_ours.backward()
    for (name, p), q in zip(ref.named_parameters(), ours.parameters()):
        # products on transposed views (no weight copies) round differently in the backward: float rounding only
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize("which", ["tiny_base", "tiny_llama_base"])
def test_converted_weights_equal_transformerlens_conversion(which, request):
    """interp.hf_weights lays Hugging Face weights out as TransformerLens 3's conversion does, value for value
    (a head split by the wrong axis or a transposed matrix would still run, with other numbers)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights, convert_llama_weights

    hf, tok = load_hf(request.getfixturevalue(which))
    ours = hf_to_hooked(hf, tok)
    arch = Arch.from_hf_config(hf.config)
    cfg = HookedTransformerConfig(**arch.tl_kwargs(), device="cpu")
    convert = convert_gpt2_weights if arch.family == "gpt2" else convert_llama_weights
    ref = HookedTransformer(cfg, move_to_device=False)
    ref.load_and_process_state_dict(convert(hf, cfg), fold_ln=False, center_writing_weights=False,
                                    center_unembed=False, fold_value_biases=False,
                                    refactor_factored_attn_matrices=False)
    a, b = ref.state_dict(), ours.state_dict()
    assert list(a) == list(b) and [k for k in a if not torch.equal(a[k], b[k])] == []
