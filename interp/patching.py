"""Exact activation patching (both directions, every TransformerLens variant) and attribution patching.

Denoising runs the corrupted input and patches in clean activations; noising runs the clean input and patches in
corrupted ones. Either way the result is the mean logit difference (answer minus wrong answer of the CLEAN trial),
normalised so that 0 = the corrupted run and 1 = the clean run.

Exact patching reuses the target run's cache: a patch at layer L and position p recomputes layers >= L and
positions >= p only (`interp.forward.run_from`). Positions before the first token on which clean and corrupted
inputs differ carry identical activations in both runs, so a patch there changes nothing and is not run.
Results equal TransformerLens's `get_act_patch_*` functions (tests).

Axes of results: layer, head, pos (and dest_pos / src_pos for patterns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from interp.arch import UnsupportedArchitecture
from interp.forward import run_from
from interp.metrics import MIN_GAP, as_ids, as_tokens, cache_last, logit_diff_from_logits, normalise

# what: (activation, index axes); mirrors transformer_lens.patching's variants
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "resid_pre": ("resid_pre", ("layer", "pos")),
    "attn_out": ("attn_out", ("layer", "pos")),
    "mlp_out": ("mlp_out", ("layer", "pos")),
    "heads": ("z", ("layer", "head")),
    "heads_by_pos": ("z", ("layer", "pos", "head")),
    "q": ("q", ("layer", "head")),
    "k": ("k", ("layer", "head")),
    "v": ("v", ("layer", "head")),
    "q_by_pos": ("q", ("layer", "pos", "head")),
    "k_by_pos": ("k", ("layer", "pos", "head")),
    "v_by_pos": ("v", ("layer", "pos", "head")),
    "pattern": ("pattern", ("layer", "head")),
    "pattern_by_dest": ("pattern", ("layer", "head", "dest_pos")),
}
HOOK = {"resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out",
        "z": "attn.hook_z", "q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v", "pattern": "attn.hook_pattern"}
SUPPORTED = ("GPT2LMHeadModel", "LlamaForCausalLM")


@dataclass
class PatchResult:
    """Labelled result array. `values` are normalised (0 corrupted, 1 clean); `raw` the mean logit differences;
    `first_diff` the first position where clean and corrupted tokens differ (earlier positions cannot change)."""

    what: str
    direction: str
    axes: tuple[str, ...]
    values: np.ndarray
    raw: np.ndarray
    clean_logit_diff: float
    corrupt_logit_diff: float
    labels: dict[str, list[str]] = field(default_factory=dict)
    first_diff: int = 0

    @property
    def defined(self) -> bool:
        """False when clean and corrupted runs are too close for normalised values (they are then NaN)."""
        return bool(np.isfinite(self.values).any())

    @property
    def effect(self) -> np.ndarray:
        """The size of each patch's effect in the same units: denoising restores `values` of the clean run
        (0 = nothing), noising removes 1 - `values` of it (a noising value of 1 means the patch changed nothing)."""
        return self.values if self.direction == "denoise" else 1.0 - self.values

    def top(self, k: int = 5) -> list[tuple[tuple[int, ...], float]]:
        """The k indices with the largest |effect| (NaN last), with their effects."""
        e = np.nan_to_num(self.effect, nan=0.0)
        order = np.argsort(-np.abs(e).ravel(), kind="stable")[:k]
        return [(tuple(int(i) for i in np.unravel_index(j, e.shape)), float(e.ravel()[j])) for j in order]

    def rows(self) -> list[dict[str, Any]]:
        """Tidy rows: one per index with its labels, the normalised and the raw value."""
        out = []
        for idx in np.ndindex(self.values.shape):
            row: dict[str, Any] = {}
            for ax, i in zip(self.axes, idx):
                row[ax] = int(i)
                if ax in self.labels:
                    row[f"{ax}_label"] = self.labels[ax][i]
            row["value"] = float(self.values[idx])
            row["effect"] = float(self.effect[idx])
            row["logit_diff"] = float(self.raw[idx])
            out.append(row)
        return out


class CachedRun:
    """Caches of the target (the run being patched) and the source (where patched values come from); `run` replays
    the target from one layer and position with patch functions applied (used by patching and by ablation)."""

    def __init__(self, model: Any, target_tokens: torch.Tensor, source_tokens: torch.Tensor,
                 answer: torch.Tensor, wrong: torch.Tensor) -> None:
        self.model = model
        self.answer, self.wrong = answer, wrong
        c = model.cfg
        if c.original_architecture not in SUPPORTED or (c.n_key_value_heads and not c.ungroup_grouped_query_attention):
            raise UnsupportedArchitecture(f"exact patching supports GPT-2 and Llama models (grouped keys ungrouped), "
                                          f"not {c.original_architecture}")
        self.rotary = c.positional_embedding_type == "rotary"
        hooks = list(HOOK.values()) + (["attn.hook_rot_k"] if self.rotary else [])
        names = lambda n: any(n.endswith(h) for h in hooks)  # noqa: E731
        with torch.no_grad():
            t_logits, self.t = cache_last(model, target_tokens, names)
            # the same tensor as source (ablation: replacements come from elsewhere): one cache serves both
            s_logits, self.s = (t_logits, self.t) if source_tokens is target_tokens else cache_last(model, source_tokens, names)
        self.target_ld = float(logit_diff_from_logits(t_logits, answer, wrong).mean())
        self.source_ld = float(logit_diff_from_logits(s_logits, answer, wrong).mean())
        diff = (target_tokens != source_tokens).any(0).nonzero()
        self.first_diff = int(diff[0]) if len(diff) else target_tokens.shape[1]
        self.n_pos = target_tokens.shape[1]

    def act(self, cache: Any, kind: str, layer: int) -> torch.Tensor:
        return cache[f"blocks.{layer}.{HOOK.get(kind, 'attn.hook_' + kind)}"]

    @torch.no_grad()
    def run(self, layer: int, start: int, patches: list[Any], kind: str | None = None
            ) -> Float[torch.Tensor, "variant batch"]:
        """Logit difference per trial for each patch function (variants stacked along the batch)."""
        k = len(patches)
        rep = lambda x: x.repeat(k, *([1] * (x.dim() - 1)))  # noqa: E731
        resid = rep(self.act(self.t, "resid_pre", layer)[:, start:])
        key = "rot_k" if self.rotary else "k"
        kv = [(rep(self.act(self.t, key, l)[:, :start]), rep(self.act(self.t, "v", l)[:, :start]))
              if l >= layer else (None, None) for l in range(self.model.cfg.n_layers)]
        b = self.answer.shape[0]

        def patch(name: str, x: torch.Tensor, s: int) -> torch.Tensor:
            chunks = list(x.split(b, dim=0))
            return torch.cat([p(name, c, s) for p, c in zip(patches, chunks)], dim=0)

        cached = None
        if kind == "z":
            cached = {"z": rep(self.act(self.t, "z", layer)[:, start:])}
        elif kind in ("attn_out", "mlp_out"):
            cached = {"attn_out": rep(self.act(self.t, "attn_out", layer)[:, start:])}
            if kind == "mlp_out":
                cached["mlp_out"] = rep(self.act(self.t, "mlp_out", layer)[:, start:])
        ld = run_from(self.model, layer, start, resid, kv, rep(self.answer), rep(self.wrong), patch, cached=cached)
        return ld.view(k, b)


def index_setter(kind: str, src: torch.Tensor, head: int | None = None, pos: int | None = None) -> Any:
    """A patch function that copies `src` (the source activation of the patched layer) into one index."""

    def f(name: str, x: torch.Tensor, start: int) -> torch.Tensor:
        if name != kind:
            return x
        x = x.clone()
        if kind == "pattern":  # [batch, head, dest, src]; dest axis starts at `start`
            s = src[:, :, start:]
            if pos is None:
                x[:, head] = s[:, head]
            else:
                x[:, head, pos - start] = s[:, head, pos - start]
            return x
        s = src[:, start:]
        if pos is None and head is None:
            return s.clone()
        if pos is None:
            x[:, :, head] = s[:, :, head]
        elif head is None:
            x[:, pos - start] = s[:, pos - start]
        else:
            x[:, pos - start, head] = s[:, pos - start, head]
        return x

    return f


def patch_sweep(model: Any, clean_tokens: Any, corrupt_tokens: Any, answer: Any, wrong: Any, what: str,
                direction: str = "denoise", variants_per_forward: int | None = None, position_labels: list[str] | None = None,
                progress: bool = False, min_gap: float = MIN_GAP) -> PatchResult:
    """Exact patching of `what` (a key of VARIANTS) over every index; see the module docstring.

    variants_per_forward: patched variants stacked along the batch of one forward (default: 4 on CPU, measured
    fastest for the shipped 6-layer base, 16 on GPU). Normalised values are NaN ("undefined") when the clean and
    corrupted mean logit differences are less than `min_gap` apart; `raw` is always there."""
    if what not in VARIANTS:
        raise ValueError(f"unknown patching target {what!r} (choose from {', '.join(VARIANTS)})")
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    dev = model.cfg.device
    clean, corrupt = as_tokens(clean_tokens, dev), as_tokens(corrupt_tokens, dev)
    if clean.shape != corrupt.shape:
        raise ValueError(f"clean and corrupted tokens differ in shape: {tuple(clean.shape)} vs {tuple(corrupt.shape)}")
    a, w = as_ids(answer, dev), as_ids(wrong, dev)
    target, source = (corrupt, clean) if direction == "denoise" else (clean, corrupt)
    if variants_per_forward is None:
        variants_per_forward = 16 if str(model.cfg.device).startswith("cuda") else 4
    r = CachedRun(model, target, source, a, w)
    kind, axes = VARIANTS[what]
    L, H, P = model.cfg.n_layers, model.cfg.n_heads, r.n_pos
    sizes = {"layer": L, "head": H, "pos": P, "dest_pos": P}
    shape = tuple(sizes[ax] for ax in axes)
    raw = np.zeros(shape)
    base_target, base_source = r.target_ld, r.source_ld
    jobs: dict[tuple[int, int], list[tuple[tuple[int, ...], Any]]] = {}
    for idx in np.ndindex(shape):
        d = dict(zip(axes, idx))
        layer = d["layer"]
        pos = d.get("pos", d.get("dest_pos"))
        head = d.get("head")
        if pos is not None and pos < r.first_diff:
            raw[idx] = base_target  # identical activations in both runs: the patch changes nothing
            continue
        start = r.first_diff if pos is None else pos
        src = r.act(r.s, kind, layer)
        jobs.setdefault((layer, start), []).append((idx, index_setter(kind, src, head, pos)))
    todo = [(key, chunk[i:i + variants_per_forward]) for key, chunk in jobs.items()
            for i in range(0, len(chunk), variants_per_forward)]
    for (layer, start), chunk in tqdm(todo, desc=f"patch {what}", disable=not progress):
        ld = r.run(layer, start, [f for _, f in chunk], kind=kind)
        for (idx, _), v in zip(chunk, ld.mean(1).tolist()):
            raw[idx] = v
    clean_v, corrupt_v = (base_source, base_target) if direction == "denoise" else (base_target, base_source)
    values = normalise(raw, clean_v, corrupt_v, min_gap)
    labels = {"layer": [f"L{i}" for i in range(L)], "head": [f"H{i}" for i in range(H)]}
    if position_labels is not None:
        labels["pos"] = labels["dest_pos"] = list(position_labels)
    return PatchResult(what=what, direction=direction, axes=axes, values=values, raw=raw,
                       clean_logit_diff=clean_v, corrupt_logit_diff=corrupt_v, labels=labels, first_diff=r.first_diff)


def position_token_labels(tokenizer: Any, tokens: np.ndarray, position_labels: list[str]) -> list[str]:
    """'name: token' for each position, tokens from the first trial (numbers vary across trials)."""
    return [f"{lab}: {tokenizer.decode([int(t)])!s}" for lab, t in zip(position_labels, tokens[0])]
