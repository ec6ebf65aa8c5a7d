"""How much a model still does its task with parts of a reference model (its base) put back: each layer's weights
reverted, the layers from the top down reverted, and the reference's residual stream patched in at each layer."""

from __future__ import annotations

from typing import Any

from interp.compare import cross_model_patching, weight_reversion


def reliance(model: Any, reference: Any, batch: Any, cmap: bool = True) -> dict[str, Any]:
    """Chance-corrected performance kept when each layer (and every layer from the top down) is reverted to the
    reference's weights, and when the reference's residual stream replaces the model's at each layer."""
    args = (batch.tokens, batch.answer_ids, batch.wrong_ids)
    rev = weight_reversion(model, reference, *args, singles=False, bottom_up=False)
    out = {"reversion_layer": [rev["layer"][f"L{l}"] for l in range(model.cfg.n_layers)],
           "reversion_top_down": rev["top_down"], "full": rev["full"]}
    if cmap:
        out["cmap_resid"] = cross_model_patching(model, reference, *args, sites=("resid",))["resid"]
    return out
