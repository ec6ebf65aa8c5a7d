"""Hugging Face GPT-2 and Llama weights as a `interp.hooked_lm.HookedLM` state dict, laid out as TransformerLens 3's
conversions lay them out (`transformer_lens.pretrained.weight_conversions`, which TransformerLens 4 removed): a
model converted here equals one TransformerLens 3.9 converts, value for value (tests). No weight processing.
Used only by `interp.models`."""

from __future__ import annotations

from typing import Any

import einops
import torch

from interp.hooked_lm import HookedLMConfig


def gpt2_state(gpt2: Any, cfg: HookedLMConfig) -> dict[str, torch.Tensor]:
    """A transformers `GPT2LMHeadModel` (Conv1D weights: [in, out])."""
    t, h = gpt2.transformer, cfg.n_heads
    state = {"embed.W_E": t.wte.weight, "pos_embed.W_pos": t.wpe.weight[:cfg.n_ctx, :],
             "unembed.W_U": gpt2.lm_head.weight.T, "unembed.b_U": torch.zeros(cfg.d_vocab),
             "ln_final.w": t.ln_f.weight, "ln_final.b": t.ln_f.bias}
    for l, block in enumerate(t.h):
        p = f"blocks.{l}."
        w_q, w_k, w_v = torch.split(block.attn.c_attn.weight, cfg.d_model, dim=1)
        b_q, b_k, b_v = block.attn.c_attn.bias.view(3, h, cfg.d_head)
        state |= {p + "ln1.w": block.ln_1.weight, p + "ln1.b": block.ln_1.bias,
                  p + "ln2.w": block.ln_2.weight, p + "ln2.b": block.ln_2.bias,
                  p + "attn.W_Q": einops.rearrange(w_q, "m (i h) -> i m h", i=h),
                  p + "attn.W_K": einops.rearrange(w_k, "m (i h) -> i m h", i=h),
                  p + "attn.W_V": einops.rearrange(w_v, "m (i h) -> i m h", i=h),
                  p + "attn.b_Q": b_q, p + "attn.b_K": b_k, p + "attn.b_V": b_v,
                  p + "attn.W_O": einops.rearrange(block.attn.c_proj.weight, "(i h) m -> i h m", i=h),
                  p + "attn.b_O": block.attn.c_proj.bias,
                  p + "mlp.W_in": block.mlp.c_fc.weight, p + "mlp.b_in": block.mlp.c_fc.bias,
                  p + "mlp.W_out": block.mlp.c_proj.weight, p + "mlp.b_out": block.mlp.c_proj.bias}
    return state


def llama_state(llama: Any, cfg: HookedLMConfig) -> dict[str, torch.Tensor]:
    """A transformers `LlamaForCausalLM` (Linear weights: [out, in]); no biases (zero here); grouped key/value
    weights under `_W_K` / `_W_V`, as TransformerLens names them."""
    gq = "_" if cfg.n_key_value_heads is not None else ""
    kv = cfg.n_key_value_heads or cfg.n_heads
    state = {"embed.W_E": llama.model.embed_tokens.weight, "ln_final.w": llama.model.norm.weight,
             "unembed.W_U": llama.lm_head.weight.T, "unembed.b_U": torch.zeros(cfg.d_vocab)}
    for l, layer in enumerate(llama.model.layers):
        p, a, m = f"blocks.{l}.", layer.self_attn, layer.mlp
        state |= {p + "ln1.w": layer.input_layernorm.weight, p + "ln2.w": layer.post_attention_layernorm.weight,
                  p + "attn.W_Q": einops.rearrange(a.q_proj.weight, "(n h) m -> n m h", n=cfg.n_heads),
                  p + f"attn.{gq}W_K": einops.rearrange(a.k_proj.weight, "(n h) m -> n m h", n=kv),
                  p + f"attn.{gq}W_V": einops.rearrange(a.v_proj.weight, "(n h) m -> n m h", n=kv),
                  p + "attn.b_Q": torch.zeros(cfg.n_heads, cfg.d_head),
                  p + f"attn.{gq}b_K": torch.zeros(kv, cfg.d_head), p + f"attn.{gq}b_V": torch.zeros(kv, cfg.d_head),
                  p + "attn.W_O": einops.rearrange(a.o_proj.weight, "m (n h) -> n h m", n=cfg.n_heads),
                  p + "attn.b_O": torch.zeros(cfg.d_model),
                  p + "mlp.W_in": m.up_proj.weight.T, p + "mlp.W_gate": m.gate_proj.weight.T,
                  p + "mlp.W_out": m.down_proj.weight.T, p + "mlp.b_in": torch.zeros(cfg.d_mlp),
                  p + "mlp.b_out": torch.zeros(cfg.d_model)}
    return state
