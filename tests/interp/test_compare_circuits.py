from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.atp import attribution_patch
from interp.circuits import Faithfulness, edge_attribution, exact_node_effects, select, size_for
from interp.compare import (ShapeMismatchError, cka, cross_model_patching, layer_cka, mean_ci, minibatch_cka,
                            relative_weight_change, representations, weight_reversion)
from interp.models import copy_model, load_model
from tasks.cdm import CDMConfig, make_pairs


@pytest.fixture(scope="module")
def setup(tiny_trained, tiny_base):
    model, tok, _ = load_model(tiny_trained)
    base, _, _ = load_model(tiny_base)
    clean, bad = make_pairs(CDMConfig(), 24, seed=4, tokenizer=tok, corruption="relevant-flip")
    return model, base, clean, bad


def test_cka_invariants():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert cka(x, x) == pytest.approx(1.0)
    assert cka(x, 3.7 * x @ q) == pytest.approx(1.0)  # orthogonal rotation and isotropic scaling
    assert cka(x, x, debiased=True) == pytest.approx(1.0)
    wide = np.c_[x @ q, rng.normal(size=(300, 0))]
    assert cka(x, wide) == pytest.approx(1.0)  # cross-width allowed
    y = rng.normal(size=(300, 24))  # independent: low similarity, debiased near zero
    assert cka(x, y) < 0.15
    assert abs(cka(x, y, debiased=True)) < 0.05
    assert minibatch_cka(x, x, batch_size=50) == pytest.approx(1.0)
    assert cka(x, np.c_[x, y]) < 1.0


def test_model_compared_with_itself(setup):
    model, base, clean, _ = setup
    reps = representations(model, clean.tokens, {"answer": -1, "context": clean.positions["context"]})
    out = layer_cka(reps, reps)
    for site in out:
        for pos in out[site]:
            constant = np.array([np.ptp(r, axis=0).max() == 0 for r in reps[site][pos]])
            assert np.isnan(out[site][pos][constant]).all()  # e.g. layer 0 at the answer token: undefined
            np.testing.assert_allclose(out[site][pos][~constant], 1.0, atol=1e-6)
    assert all(v == 0 for v in relative_weight_change(model, model).values())
    cm = cross_model_patching(model, model, clean.tokens, clean.answer_ids, clean.wrong_ids)
    assert all(r["logit_diff_retained"] == pytest.approx(1.0, abs=1e-5) for r in cm["resid"])


def test_reverting_an_unchanged_layer_retains_everything(setup):
    model, base, clean, _ = setup
    edited = copy_model(base)
    with torch.no_grad():  # only layer 1's MLP differs from the base
        edited.blocks[1].mlp.W_out.copy_(model.blocks[1].mlp.W_out)
    rev = weight_reversion(edited, base, clean.tokens, clean.answer_ids, clean.wrong_ids)
    for comp, r in rev["single"].items():
        if comp != "L1.mlp":
            assert r["logit_diff_retained"] == pytest.approx(1.0, abs=1e-6), comp
    base_ld = float((base(torch.tensor(clean.tokens))[:, -1].gather(1, torch.tensor(clean.answer_ids)[:, None])
                     - base(torch.tensor(clean.tokens))[:, -1].gather(1, torch.tensor(clean.wrong_ids)[:, None])).mean())
    assert rev["single"]["L1.mlp"]["logit_diff"] == pytest.approx(base_ld, abs=1e-4)
    assert rev["top_down"][-1]["logit_diff"] == pytest.approx(base_ld, abs=1e-4)  # every layer reverted
    change = relative_weight_change(edited, base)
    assert change["L1.mlp"] > 0 and all(v == 0 for k, v in change.items() if k != "L1.mlp")


def test_shape_mismatch_is_a_clear_error(setup, tmp_path, tokenizer):
    from tests.conftest import make_tiny_base

    model, *_ = setup
    other, _, _ = load_model(make_tiny_base(tmp_path / "wide", tokenizer, d_model=32, n_heads=2))
    with pytest.raises(ShapeMismatchError, match="same shape"):
        cross_model_patching(model, other, np.zeros((2, 12), dtype=int), [0, 0], [1, 1])


def test_mean_ci():
    m, lo, hi = mean_ci(np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 2.0]]))
    np.testing.assert_allclose(m, [2.0, 2.0])
    assert lo[0] < 2 < hi[0] and lo[1] == hi[1] == 2.0


def test_eap_node_scores_equal_attribution_patching(setup):
    """Independent check: a node's summed outgoing edge scores equal attribution patching of its output
    (in float64, where the two summation orders agree to rounding)."""
    model, _, clean, bad = setup
    model = copy_model(model).to(torch.float64, print_details=False)
    g = edge_attribution(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, method="eap")
    heads = attribution_patch(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, nodes="heads")
    mlps = attribution_patch(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, nodes="mlp_out")
    ns = g.node_scores()
    for l in range(model.cfg.n_layers):
        assert ns[f"MLP{l}"] == pytest.approx(float(mlps["values"][l].sum()), rel=1e-6, abs=1e-8)
        for h in range(model.cfg.n_heads):
            assert ns[f"L{l}H{h}"] == pytest.approx(float(heads["values"][l, :, h].sum()), rel=1e-6, abs=1e-8)


def test_planted_circuit_is_recovered(setup):
    """Only heads L0H1 and L1H2 (and the MLPs) write anything: the discovered circuit contains no other head, its
    top heads are the planted ones, and the planted nodes are fully faithful."""
    model, _, clean, bad = setup
    planted = copy_model(model)
    live = {"L0H1", "L1H2"}
    with torch.no_grad():
        for l in range(planted.cfg.n_layers):
            for h in range(planted.cfg.n_heads):
                if f"L{l}H{h}" not in live:
                    planted.blocks[l].attn.W_O[h] = 0
    for method in ("eap", "eap-ig"):
        g = edge_attribution(planted, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, method=method,
                             steps=4)
        heads = {n: abs(v) for n, v in g.node_scores().items() if "H" in n}
        assert set(sorted(heads, key=heads.get)[-2:]) == live
        circuit = select(g, threshold=1e-6)
        assert {n for n in circuit["nodes"] if "H" in n} <= live
    f = Faithfulness(planted, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, ablation="mean")
    planted_nodes = sorted(live) + [f"MLP{l}" for l in range(planted.cfg.n_layers)]
    assert f.of(planted_nodes) == pytest.approx(1.0, abs=1e-5)


def test_faithfulness_endpoints_and_exact_check(setup):
    model, _, clean, bad = setup
    f = Faithfulness(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, ablation="corrupted")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    every = [f"L{l}H{h}" for l in range(L) for h in range(H)] + [f"MLP{l}" for l in range(L)]
    assert f.of(every) == pytest.approx(1.0, abs=1e-6)
    g = edge_attribution(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids)
    # with every node replaced by its corrupted activation only the embeddings' direct path stays clean
    curve = f.curve(sorted(g.node_scores(), key=lambda n: -abs(g.node_scores()[n])), sizes=[0, len(every)])
    assert curve["faithfulness"][-1] == pytest.approx(1.0, abs=1e-6) and size_for(curve, 0.8) is not None
    effects = exact_node_effects(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, ["MLP0", "L0H0"])
    assert set(effects) == {"MLP0", "L0H0"} and all(np.isfinite(list(effects.values())))
    with pytest.raises(ValueError, match="empty"):
        select(g, threshold=1e9)
