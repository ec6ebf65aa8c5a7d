"""The notebook API (`experiments.api`) and its typed results (`interp.results`): each result's frame and figure
hold the library's numbers under the right labels, and the API computes what the library and the CLI compute."""

from __future__ import annotations

import dataclasses
import html

import numpy as np
import pytest
import torch

from experiments import api as cc
from interp.metrics import logit_diff


@pytest.fixture(scope="module")
def ft(tiny_trained):
    return cc.load(tiny_trained, device="cpu")


@pytest.fixture(scope="module")
def base(tiny_base):
    return cc.load(tiny_base, device="cpu")


@pytest.fixture(scope="module")
def easy_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("easy") / "ckpt"


@pytest.fixture(scope="module")
def easy(easy_dir, tiny_base):
    """The tiny base fine-tuned through the API on an easier task (coherence 50 only): unlike `tiny_trained` it
    separates clean from relevant-flipped trials, so normalised effects and faithfulness are defined."""
    return cc.train(easy_dir, base=tiny_base, task={"coherences": (50,)}, steps=200, lr=3e-3, batch_size=32,
                    warmup=5, eval_every=100, eval_size=64, device="cpu")


@pytest.fixture(scope="module")
def pairs(ft):
    return cc.pairs(ft, 12, seed=1, corruption="relevant-flip")


@pytest.fixture(scope="module")
def trials(ft):
    return cc.trials(ft, 48, seed=2)


def test_load_takes_the_checkpoints_task_and_trials_use_it(ft, tiny_trained):
    from interp.models import read_checkpoint_meta
    from tasks.registry import generate

    assert dataclasses.asdict(ft.task) == {k: tuple(v) if isinstance(v, list) else v for k, v in
                                           read_checkpoint_meta(tiny_trained)["config"]["task"].items()}
    assert ft.metrics["steps"] == 60
    ev = cc.evaluate(ft, 64, seed=3)
    b = generate(ft.task, 64, seed=3, tokenizer=ft.tokenizer, split="test")  # by hand: full logits, last position
    with torch.no_grad():
        logits = ft.model(torch.as_tensor(b.tokens))[:, -1]
    ld = (logits.gather(1, torch.as_tensor(b.answer_ids)[:, None]) - logits.gather(1, torch.as_tensor(b.wrong_ids)[:, None]))[:, 0]
    assert ev.accuracy == pytest.approx(float((ld > 0).float().mean()))
    assert ev.logit_diff == pytest.approx(float(ld.mean()), abs=1e-5)
    inc = ~np.asarray(b.meta["congruent"], bool)
    assert ev.incongruent_accuracy == pytest.approx(float((ld[torch.as_tensor(inc)] > 0).float().mean()))
    f = ev.to_frame()
    assert f["n"].sum() == 64 and list(f.columns) == ["context", "relevant_coherence", "congruent", "n", "accuracy"]
    assert np.allclose(ev.plot().data[0].y, f["accuracy"])


def synthetic(axes, shape, labels=None):
    """A PatchResult with a distinct value at every index (100 l + 10 p + h), so any transpose shows."""
    from interp.patching import PatchResult

    idx = np.indices(shape)
    vals = sum(w * idx[i] for i, w in enumerate({"layer": 100, "pos": 10, "head": 1}[a] for a in axes)).astype(float)
    lab = {"layer": [f"L{i}" for i in range(shape[axes.index("layer")])],
           "head": [f"H{i}" for i in range(shape[axes.index("head")])], **(labels or {})}
    return PatchResult("heads" if len(axes) == 2 else "heads_by_pos", "denoise", axes, vals / 1000, vals, 1.0, 0.0,
                       lab)


def test_patch_frame_and_heatmap_hold_the_values_under_their_labels():
    from interp.results import Patching

    p = Patching(synthetic(("layer", "head"), (2, 3)), "m", "context-flip", 4)
    df = p.to_frame()
    assert len(df) == 6
    for r in df.itertuples():
        assert r.value == pytest.approx((100 * r.layer + r.head) / 1000) and r.logit_diff == 100 * r.layer + r.head
        assert r.component == f"L{r.layer}H{r.head}" and r.layer_label == f"L{r.layer}" and r.head_label == f"H{r.head}"
    fig = p.plot()
    np.testing.assert_allclose(np.asarray(fig.data[0].z, float), p.values)
    assert list(fig.data[0].y) == ["L0", "L1"] and list(fig.data[0].x) == ["H0", "H1", "H2"]
    assert p.top_heads(2) == [(1, 2), (1, 1)]


def test_per_position_heatmap_has_a_row_per_head_and_a_column_per_token():
    from interp.results import Patching

    pos = ["bos: <|endoftext|>", "context:  color", "answer:  answer"]
    p = Patching(synthetic(("layer", "pos", "head"), (2, 3, 4), {"pos": pos}), "m", "context-flip", 4)
    for r in p.to_frame().itertuples():
        assert r.value == pytest.approx((100 * r.layer + 10 * r.pos + r.head) / 1000)
        assert r.pos_label == pos[r.pos] and r.component == f"L{r.layer}H{r.head}"
    tr = p.plot().data[0]
    z = np.asarray(tr.z, float)
    for l, h in [(0, 1), (1, 3)]:
        assert tr.y[l * 4 + h] == f"L{l}H{h}"
        np.testing.assert_allclose(z[l * 4 + h], p.values[l, :, h])
    assert list(tr.x) == [html.escape(s, quote=True) for s in pos]


def test_patch_through_the_api_is_the_librarys_sweep_with_token_labels(ft, pairs):
    from interp.patching import patch_sweep

    clean, bad = pairs
    for what in ("heads", "heads_by_pos"):
        p = cc.patch(ft, pairs, what)
        direct = patch_sweep(ft.model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, what)
        np.testing.assert_allclose(p.result.raw, direct.raw, atol=1e-6)  # clean into corrupted, not the reverse
        assert p.corruption == "relevant-flip" and p.n_pairs == 12
        df = p.to_frame()
        for r in df.itertuples():
            idx = tuple(getattr(r, a) for a in p.axes)
            assert r.logit_diff == pytest.approx(p.result.raw[idx])
        z = np.asarray(p.plot().data[0].z, float)  # the tiny model does not do the task: raw changes are drawn
        want = p.values if p.result.defined else p.result.raw - p.result.corrupt_logit_diff
        np.testing.assert_allclose(z.ravel(), np.moveaxis(want, 1, -1).ravel() if what == "heads_by_pos"
                                   else want.ravel(), atol=1e-9)
    tok = ft.tokenizer
    for i, lab in enumerate(p.result.labels["pos"]):  # "name: token" of the first clean trial
        assert lab == f"{clean.position_labels[i]}: {tok.decode([int(clean.tokens[0, i])])}"


def test_attribution_frame_sums_to_the_logit_difference(ft, trials):
    a = cc.attribute(ft, trials, neuron_layers=(1,))
    want = logit_diff(ft.model, trials.tokens, trials.answer_ids, trials.wrong_ids).numpy()
    df = a.to_frame()
    assert df["value"].sum() == pytest.approx(float(want.mean()), abs=1e-4)
    per = a.to_frame(per_trial=True).groupby("trial")["value"].sum().to_numpy()
    np.testing.assert_allclose(per, want, atol=1e-4)
    heads = df[df["kind"] == "head"]
    for r in heads.itertuples():
        assert r.value == pytest.approx(float(a.heads[:, r.layer, r.head].mean()), abs=1e-6)
        assert r.component == f"L{r.layer}H{r.head}"
    np.testing.assert_allclose(np.asarray(a.plot("heads").data[0].z, float), a.heads.mean(0), atol=1e-6)
    bars = a.plot("components").data[0]  # heads of a layer summed with its b_O: still sums to the logit diff
    assert sum(bars.y) == pytest.approx(float(want.mean()), abs=1e-4)
    np.testing.assert_allclose(a.lens_frame()["value"].iloc[-1], want.mean(), atol=1e-4)
    assert a.neurons[1].shape == (len(trials), ft.model.cfg.d_mlp)


def test_ablation_frame_and_heatmap_match_the_ablator(ft, trials):
    from interp.ablation import Ablator

    ab = cc.ablate(ft, trials, "zero")
    ref = Ablator(ft.model, trials.tokens, trials.answer_ids, trials.wrong_ids, "zero")
    each = ref.each_head()
    np.testing.assert_allclose(ab.logit_diff, each["logit_diff"])
    for r in ab.to_frame().itertuples():
        assert r.logit_diff == pytest.approx(each["logit_diff"][r.layer, r.head])
        assert r.delta_logit_diff == pytest.approx(each["logit_diff"][r.layer, r.head] - ref.baseline["logit_diff"])
    np.testing.assert_allclose(np.asarray(ab.plot().data[0].z, float), each["logit_diff"] - ref.baseline["logit_diff"])
    d = np.abs(each["logit_diff"] - ref.baseline["logit_diff"])
    assert ab.top_heads(1)[0] == tuple(int(i) for i in np.unravel_index(np.argmax(d), d.shape))


def test_neuron_frame_uses_layer_numbers_not_row_indices(ft):
    b = cc.trials(ft, 64, seed=4)
    n = cc.neurons(ft, b, layers=[1], top_k=3)
    df = n.to_frame()
    assert set(df["layer"]) == {1}
    r = df[(df["neuron"] == 5) & (df["variable"] == "context")].iloc[0]
    assert r["beta"] == pytest.approx(n.coef[0, 5, 0])
    assert n.plot().data[0].y[0].startswith("L1N")


def test_discover_equals_the_library_composition_and_its_frames_hold_the_curves(easy):
    """The API (which the CLI and `run` use) against the library's own functions called by hand on the same
    pairs and seeds: catches pairs of another seed, clean and corrupted swapped, the wrong seed per level."""
    from interp.circuits import edge_attribution
    from interp.faithfulness import CircuitEvaluator, curve
    from tasks.registry import make_pairs

    c = cc.discover(easy, cc.pairs(easy, 12, seed=5, corruption="relevant-flip"), method="eap", n_random=3, seed=5)
    clean, bad = make_pairs(easy.task, 12, seed=5, tokenizer=easy.tokenizer, corruption="relevant-flip")
    args = (clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids)
    g = edge_attribution(easy.model, *args, method="eap")
    ns = g.node_scores()
    ranked = sorted(ns, key=lambda k: -abs(ns[k]))
    ev = CircuitEvaluator(easy.model, *args, ablation="corrupted", seed=5)
    want = {"node": curve(ev, ranked, "node", n_random=3, seed=5, at_level=0.8),
            "edge": curve(ev, [(u, v) for u, v, _ in g.edges()], "edge", n_random=3, seed=6, at_level=0.8)}
    assert c.node_curve.defined and c.edge_curve.defined, "the easy model must separate full from empty circuits"
    assert c.node_scores == pytest.approx(ns)
    assert list(c.top) == ranked[:round(0.2 * len(ranked))]
    for level in ("node", "edge"):
        got = getattr(c, f"{level}_curve")
        np.testing.assert_allclose(got.faithfulness, want[level].faithfulness)
        np.testing.assert_allclose(got.random_faithfulness, want[level].random_faithfulness)
        cf = c.curve_frame()
        cf = cf[cf["level"] == level]
        np.testing.assert_allclose(cf["faithfulness"], got.faithfulness)
        np.testing.assert_allclose(cf["random_mean"], np.mean(got.random_faithfulness, axis=1))
    fig = c.plot("node")
    line = next(t for t in fig.data if t.name == easy.name)
    np.testing.assert_allclose(np.asarray(line.y, float), c.node_curve.faithfulness)
    assert c.to_frame()["score"].abs().is_monotonic_decreasing
    nf = c.nodes_frame()
    assert nf["node"].tolist() == c.ranked and nf["in_top"].sum() == len(c.top)
    assert {t.type for t in c.plot("graph").data} == {"scatter"}


def test_compare_a_model_with_itself_and_with_its_base(ft, base, trials):
    cmp = cc.compare({"finetuned-s0": ft, "same": base}, base, trials)
    # before layer 0 the answer position holds the same token in every trial: CKA undefined (NaN), then 1
    np.testing.assert_allclose(cmp.cka["same"], [np.nan] + [1.0] * ft.model.cfg.n_layers, atol=1e-6)
    assert all(v == 0 for v in cmp.weight_change["same"].values())
    assert any(v > 0 for v in cmp.weight_change["finetuned-s0"].values())
    assert len(cmp.cka["finetuned-s0"]) == ft.model.cfg.n_layers + 1
    df = cmp.to_frame()
    got = df[(df["model"] == "finetuned-s0") & (df["measure"] == "cka")]["value"].to_numpy()
    np.testing.assert_allclose(got, cmp.cka["finetuned-s0"])
    assert len(cmp.plot("reversion").data) >= 2


def test_attention_views_hold_the_true_patterns(ft, pairs):
    view = cc.attention(ft, pairs, "L1H2,L0H0", trial=1)
    assert view.titles == ("clean trial 1", "corrupted trial 1") and view.head_names == ["L1H2", "L0H0"]
    for v, batch in enumerate(pairs):
        with torch.no_grad():
            _, cache = ft.model.run_with_cache(torch.as_tensor(batch.tokens[1:2]))
        np.testing.assert_allclose(view.patterns[v][0], cache["blocks.1.attn.hook_pattern"][0, 2].numpy(), atol=1e-6)
        np.testing.assert_allclose(view.patterns[v][1], cache["blocks.0.attn.hook_pattern"][0, 0].numpy(), atol=1e-6)
    df = view.to_frame()
    sums = df.groupby(["view", "head", "dest"])["weight"].sum()
    np.testing.assert_allclose(sums, 1.0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(view.plot(view=1, head=0).data[0].z, float), view.patterns[1][0])
    page = view.html()
    assert "CircuitsVis.render" in page and "L1H2" in page
    assert "<iframe srcdoc=" in view._repr_html_()


def test_attention_on_a_prompt_and_its_bad_inputs(ft, tmp_path):
    view = cc.attention(ft, "context color . answer <b>", [(0, 1)])
    assert view.tokens[0] == tuple(ft.tokenizer.decode([int(t)]) for t in ft.model.to_tokens(
        "context color . answer <b>")[0])
    assert "&lt;b&gt;" in view.html()
    path = view.save(tmp_path / "a.html")
    assert path.read_text() == view.html()
    shown = view.show()  # no IPython here: written to a temporary file, nothing opened
    if shown is not None:
        assert shown.read_text() == view.html()
        shown.unlink()
    with pytest.raises(ValueError, match="does not exist"):
        cc.attention(ft, "x", "L9H0")
    with pytest.raises(ValueError, match="empty"):
        cc.attention(ft, "  ", "L0H0")
    with pytest.raises(ValueError, match="context"):
        cc.attention(ft, np.zeros(ft.model.cfg.n_ctx + 1, dtype=int), "L0H0")


def test_train_wraps_the_trainer_and_its_task_follows_the_checkpoint(tmp_path, tiny_base, easy, easy_dir):
    from experiments.core.config import ConfigError
    from tasks.cdm import CDMConfig, generate

    assert easy.metrics["steps"] == 200 and easy.info["init"] == "pretrained" and easy.model.cfg.n_layers == 2
    assert easy.task == CDMConfig(coherences=(50,))
    again = cc.load(easy_dir, device="cpu")
    assert again.task == easy.task  # loaded from checkpoint.json, not the default task
    got = cc.trials(again, 8, seed=1)
    np.testing.assert_array_equal(got.tokens, generate(CDMConfig(coherences=(50,)), 8, 1, again.tokenizer,
                                                       "test").tokens)
    with pytest.raises(ConfigError, match="unknown key"):
        cc.train(tmp_path / "n", base=tiny_base, steps=4, batch_sise=8)
    assert not (tmp_path / "n").exists()
    short = cc.train(tmp_path / "s", base=tiny_base, steps=3, batch_size=4, eval_every=3, eval_size=8, device="cpu")
    assert short.metrics["steps"] == 3  # the default warmup (50) shortened to the steps, as `cogcircuits train` does


def test_results_are_frozen(ft, trials):
    a = cc.attribute(ft, trials)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.model = "other"  # type: ignore[misc]
    with pytest.raises(TypeError, match="hooked model"):
        cc.attribute("not a model", trials)
