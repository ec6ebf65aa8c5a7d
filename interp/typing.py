"""The one name for "a TransformerLens model" in annotations: `TLModel` (a `HookedTransformer` to type checkers,
`Any` at run time, so no module but `interp.models`, the adapter, needs TransformerLens to import)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer as TLModel
else:
    TLModel = Any

__all__ = ["TLModel"]
