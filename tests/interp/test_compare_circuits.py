from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.atp import attribution_patch
from interp.circuits import edge_attribution, exact_node_effects, select
from interp.compare import (ShapeMismatchError, cka, cross_model_patching, layer_cka, minibatch_cka,
                            relative_weight_change, representations, retained, weight_reversion)
from interp.faithfulness import CircuitEvaluator
from interp.models import copy_model, load_model
from tasks.cdm import CDMConfig, make_pairs


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request):
    llama = request.param == "llama"
    model, tok, _ = load_model(request.getfixturevalue("tiny_llama_trained" if llama else "tiny_trained"))
    base, _, _ = load_model(request.getfixturevalue("tiny_llama_base" if llama else "tiny_base"))
    clean, bad = make_pairs(CDMConfig(), 24, seed=4, tokenizer=tok, corruption="relevant-flip")
    return model, base, clean, bad


def _kernel_cka(x, y):
    """Linear CKA written in kernel form (centred Gram matrices), independent of the feature-space code."""
    n = len(x)
    H = np.eye(n) - 1 / n
    K, L = H @ x @ x.T @ H, H @ y @ y.T @ H
    return np.trace(K @ L) / np.sqrt(np.trace(K @ K) * np.trace(L @ L))


def test_cka_invariants():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert cka(x, x) == pytest.approx(1.0)
    assert cka(x, 3.7 * x @ q) == pytest.approx(1.0)  # orthogonal rotation and isotropic scaling
    assert cka(x, x, debiased=True) == pytest.approx(1.0)
    # a different width for real: x mapped isometrically into 24 mixed dimensions keeps every inner product
    r, _ = np.linalg.qr(rng.normal(size=(24, 16)))
    assert cka(x, x @ r.T) == pytest.approx(1.0) and cka(x, x @ r.T, debiased=True) == pytest.approx(1.0)
    w = rng.normal(size=(300, 24))
    z = x @ rng.normal(size=(16, 24)) + w  # partly related, other width: agrees with the kernel form
    assert cka(x, z) == pytest.approx(_kernel_cka(x, z), rel=1e-9)
    assert 0.05 < cka(x, z) < 0.95
    y = rng.normal(size=(300, 24))  # independent: low similarity, debiased near zero
    assert cka(x, y) < 0.15
    assert abs(cka(x, y, debiased=True)) < 0.05
    assert minibatch_cka(x, x, batch_size=50) == pytest.approx(1.0)


def test_retained_is_chance_corrected():
    full = {"accuracy": 0.98, "logit_diff": 4.0}
    chance_level = retained({"accuracy": 0.5, "logit_diff": 0.0}, full)
    assert chance_level["accuracy_retained"] == pytest.approx(0.0)  # the old acc / acc_full said 51%
    assert chance_level["logit_diff_retained"] == pytest.approx(0.0)
    assert retained({"accuracy": 0.74, "logit_diff": 2.0}, full)["accuracy_retained"] == pytest.approx(0.5)
    near = retained({"accuracy": 0.5, "logit_diff": 0.1}, {"accuracy": 0.55, "logit_diff": 0.1})
    assert np.isnan(near["accuracy_retained"]) and np.isnan(near["logit_diff_retained"])  # undefined, not a number


def test_model_compared_with_itself(setup):
    model, base, clean, _ = setup
    reps = representations(model, clean.tokens, {"answer": -1, "context": clean.positions["context"]})
    out = layer_cka(reps, reps)
    seen = []
    for site in out:
        for pos in out[site]:
            # undefined: the same for every trial (layer 0 at the answer token) or one of two values per trial (the
            # context cue: two prefixes), where CKA would be 1 for any two models that separate them
            two = np.array([len(np.unique(np.round(r, 4), axis=0)) <= 2 for r in reps[site][pos]])
            assert np.isnan(out[site][pos][two]).all()
            np.testing.assert_allclose(out[site][pos][~two], 1.0, atol=1e-6)
            seen += list(two)
    assert any(seen) and not all(seen)  # both cases occur
    assert all(v == 0 for v in relative_weight_change(model, model).values())
    cm = cross_model_patching(model, model, clean.tokens, clean.answer_ids, clean.wrong_ids)
    assert all(r["logit_diff"] == pytest.approx(cm["full"]["logit_diff"], abs=1e-5) for r in cm["resid"])


def test_reverting_an_unchanged_layer_retains_everything(setup):
    model, base, clean, _ = setup
    edited = copy_model(base)
    with torch.no_grad():  # only layer 1's MLP differs from the base
        edited.blocks[1].mlp.W_out.copy_(model.blocks[1].mlp.W_out)
    rev = weight_reversion(edited, base, clean.tokens, clean.answer_ids, clean.wrong_ids)
    for comp, r in rev["single"].items():
        if comp != "L1.mlp":
            assert r["logit_diff"] == pytest.approx(rev["full"]["logit_diff"], abs=1e-6), comp
    with torch.no_grad():
        logits = base(torch.tensor(clean.tokens))
    base_ld = float((logits[:, -1].gather(1, torch.tensor(clean.answer_ids)[:, None])
                     - logits[:, -1].gather(1, torch.tensor(clean.wrong_ids)[:, None])).mean())
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


def _finite_difference(model, clean, bad, up: str, down: str, eps: float = 1e-4) -> float:
    """d metric / d (edge strength) on the corrupted run by central differences: the clean-minus-corrupted output
    of `up` is added, scaled by +-eps, to the input of `down` only (plain TransformerLens hooks, no gradients)."""
    from interp.circuits import EdgeHooks, node_names
    from interp.metrics import last_logits, logit_diff_from_logits

    ct, bt = torch.tensor(clean.tokens), torch.tensor(bad.tokens)
    a, w = torch.tensor(clean.answer_ids), torch.tensor(clean.wrong_ids)
    i = node_names(model.cfg.n_layers, model.cfg.n_heads)[0].index(up)
    with EdgeHooks(model) as eh:
        delta = eh.outputs(ct)[:, :, i] - eh.outputs(bt)[:, :, i]
        if down == "logits":
            names = [(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", None)]
        elif down.startswith("MLP"):
            names = [(f"blocks.{int(down[3:])}.hook_mlp_in", None)]
        else:
            l, h = int(down[1:down.index("H")]), int(down[down.index("H") + 1:])
            names = [(f"blocks.{l}.hook_{x}_input", h) for x in "qkv"]

        def run(scale: float) -> float:
            def add(act, hook, head):
                act = act.clone()
                if head is None:
                    act += scale * delta
                else:
                    act[:, :, head] += scale * delta
                return act

            hooks = [(n, lambda act, hook, head=head: add(act, hook, head)) for n, head in names]
            with torch.no_grad():
                return float(logit_diff_from_logits(last_logits(model, bt, hooks), a, w).mean())

        return (run(eps) - run(-eps)) / (2 * eps)


def test_eap_edge_scores_equal_finite_differences(setup):
    """Independent of the gradient code: an EAP edge score is the derivative of the metric when the edge's
    clean-minus-corrupted output is added to the reader's input on the corrupted run (float64)."""
    model, _, clean, bad = setup
    model = copy_model(model).to(torch.float64, print_details=False)
    g = edge_attribution(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, method="eap")
    denom = g.clean_logit_diff - g.corrupt_logit_diff
    for up, down in (("L0H1", "L1H2"), ("MLP0", "logits"), ("embed", "MLP1"), ("L1H3", "logits"), ("embed", "L0H0")):
        score = g.scores[g.up.index(up), g.down.index(down)]
        assert score * denom == pytest.approx(_finite_difference(model, clean, bad, up, down), rel=1e-5, abs=1e-8)


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
    ev = CircuitEvaluator(planted, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, ablation="mean",
                          min_gap=0.0, se_factor=0.0)
    planted_nodes = sorted(live) + [f"MLP{l}" for l in range(planted.cfg.n_layers)]
    assert ev.faithfulness(ev.node_edges(planted_nodes), "node") == pytest.approx(1.0, abs=1e-5)
    # L1H2 matters too (measured 0.009 on the tiny GPT-2, ~900x the tolerance of the equality above): not vacuous
    assert abs(ev.faithfulness(ev.node_edges(["L0H1", "MLP0", "MLP1"]), "node") - 1) > 1e-3


def test_exact_node_effects_match_patching(setup):
    """exact_node_effects equals exact patching of the same head (interp.patching, checked against TL)."""
    from interp.patching import patch_sweep

    model, _, clean, bad = setup
    model = copy_model(model).to(torch.float64, print_details=False)  # a tiny model's clean - corrupted gap is small
    effects = exact_node_effects(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, ["L1H2", "L0H0"],
                                 min_gap=0)
    heads = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, "heads", min_gap=0)
    assert effects["L1H2"] == pytest.approx(heads.values[1, 2], rel=1e-6, abs=1e-9)
    assert effects["L0H0"] == pytest.approx(heads.values[0, 0], rel=1e-6, abs=1e-9)
    assert abs(heads.values[1, 2] - heads.values[0, 0]) > 1e-3  # the two heads are told apart
    g = edge_attribution(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids)
    with pytest.raises(ValueError, match="empty"):
        select(g, threshold=1e9)


@pytest.mark.parametrize("prepared", [True, False])
def test_layer_reliance_from_cached_prefixes_equals_reverting_and_patching_whole_models(setup, prepared, monkeypatch):
    """The prefix-cached reliance (`interp.layer_reliance`) against the reference implementations that copy
    weights into a whole model and patch with hooks, on the tiny GPT-2 and the tiny grouped-query Llama, every layer:
    catches a reverted block taken from the wrong model, an off-by-one in the layer a forward starts from, the
    top-down list in the wrong order, the reference's residual stream taken at the wrong layer. The two models differ
    in every layer (else reverting could not be told from not reverting)."""
    import interp.layer_reliance as lr
    from interp.layer_reliance import layer_reliance

    if not prepared:  # TransformerLens's blocks: what an architecture the prepared forward lacks gets
        monkeypatch.setattr(lr, "supported", lambda cfg: False)
    model, _, clean, _ = setup
    base = copy_model(model)  # a reference that differs from the model in every layer, by a planted amount
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if name.startswith("blocks."):
                p.add_(torch.randn(p.shape, generator=gen) * (p.std() if p.numel() > 1 else 0.1))
    # logit differences between arbitrary token pairs: O(1) in these models, unlike the trained answers' (~1e-4)
    pick = np.random.default_rng(0).integers(0, model.cfg.d_vocab, size=(2, len(clean.tokens)))
    args = (clean.tokens, pick[0], pick[1])
    fast = layer_reliance(model, base, *args)
    rev = weight_reversion(model, base, *args, singles=False, bottom_up=False)
    cm = cross_model_patching(model, base, *args, sites=("resid",))
    slow = {"full": rev["full"], "layer": list(rev["layer"].values()), "top_down": rev["top_down"],
            "cmap_resid": cm["resid"]}
    assert fast["full"] == slow["full"]
    for key in ("layer", "top_down", "cmap_resid"):
        assert len(fast[key]) == len(slow[key]) == model.cfg.n_layers, key
        for f, s in zip(fast[key], slow[key]):
            assert f["logit_diff"] == pytest.approx(s["logit_diff"], rel=1e-5, abs=1e-6), key
            assert f["accuracy"] == s["accuracy"], key
    for key in ("layer", "top_down", "cmap_resid"):  # each layer's edit differs from the others' by far more
        assert np.diff(sorted(r["logit_diff"] for r in fast[key])).min() > 1e-4, key  # than the tolerance
