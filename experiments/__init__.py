"""Experiments on top of `interp` and `tasks`, in layers (docs/architecture.md): `core` (config files, training
states), `training`, `analysis`, `jobs`, `report`, `run` (`cogcircuits run`), and on top the notebook facade `api`
and the command line `cli`.

The names below are the notebook API (`experiments.api`). They load on first use (PEP 562 `__getattr__`), so
importing a lower layer (a worker running one job, `cogcircuits --help`) does not import every analysis.
"""

from __future__ import annotations

import importlib
from typing import Any

from interp.result_io import allow_results_from

allow_results_from("experiments.")  # result types defined in this package load from the files that name them

__all__ = ["Model", "Pairs", "load", "train", "evaluate", "trials", "pairs", "patch", "attribution_patching",
           "attribute", "ablate", "neurons", "discover", "compare", "attention", "RunRecord"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'experiments' has no attribute {name!r}")
    value = getattr(importlib.import_module("experiments.api"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
