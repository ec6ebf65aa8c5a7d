"""Exact patching equals TransformerLens's own patching functions on the same inputs (within 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import patching as tlp

from interp.models import load_model
from interp.patching import VARIANTS, patch_sweep
from tasks.cdm import CDMConfig, make_pairs

TL = {
    "resid_pre": tlp.get_act_patch_resid_pre,
    "attn_out": tlp.get_act_patch_attn_out,
    "mlp_out": tlp.get_act_patch_mlp_out,
    "heads": tlp.get_act_patch_attn_head_out_all_pos,
    "heads_by_pos": tlp.get_act_patch_attn_head_out_by_pos,
    "q": tlp.get_act_patch_attn_head_q_all_pos,
    "k": tlp.get_act_patch_attn_head_k_all_pos,
    "v": tlp.get_act_patch_attn_head_v_all_pos,
    "q_by_pos": tlp.get_act_patch_attn_head_q_by_pos,
    "k_by_pos": tlp.get_act_patch_attn_head_k_by_pos,
    "v_by_pos": tlp.get_act_patch_attn_head_v_by_pos,
    "pattern": tlp.get_act_patch_attn_head_pattern_all_pos,
    "pattern_by_dest": tlp.get_act_patch_attn_head_pattern_by_pos,
}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request):
    """A tiny GPT-2 and a tiny Llama (rotary, RMSNorm, gated MLP, grouped-query attention, three-token numbers),
    each briefly trained on the task."""
    ckpt = request.getfixturevalue("tiny_trained" if request.param == "gpt2" else "tiny_llama_trained")
    model, tok, _ = load_model(ckpt)
    clean, bad = make_pairs(CDMConfig(), 16, seed=0, tokenizer=tok, corruption="relevant-flip")
    return model, clean, bad


def _tl_raw(model, clean, bad, what, direction):
    """TransformerLens's own patching function; for grouped-query attention on the equivalent model with a key /
    value head per query head (TL's k / v functions iterate over key/value heads, this project over query heads)."""
    from interp.models import with_a_key_value_head_per_query_head

    model = with_a_key_value_head_per_query_head(model)
    ct, bt = torch.tensor(clean.tokens), torch.tensor(bad.tokens)
    a, w = torch.tensor(clean.answer_ids), torch.tensor(clean.wrong_ids)
    target, source = (bt, ct) if direction == "denoise" else (ct, bt)
    _, cache = model.run_with_cache(source)

    def metric(logits):
        last = logits[:, -1]
        return (last.gather(1, a[:, None]) - last.gather(1, w[:, None])).mean()

    return TL[what](model, target, cache, metric).cpu().numpy()


def test_the_reference_copy_is_the_same_function(setup):
    from interp.metrics import logit_diff
    from interp.models import with_a_key_value_head_per_query_head

    model, clean, _ = setup
    ref = with_a_key_value_head_per_query_head(model)
    assert ref.cfg.n_key_value_heads is None
    torch.testing.assert_close(logit_diff(ref, clean.tokens, clean.answer_ids, clean.wrong_ids),
                               logit_diff(model, clean.tokens, clean.answer_ids, clean.wrong_ids), atol=1e-5, rtol=0)


@pytest.mark.parametrize("what", list(VARIANTS))
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_matches_transformer_lens(setup, what, direction):
    model, clean, bad = setup
    ours = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, what, direction)
    ref = _tl_raw(model, clean, bad, what, direction)
    assert ours.raw.shape == ref.shape
    np.testing.assert_allclose(ours.raw, ref, atol=1e-4, rtol=0)


def test_variants_stacked_in_one_forward_agree(setup):
    model, clean, bad = setup
    one = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, "heads_by_pos")
    many = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, "heads_by_pos",
                       variants_per_forward=8)
    np.testing.assert_allclose(one.raw, many.raw, atol=1e-5)


def test_too_small_a_gap_is_undefined_not_a_number(setup):
    """The tiny models barely separate clean from corrupted: with the default 0.25-logit floor, every normalised
    value is undefined (NaN) while the raw logit differences stay."""
    model, clean, bad = setup
    r = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, "heads")
    assert abs(r.clean_logit_diff - r.corrupt_logit_diff) < 0.25
    assert not r.defined and np.isnan(r.values).all() and np.isfinite(r.raw).all()
    assert r.top(1)[0][1] == 0.0  # nothing ranked as an effect


def test_labels_and_first_difference(setup):
    """Results carry position labels and the first position where clean and corrupted tokens differ."""
    model, clean, bad = setup
    r = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, "resid_pre",
                    position_labels=clean.position_labels)
    assert r.values.shape == (model.cfg.n_layers, clean.tokens.shape[1])
    assert r.labels["pos"] == clean.position_labels
    assert r.first_diff == int(np.nonzero((clean.tokens != bad.tokens).any(0))[0][0])


def test_noising_ranks_by_the_size_of_the_effect(setup):
    """A noising value of 1 means the patch changed nothing: the largest effect is the value furthest from 1."""
    model, clean, bad = setup
    noise = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, "heads",
                        direction="noise", min_gap=0)  # tiny models: a small clean - corrupted gap
    (idx, eff), *_ = noise.top(3)
    assert eff == pytest.approx(float(np.max(np.abs(1 - noise.values))))
    assert idx == np.unravel_index(np.argmax(np.abs(1 - noise.values)), noise.values.shape)
    deno = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, "heads", min_gap=0)
    assert deno.top(1)[0][1] == pytest.approx(float(deno.values.ravel()[np.argmax(np.abs(deno.values))]))


def test_patching_the_whole_stream_reproduces_the_clean_run(setup):
    from interp.patching import CachedRun, index_setter
    from interp.metrics import logit_diff

    model, clean, bad = setup
    ct, bt = torch.tensor(clean.tokens), torch.tensor(bad.tokens)
    a, w = torch.tensor(clean.answer_ids), torch.tensor(clean.wrong_ids)
    r = CachedRun(model, bt, ct, a, w)
    want = logit_diff(model, clean.tokens, clean.answer_ids, clean.wrong_ids)
    for layer in range(model.cfg.n_layers):
        got = r.run(layer, 0, [index_setter("resid_pre", r.act(r.s, "resid_pre", layer))])[0]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["atp", "ig"])
def test_attribution_patching_tracks_exact_patching(setup, method):
    """Agreement over the positions that can differ only (earlier ones are zero in both and are left out)."""
    from interp.atp import agreement, attribution_patch

    model, clean, bad = setup
    exact = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, "resid_pre", min_gap=0)
    est = attribution_patch(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, nodes="resid_pre",
                            method=method, steps=16, min_gap=0)
    assert est["values"].shape == exact.values.shape
    a = agreement(est["values"], exact.values, exact.first_diff, pos_axis=1, k=5)
    assert a["n_compared"] == exact.values[:, exact.first_diff:].size
    assert a["spearman"] > 0.6 and a["top_k_recall"] >= 0.4  # a linear estimate on barely trained tiny models


def test_agreement_leaves_out_the_shared_structural_zeros():
    """Independent positive effects sharing 5 of 12 positions of zeros: counting the zeros makes them look
    correlated (about 0.79), leaving them out does not."""
    from interp.atp import agreement
    from interp.stats import spearman

    rng = np.random.default_rng(0)
    naive, fixed = [], []
    for _ in range(200):
        x, y = np.abs(rng.normal(size=(1, 12))), np.abs(rng.normal(size=(1, 12)))
        x[:, :5] = y[:, :5] = 0.0
        naive.append(spearman(x, y))
        fixed.append(agreement(x, y, first_diff=5, pos_axis=1)["spearman"])
    assert np.mean(naive) > 0.7  # the inflation the old measure had
    assert abs(np.mean(fixed)) < 0.1


def test_integrated_gradients_completeness_improves_with_steps(setup):
    """Over a complete cut (every position of resid_pre at layer 0) IG's attributions sum to the total effect
    (1 in normalised units) as the number of steps grows."""
    from interp.atp import attribution_patch

    model, clean, bad = setup
    err = []
    for steps in (2, 48):
        est = attribution_patch(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids,
                                nodes="resid_pre", method="ig", steps=steps, min_gap=0)
        err.append(abs(est["values"][0].sum() - 1.0))
    assert err[1] < err[0] and err[1] < 0.2
