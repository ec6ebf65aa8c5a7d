"""MIB-style faithfulness: the edge-ablation machinery against independent node replacement and a hand-computed
unembedding, a planted single-writer circuit with a known CPR / CMD, a case where "size at 80%" fails, and the
undefined ratio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.faithfulness import GRID, CircuitEvaluator, area, curve, size_at
from interp.metrics import last_logits, logit_diff_from_logits
from interp.models import copy_model, load_model
from tasks.cdm import CDMConfig, make_pairs


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request):
    model, tok, _ = load_model(request.getfixturevalue("tiny_trained" if request.param == "gpt2"
                                                       else "tiny_llama_trained"))
    clean, bad = make_pairs(CDMConfig(), 16, seed=3, tokenizer=tok, corruption="relevant-flip")
    return model, clean, bad


def _args(clean, bad):
    return clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids


def _replace_nodes(model, clean, bad, keep: set[str]) -> float:
    """Independent node ablation: every head's z and every MLP's output outside `keep` taken from the corrupted
    run (plain TransformerLens hooks, no edge machinery)."""
    t, k = torch.tensor(clean.tokens), torch.tensor(bad.tokens)
    with torch.no_grad():
        _, cache = model.run_with_cache(k, names_filter=lambda n: n.endswith(("hook_z", "hook_mlp_out")))
    hooks = []
    for l in range(model.cfg.n_layers):
        drop = [h for h in range(model.cfg.n_heads) if f"L{l}H{h}" not in keep]

        def hz(act, hook, l=l, drop=drop):
            act = act.clone()
            act[:, :, drop] = cache[f"blocks.{l}.attn.hook_z"][:, :, drop]
            return act

        hooks.append((f"blocks.{l}.attn.hook_z", hz))
        if f"MLP{l}" not in keep:
            hooks.append((f"blocks.{l}.hook_mlp_out", lambda act, hook, l=l: cache[f"blocks.{l}.hook_mlp_out"]))
    with torch.no_grad():
        ld = logit_diff_from_logits(last_logits(model, t, hooks), torch.tensor(clean.answer_ids),
                                    torch.tensor(clean.wrong_ids))
    return float(ld.mean())


def test_node_circuits_equal_independent_node_replacement(setup):
    model, clean, bad = setup
    ev = CircuitEvaluator(model, *_args(clean, bad), ablation="corrupted", min_gap=0.0)
    assert ev.baseline("node")[0] == pytest.approx(_replace_nodes(model, clean, bad, set()), abs=1e-4)
    for keep in ({"L0H1", "MLP1"}, {"L1H0", "L1H3", "MLP0"}, {"L0H0", "L0H2", "L1H1"}):
        got = float(ev.trials(ev.node_edges(keep)).mean())
        assert got == pytest.approx(_replace_nodes(model, clean, bad, keep), abs=1e-4), keep
    with torch.no_grad():
        full = float(logit_diff_from_logits(last_logits(model, torch.tensor(clean.tokens)),
                                            torch.tensor(clean.answer_ids), torch.tensor(clean.wrong_ids)).mean())
    assert ev.full == pytest.approx(full, abs=1e-5)


def test_every_edge_ablated_with_corrupted_outputs_is_the_corrupted_run(setup):
    """With every edge carrying the corrupted output, each node computes exactly its corrupted-run output."""
    model, clean, bad = setup
    ev = CircuitEvaluator(model, *_args(clean, bad), ablation="corrupted", min_gap=0.0)
    with torch.no_grad():
        want = logit_diff_from_logits(last_logits(model, torch.tensor(bad.tokens)), torch.tensor(clean.answer_ids),
                                      torch.tensor(clean.wrong_ids))
    np.testing.assert_allclose(ev.trials(ev.empty_mask("edge")).numpy(), want.numpy(), atol=1e-4)


def test_removing_one_edge_into_the_logits_matches_a_hand_computed_unembedding(setup):
    model, clean, bad = setup
    ev = CircuitEvaluator(model, *_args(clean, bad), ablation="corrupted", min_gap=0.0)
    up = ev.up.index("L0H2")
    keep = ev.valid.clone()
    keep[up, ev.down.index("logits")] = False
    t = torch.tensor(clean.tokens)
    with torch.no_grad():
        model.set_use_attn_result(True)
        _, cc = model.run_with_cache(t)
        _, kc = model.run_with_cache(torch.tensor(bad.tokens))
        model.set_use_attn_result(False)
        L = model.cfg.n_layers
        resid = cc[f"blocks.{L - 1}.hook_resid_post"][:, -1] - (cc["blocks.0.attn.hook_result"][:, -1, 2]
                                                                 - kc["blocks.0.attn.hook_result"][:, -1, 2])
        logits = model.unembed(model.ln_final(resid[:, None]))[:, 0]
        want = logit_diff_from_logits(logits, torch.tensor(clean.answer_ids), torch.tensor(clean.wrong_ids))
    np.testing.assert_allclose(ev.trials(keep).numpy(), want.numpy(), atol=1e-4)


def _single_writer(model):
    """Only head L1H2 writes to the residual stream: every other head's W_O and every MLP's W_out are zero."""
    m = copy_model(model)
    with torch.no_grad():
        for l in range(m.cfg.n_layers):
            m.blocks[l].mlp.W_out.zero_()
            for h in range(m.cfg.n_heads):
                if (l, h) != (1, 2):
                    m.blocks[l].attn.W_O[h] = 0
    return m


def test_planted_single_writer_has_the_known_cpr_and_beats_random(setup):
    model, clean, bad = setup
    m = _single_writer(model)
    ev = CircuitEvaluator(m, *_args(clean, bad), ablation="corrupted", min_gap=0.0, se_factor=0.0)
    assert ev.baseline("node")[2]
    nodes = [f"L{l}H{h}" for l in range(2) for h in range(4)] + ["MLP0", "MLP1"]
    ranked = ["L1H2"] + [n for n in nodes if n != "L1H2"]
    c = curve(ev, ranked, "node", n_random=20, seed=0)
    # 10 nodes: sizes int(p * 10) = 0 (p <= 0.05), 1, 2, 5, 10; f = 1 exactly when L1H2 is kept, else 0
    assert c.sizes == (0, 0, 0, 0, 0, 0, 1, 2, 5, 10)
    np.testing.assert_allclose(c.faithfulness, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1], atol=1e-5)
    assert c.cpr == pytest.approx(0.025 + 0.1 + 0.3 + 0.5, abs=1e-5)
    assert c.cmd == pytest.approx(0.049 + 0.025, abs=1e-5)
    assert size_at(c) == 1
    # a random set of k nodes holds L1H2 with probability k / 10: its f is 0 or 1 and its CPR lower on average
    assert set(np.round(np.concatenate(c.random_faithfulness), 5)) <= {0.0, 1.0}
    assert np.mean(c.random_cpr) < c.cpr
    assert c.level_reached["cpr_percentile_among_random"] >= 0.5


def test_size_at_80_percent_can_fail(setup):
    model, clean, bad = setup
    m = _single_writer(model)
    ev = CircuitEvaluator(m, *_args(clean, bad), ablation="corrupted", min_gap=0.0, se_factor=0.0)
    nodes = [f"L{l}H{h}" for l in range(2) for h in range(4)] + ["MLP0", "MLP1"]
    worst_first = [n for n in nodes if n != "L1H2"] + ["L1H2"]
    c = curve(ev, worst_first, "node", n_random=2)
    assert c.faithfulness[-1] == pytest.approx(1.0, abs=1e-5)  # only the full graph keeps the writer
    assert size_at(c) is None and c.level_reached["size"] is None


def test_identical_inputs_make_faithfulness_undefined(setup):
    model, clean, _ = setup
    ev = CircuitEvaluator(model, clean.tokens, clean.tokens, clean.answer_ids, clean.wrong_ids, ablation="corrupted")
    assert not ev.baseline("node")[2] and not ev.baseline("edge")[2]
    c = curve(ev, ["L0H0", "MLP0"], "node", n_random=2)
    assert all(np.isnan(c.faithfulness)) and np.isnan(c.cpr) and size_at(c) is None and np.isnan(c.f_empty)


def test_edge_curve_ends_at_the_full_model(setup):
    model, clean, bad = setup
    ev = CircuitEvaluator(model, *_args(clean, bad), ablation="mean", min_gap=0.0, se_factor=0.0)
    edges = [(ev.up[i], ev.down[j]) for i, j in zip(*np.nonzero(ev.valid.numpy()))]
    c = curve(ev, edges, "edge", n_random=3, seed=1)
    assert c.n_items == len(edges) == int(ev.valid.sum())
    assert c.sizes[0] == int(0.001 * len(edges)) and c.sizes[-1] == len(edges)
    assert c.faithfulness[-1] == pytest.approx(1.0, abs=1e-5)
    assert len(c.random_faithfulness) == len(GRID) and all(len(r) == 3 for r in c.random_faithfulness)


def test_area_is_the_trapezoid_rule():
    cpr, cmd = area([0.0, 0.5, 1.0], [0.0, 1.0, 1.0])
    assert cpr == pytest.approx(0.25 + 0.5) and cmd == pytest.approx(0.25)
    assert np.isnan(area([0, 1], [0.0, float("nan")])[0])


def test_circuits_stacked_in_one_forward_agree(setup):
    model, clean, bad = setup
    one = CircuitEvaluator(model, *_args(clean, bad), ablation="mean", min_gap=0.0, se_factor=0.0)
    four = CircuitEvaluator(model, *_args(clean, bad), ablation="mean", min_gap=0.0, se_factor=0.0, per_forward=4)
    rng = np.random.default_rng(0)
    masks = torch.as_tensor(rng.random((6, *one.valid.shape)) < 0.5) & one.valid
    np.testing.assert_allclose(four.trials_many(masks).numpy(), torch.stack([one.trials(m) for m in masks]).numpy(),
                               atol=1e-5)


def test_the_node_fast_path_equals_the_edge_machinery(setup):
    """Node circuits skip the per-head inputs; a node circuit written as an arbitrary edge mask (one extra edge
    kept into a removed node, which changes nothing) goes through the edge path: both must agree."""
    model, clean, bad = setup
    for ablation in ("corrupted", "mean"):
        ev = CircuitEvaluator(model, *_args(clean, bad), ablation=ablation, min_gap=0.0, se_factor=0.0)
        for keep in (["L0H1", "MLP1"], ["L1H0", "L1H3", "MLP0"], []):
            fast = ev.node_edges(keep)
            assert ev._node_rows(fast[None]) is not None
            slow = fast.clone()
            slow[ev.up.index("embed"), ev.down.index("L1H2")] = True  # an edge into a removed node
            slow[ev.up.index("L0H0"), ev.down.index("MLP0")] = True  # from a removed node into a kept one: matters
            assert ev._node_rows(slow[None]) is None
            edge_only = fast.clone()
            edge_only[ev.up.index("embed"), ev.down.index("L1H2")] = False
            np.testing.assert_allclose(ev.trials(fast).numpy(), ev.trials(edge_only).numpy(), atol=1e-5)
            assert not np.allclose(ev.trials(fast).numpy(), ev.trials(slow).numpy(), atol=1e-6) or "MLP0" not in keep


@pytest.mark.parametrize("ablation", ["corrupted", "mean", "resample"])
def test_the_projects_forward_equals_transformerlens_with_hooks(setup, ablation):
    """Circuits are evaluated by `interp.edge_forward` (no hooks); TransformerLens run with the edge / node ablation
    hooks is the reference. Covers per-head inputs (random edge masks), layers whose heads share an input (one
    column copied to every head), node circuits, and several circuits stacked along one batch. A head's q / k / v
    weights taken from the wrong head, a delta read from the wrong node, rotary left out or an ablated output of the
    wrong circuit each move the logit difference far past the tolerance."""
    model, clean, bad = setup
    model = copy_model(model)
    with torch.no_grad():  # the tiny trained models barely react to ablation (logit differences ~0.1): sharpen
        for p in model.parameters():
            p.mul_(2.0)
    evs = {fast: CircuitEvaluator(model, *_args(clean, bad), ablation=ablation, seed=1, min_gap=0.0,
                                  se_factor=0.0, per_forward=3) for fast in (True, False)}
    ev = evs[True]
    ev_ref = evs[False]
    ev_ref.fast = False
    assert ev.fast, "the tiny GPT-2 and Llama are architectures the project's forward supports"
    rng = np.random.default_rng(0)
    edges = torch.as_tensor(rng.random((4, *ev.valid.shape)) < 0.6) & ev.valid
    shared = edges.clone()
    H = model.cfg.n_heads
    for l in range(model.cfg.n_layers):
        shared[:, :, l * (H + 1):l * (H + 1) + H] = shared[:, :, l * (H + 1):l * (H + 1) + 1]
    nodes = torch.stack([ev.node_edges([u for u in ev.up if rng.random() < 0.5]) for _ in range(4)])
    tol = 3e-5  # float32 rounding over a few layers (measured: <= 1.4e-5)
    for masks in (edges, shared & ev.valid, nodes):
        got, want = ev.trials_many(masks), ev_ref.trials_many(masks)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=tol, rtol=0)
        assert float((want - want.mean(0)).abs().max()) > 100 * tol  # the circuits differ by far more: not vacuous
