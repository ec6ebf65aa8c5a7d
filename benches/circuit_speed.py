"""Speed of circuit evaluation (MIB faithfulness) on the shipped 6-layer base: node circuits (outputs replaced in the
residual stream) and edge circuits (per-head inputs), circuits stacked along the batch of one forward, each through
this project's forward (`interp.edge_forward`, what runs use) and through TransformerLens with hooks (the reference).

    python benches/circuit_speed.py [--pairs 32] [--threads 2]

Prints seconds per evaluated circuit; speed does not depend on the weights, so the base is used as it is.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def per_circuit(ev, masks) -> float:  # noqa: ANN001
    ev.trials_many(masks[:2])  # warm-up
    t0 = time.perf_counter()
    ev.trials_many(masks)
    return (time.perf_counter() - t0) / len(masks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--circuits", type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from interp.faithfulness import CircuitEvaluator
    from interp.metrics import last_logits
    from interp.models import load_model
    from tasks.cdm import CDMConfig, make_pairs

    model, tok, _ = load_model("cogbase-6l")
    clean, bad = make_pairs(CDMConfig(), a.pairs, seed=0, tokenizer=tok, corruption="context-flip")
    ev = CircuitEvaluator(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, min_gap=0, se_factor=0)
    rng = np.random.default_rng(0)
    nodes = [u for u in ev.up if u != "embed"]
    node_masks = torch.stack([ev.node_edges([nodes[i] for i in rng.choice(len(nodes), 10, replace=False)])
                              for _ in range(a.circuits)])
    edge_masks = torch.as_tensor(rng.random((a.circuits, *ev.valid.shape)) < 0.2) & ev.valid
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(a.circuits):
            last_logits(model, torch.tensor(clean.tokens))
    plain = (time.perf_counter() - t0) / a.circuits
    print(f"shipped base, {a.pairs} context-flip pairs, {clean.tokens.shape[1]} positions, threads {a.threads}, "
          f"{int(ev.valid.sum())} edges")
    print(f"plain forward (no ablation):       {plain * 1000:6.1f} ms")
    for fast in (False, True):
        ev.fast, ev.per_forward = fast, 1
        how = "this project's forward (interp.edge_forward)" if fast else "TransformerLens with hooks"
        print(f"{how}:")
        print(f"  node circuit:                    {per_circuit(ev, node_masks) * 1000:6.1f} ms per circuit")
        for k in (1, 2, 4):
            ev.per_forward = k
            print(f"  edge circuit, {k} per forward:    {per_circuit(ev, edge_masks) * 1000:6.1f} ms per circuit")

if __name__ == "__main__":
    main()
