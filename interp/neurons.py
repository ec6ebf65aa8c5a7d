"""Neuron selectivity to task variables, in the spirit of Mante et al. (2013)'s regression analysis.

Each MLP neuron's activation (after the nonlinearity, at one chosen position) is regressed by least squares on the
task variables of the trial: context (-1 = modality 0, +1 = modality 1), relevant evidence and irrelevant
evidence (signed coherence / 100, positive towards `right`) and choice (-1 left, +1 right), with an intercept.
Both sides are z-scored, so coefficients are standardised betas comparable across neurons.

Axes: trials, layer, neuron, variable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from interp.metrics import as_tokens

VARIABLES = ("context", "relevant_evidence", "irrelevant_evidence", "choice")


def design_matrix(meta: dict[str, np.ndarray]) -> np.ndarray:
    """[trials, variable] from a TrialBatch's metadata."""
    ctx = meta["context"] * 2.0 - 1.0
    rel = meta["relevant_signed_coherence"] / 100.0
    irr = meta["irrelevant_signed_coherence"] / 100.0
    choice = np.where(rel > 0, 1.0, -1.0)
    return np.stack([ctx, rel, irr, choice], axis=1)


@torch.no_grad()
def neuron_selectivity(model: Any, batch: Any, position: str = "answer", layers: tuple[int, ...] | None = None,
                       top_k: int = 10) -> dict[str, Any]:
    """Standardised regression coefficients [layer, neuron, variable], R^2 [layer, neuron], and the top_k neurons
    (by |beta|) per variable."""
    if position not in batch.positions:
        raise ValueError(f"unknown position {position!r} (choose from {', '.join(batch.positions)})")
    L = model.cfg.n_layers
    layers = tuple(range(L)) if layers is None else tuple(layers)
    for l in layers:
        if not 0 <= l < L:
            raise ValueError(f"layer {l} out of range: the model has layers 0..{L - 1}")
    pos = batch.positions[position]
    names = {f"blocks.{l}.mlp.hook_post" for l in layers}
    _, cache = model.run_with_cache(as_tokens(batch.tokens, model.cfg.device), names_filter=lambda n: n in names)
    X = design_matrix(batch.meta)
    if len(X) < 2 * X.shape[1]:
        raise ValueError(f"need at least {2 * X.shape[1]} trials for the regression, got {len(X)}")
    Xs = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    Xd = np.concatenate([np.ones((len(X), 1)), Xs], axis=1)
    coefs, r2 = [], []
    for l in layers:
        Y = cache[f"blocks.{l}.mlp.hook_post"][:, pos].double().cpu().numpy()  # [trials, neuron]
        sd = Y.std(0)
        Ys = (Y - Y.mean(0)) / np.where(sd > 0, sd, 1.0)
        beta, *_ = np.linalg.lstsq(Xd, Ys, rcond=None)  # [1 + variable, neuron]
        resid = Ys - Xd @ beta
        ss_tot = (Ys ** 2).sum(0)
        r2.append(np.where(ss_tot > 0, 1 - (resid ** 2).sum(0) / np.where(ss_tot > 0, ss_tot, 1), 0.0))
        coefs.append(beta[1:].T)
    coef = np.stack(coefs)  # [layer, neuron, variable]
    top = {}
    for v, name in enumerate(VARIABLES):
        flat = np.abs(coef[:, :, v]).ravel()
        order = np.argsort(-flat, kind="stable")[:top_k]
        top[name] = [(int(layers[i // coef.shape[1]]), int(i % coef.shape[1]), float(coef.reshape(-1, len(VARIABLES))[i, v]))
                     for i in order]
    return {"layers": list(layers), "position": position, "variables": list(VARIABLES), "coef": coef,
            "r2": np.stack(r2), "top": top}
