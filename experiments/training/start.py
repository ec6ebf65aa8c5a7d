"""What a training starts from: the model config (`ModelConfig`: a base fine-tuned, or its architecture from
scratch, and the controls' variants of each start: the base's tensors permuted, its digit embeddings permuted, a
scratch draw with the base's embedding), the starting model itself (`init_model`), layers kept frozen, and whether
this CPU can run bf16 natively."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp.models import base_arch_and_tokenizer, build_scratch, load_model, permute_within_tensors
from interp.typing import TLModel

DEFAULT_BASE = "cogbase-6l"  # the shipped base, by name (interp.models.resolve_base)


@dataclass(frozen=True)
class ModelConfig:
    """init: "pretrained" (fine-tune every weight of `base`) or "scratch" (base's architecture and tokenizer,
    GPT-2 initialisation). base: a shipped base's name (default "cogbase-6l"), a local Hugging Face GPT-2 directory,
    a project checkpoint, or a hub name. shuffled: fine-tune the base with every learned tensor's entries permuted
    (`interp.models.permute_within_tensors`, seeded by the training seed): the negative control for reuse, whose
    analyses still compare it with the real base (a scratch arm ignores it). shuffle_digits: fine-tune the base
    with the embedding rows of the ten digit tokens permuted among themselves (claim C's embedding confound: can
    the fine-tuned arm still read numbers it never saw?). embed_from_base: a scratch model that starts with the
    base's token embedding matrix (the rest drawn as usual; a fine-tune ignores it)."""

    init: str = "pretrained"
    base: str = DEFAULT_BASE
    shuffled: bool = False
    shuffle_digits: bool = False
    embed_from_base: bool = False

    def __post_init__(self) -> None:
        if self.init not in ("pretrained", "scratch"):
            raise ValueError(f"model.init must be 'pretrained' or 'scratch', got {self.init!r}")
        if not self.base:
            raise ValueError("model.base must name a model directory or hub name")


def init_model(mcfg: ModelConfig, tcfg: Any, device: str) -> tuple[Any, Any, dict[str, Any]]:
    """The base's weights (fine-tuning), or its architecture and tokenizer with the scratch recipe's initialisation
    under `tcfg.seed` (`tcfg`: the training's `experiments.training.train.TrainConfig`, which imports this
    module). A scratch recipe given for a fine-tune is refused (it would be silently unused)."""
    if mcfg.init == "pretrained":
        if not tcfg.is_default_init():
            raise ValueError("train.resid_init and train.embed_init_std apply to init = 'scratch' only")
        model, tok, info = load_model(mcfg.base, device)
        extra: dict[str, Any] = {}
        if mcfg.shuffled:
            permute_within_tensors(model, tcfg.seed)
            extra["shuffled"] = {"seed": tcfg.seed}
        if mcfg.shuffle_digits:
            extra["shuffled_digits"] = shuffle_digit_embeddings(model, tok, tcfg.seed)
        return model, tok, {"base": info, **extra}
    arch, tok = base_arch_and_tokenizer(mcfg.base)
    model = build_scratch(arch, tok, tcfg.seed, device, **tcfg.scratch_recipe())
    info: dict[str, Any] = {"base": {"name": Path(str(mcfg.base)).name, "arch_only": True}}
    if mcfg.embed_from_base:
        with torch.no_grad():
            model.embed.W_E.copy_(load_model(mcfg.base, device)[0].embed.W_E)
        info["embedding_from_base"] = True
    return model, tok, info


DIGITS = tuple(str(d) for d in range(10))


def digit_ids(tok: Any) -> list[int]:
    """The token ids of "0".."9", each one token (a tokenizer that writes numbers digit by digit, as SmolLM2's
    does); ValueError otherwise."""
    ids = [tok.encode(d, add_special_tokens=False) for d in DIGITS]
    if any(len(i) != 1 for i in ids):
        raise ValueError("shuffle_digits needs a tokenizer whose digits 0-9 are single tokens")
    return [i[0] for i in ids]


@torch.no_grad()
def shuffle_digit_embeddings(model: TLModel, tok: Any, seed: int) -> dict[str, int]:
    """Permute the embedding rows of the digit tokens among themselves (a seeded derangement: no digit keeps its
    row); returns {digit: the digit whose pretrained row it now has}."""
    ids = digit_ids(tok)
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(ids), generator=g)
        if not (perm == torch.arange(len(ids))).any():
            break
    rows = model.embed.W_E[ids].clone()
    model.embed.W_E[ids] = rows[perm]
    return {DIGITS[i]: DIGITS[int(p)] for i, p in enumerate(perm)}


def freeze_below(model: TLModel, k: int) -> None:
    """Keep the embeddings and blocks 0..k-1 at their current weights (no gradient): whatever training learns lives
    in blocks k and above (the late-layer planted-reuse control). ValueError when k exceeds the depth."""
    if k > model.cfg.n_layers:
        raise ValueError(f"train.freeze_below is {k} but the model has {model.cfg.n_layers} layers")
    frozen = ("embed.", "pos_embed.") + tuple(f"blocks.{l}." for l in range(k))
    for name, p in model.named_parameters():
        if k and name.startswith(frozen):
            p.requires_grad_(False)


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 matrix products natively (avx512_bf16 or AMX, as oneDNN reports it). Without
    it bf16 autocast is emulated: measured on an AVX2-only EPYC, a 352 x 576 x 1536 product took 1.3 s in bf16
    against 32 ms in float32, and its rounding differs from a native CPU's."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN: assume it can (nothing to measure)
        return True


def check_bf16(bf16: bool, device: str) -> None:
    """Refuse bf16 autocast on a CPU that would emulate it (~40x slower, other numbers), before anything is
    written."""
    if bf16 and device == "cpu" and not native_bf16_cpu():
        raise ValueError("bf16 = true, but this CPU has no native bf16 (no avx512_bf16 / AMX): autocast would be "
                         "emulated, ~40x slower than float32 and with other rounding. Run it on a CPU that has it, or "
                         "set bf16 = false (float32: another recipe, whose numbers differ)")
