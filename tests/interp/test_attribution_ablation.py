from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.ablation import Ablator
from interp.attribution import direct_logit_attribution, logit_lens
from interp.metrics import logit_diff
from interp.models import copy_model, load_model
from interp.neurons import design_matrix, neuron_selectivity
from tasks.cdm import CDMConfig, generate


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request):
    model, tok, _ = load_model(request.getfixturevalue("tiny_trained" if request.param == "gpt2"
                                                       else "tiny_llama_trained"))
    batch = generate(CDMConfig(), 48, seed=2, tokenizer=tok, split="test")
    return model, batch


def test_dla_parts_sum_to_the_logit_difference(setup):
    model, b = setup
    d = direct_logit_attribution(model, b.tokens, b.answer_ids, b.wrong_ids, neuron_layers=(0, 1))
    want = logit_diff(model, b.tokens, b.answer_ids, b.wrong_ids).numpy()
    np.testing.assert_allclose(d["total"], want, atol=1e-4)
    np.testing.assert_allclose(d["logit_diff"], want, atol=1e-4)
    for l in (0, 1):  # heads + b_O = the attention layer; neurons + b_out = the MLP layer
        np.testing.assert_allclose(d["neurons"][l].sum(1) + d["mlp_bias"][l], d["mlp"][:, l], atol=1e-4)
    assert d["heads"].shape == (len(b), model.cfg.n_layers, model.cfg.n_heads)


def test_logit_lens_ends_at_the_model_output(setup):
    model, b = setup
    lens = logit_lens(model, b.tokens, b.answer_ids, b.wrong_ids)
    assert lens.shape == (len(b), model.cfg.n_layers + 1)
    np.testing.assert_allclose(lens[:, -1], logit_diff(model, b.tokens, b.answer_ids, b.wrong_ids).numpy(), atol=1e-4)


def test_zero_ablation_equals_zeroing_weights(setup):
    """Brute force: a zero-ablated head is a head whose W_O rows are zero (b_O kept); a zero-ablated neuron is
    one whose W_out row is zero."""
    model, b = setup
    ab = Ablator(model, b.tokens, b.answer_ids, b.wrong_ids, method="zero")
    got = ab.heads([(1, 2), (0, 1)])
    m2 = copy_model(model)
    with torch.no_grad():
        m2.blocks[1].attn.W_O[2] = 0
        m2.blocks[0].attn.W_O[1] = 0
    ld = logit_diff(m2, b.tokens, b.answer_ids, b.wrong_ids)
    assert got["logit_diff"] == pytest.approx(float(ld.mean()), abs=1e-4)
    assert got["accuracy"] == pytest.approx(float((ld > 0).float().mean()))
    got_n = ab.neurons([(0, 5), (1, 7)])
    m3 = copy_model(model)
    with torch.no_grad():
        m3.blocks[0].mlp.W_out[5] = 0
        m3.blocks[1].mlp.W_out[7] = 0
    assert got_n["logit_diff"] == pytest.approx(float(logit_diff(m3, b.tokens, b.answer_ids, b.wrong_ids).mean()),
                                                abs=1e-4)


def test_mean_and_resample_ablation(setup):
    model, b = setup
    # mean ablation over a reference set made of one trial repeated = patching that trial's activation in
    ref = np.repeat(b.tokens[:1], len(b), axis=0)
    mean = Ablator(model, b.tokens, b.answer_ids, b.wrong_ids, method="mean", reference_tokens=ref)
    res = Ablator(model, b.tokens, b.answer_ids, b.wrong_ids, method="resample", reference_tokens=ref)
    assert mean.heads([(0, 0)])["logit_diff"] == pytest.approx(res.heads([(0, 0)])["logit_diff"], abs=1e-5)
    sweep = Ablator(model, b.tokens, b.answer_ids, b.wrong_ids, method="resample", seed=1).each_head()
    assert sweep["logit_diff"].shape == (model.cfg.n_layers, model.cfg.n_heads)
    assert np.isfinite(sweep["logit_diff"]).all()
    with pytest.raises(ValueError, match="out of range"):
        mean.heads([(9, 0)])


def test_neuron_selectivity_regresses_on_the_models_choice(setup):
    """Both fits against the normal equations; "choice" is what the model answers, not the correct answer."""
    model, b = setup
    big = generate(CDMConfig(), 200, seed=5, tokenizer=model.tokenizer, split="test")
    left, right = (model.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" left", " right"))
    model = copy_model(model)
    with torch.no_grad():  # centre the right-vs-left bias so that this barely trained model's choices vary
        logits = model(torch.tensor(big.tokens))[:, -1]
        model.b_U[right] -= (logits[:, right] - logits[:, left]).median()
    sel = neuron_selectivity(model, big, position="answer", layers=(1,), top_k=5)
    assert sel["coef"].shape == sel["coef_correct"].shape == (1, model.cfg.d_mlp, 4)  # ctx, rel, irr, choice
    assert ((sel["r2"] >= -1e-9) & (sel["r2"] <= 1 + 1e-9)).all()
    with torch.no_grad():
        logits, cache = model.run_with_cache(torch.tensor(big.tokens))
    said_right = (logits[:, -1, right] > logits[:, -1, left]).numpy()
    correct_right = big.labels == 1
    assert 0.2 < said_right.mean() < 0.8 and 0 < (said_right != correct_right).sum()  # it errs: the fits differ
    assert sel["choice_is_correct"] == pytest.approx(float((said_right == correct_right).mean()))
    n = sel["top"]["choice"][0][1]
    y = cache["blocks.1.mlp.hook_post"][:, -1, n].double().numpy()
    m = big.meta  # the design written out by hand: catches a variable mapped to the wrong metadata key
    for key, choice in (("coef", np.where(said_right, 1.0, -1.0)),
                        ("coef_correct", np.where(correct_right, 1.0, -1.0))):
        X = np.c_[m["context"], m["relevant_signed_coherence"], m["irrelevant_signed_coherence"], choice]
        np.testing.assert_allclose(design_matrix(big, choice if key == "coef" else None), X)
        X = (X - X.mean(0)) / X.std(0)
        X = np.c_[np.ones(len(X)), X]
        beta = np.linalg.solve(X.T @ X, X.T @ ((y - y.mean()) / y.std()))
        np.testing.assert_allclose(sel[key][0, n], beta[1:], atol=1e-6)
    assert not np.allclose(sel["coef"][0, :, 3], sel["coef_correct"][0, :, 3])
    assert abs(sel["top"]["choice"][0][2]) >= abs(sel["top"]["choice"][-1][2])


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
@pytest.mark.parametrize("per_forward", [1, 3, None])
def test_each_head_equals_one_full_forward_per_head(setup, method, per_forward):
    """The batched sweep (cached prefix, heads stacked along the batch) equals ablating each head alone through
    TransformerLens hooks on a full forward. Catches a replay that starts one layer off, a head index shifted in
    the stacked batch, a chunk of heads written to the wrong columns, and resample trials mismatched to targets."""
    model, b = setup
    model = copy_model(model)
    with torch.no_grad():  # heads of the briefly trained tiny models barely matter: make every head matter
        for blk in model.blocks:
            blk.attn.W_O.mul_(20)
    ref = generate(CDMConfig(), 40, seed=9, tokenizer=model.tokenizer, split="test").tokens
    ab = Ablator(model, b.tokens, b.answer_ids, b.wrong_ids, method=method, reference_tokens=ref, seed=3)
    got = ab.each_head(variants_per_forward=per_forward)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    want = np.array([[ab.heads([(l, h)])["logit_diff"] for h in range(H)] for l in range(L)])
    acc = np.array([[ab.heads([(l, h)])["accuracy"] for h in range(H)] for l in range(L)])
    tol = 5e-6
    np.testing.assert_allclose(got["logit_diff"], want, rtol=0, atol=tol)
    np.testing.assert_array_equal(got["accuracy"], acc)
    assert np.ptp(want) > 10 * tol  # heads differ by far more than the tolerance, so a shifted index would show


def test_mean_ablation_uses_each_layers_own_reference_activations(setup):
    """Every layer's mean-ablation replacement (head outputs and neurons, all from one forward of the reference
    trials) equals the mean of that layer's own activation from a separate TransformerLens forward for that one
    hook. Catches reference activations taken from the wrong layer or hook, or a forward cut short before the last
    layer (the ablation itself is checked against hooks and zeroed weights above)."""
    model, b = setup
    ref = generate(CDMConfig(), 24, seed=5, tokenizer=model.tokenizer, split="test").tokens
    ab = Ablator(model, b.tokens, b.answer_ids, b.wrong_ids, method="mean", reference_tokens=ref)
    names = [f"blocks.{l}.{h}" for l in range(model.cfg.n_layers) for h in ("attn.hook_z", "mlp.hook_post")]
    means = {}
    for name in names:
        with torch.no_grad():
            _, cache = model.run_with_cache(torch.as_tensor(ref), names_filter=lambda n, name=name: n == name)
        means[name] = cache[name].mean(0)
        assert torch.equal(ab._replacement(name)[0], means[name]), name
    assert not torch.equal(means[names[0]], means[names[2]][:, :means[names[0]].shape[1]])  # layers differ
