"""Linear probes on a frozen model's residual stream: does a layer already carry a quantity (e.g. a number's value)
in a form that extrapolates beyond the values the probe was fitted on?

A ridge regression from the residual stream at one position (every layer's input and the last layer's output) to
one number per trial, fitted on one trial set and scored on another: R^2 (1 - residual / total sum of squares on the
scoring set; can be negative) and the Spearman correlation of predictions and values. Axes: `layer` (n_layers + 1
points), `trials`, `d_model`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from interp.stats import spearman
from interp.typing import TLModel


@dataclass(frozen=True)
class ProbeCurve:
    """Per residual point (layer 0's input ... the last layer's output): R^2 and Spearman on the scoring trials."""

    r2: tuple[float, ...]
    spearman: tuple[float, ...]
    n_fit: int
    n_test: int
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def residual_at(model: TLModel, tokens: torch.Tensor, position: int, batch: int = 32
                ) -> Float[np.ndarray, "layer trials d_model"]:
    """The residual stream at `position` entering every layer and leaving the last, float64."""
    L = model.cfg.n_layers
    names = [f"blocks.{l}.hook_resid_pre" for l in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
    out = []
    for i in range(0, len(tokens), batch):
        _, cache = model.run_with_cache(torch.as_tensor(tokens[i:i + batch], device=model.cfg.device),
                                        names_filter=lambda n: n in names, return_type=None)
        out.append(torch.stack([cache[n][:, position] for n in names]).double().cpu().numpy())
    return np.concatenate(out, axis=1)


def ridge(x: Float[np.ndarray, "trials d"], y: Float[np.ndarray, " trials"], alpha: float
          ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Ridge regression on standardised features: (weights, intercept, feature mean, feature scale)."""
    mu, sd = x.mean(0), x.std(0) + 1e-8
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + alpha * len(z) * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return w, float(y.mean()), mu, sd


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """1 - SS_res / SS_tot on the scoring set (NaN when the values do not vary)."""
    tot = float(((y - y.mean()) ** 2).sum())
    return 1 - float(((y - pred) ** 2).sum()) / tot if tot > 0 else float("nan")


def value_probe(fit: Float[np.ndarray, "layer trials d_model"], y_fit: np.ndarray,
                test: Float[np.ndarray, "layer trials d_model"], y_test: np.ndarray, alpha: float = 1.0) -> ProbeCurve:
    """Per layer, a ridge probe fitted on (`fit`, `y_fit`) and scored on (`test`, `y_test`)."""
    r2s, rhos = [], []
    for xf, xt in zip(fit, test):
        w, b, mu, sd = ridge(xf, np.asarray(y_fit, float), alpha)
        pred = ((xt - mu) / sd) @ w + b
        r2s.append(r2_score(np.asarray(y_test, float), pred))
        rhos.append(spearman(pred, y_test))
    return ProbeCurve(r2=tuple(r2s), spearman=tuple(rhos), n_fit=len(y_fit), n_test=len(y_test), alpha=alpha)
