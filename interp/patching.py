"""Exact activation patching (both directions, every TransformerLens variant) and attribution patching.

Denoising runs the corrupted input and patches in clean activations; noising runs the clean input and patches in
corrupted ones. Either way the result is the mean logit difference (answer minus wrong answer of the CLEAN trial),
normalised so that 0 = the corrupted run and 1 = the clean run.

Exact patching reuses the target run's cache: a patch at layer L and position p recomputes layers >= L and
positions >= p only (`interp.forward.run_from`). Positions before the first token on which clean and corrupted
inputs differ carry identical activations in both runs, so a patch there changes nothing and is not run.
Head outputs, resid_pre, attn_out and mlp_out take a shorter path (`CachedRun.run_index`): a patched attention or
MLP output at one position changes that position's residual stream alone until the next block, so the patched
block itself is not replayed (its cached output, or one position's output projection and MLP), and outputs of the
last block at other positions than the last are never read (their patches are the unpatched run). Several
variants share a forward (stacked along the batch; `default_variants_per_forward`). Both runs are cached by the
replay's own forward (`interp.forward.record`). Results equal TransformerLens's `get_act_patch_*` functions up to
float rounding (tests; about 1e-6 on the default model, benches/patching_speed.py).

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
from interp.forward import Weights, attn_out, final_logit_diff, record, run_from, supported
from interp.metrics import MIN_GAP, as_ids, as_tokens, cache_last, logit_diff_from_logits, normalise
from interp.result_io import held
from interp.typing import TLModel

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


@held
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
    the target from one layer and position with patch functions applied (used by patching and by ablation), and
    `run_index` replays variants that each copy one index of a source activation (the sweeps' fast path)."""

    def __init__(self, model: TLModel, target_tokens: torch.Tensor, source_tokens: torch.Tensor,
                 answer: torch.Tensor, wrong: torch.Tensor) -> None:
        self.model = model
        self.answer, self.wrong = answer, wrong
        c = model.cfg
        if not supported(c):
            raise UnsupportedArchitecture(f"exact patching supports GPT-2 and Llama models (grouped keys ungrouped), "
                                          f"not {c.original_architecture}")
        self.rotary = c.positional_embedding_type == "rotary"
        hooks = list(HOOK.values()) + (["attn.hook_rot_k"] if self.rotary else [])
        names = lambda n: any(n.endswith(h) for h in hooks)  # noqa: E731
        same = source_tokens is target_tokens  # ablation: replacements come from elsewhere, one cache serves both
        with torch.no_grad():
            self.weights = w = Weights.of(model)
            self.direction, self.bias = w.direction(answer, wrong)
            tok = getattr(model, "tokenizer", None)
            if tok is not None and getattr(tok, "padding_side", "right") == "left":  # TransformerLens masks padding
                t_logits, self.t = cache_last(model, target_tokens, names)
                s_logits, self.s = (t_logits, self.t) if same else cache_last(model, source_tokens, names)
                t_ld = logit_diff_from_logits(t_logits, answer, wrong)
                s_ld = logit_diff_from_logits(s_logits, answer, wrong)
                key = "rot_k" if self.rotary else "k"
                self.kv = [(self.act(self.t, key, l).transpose(1, 2).contiguous(),
                            self.act(self.t, "v", l).transpose(1, 2).contiguous()) for l in range(c.n_layers)]
            else:  # both runs in one forward of this module's own (the same numbers, faster than run_with_cache)
                b = target_tokens.shape[0]
                last, rec = record(w, target_tokens if same else torch.cat([target_tokens, source_tokens]))
                ld = final_logit_diff(w, last, torch.cat([self.direction] * (1 if same else 2)),
                                      torch.cat([self.bias] * (1 if same else 2)))
                t_ld, s_ld = (ld, ld) if same else (ld[:b], ld[b:])
                self.t = {k: v[:b] for k, v in rec.items()}
                self.s = self.t if same else {k: v[b:] for k, v in rec.items()}
                # the target's keys and values per layer as [batch, head, pos, d_head]: every replay's prefixes
                self.kv = [(self.t[f"blocks.{l}.attn.kT"], self.t[f"blocks.{l}.attn.vT"]) for l in range(c.n_layers)]
        self.target_ld = float(t_ld.mean())
        self.source_ld = float(s_ld.mean())
        diff = (target_tokens != source_tokens).any(0).nonzero()
        self.first_diff = int(diff[0]) if len(diff) else target_tokens.shape[1]
        self.n_pos = target_tokens.shape[1]
        self._lists: dict[tuple[str, str], list[torch.Tensor]] = {}

    def act(self, cache: Any, kind: str, layer: int) -> torch.Tensor:
        return cache[f"blocks.{layer}.{HOOK.get(kind, 'attn.hook_' + kind)}"]

    def acts(self, which: str, kind: str) -> list[torch.Tensor]:
        """An activation of the target ("t") or source ("s") run per layer, read from the cache once; also
        resid_mid (resid_pre + attn_out) and resid_post (resid_mid + mlp_out), summed as the model sums them."""
        key = (which, kind)
        if key not in self._lists:
            if kind == "resid_mid":
                out = [a + o for a, o in zip(self.acts(which, "resid_pre"), self.acts(which, "attn_out"))]
            elif kind == "resid_post":
                out = [a + o for a, o in zip(self.acts(which, "resid_mid"), self.acts(which, "mlp_out"))]
            else:
                cache = self.t if which == "t" else self.s
                out = [self.act(cache, kind, l) for l in range(self.model.cfg.n_layers)]
            self._lists[key] = out
        return self._lists[key]

    @torch.no_grad()
    def run(self, layer: int, start: int, patches: list[Any], kind: str | None = None
            ) -> Float[torch.Tensor, "variant batch"]:
        """Logit difference per trial for each patch function (variants stacked along the batch)."""
        k = len(patches)
        rep = lambda x: x.repeat(k, *([1] * (x.dim() - 1)))  # noqa: E731
        resid = rep(self.act(self.t, "resid_pre", layer)[:, start:])
        b = self.answer.shape[0]

        def patch(name: str, x: torch.Tensor, s: int) -> torch.Tensor:
            if k == 1:
                return patches[0](name, x, s)
            chunks = list(x.split(b, dim=0))
            out = [p(name, c, s) for p, c in zip(patches, chunks)]
            if all(o is c for o, c in zip(out, chunks)):  # no patch of this activation
                return x
            return torch.cat(out, dim=0)

        cached = None
        if kind == "z":
            cached = {"z": rep(self.act(self.t, "z", layer)[:, start:])}
        elif kind in ("attn_out", "mlp_out"):
            cached = {"attn_out": rep(self.act(self.t, "attn_out", layer)[:, start:])}
            if kind == "mlp_out":
                cached["mlp_out"] = rep(self.act(self.t, "mlp_out", layer)[:, start:])
        ld = run_from(self.weights, layer, start, resid, self.kv, self.direction, self.bias, patch, cached=cached)
        return ld.view(k, b)

    @torch.no_grad()
    def run_index(self, kind: str, layer: int, start: int, variants: list[tuple[int | None, int | None]]
                  ) -> Float[torch.Tensor, "variant batch"]:
        """Logit difference per trial for variants (pos, head) that each copy the source's `kind` (resid_pre,
        attn_out, mlp_out or z) at one position (None: every position >= start) and head (z only) into the
        target at `layer`; replayed from `start` (<= every variant's position).

        Only what the patch changes is recomputed: a patched attention or MLP output at one position changes the
        residual stream of that position alone until the next block, so the patched block is not run again
        (its cached output, or for z one position's output projection, plus that position's MLP)."""
        V, b, n = len(variants), self.answer.shape[0], self.n_pos - start
        w, L = self.weights, self.model.cfg.n_layers
        if kind == "resid_pre":
            x = self.acts("t", "resid_pre")[layer][:, start:].repeat(V, 1, 1)
            src = self.acts("s", "resid_pre")[layer]
            xv = x.view(V, b, n, -1)
            for v, (pos, _) in enumerate(variants):
                xv[v, :, pos - start] = src[:, pos]
            return run_from(w, layer, start, x, self.kv, self.direction, self.bias).view(V, b)
        blk = w.blocks[layer]
        if all(pos is None for pos, _ in variants):  # z of one head at every position
            if kind != "z":
                raise ValueError(f"run_index: {kind} is patched at one position")
            if layer == L - 1:  # the last block's output is read at the last position only
                start, n = self.n_pos - 1, 1
            z = self.acts("t", "z")[layer][:, start:].repeat(V, 1, 1, 1)
            src = self.acts("s", "z")[layer][:, start:]
            zv = z.view(V, b, *z.shape[1:])
            for v, (_, head) in enumerate(variants):
                zv[v, :, :, head] = src[:, :, head]
            mid = (attn_out(blk, zv) + self.acts("t", "resid_pre")[layer][:, start:]).view(V * b, n, -1)
            post = mid + blk.mlp(blk.ln2(mid))
        else:  # one position per variant: only its residual stream changes in this block
            pos = [p for p, _ in variants]
            if kind == "mlp_out":
                post_p = torch.stack([self.acts("t", "resid_mid")[layer][:, p] for p in pos])
                post_p = post_p + torch.stack([self.acts("s", "mlp_out")[layer][:, p] for p in pos])
            else:
                if kind == "attn_out":
                    a_out = torch.stack([self.acts("s", "attn_out")[layer][:, p] for p in pos])
                elif kind == "z":
                    tz, sz = self.acts("t", "z")[layer], self.acts("s", "z")[layer]
                    zp = torch.stack([tz[:, p] for p in pos])  # [variant, batch, head, d_head]
                    for v, (p, head) in enumerate(variants):
                        zp[v, :, head] = sz[:, p, head]
                    a_out = attn_out(blk, zp)
                else:
                    raise ValueError(f"run_index: cannot patch {kind}")
                mid_p = torch.stack([self.acts("t", "resid_pre")[layer][:, p] for p in pos]) + a_out
                post_p = mid_p + blk.mlp(blk.ln2(mid_p))
            post = self.acts("t", "resid_post")[layer][:, start:].repeat(V, 1, 1)
            pv = post.view(V, b, n, -1)
            for v, p in enumerate(pos):
                pv[v, :, p - start] = post_p[v]
        if layer == L - 1:
            return final_logit_diff(w, post[:, -1], self.direction, self.bias).view(V, b)
        return run_from(w, layer + 1, start, post, self.kv, self.direction, self.bias).view(V, b)


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


# sweeps with the fast path (CachedRun.run_index): what -> the activation copied
FAST = {"resid_pre": "resid_pre", "attn_out": "attn_out", "mlp_out": "mlp_out", "heads": "z", "heads_by_pos": "z"}


def default_variants_per_forward(model: TLModel, what: str) -> int:
    """Patched variants stacked in one forward, measured fastest on 2 CPU cores (`python benches/patching_speed.py
    --stacking ...`, the default model): a layer's heads (heads) or a position's heads (heads_by_pos) at once; 3
    consecutive positions (resid_pre, attn_out, mlp_out: replayed from the first of them, 10-15% faster than one
    position per forward); 4 for the other variants. 16 on GPU."""
    if str(model.cfg.device).startswith("cuda"):
        return 16
    if what in ("heads", "heads_by_pos"):
        return model.cfg.n_heads
    return 3 if what in FAST else 4


def _variant_groups(r: CachedRun, what: str, shape: tuple[int, ...], axes: tuple[str, ...], raw: np.ndarray, L: int,
                    P: int) -> dict[tuple[int, ...], list[tuple[tuple[int, ...], int | None, int | None]]]:
    """The indices to patch, grouped by what may share a forward (same layer, and start; for heads_by_pos the same
    position). Indices whose patch cannot change the output get the target's value in `raw` here."""
    fast = what in FAST
    groups: dict[tuple[int, ...], list[tuple[tuple[int, ...], int | None, int | None]]] = {}
    for idx in np.ndindex(shape):
        d = dict(zip(axes, idx))
        layer = d["layer"]
        pos = d.get("pos", d.get("dest_pos"))
        head = d.get("head")
        if (P - 1 if pos is None else pos) < r.first_diff:
            raw[idx] = r.target_ld  # identical activations in both runs: the patch changes nothing
            continue
        if fast and layer == L - 1 and pos is not None and pos < P - 1 and what != "resid_pre":
            raw[idx] = r.target_ld  # the last block's output at another position than the last is never read
            continue
        if fast:
            key = (layer, pos) if what == "heads_by_pos" else (layer,)
        else:
            key = (layer, r.first_diff if pos is None else pos)
        groups.setdefault(key, []).append((idx, pos, head))
    return groups


def patch_sweep(model: TLModel, clean_tokens: Any, corrupt_tokens: Any, answer: Any, wrong: Any, what: str,
                direction: str = "denoise", variants_per_forward: int | None = None, position_labels: list[str] | None = None,
                progress: bool = False, min_gap: float = MIN_GAP) -> PatchResult:
    """Exact patching of `what` (a key of VARIANTS) over every index; see the module docstring.

    variants_per_forward: patched variants stacked along the batch of one forward (default:
    `default_variants_per_forward`). Variants of one forward share its layer; for resid_pre / attn_out / mlp_out
    by position they are consecutive positions, replayed from the first of them. Normalised values are NaN
    ("undefined") when the clean and corrupted mean logit differences are less than `min_gap` apart; `raw` is always
    there."""
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
    vpf = variants_per_forward or default_variants_per_forward(model, what)
    r = CachedRun(model, target, source, a, w)
    kind, axes = VARIANTS[what]
    L, H, P = model.cfg.n_layers, model.cfg.n_heads, r.n_pos
    sizes = {"layer": L, "head": H, "pos": P, "dest_pos": P}
    shape = tuple(sizes[ax] for ax in axes)
    raw = np.zeros(shape)
    base_target, base_source = r.target_ld, r.source_ld
    fast = what in FAST
    groups = _variant_groups(r, what, shape, axes, raw, L, P)
    todo = [g[i:i + vpf] for g in groups.values() for i in range(0, len(g), vpf)]
    done_idx, done_ld = [], []
    for chunk in tqdm(todo, desc=f"patch {what}", disable=not progress):
        layer = chunk[0][0][axes.index("layer")]
        start = min((p for _, p, _ in chunk if p is not None), default=r.first_diff)
        if fast:
            ld = r.run_index(FAST[what], layer, start, [(p, h) for _, p, h in chunk])
        else:
            src = r.act(r.s, kind, layer)
            ld = r.run(layer, start, [index_setter(kind, src, h, p) for _, p, h in chunk], kind=kind)
        done_idx.extend(i for i, _, _ in chunk)
        done_ld.append(ld.mean(1))
    if done_ld:  # one transfer to the host for the whole sweep
        for idx, v in zip(done_idx, torch.cat(done_ld).tolist()):
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
