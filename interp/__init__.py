"""The interpretability library: models through TransformerLens (`models`, the one adapter), exact activation
patching and its fast forward (`patching`, `forward`), attribution, ablation, neurons, circuits with MIB
faithfulness (`circuits`, `faithfulness`, `edge_forward`), model comparison (`compare`), statistics (`stats`),
typed results that save, tabulate and plot themselves (`results`). Imports `tasks` only, never `experiments`.

The names below are the public API. They load on first use (PEP 562 `__getattr__`): `import interp.store` in a
worker or the CLI does not pay for torch, TransformerLens and plotly until a name that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "interp.models": ("load_model", "load_checkpoint", "build_scratch", "Arch", "ModelLoadError"),
    "interp.model_id": ("ModelId", "group_of"),
    "interp.patching": ("patch_sweep", "CachedRun", "PatchResult", "VARIANTS"),
    "interp.atp": ("attribution_patch",),
    "interp.attribution": ("direct_logit_attribution", "logit_lens"),
    "interp.ablation": ("Ablator",),
    "interp.neurons": ("neuron_selectivity",),
    "interp.circuits": ("edge_attribution", "exact_node_effects"),
    "interp.faithfulness": ("CircuitEvaluator", "CircuitCurve", "curve"),
    "interp.compare": ("layer_cka", "weight_reversion", "cross_model_patching", "relative_weight_change"),
    "interp.metrics": ("evaluate_batch", "logit_diff_from_logits"),
    "interp.results": ("Patching", "AttributionPatching", "Attribution", "Ablation", "Neurons", "Circuit",
                       "Comparison", "Evaluation", "AttentionView"),
    "interp.result_base": ("Result",),
    "interp.result_io": ("save_result", "load_result"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'interp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
