"""The one name for "a hooked model" in annotations: `TLModel` (this project's `interp.hooked_lm.HookedLM`, the
TransformerLens-style transformer every model is, to type checkers; `Any` at run time, so no module but the
adapter `interp.models` and the model module itself import it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from interp.hooked_lm import HookedLM as TLModel
else:
    TLModel = Any

__all__ = ["TLModel"]
