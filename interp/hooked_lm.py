"""This project's transformer: TransformerLens's hooked GPT-2 and Llama, on TransformerLens's hook machinery
(`HookedRootModule`, `HookPoint`, `ActivationCache`), which both TransformerLens 3 and 4 provide. TransformerLens 4
removed `HookedTransformer`; this class keeps what the project and TransformerLens's own utilities (`patching`,
`ActivationCache`) use of it, with the same hook names, parameter names and shapes (a checkpoint's state dict
loads into either), the same initialisation draw for a seed, and the same operations in the same order (logits
and every cached activation equal to TransformerLens 3.9's `HookedTransformer`: tests). Constructed only through
`interp.models`.

What it keeps of a `HookedTransformer`: `cfg` (`HookedLMConfig`), `forward(tokens, return_type, stop_at_layer,
start_at_layer)`, `run_with_cache` (an `ActivationCache`), `run_with_hooks`, `hooks`, `to_tokens`, `tokenizer`,
`embed` / `pos_embed` / `blocks` / `ln_final` / `unembed` with their weights (`W_E`, `W_Q`, `W_K` ... ),
`set_use_split_qkv_input`, `set_use_hook_mlp_in`, `set_use_attn_result` and `set_use_attn_in`; TransformerLens
3.9's `to_str_tokens`, `to_string`, `to_single_token`, `tokens_to_residual_directions` and `accumulated_bias`
(same signatures and results; a string of several tokens or a layer out of range raises ValueError where
TransformerLens asserts or goes on), so that the cache's residual-stream tools (`logit_attrs`, `decompose_resid`,
`stack_head_results`, `accumulated_resid`, `apply_ln_to_stack`, `get_full_resid_decomposition`; 4's `logit_lens`)
run on it under TransformerLens 3 and 4, for GPT-2 and Llama alike, with 3.9's numbers
(tests/interp/test_tl_habits.py). As in TransformerLens without `fold_ln`, the directions are W_U's columns and
the cache's normalisation divides by the cached scale without the final norm's weight or bias.

What it leaves out: weight processing (never used here: see `interp.models`), key/value caches and generation,
attention masks for padding (prompts of one batch have one length), grouped key/value hooks (always one per query
head).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp.hooked_components import (Embed, HookedLMConfig, LayerNorm, PosEmbed, RMSNorm, TransformerBlock, Unembed,
                                      gelu_tanh)

__all__ = ["HookedLM", "HookedLMConfig", "gelu_tanh"]


class HookedLM(HookedRootModule):
    """A GPT-2 or Llama transformer with TransformerLens's hooks (see the module's docstring)."""

    def __init__(self, cfg: HookedLMConfig, tokenizer: Any = None, init_weights: bool = True) -> None:
        super().__init__()
        if cfg.seed is not None:  # as HookedTransformerConfig does: every generator, then the draw below
            torch.manual_seed(cfg.seed)
            random.seed(cfg.seed)
            np.random.seed(cfg.seed)
        self.cfg = cfg
        self.tokenizer = tokenizer
        if tokenizer is not None and tokenizer.padding_side is None:
            tokenizer.padding_side = "right"
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()
        if cfg.positional_embedding_type == "standard":
            self.pos_embed = PosEmbed(cfg)
            self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = RMSNorm(cfg) if cfg.normalization_type == "RMS" or cfg.final_rms else LayerNorm(cfg)
        self.unembed = Unembed(cfg)
        if init_weights:
            self.init_weights()
        self.setup()

    def init_weights(self) -> None:
        """TransformerLens's "gpt2" initialisation: every weight matrix (a parameter named W_*) drawn from
        N(0, initializer_range) in parameter order after seeding; biases 0, normalisation weights 1."""
        if self.cfg.seed is not None:
            torch.manual_seed(self.cfg.seed)
        for name, param in self.named_parameters():
            if "W_" in name:
                nn.init.normal_(param, std=self.cfg.initializer_range)

    def forward(self, input: Int[torch.Tensor, "batch pos"] | Float[torch.Tensor, "batch pos d_model"] | str | list,
                return_type: str | None = "logits", stop_at_layer: int | None = None,
                start_at_layer: int | None = None, loss_per_token: bool = False) -> Any:
        """Logits (return_type "logits"), the mean next-token loss ("loss"), nothing (None); with stop_at_layer,
        the residual stream entering that block; with start_at_layer, `input` is that residual stream."""
        if start_at_layer is None:
            tokens = self.to_tokens(input) if isinstance(input, (str, list)) else input
            if tokens.dim() == 1:
                tokens = tokens[None]
            tokens = tokens.to(self.cfg.device)
            residual = self.hook_embed(self.embed(tokens))
            if self.cfg.positional_embedding_type == "standard":
                residual = residual + self.hook_pos_embed(self.pos_embed(tokens))
            start_at_layer = 0
        else:
            tokens, residual = None, input
        for block in self.blocks[start_at_layer:stop_at_layer]:
            residual = block(residual)
        if stop_at_layer is not None:
            return residual
        residual = self.ln_final(residual)
        if return_type is None:
            return None
        logits = self.unembed(residual)
        if return_type == "logits":
            return logits
        if return_type != "loss" or tokens is None:
            raise ValueError(f"return_type {return_type!r} needs tokens and is one of 'logits', 'loss', None")
        logp = logits[:, :-1].log_softmax(dim=-1).gather(-1, tokens[:, 1:, None])[..., 0]
        return -logp if loss_per_token else -logp.mean()

    def run_with_cache(self, *args: Any, return_cache_object: bool = True, remove_batch_dim: bool = False,
                       **kwargs: Any) -> tuple[Any, Any]:
        out, cache = super().run_with_cache(*args, remove_batch_dim=remove_batch_dim, **kwargs)
        return (out, ActivationCache(cache, self, has_batch_dim=not remove_batch_dim)) if return_cache_object \
            else (out, cache)

    def to_tokens(self, input: str | list[str], prepend_bos: bool | None = None,
                  truncate: bool = True) -> Int[torch.Tensor, "batch pos"]:
        """Token ids of a prompt (or prompts, padded on the right), BOS first unless prepend_bos is False."""
        texts = [input] if isinstance(input, str) else list(input)
        bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        ids = [([self.tokenizer.bos_token_id] if bos else []) + self.tokenizer.encode(t, add_special_tokens=False)
               for t in texts]
        if truncate:
            ids = [i[:self.cfg.n_ctx] for i in ids]
        width = max(len(i) for i in ids)
        pad = self.tokenizer.pad_token_id
        return torch.tensor([i + [pad] * (width - len(i)) for i in ids], device=self.cfg.device)

    def _tokenizer(self, what: str) -> Any:
        if self.tokenizer is None:
            raise ValueError(f"{what} needs a tokenizer: this model was built without one")
        return self.tokenizer

    def to_string(self, tokens: Int[torch.Tensor, "pos"] | Int[torch.Tensor, "batch pos"] | list | np.ndarray,
                  ) -> str | list[str]:
        """The text of token ids: one string for [pos] (or a single id), a list of strings for [batch, pos]."""
        ids = tokens if isinstance(tokens, torch.Tensor) else torch.as_tensor(np.asarray(tokens))
        if ids.dim() > 2:
            raise ValueError(f"to_string takes [pos] or [batch, pos] token ids, not shape {tuple(ids.shape)}")
        tokenizer = self._tokenizer("to_string")
        decode = tokenizer.batch_decode if ids.dim() == 2 else tokenizer.decode
        return decode(ids.tolist(), clean_up_tokenization_spaces=False)

    def to_str_tokens(self, input: str | list | Int[torch.Tensor, "pos"] | Int[torch.Tensor, "1 pos"] | np.ndarray,
                      prepend_bos: bool | None = None, padding_side: str | None = None) -> list[str] | list[list]:
        """Each token of a prompt (BOS first unless prepend_bos is False) or of token ids ([pos] or [1, pos]) as its
        own string; a list of inputs gives a list of such lists. `padding_side` is accepted for TransformerLens's
        signature and changes nothing (each input is tokenised alone)."""
        if padding_side not in (None, "left", "right"):
            raise ValueError(f"padding_side must be 'left', 'right' or None, got {padding_side!r}")
        if isinstance(input, list):
            return [self.to_str_tokens(x, prepend_bos, padding_side) for x in input]
        if isinstance(input, str):
            ids = self.to_tokens(input, prepend_bos=prepend_bos)[0]
        elif isinstance(input, (torch.Tensor, np.ndarray)):
            ids = torch.as_tensor(input).squeeze()
            ids = ids.reshape(1) if ids.dim() == 0 else ids
            if ids.dim() != 1:
                raise ValueError(f"to_str_tokens takes token ids of shape [pos] or [1, pos], not {tuple(input.shape)}")
        else:
            raise ValueError(f"to_str_tokens takes a string, token ids or a list of them, not {type(input).__name__}")
        return self._tokenizer("to_str_tokens").batch_decode([[i] for i in ids.tolist()],
                                                             clean_up_tokenization_spaces=False)

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (no BOS); a ValueError names a string of more or fewer."""
        ids = self.to_tokens(string, prepend_bos=False)[0]
        if ids.numel() != 1:
            raise ValueError(f"{string!r} is not a single token: it is {self.to_str_tokens(ids.reshape(-1))}"
                             if ids.numel() else f"{string!r} is not a single token: it is no token")
        return int(ids[0])

    def tokens_to_residual_directions(self, tokens: str | int | Int[torch.Tensor, ""] | Int[torch.Tensor, "pos"]
                                      | Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "*tokens d_model"]:
        """The unembedding column (W_U[:, t]) of each token: [d_model] for one token (a single-token string, an
        int or a one-element tensor), [..., d_model] for a tensor of several. Without folding the final norm's
        weight into W_U (never done here) it is the direction before that weight, as in TransformerLens."""
        if isinstance(tokens, torch.Tensor) and tokens.numel() > 1:
            return self.W_U.T[tokens.to(self.W_U.device)]
        if isinstance(tokens, str):
            token = self.to_single_token(tokens)
        elif isinstance(tokens, (int, np.integer)) and not isinstance(tokens, bool):
            token = int(tokens)
        elif isinstance(tokens, torch.Tensor) and tokens.numel() == 1:
            token = int(tokens.item())
        else:
            raise ValueError(f"tokens must be a single-token string, an int or a tensor of ids, not {tokens!r}")
        return self.W_U[:, token]

    def accumulated_bias(self, layer: int, mlp_input: bool = False,
                         include_mlp_biases: bool = True) -> Float[torch.Tensor, "d_model"]:
        """The output biases written into the residual stream before the input of block `layer` (0: none,
        n_layers: all): b_O, and b_out unless include_mlp_biases is False, of blocks 0 .. layer-1; with mlp_input,
        also block `layer`'s b_O (the stream entering its MLP)."""
        n = self.cfg.n_layers
        if not 0 <= layer <= n or (mlp_input and layer == n):
            raise ValueError(f"layer must be in [0, {n}]" + (f" and below {n} with mlp_input" if mlp_input else "")
                             + f", got {layer}")
        bias = torch.zeros(self.cfg.d_model, device=self.cfg.device, dtype=self.cfg.dtype)
        for block in self.blocks[:layer]:
            bias = bias + block.attn.b_O
            if include_mlp_biases:
                bias = bias + block.mlp.b_out
        return bias + self.blocks[layer].attn.b_O if mlp_input else bias

    def to(self, *args: Any, print_details: bool = False, **kwargs: Any) -> HookedLM:  # noqa: ARG002
        """nn.Module.to, keeping `cfg.device` and `cfg.dtype` (which normalisation casts to) in step."""
        device = kwargs.get("device", next((a for a in args if isinstance(a, (str, torch.device))), None))
        dtype = kwargs.get("dtype", next((a for a in args if isinstance(a, torch.dtype)), None))
        if device is not None:
            self.cfg.device = str(torch.device(device))
        if dtype is not None:
            self.cfg.dtype = dtype
        return super().to(*args, **kwargs)

    def set_use_split_qkv_input(self, on: bool) -> None:
        self.cfg.use_split_qkv_input = on

    def set_use_hook_mlp_in(self, on: bool) -> None:
        self.cfg.use_hook_mlp_in = on

    def set_use_attn_result(self, on: bool) -> None:
        self.cfg.use_attn_result = on

    def set_use_attn_in(self, on: bool) -> None:
        self.cfg.use_attn_in = on

    @property
    def W_E(self) -> torch.Tensor:
        return self.embed.W_E

    @property
    def W_pos(self) -> torch.Tensor:
        return self.pos_embed.W_pos

    @property
    def W_U(self) -> torch.Tensor:
        return self.unembed.W_U

    @property
    def b_U(self) -> torch.Tensor:
        return self.unembed.b_U

    def _stack(self, part: str, name: str) -> torch.Tensor:
        return torch.stack([getattr(getattr(b, part), name) for b in self.blocks], dim=0)

    W_Q = property(lambda self: self._stack("attn", "W_Q"))
    W_K = property(lambda self: self._stack("attn", "W_K"))
    W_V = property(lambda self: self._stack("attn", "W_V"))
    W_O = property(lambda self: self._stack("attn", "W_O"))
    W_in = property(lambda self: self._stack("mlp", "W_in"))
    W_out = property(lambda self: self._stack("mlp", "W_out"))
    b_Q = property(lambda self: self._stack("attn", "b_Q"))
    b_K = property(lambda self: self._stack("attn", "b_K"))
    b_V = property(lambda self: self._stack("attn", "b_V"))
    b_O = property(lambda self: self._stack("attn", "b_O"))
    b_in = property(lambda self: self._stack("mlp", "b_in"))
    b_out = property(lambda self: self._stack("mlp", "b_out"))
