"""The parts of `interp.hooked_lm.HookedLM`: its config and its modules (norms, attention with rotary and
grouped-query key/value heads, MLPs, embeddings), each with TransformerLens 3's parameter names, shapes, hook points
and operations, in the order TransformerLens 3 registers them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import einops
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import nn
from transformer_lens.hook_points import HookPoint

ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "silu": "silu",
               "relu": "relu"}


@dataclass
class HookedLMConfig:
    """The fields of TransformerLens's `HookedTransformerConfig` this project and TransformerLens's utilities read.
    Mutable as TransformerLens's is: `set_use_split_qkv_input` / `set_use_hook_mlp_in` and `to(device)` change it."""

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    act_fn: str
    eps: float
    normalization_type: str  # "LN" (GPT-2) or "RMS" (Llama)
    positional_embedding_type: str  # "standard" (learned) or "rotary"
    original_architecture: str
    gated_mlp: bool = False
    attn_only: bool = False  # always False here: TransformerLens's ActivationCache.decompose_resid reads it
    final_rms: bool = False
    n_key_value_heads: int | None = None
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    rotary_adjacent_pairs: bool = False
    initializer_range: float = -1.0  # < 0: 0.8 / sqrt(d_model), TransformerLens's GPT-2 initialisation
    init_mode: str = "gpt2"
    default_prepend_bos: bool = True
    ungroup_grouped_query_attention: bool = True
    device: str = "cpu"
    seed: int | None = None
    dtype: torch.dtype = torch.float32
    use_split_qkv_input: bool = False
    use_hook_mlp_in: bool = False
    use_attn_result: bool = False
    use_attn_in: bool = False
    use_hook_tokens: bool = False

    def __post_init__(self) -> None:
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"activation {self.act_fn!r} not supported ({', '.join(ACTIVATIONS)})")
        if self.normalization_type not in ("LN", "RMS") or self.positional_embedding_type not in ("standard", "rotary"):
            raise ValueError(f"unsupported normalisation {self.normalization_type!r} or positional embedding "
                             f"{self.positional_embedding_type!r}")
        if self.initializer_range < 0:
            self.initializer_range = 0.8 / np.sqrt(self.d_model)
        if self.rotary_dim is None and self.positional_embedding_type == "rotary":
            self.rotary_dim = self.d_head
        self.attn_scale = np.sqrt(self.d_head)
        self.d_vocab_out = self.d_vocab

    def is_layer_norm_activation(self) -> bool:
        return self.act_fn.endswith("_ln")


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU (tanh approximation; TransformerLens's "gelu_new") as PyTorch's one fused kernel."""
    return F.gelu(x, approximate="tanh")


def _activation(name: str) -> Any:
    return {"gelu_tanh": gelu_tanh, "gelu": F.gelu, "silu": F.silu, "relu": F.relu}[ACTIVATIONS[name]]


def _repeat_heads(x: Float[torch.Tensor, "batch pos d_model"], n: int) -> Float[torch.Tensor, "batch pos head d_model"]:
    return einops.repeat(x, "batch pos d_model -> batch pos n_heads d_model", n_heads=n).clone()


def _simple_attn_linear(x: Float[torch.Tensor, "batch pos d_model"], w: Float[torch.Tensor, "head d_model d_head"],
                        b: Float[torch.Tensor, "head d_head"]) -> Float[torch.Tensor, "batch pos head d_head"]:
    w2 = einops.rearrange(w, "head_index d_model d_head -> (head_index d_head) d_model")
    b2 = einops.rearrange(b, "head_index d_head -> (head_index d_head)")
    return F.linear(x, w2, b2).reshape(x.shape[0], x.shape[1], b.shape[0], b.shape[1])


def _split_attn_linear(x: Float[torch.Tensor, "batch pos head d_model"], w: Float[torch.Tensor, "head d_model d_head"],
                       b: Float[torch.Tensor, "head d_head"]) -> Float[torch.Tensor, "batch pos head d_head"]:
    return einops.einsum(x, w, "batch pos head_index d_model, head_index d_model d_head -> "
                               "batch pos head_index d_head") + b


class LayerNorm(nn.Module):
    def __init__(self, cfg: HookedLMConfig) -> None:
        super().__init__()
        self.cfg, self.eps = cfg, cfg.eps
        self.w = nn.Parameter(torch.ones(cfg.d_model, dtype=cfg.dtype))
        self.b = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))
        self.hook_scale, self.hook_normalized = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale).to(self.cfg.dtype) * self.w + self.b


class RMSNorm(nn.Module):
    def __init__(self, cfg: HookedLMConfig) -> None:
        super().__init__()
        self.cfg, self.eps = cfg, cfg.eps
        self.w = nn.Parameter(torch.ones(cfg.d_model, dtype=cfg.dtype))
        self.hook_scale, self.hook_normalized = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale).to(self.cfg.dtype) * self.w


class Attention(nn.Module):
    """Causal multi-head attention; with `n_key_value_heads`, grouped-query attention whose keys and values are
    computed and hooked per query head (TransformerLens's `ungroup_grouped_query_attention`)."""

    def __init__(self, cfg: HookedLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, d, dh, kv = cfg.n_heads, cfg.d_model, cfg.d_head, cfg.n_key_value_heads
        self.W_Q = nn.Parameter(torch.empty(h, d, dh, dtype=cfg.dtype))
        self.W_O = nn.Parameter(torch.empty(h, dh, d, dtype=cfg.dtype))
        self.b_Q = nn.Parameter(torch.zeros(h, dh, dtype=cfg.dtype))
        self.b_O = nn.Parameter(torch.zeros(d, dtype=cfg.dtype))
        self.grouped = kv is not None
        if self.grouped:  # stored once per key/value head, under TransformerLens's names
            self.repeat_kv_heads = h // kv
            self._W_K = nn.Parameter(torch.empty(kv, d, dh, dtype=cfg.dtype))
            self._W_V = nn.Parameter(torch.empty(kv, d, dh, dtype=cfg.dtype))
            self._b_K = nn.Parameter(torch.zeros(kv, dh, dtype=cfg.dtype))
            self._b_V = nn.Parameter(torch.zeros(kv, dh, dtype=cfg.dtype))
        else:
            self.W_K = nn.Parameter(torch.empty(h, d, dh, dtype=cfg.dtype))
            self.W_V = nn.Parameter(torch.empty(h, d, dh, dtype=cfg.dtype))
            self.b_K = nn.Parameter(torch.zeros(h, dh, dtype=cfg.dtype))
            self.b_V = nn.Parameter(torch.zeros(h, dh, dtype=cfg.dtype))
        self.register_buffer("mask", torch.empty((0, 0), dtype=torch.bool))  # TransformerLens's (unused) buffers:
        self.register_buffer("IGNORE", torch.tensor(-torch.inf))  # checkpoints load either way
        self.attn_scale = cfg.attn_scale
        for name in ("hook_k", "hook_q", "hook_v", "hook_z", "hook_attn_scores", "hook_pattern", "hook_result"):
            setattr(self, name, HookPoint())
        if cfg.positional_embedding_type == "rotary":
            self.hook_rot_k, self.hook_rot_q = HookPoint(), HookPoint()
            sin, cos = self._sin_cos_rotary()
            self.register_buffer("rotary_sin", sin)
            self.register_buffer("rotary_cos", cos)

    def __getattr__(self, name: str) -> Any:
        if name in ("W_K", "W_V", "b_K", "b_V") and self.__dict__.get("grouped", False):
            return torch.repeat_interleave(super().__getattr__(f"_{name}"), dim=0, repeats=self.repeat_kv_heads)
        return super().__getattr__(name)

    def _sin_cos_rotary(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, rd = self.cfg, self.cfg.rotary_dim
        pos = torch.arange(cfg.n_ctx, dtype=torch.float32)
        freq = cfg.rotary_base ** (torch.arange(rd // 2, dtype=torch.float32) / (rd / 2))
        freq = einops.repeat(freq, "d -> (d 2)" if cfg.rotary_adjacent_pairs else "d -> (2 d)")
        angles = pos[:, None] / freq[None, :]
        return torch.sin(angles).to(cfg.dtype), torch.cos(angles).to(cfg.dtype)

    def _rotate_every_two(self, x: torch.Tensor) -> torch.Tensor:
        rot = x.clone()
        if self.cfg.rotary_adjacent_pairs:
            rot[..., ::2], rot[..., 1::2] = -x[..., 1::2], x[..., ::2]
        else:
            n = x.size(-1) // 2
            rot[..., :n], rot[..., n:] = -x[..., n:], x[..., :n]
        return rot

    def apply_rotary(self, x: Float[torch.Tensor, "batch pos head d_head"],
                     past_kv_pos_offset: int = 0) -> Float[torch.Tensor, "batch pos head d_head"]:
        """The rotary embedding of positions past_kv_pos_offset.. applied to q or k."""
        rd, n = self.cfg.rotary_dim, x.size(1)
        x_rot, x_pass = x[..., :rd], x[..., rd:]
        cos = self.rotary_cos[None, past_kv_pos_offset:past_kv_pos_offset + n, None, :]
        sin = self.rotary_sin[None, past_kv_pos_offset:past_kv_pos_offset + n, None, :]
        return torch.cat([x_rot * cos + self._rotate_every_two(x_rot) * sin, x_pass], dim=-1)

    def forward(self, query_input: torch.Tensor, key_input: torch.Tensor,
                value_input: torch.Tensor) -> Float[torch.Tensor, "batch pos d_model"]:
        lin = _split_attn_linear if self.cfg.use_split_qkv_input or self.cfg.use_attn_in else _simple_attn_linear
        q = self.hook_q(lin(query_input, self.W_Q, self.b_Q))
        k = self.hook_k(lin(key_input, self.W_K, self.b_K))
        v = self.hook_v(lin(value_input, self.W_V, self.b_V))
        if self.cfg.positional_embedding_type == "rotary":
            q, k = self.hook_rot_q(self.apply_rotary(q, 0)), self.hook_rot_k(self.apply_rotary(k, 0))
        scores = (einops.rearrange(q, "batch query_pos head d_head -> batch head query_pos d_head")
                  @ einops.rearrange(k, "batch key_pos head d_head -> batch head d_head key_pos")) / self.attn_scale
        n_q, n_k = scores.size(-2), scores.size(-1)
        causal = torch.arange(n_k, device=scores.device)[None, :] <= torch.arange(n_q, device=scores.device)[:, None]
        scores = self.hook_attn_scores(torch.where(causal[None, None], scores, self.IGNORE.to(scores.device)))
        pattern = F.softmax(scores, dim=-1)
        pattern = self.hook_pattern(torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern))
        v_ = einops.rearrange(v, "batch key_pos head d_head -> batch head key_pos d_head")
        z = self.hook_z(einops.rearrange(pattern.to(v.dtype) @ v_, "batch head query_pos d_head -> "
                                                                     "batch query_pos head d_head"))
        if self.cfg.use_attn_result:  # each head: [batch, pos, head, d_model] (memory-hungry: off by default)
            w = einops.rearrange(self.W_O, "head_index d_head d_model -> 1 1 head_index d_head d_model")
            z = einops.rearrange(z, "batch pos head_index d_head -> batch pos head_index d_head 1")
            result = self.hook_result((z * w).sum(-2))
            return einops.reduce(result, "batch position index model -> batch position model", "sum") + self.b_O
        w = einops.rearrange(self.W_O, "head_index d_head d_model -> d_model (head_index d_head)").contiguous()
        return F.linear(z.reshape(z.shape[0], z.shape[1], -1), w, self.b_O)


class MLP(nn.Module):
    def __init__(self, cfg: HookedLMConfig) -> None:
        super().__init__()
        self.cfg, self.act_fn = cfg, _activation(cfg.act_fn)
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp, dtype=cfg.dtype))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp, dtype=cfg.dtype))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model, dtype=cfg.dtype))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    @staticmethod
    def _addmm(bias: torch.Tensor, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(bias, x.view(-1, x.size(-1)), weight).view(*x.shape[:-1], weight.shape[-1])

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        post = self.hook_post(self.act_fn(self.hook_pre(self._addmm(self.b_in, self.W_in, x))))
        return self._addmm(self.b_out, self.W_out, post)


class GatedMLP(nn.Module):
    """Llama's MLP: act(x W_gate) * (x W_in) + b_in, then W_out (products on the transposed views: no weight
    copies)."""

    def __init__(self, cfg: HookedLMConfig) -> None:
        super().__init__()
        self.cfg, self.act_fn = cfg, _activation(cfg.act_fn)
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp, dtype=cfg.dtype))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model, dtype=cfg.dtype))
        self.W_gate = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp, dtype=cfg.dtype))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp, dtype=cfg.dtype))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))
        self.hook_pre, self.hook_pre_linear, self.hook_post = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        pre = self.hook_pre(F.linear(x, self.W_gate.T))
        pre_linear = self.hook_pre_linear(F.linear(x, self.W_in.T))
        post = self.hook_post(self.act_fn(pre) * pre_linear + self.b_in)
        return F.linear(post, self.W_out.T, self.b_out)


class TransformerBlock(nn.Module):
    hook_out_is_single_residual_stream = True  # TransformerLens 4's logit lens refuses blocks that do not say so

    def __init__(self, cfg: HookedLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        norm = RMSNorm if cfg.normalization_type == "RMS" else LayerNorm
        self.ln1, self.ln2 = norm(cfg), norm(cfg)
        self.attn = Attention(cfg)
        self.mlp = GatedMLP(cfg) if cfg.gated_mlp else MLP(cfg)
        for name in ("hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in", "hook_attn_out",
                     "hook_mlp_out", "hook_resid_pre", "hook_resid_mid", "hook_resid_post"):
            setattr(self, name, HookPoint())

    def forward(self, resid_pre: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_model"]:
        cfg = self.cfg
        resid_pre = self.hook_resid_pre(resid_pre)
        q_in = k_in = v_in = resid_pre
        if cfg.use_attn_in:
            q_in = k_in = v_in = self.hook_attn_in(_repeat_heads(resid_pre, cfg.n_heads))
        if cfg.use_split_qkv_input:  # keys and values per query head (ungrouped)
            q_in = self.hook_q_input(_repeat_heads(resid_pre, cfg.n_heads))
            k_in = self.hook_k_input(_repeat_heads(resid_pre, cfg.n_heads))
            v_in = self.hook_v_input(_repeat_heads(resid_pre, cfg.n_heads))
        attn_out = self.hook_attn_out(self.attn(self.ln1(q_in), self.ln1(k_in), self.ln1(v_in)))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_in = self.hook_mlp_in(resid_mid.clone()) if cfg.use_hook_mlp_in else resid_mid
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(mlp_in)))
        return self.hook_resid_post(resid_mid + mlp_out)


class Embed(nn.Module):
    def __init__(self, cfg: HookedLMConfig) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model, dtype=cfg.dtype))

    def forward(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_model"]:
        return self.W_E[tokens, :]


class PosEmbed(nn.Module):
    def __init__(self, cfg: HookedLMConfig) -> None:
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model, dtype=cfg.dtype))

    def forward(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_model"]:
        pos = self.W_pos[:tokens.size(-1), :]
        return einops.repeat(pos, "pos d_model -> batch pos d_model", batch=tokens.size(0)).clone()


class Unembed(nn.Module):
    def __init__(self, cfg: HookedLMConfig) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out, dtype=cfg.dtype))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out, dtype=cfg.dtype))
        self.hook_in, self.hook_out = HookPoint(), HookPoint()

    def forward(self, residual: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        return self.hook_out(F.linear(self.hook_in(residual), self.W_U.T, self.b_U))
