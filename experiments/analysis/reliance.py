"""A model against a reference model (its base): how much it still does its task with parts of the reference put
back (each layer's weights reverted, the layers from the top down reverted, the reference's residual stream patched
in at each layer), how similar their representations are (CKA) and how far its weights moved. `compare_with_base`
is the one per-model comparison, used by `cogcircuits run`, `cogcircuits compare` and the notebook's `compare`."""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.core.run_record import ModelComparison, Reliance, Retained, Score
from interp.compare import layer_cka, relative_weight_change
from interp.layer_reliance import layer_reliance
from interp.typing import TLModel


def reliance(model: TLModel, reference: TLModel, batch: Any, cmap: bool = True) -> Reliance:
    """Chance-corrected performance kept when each layer (and every layer from the top down) is reverted to the
    reference's weights, and when the reference's residual stream replaces the model's at each layer (computed
    from cached prefixes: `interp.layer_reliance`)."""
    r = layer_reliance(model, reference, batch.tokens, batch.answer_ids, batch.wrong_ids, cmap=cmap)
    sides = np.bincount(np.asarray(batch.labels), minlength=len(batch.answer_words))
    return Reliance(reversion_layer=tuple(Retained.from_dict(x) for x in r["layer"]),
                    reversion_top_down=tuple(Retained.from_dict(x) for x in r["top_down"]),
                    full=Score.from_dict(r["full"]),
                    cmap_resid=tuple(Retained.from_dict(x) for x in r["cmap_resid"]) if cmap else None,
                    chance=r["chance"], n_by_answer=tuple(int(x) for x in sides))


def cka_with(rep: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Per-layer CKA of one model's representations with a reference's: debiased (the estimator the verdicts
    use) and the plain biased one."""
    return {"debiased": layer_cka(rep, ref, debiased=True), "biased": layer_cka(rep, ref)}


def compare_with_base(model: TLModel, base: TLModel, rep: dict[str, Any], rep_base: dict[str, Any], batch: Any,
                      cmap: bool = True) -> ModelComparison:
    """One model against the base: CKA of their representations (`interp.compare.representations` of each on the
    same trials), reliance on the base on `batch`, and the relative weight change."""
    cka = {est: {site: {pos: tuple(float(x) for x in v) for pos, v in by_pos.items()} for site, by_pos in d.items()}
           for est, d in cka_with(rep, rep_base).items()}
    return ModelComparison(cka_base=cka, reliance_base=reliance(model, base, batch, cmap=cmap),
                           weight_change=relative_weight_change(model, base))
