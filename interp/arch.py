"""Model architectures the project builds, loads and analyses, as plain data (no TransformerLens call here).

Two families:
- "gpt2": learned positions, pre-LayerNorm blocks, GELU MLP (the shipped cogbase-6l, GPT-2 itself).
- "llama": rotary positions, RMSNorm, gated SiLU MLP, no biases, grouped-query attention (SmolLM2). Key/value
  heads are shared by groups of query heads; inside this project every analysis sees them per query head
  (TransformerLens's `ungroup_grouped_query_attention`), so a "head" is always a query head and patching its keys
  or values changes that head only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

FAMILIES = ("gpt2", "llama")


class UnsupportedArchitecture(ValueError):
    """A model whose architecture the project does not analyse; the message says which ones it does."""


@dataclass(frozen=True)
class Arch:
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    d_vocab: int = 50257
    n_ctx: int = 64
    act_fn: str = "gelu_new"
    eps: float = 1e-5
    family: str = "gpt2"
    n_key_value_heads: int | None = None  # llama: key/value heads shared by groups of query heads
    rotary_base: float = 10000.0
    initializer_range: float = -1.0  # < 0: TransformerLens's default (0.8 / sqrt(d_model))

    def __post_init__(self) -> None:
        for f in fields(self):  # every float option (by introspection: a new one is covered too)
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"arch.{f.name} must be a finite number, got {v}")
        for f in ("n_layers", "d_model", "n_heads", "d_mlp", "d_vocab", "n_ctx"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise ValueError(f"arch.{f} must be a positive integer, got {getattr(self, f)!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"arch.d_model ({self.d_model}) must be divisible by arch.n_heads ({self.n_heads})")
        if self.family not in FAMILIES:
            raise UnsupportedArchitecture(f"arch.family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        kv = self.n_key_value_heads
        if kv is not None and (self.family != "llama" or kv < 1 or self.n_heads % kv):
            raise ValueError(f"arch.n_key_value_heads ({kv}) must divide n_heads ({self.n_heads}) in a llama model")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Arch:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown arch key(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def from_hf_config(cls, cfg: Any) -> Arch:
        """From a transformers config (GPT-2 or Llama); any other architecture is refused by name."""
        kind = getattr(cfg, "model_type", None)
        if kind == "gpt2":
            return cls(n_layers=cfg.n_layer, d_model=cfg.n_embd, n_heads=cfg.n_head, d_mlp=cfg.n_inner or 4 * cfg.n_embd,
                       d_vocab=cfg.vocab_size, n_ctx=cfg.n_positions, act_fn=cfg.activation_function,
                       eps=cfg.layer_norm_epsilon)
        if kind == "llama":
            kv = cfg.num_key_value_heads
            rope = getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta")
            return cls(n_layers=cfg.num_hidden_layers, d_model=cfg.hidden_size, n_heads=cfg.num_attention_heads,
                       d_mlp=cfg.intermediate_size, d_vocab=cfg.vocab_size, n_ctx=cfg.max_position_embeddings,
                       act_fn=cfg.hidden_act, eps=cfg.rms_norm_eps, family="llama",
                       n_key_value_heads=kv if kv != cfg.num_attention_heads else None,
                       rotary_base=float(rope or 10000.0), initializer_range=float(cfg.initializer_range))
        raise UnsupportedArchitecture(f"model_type {kind!r} is not supported: cogcircuits analyses GPT-2 and Llama "
                                      "architecture models")

    def to_hf_config(self, bos_token_id: int, eos_token_id: int) -> Any:
        """A transformers GPT2Config (pretraining the project's own base)."""
        if self.family != "gpt2":
            raise UnsupportedArchitecture("only GPT-2 bases are pretrained by this project")
        from transformers import GPT2Config

        return GPT2Config(vocab_size=self.d_vocab, n_positions=self.n_ctx, n_embd=self.d_model, n_layer=self.n_layers,
                          n_head=self.n_heads, n_inner=self.d_mlp, activation_function=self.act_fn,
                          layer_norm_epsilon=self.eps, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                          bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=True)

    def tl_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the TransformerLens config for this architecture (built in interp.models)."""
        common = {"n_layers": self.n_layers, "d_model": self.d_model, "d_head": self.d_head, "n_heads": self.n_heads,
                  "d_mlp": self.d_mlp, "d_vocab": self.d_vocab, "n_ctx": self.n_ctx, "act_fn": self.act_fn,
                  "eps": self.eps, "init_mode": "gpt2", "default_prepend_bos": True}
        if self.initializer_range > 0:
            common["initializer_range"] = self.initializer_range
        if self.family == "gpt2":
            return {**common, "normalization_type": "LN", "positional_embedding_type": "standard",
                    "original_architecture": "GPT2LMHeadModel"}
        return {**common, "normalization_type": "RMS", "positional_embedding_type": "rotary",
                "rotary_dim": self.d_head, "rotary_adjacent_pairs": False, "rotary_base": self.rotary_base,
                "final_rms": True, "gated_mlp": True, "n_key_value_heads": self.n_key_value_heads,
                "ungroup_grouped_query_attention": True, "original_architecture": "LlamaForCausalLM"}

    @classmethod
    def from_tl_config(cls, c: Any) -> Arch:
        llama = c.original_architecture == "LlamaForCausalLM"
        return cls(n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads, d_mlp=c.d_mlp, d_vocab=c.d_vocab,
                   n_ctx=c.n_ctx, act_fn=c.act_fn, eps=c.eps, family="llama" if llama else "gpt2",
                   n_key_value_heads=c.n_key_value_heads if llama else None,
                   rotary_base=float(c.rotary_base) if llama else 10000.0,
                   initializer_range=float(c.initializer_range) if llama else -1.0)
