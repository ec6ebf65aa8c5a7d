"""The notebook-first Python API: load or train a model, draw task trials and clean/corrupted pairs, run each
analysis, and get typed results (`interp.results`) that tabulate (`.to_frame()`) and plot (`.plot()`) themselves.

    from experiments import api as cc

    ft = cc.train("models/ft", batch_size=64, lr=3e-4, warmup=30)   # fine-tune cogbase-6l to the criterion
    pairs = cc.pairs(ft, 16, seed=0)                                  # context-flip clean/corrupted pairs
    p = cc.patch(ft, pairs)                                           # Patching [layer, head]
    p.to_frame().head(); p.plot()                                     # tidy DataFrame; plotly heatmap
    cc.attention(ft, pairs, p.top_heads(3)).show()                    # circuitsvis, clean | corrupted
    p.to_files("out/patching"); Patching.from_files("out/patching")   # JSON + NPZ, never pickled

A facade: the functions are `experiments.analysis.analyses`'s (what `cogcircuits run` and the CLI commands call
too), the result types `interp.results`'.
"""

from __future__ import annotations

from experiments.analysis.analyses import (Model, Pairs, ablate, attention, attribute, attribution_patching,
                                           compare, discover, evaluate, load, neurons, pairs, patch, train, trials)
from experiments.core.run_record import RunRecord
from interp.results import (Ablation, AttentionView, Attribution, AttributionPatching, Circuit, Comparison,
                            Evaluation, Neurons, Patching)

__all__ = ["Model", "Pairs", "load", "train", "evaluate", "trials", "pairs", "patch", "attribution_patching",
           "attribute", "ablate", "neurons", "discover", "compare", "attention",
           "Ablation", "AttentionView", "Attribution", "AttributionPatching", "Circuit", "Comparison", "Evaluation",
           "Neurons", "Patching", "RunRecord"]
