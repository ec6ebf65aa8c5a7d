"""The base class of every typed analysis result, and the labels they share.

A result is a frozen dataclass that tabulates itself (`.to_frame()`), names the figures that describe it
(`.figures()`: {name: plotly figure}) and saves itself (`.to_files(stem)`, `Type.from_files(stem)`: arrays as NPZ,
the rest as JSON, never pickled; `interp.result_io`). Defining a subclass registers it by class name, so a new
analysis's result is loadable, exportable and drawn by the CLI, `cogcircuits run` and the report without
branches of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from interp.result_io import RESULT_TYPES, load_result, save_result


class Result:
    """Saving and loading as files, a tidy table and the figures that describe the result."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        old = RESULT_TYPES.get(cls.__name__)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"a result type named {cls.__name__} is already defined in {old.__module__}")
        RESULT_TYPES[cls.__name__] = cls

    def to_files(self, stem: str | Path, provenance: dict[str, Any] | None = None) -> tuple[Path, Path]:
        """Write `stem`.json and `stem`.npz; returns their paths."""
        return save_result(self, stem, provenance)

    @classmethod
    def from_files(cls, stem: str | Path) -> Any:
        """The result saved at `stem` (refused if the files hold another type of result)."""
        r = load_result(stem)
        if not isinstance(r, cls):
            raise TypeError(f"{stem} holds a {type(r).__name__}, not a {cls.__name__}")
        return r

    def to_frame(self) -> Any:
        """A tidy pandas DataFrame of the result (every result type defines its own)."""
        raise NotImplementedError(f"{type(self).__name__} defines no table (to_frame)")

    def figures(self) -> dict[str, Any]:
        """{name: plotly figure}: every figure that describes this result (none by default)."""
        return {}

    def summary(self) -> dict[str, Any]:
        """The result's headline numbers and labels, JSON-ready (what a run's results/*.json and report read)."""
        return {}


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def top_heads(scores: Float[np.ndarray, "layer head"], k: int) -> list[tuple[int, int]]:
    """The k (layer, head) with the largest |score| (NaN last, ties in layer-major order)."""
    mag = np.abs(np.nan_to_num(np.asarray(scores, float), nan=-1.0)).ravel()
    order = np.argsort(-mag, kind="stable")[:k]
    return [(int(i // scores.shape[1]), int(i % scores.shape[1])) for i in order]


def layer_labels(n: int) -> list[str]:
    return [f"L{i}" for i in range(n)]


def head_labels(n: int) -> list[str]:
    return [f"H{i}" for i in range(n)]
