"""Neuron selectivity to task variables, in the spirit of Mante et al. (2013)'s regression analysis.

Each MLP neuron's activation (after the nonlinearity, at one chosen position) is regressed by least squares on the
task variables of the trial (`batch.variables`, named by the task; for the context-dependent decision task:
context, relevant and irrelevant evidence as signed coherence, positive towards `right`) and choice (-1 =
answer_words[0], +1 = answer_words[1]), with an intercept.
As in Mante et al., "choice" is the MODEL's choice (the answer word with the larger logit at the final position);
a second fit uses the correct answer instead, and both are returned. On a model at 100% accuracy the two coincide.
Both sides are z-scored, so coefficients are standardised betas comparable across neurons.

Axes: trials, layer, neuron, variable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from interp.metrics import as_tokens, cache_last
from interp.typing import TLModel

def variables_of(batch: Any) -> list[str]:
    """The regression's variable names: the task's variables, then "choice"."""
    return [*batch.variables, "choice"]


def design_matrix(batch: Any, choice: np.ndarray | None = None) -> np.ndarray:
    """[trials, variable] from a TrialBatch's task variables; `choice` (+1 = answer_words[1], -1 = answer_words[0])
    defaults to the correct answer."""
    cols = [np.asarray(batch.meta[key], dtype=float) for key in batch.variables.values()]
    if choice is None:
        choice = np.where(np.asarray(batch.labels) == 1, 1.0, -1.0)
    return np.stack([*cols, np.asarray(choice, dtype=float)], axis=1)


def _fit(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardised betas [neuron, variable] and R^2 [neuron] of each column of Y on X (with an intercept)."""
    Xs = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    Xd = np.concatenate([np.ones((len(X), 1)), Xs], axis=1)
    sd = Y.std(0)
    Ys = (Y - Y.mean(0)) / np.where(sd > 0, sd, 1.0)
    beta, *_ = np.linalg.lstsq(Xd, Ys, rcond=None)  # [1 + variable, neuron]
    resid = Ys - Xd @ beta
    ss_tot = (Ys ** 2).sum(0)
    r2 = np.where(ss_tot > 0, 1 - (resid ** 2).sum(0) / np.where(ss_tot > 0, ss_tot, 1), 0.0)
    return beta[1:].T, r2


@torch.no_grad()
def neuron_selectivity(model: TLModel, batch: Any, position: str = "answer", layers: tuple[int, ...] | None = None,
                       top_k: int = 10) -> dict[str, Any]:
    """Standardised regression coefficients [layer, neuron, variable] and R^2 [layer, neuron] with the model's
    choice (`coef`, `r2`) and with the correct answer (`coef_correct`, `r2_correct`); the top_k neurons (by
    |beta|, model-choice fit) per variable; and the share of trials where the model's choice is correct."""
    if position not in batch.positions:
        raise ValueError(f"unknown position {position!r} (choose from {', '.join(batch.positions)})")
    L = model.cfg.n_layers
    layers = tuple(range(L)) if layers is None else tuple(layers)
    for l in layers:
        if not 0 <= l < L:
            raise ValueError(f"layer {l} out of range: the model has layers 0..{L - 1}")
    var_names = variables_of(batch)
    if len(batch) < 2 * len(var_names):
        raise ValueError(f"need at least {2 * len(var_names)} trials for the regression, got {len(batch)}")
    pos = batch.positions[position]
    names = {f"blocks.{l}.mlp.hook_post" for l in layers}
    logits, cache = cache_last(model, as_tokens(batch.tokens, model.cfg.device), lambda n: n in names)
    last = logits.double().cpu().numpy()
    i = np.arange(len(batch))
    ld = last[i, np.asarray(batch.answer_ids)] - last[i, np.asarray(batch.wrong_ids)]
    says_second = np.where(np.asarray(batch.labels) == 1, ld > 0, ld < 0)  # a tie counts as answer_words[0]
    choice = np.where(says_second, 1.0, -1.0)
    X_model, X_correct = design_matrix(batch, choice), design_matrix(batch)
    fits = {"model": ([], []), "correct": ([], [])}
    for l in layers:
        Y = cache[f"blocks.{l}.mlp.hook_post"][:, pos].double().cpu().numpy()  # [trials, neuron]
        for key, X in (("model", X_model), ("correct", X_correct)):
            c, r = _fit(X, Y)
            fits[key][0].append(c)
            fits[key][1].append(r)
    coef = np.stack(fits["model"][0])  # [layer, neuron, variable]
    top = {}
    for v, name in enumerate(var_names):
        flat = np.abs(coef[:, :, v]).ravel()
        order = np.argsort(-flat, kind="stable")[:top_k]
        flat_coef = coef.reshape(-1, len(var_names))
        top[name] = [(int(layers[i // coef.shape[1]]), int(i % coef.shape[1]), float(flat_coef[i, v]))
                     for i in order]
    # fitted in float64, kept in float32 (activations of a float32 model: the digits dropped carry nothing; a
    # 30-layer model's four arrays take 1.8 MB instead of 3.7 MB); `top` is ranked on the float64 fit
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    return {"layers": list(layers), "position": position, "variables": var_names, "coef": f32(coef),
            "r2": f32(np.stack(fits["model"][1])), "coef_correct": f32(np.stack(fits["correct"][0])),
            "r2_correct": f32(np.stack(fits["correct"][1])), "top": top,
            "choice_is_correct": float((choice == X_correct[:, -1]).mean())}

