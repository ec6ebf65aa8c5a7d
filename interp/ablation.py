"""Zero, mean and resample ablation of attention heads and MLP neurons.

A head is ablated through its `hook_z` (all positions), a neuron through `mlp.hook_post` (all positions).
mean: the mean activation over a reference set of trials, per position. resample: each trial takes the activation
of another reference trial (a fixed derangement under the seed). Effects are reported on accuracy and mean logit
difference, against the unablated model.

Axes: batch (trials), pos, head, neuron.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from interp.metrics import as_ids, as_tokens, last_logits, logit_diff_from_logits
from interp.patching import CachedRun, index_setter
from interp.typing import TLModel

METHODS = ("zero", "mean", "resample")


ABLATED = ("attn.hook_z", "mlp.hook_post")  # the activations a head or a neuron is ablated through


def _references(model: TLModel, ref_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every layer's head outputs and MLP neurons on the reference trials, from one forward."""
    with torch.no_grad():
        _, cache = model.run_with_cache(ref_tokens, names_filter=lambda n: n.endswith(ABLATED),
                                        stop_at_layer=model.cfg.n_layers)
    return dict(cache.items())


def derangement(n_ref: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_ref)[:n] if n_ref >= n else rng.integers(0, n_ref, n)
    if n_ref == n:  # the reference set is the batch itself: no trial keeps its own activation
        fixed = perm == np.arange(n)
        perm[fixed] = (perm[fixed] + 1) % n
    return perm


class Ablator:
    """Ablates sets of heads or neurons on fixed trials; the reference activations come from one forward of the
    reference trials (every layer's head outputs and neurons)."""

    def __init__(self, model: TLModel, tokens: Any, answer: Any, wrong: Any, method: str = "mean",
                 reference_tokens: Any = None, seed: int = 0) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown ablation {method!r} (choose from {', '.join(METHODS)})")
        dev = model.cfg.device
        self.model, self.method, self.seed = model, method, seed
        self.tokens, self.a, self.w = as_tokens(tokens, dev), as_ids(answer, dev), as_ids(wrong, dev)
        self.ref = self.tokens if reference_tokens is None else as_tokens(reference_tokens, dev)
        if self.ref.shape[1] != self.tokens.shape[1]:
            raise ValueError("reference trials must have the same length as the ablated trials")
        self._refcache: dict[str, torch.Tensor] = {}
        self._acts: dict[str, torch.Tensor] | None = None
        self.baseline = self._run([])

    def _replacement(self, hook: str) -> torch.Tensor:
        if hook not in self._refcache:
            if self._acts is None:
                self._acts = _references(self.model, self.ref)
            act = self._acts[hook]
            n = self.tokens.shape[0]
            if self.method == "zero":
                rep = torch.zeros_like(act[:1]).expand(n, *act.shape[1:])
            elif self.method == "mean":
                rep = act.mean(0, keepdim=True).expand(n, *act.shape[1:])
            else:
                rep = act[torch.as_tensor(derangement(act.shape[0], n, self.seed), device=act.device)]
            self._refcache[hook] = rep
        return self._refcache[hook]

    @torch.no_grad()
    def _run(self, hooks: list[tuple[str, Any]]) -> dict[str, float]:
        ld = logit_diff_from_logits(last_logits(self.model, self.tokens, hooks), self.a, self.w)
        return {"accuracy": float((ld > 0).float().mean()), "logit_diff": float(ld.mean())}

    def _hooks(self, units: Iterable[tuple[int, int]], kind: str) -> list[tuple[str, Any]]:
        by_layer: dict[int, list[int]] = {}
        L = self.model.cfg.n_layers
        size = self.model.cfg.n_heads if kind == "head" else self.model.cfg.d_mlp
        for layer, idx in units:
            if not 0 <= layer < L or not 0 <= idx < size:
                raise ValueError(f"{kind} ({layer}, {idx}) out of range: the model has {L} layers and {size} "
                                 f"{kind}s per layer")
            by_layer.setdefault(layer, []).append(idx)
        hooks = []
        for layer, idxs in by_layer.items():
            name = f"blocks.{layer}.attn.hook_z" if kind == "head" else f"blocks.{layer}.mlp.hook_post"
            rep = self._replacement(name)
            ii = torch.as_tensor(sorted(set(idxs)), device=rep.device)

            def hook(act: torch.Tensor, hook: Any, rep: torch.Tensor = rep, ii: torch.Tensor = ii) -> torch.Tensor:
                act = act.clone()
                if act.dim() == 4:  # z: [batch, pos, head, d_head]
                    act[:, :, ii] = rep[:, :, ii]
                else:  # post: [batch, pos, neuron]
                    act[:, :, ii] = rep[:, :, ii]
                return act

            hooks.append((name, hook))
        return hooks

    def heads(self, heads: Iterable[tuple[int, int]]) -> dict[str, float]:
        return self._run(self._hooks(heads, "head"))

    def neurons(self, neurons: Iterable[tuple[int, int]]) -> dict[str, float]:
        return self._run(self._hooks(neurons, "neuron"))

    def each_head(self, progress: bool = False, variants_per_forward: int | None = None) -> dict[str, np.ndarray]:
        """Accuracy and logit difference with each head ablated alone: arrays [layer, head].

        The same numbers as `heads([(layer, head)])` for each head (tests), computed as exact patching computes
        them: the unablated run is cached once, and each ablation replays layers >= its own from that cache
        (`interp.patching.CachedRun`), with `variants_per_forward` heads stacked along the batch (default: a
        layer's heads on CPU, 16 on GPU). A full forward per head was most of a 30-layer model's analysis time."""
        L, H = self.model.cfg.n_layers, self.model.cfg.n_heads
        if variants_per_forward is None:
            variants_per_forward = 16 if str(self.model.cfg.device).startswith("cuda") else H
        run = CachedRun(self.model, self.tokens, self.tokens, self.a, self.w)
        acc, ld = np.zeros((L, H)), np.zeros((L, H))
        for l in tqdm(range(L), desc=f"{self.method}-ablate heads", disable=not progress):
            rep = self._replacement(f"blocks.{l}.attn.hook_z")
            for h0 in range(0, H, variants_per_forward):
                heads = range(h0, min(H, h0 + variants_per_forward))
                d = run.run(l, 0, [index_setter("z", rep, head=h) for h in heads], kind="z")  # [variant, batch]
                acc[l, heads.start:heads.stop] = (d > 0).float().mean(1).cpu().numpy()
                ld[l, heads.start:heads.stop] = d.mean(1).cpu().numpy()
        return {"accuracy": acc, "logit_diff": ld}

    def each_neuron(self, layer: int, neurons: Iterable[int] | None = None, progress: bool = False
                    ) -> dict[str, np.ndarray]:
        idx = list(range(self.model.cfg.d_mlp)) if neurons is None else list(neurons)
        acc, ld = np.zeros(len(idx)), np.zeros(len(idx))
        for i, n in enumerate(tqdm(idx, desc=f"{self.method}-ablate L{layer} neurons", disable=not progress)):
            r = self.neurons([(layer, n)])
            acc[i], ld[i] = r["accuracy"], r["logit_diff"]
        return {"neuron": np.asarray(idx), "accuracy": acc, "logit_diff": ld}
