"""Fast checks of interp.faithfulness that kill its mutants (scripts/mutation.sh, docs/testing.md): circuits on
tiny RANDOM models (built in milliseconds, no training) against independent TransformerLens-hooked node
replacement, a planted single-writer model whose faithfulness is exactly 0 or 1, and the curve's bookkeeping against
hand-computed values. Each test names the bugs it catches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.ablation import derangement
from interp.arch import Arch
from interp.faithfulness import GRID, CircuitCurve, CircuitEvaluator, _random_masks, area, curve, size_at
from interp.metrics import last_logits, logit_diff_from_logits
from interp.models import build_scratch, copy_model

V, P, B = 24, 5, 4  # vocabulary, positions, trials
ANSWER, WRONG = [1, 2, 1, 3], [4, 5, 6, 4]
NODES = [f"L{l}H{h}" for l in range(2) for h in range(4)] + ["MLP0", "MLP1"]


def _model(family: str):
    kw = dict(family="llama", n_key_value_heads=2, act_fn="silu") if family == "llama" else {}
    return build_scratch(Arch(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_vocab=V, n_ctx=16, initializer_range=0.6,
                              **kw), None, seed=3)


def _tokens():
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(7, V, (B, P), generator=g)
    bad = clean.clone()
    bad[:, 1] = (bad[:, 1] + 5) % V
    bad[:, 3] = (bad[:, 3] + 2) % V
    return clean, bad


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tiny(request):
    return _model(request.param)


def _gpt2_only(model):
    """Checks that do not depend on the architecture run on the GPT-2 only (time)."""
    if model.cfg.positional_embedding_type == "rotary":
        pytest.skip("architecture-independent: the GPT-2 checks it")


def _ev(model, ablation="corrupted", **kw):
    clean, bad = _tokens()
    kw = {"min_gap": 0.0, "se_factor": 0.0, **kw}
    return CircuitEvaluator(model, clean, bad, ANSWER, WRONG, ablation=ablation, **kw)


def _replace_nodes(model, keep: set[str], ablation: str, seed: int = 0) -> np.ndarray:
    """Independent node ablation with TransformerLens hooks: every head's z and every MLP's output outside `keep`
    replaced by its ablated value (the corrupted run's; the clean trials' mean per position; another clean trial's,
    by `derangement`). Per-trial logit differences of the clean run."""
    clean, bad = _tokens()
    names = lambda n: n.endswith(("hook_z", "hook_mlp_out"))  # noqa: E731
    with torch.no_grad():
        _, cache = model.run_with_cache(bad if ablation == "corrupted" else clean, names_filter=names)
    if ablation == "mean":
        cache = {k: v.mean(0, keepdim=True).expand_as(v) for k, v in cache.items()}
    elif ablation == "resample":
        perm = torch.as_tensor(derangement(B, B, seed))
        cache = {k: v[perm] for k, v in cache.items()}
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
        return logit_diff_from_logits(last_logits(model, clean, hooks), torch.tensor(ANSWER),
                                      torch.tensor(WRONG)).numpy()


@pytest.mark.parametrize("ablation", ["corrupted", "mean", "resample"])
def test_node_circuits_equal_hooked_node_replacement(tiny, ablation):
    """Node circuits (both the project's forward and the TransformerLens-hooks path) against independent node
    replacement, per trial, for each ablation; the full circuit is the unablated run.

    Catches: the mean taken over the wrong axis or not expanded, the resample permutation not applied or the
    trial's own output kept, the corrupted run's outputs taken from the clean tokens, a node's keep / remove flag
    inverted, the embeddings ablated in the empty node circuit, the hooks path and the fast path disagreeing.
    (The Llama with corrupted outputs only: the ablations do not depend on the architecture.)"""
    if tiny.cfg.positional_embedding_type == "rotary" and ablation != "corrupted":
        pytest.skip("the GPT-2 checks this ablation")
    for fast in (True, False):
        ev = _ev(tiny, ablation, seed=2)
        ev.fast = fast
        assert fast or ev._node_rows(ev.node_edges(["L0H1"])[None]) is not None
        for keep in (set(), {"L1H0", "L1H3", "MLP0", "L0H2"}):
            got = ev.trials(ev.node_edges(keep)).numpy()
            np.testing.assert_allclose(got, _replace_nodes(tiny, keep, ablation, seed=2), atol=2e-4, rtol=0,
                                       err_msg=f"{ablation} fast={fast} {keep}")
        np.testing.assert_allclose(ev.full_trials.numpy(), _replace_nodes(tiny, set(NODES), ablation), atol=2e-4)
    empty = ev.baseline("node")[0]
    assert empty == pytest.approx(float(_replace_nodes(tiny, set(), ablation, seed=2).mean()), abs=2e-4)
    assert abs(ev.full - empty) > 0.1  # the ablation matters on this model: a no-op would show


def test_edge_circuits_two_paths_and_the_corrupted_empty_graph(tiny):
    """Edge masks (per-head inputs) through the project's forward equal the TransformerLens-hooks path, one circuit
    per forward or three stacked; with every edge ablated to the corrupted outputs each node computes its
    corrupted-run output, so the logits are the corrupted run's. Catches: removed edges computed from the kept set
    (`valid & keep`), stacked circuits mixed up, the hooks path's ablated outputs not repeated per circuit."""
    clean, bad = _tokens()
    rng = np.random.default_rng(0)
    ev = _ev(tiny, "mean", per_forward=3)
    masks = torch.as_tensor(rng.random((4, *ev.valid.shape)) < 0.5) & ev.valid
    fast = ev.trials_many(masks)
    ev.fast = False
    slow = ev.trials_many(masks)
    one = torch.stack([ev.trials(m) for m in masks])
    np.testing.assert_allclose(fast.numpy(), slow.numpy(), atol=2e-4, rtol=0)
    np.testing.assert_allclose(one.numpy(), slow.numpy(), atol=2e-5, rtol=0)
    assert float((slow - slow.mean(0)).abs().max()) > 0.01  # the circuits differ: a mix-up would show
    ev = _ev(tiny, "corrupted")
    with torch.no_grad():
        want = logit_diff_from_logits(last_logits(tiny, bad), torch.tensor(ANSWER), torch.tensor(WRONG))
    for fast in (True, False):
        ev.fast = fast
        np.testing.assert_allclose(ev.trials(ev.empty_mask("edge")).numpy(), want.numpy(), atol=2e-4)


def test_masks_by_hand(tiny):
    """node_edges keeps every valid edge leaving a kept node or the embeddings; edge_set only the named valid
    edges; the empty node mask is the embeddings' edges, the empty edge mask nothing; _node_rows recognises node
    circuits only when the embeddings are kept. Catches the embeddings left out of a node circuit, an edge set
    built on invalid edges, the node fast path taken for a mask that is not a node circuit."""
    ev = _ev(tiny)
    up, down = ev.up, ev.down
    m = ev.node_edges(["L0H1"])
    rows = {up[i] for i in torch.nonzero(m.any(1)).flatten().tolist()}
    assert rows == {"embed", "L0H1"} and torch.equal(m[up.index("L0H1")], ev.valid[up.index("L0H1")])
    assert torch.equal(ev.empty_mask("node"), ev.node_edges([])) and not ev.empty_mask("edge").any()
    e = ev.edge_set([("L0H1", "MLP0"), ("L1H0", "MLP0")])  # the second is not an edge (layer 1 -> layer 0)
    assert e.sum() == 1 and e[up.index("L0H1"), down.index("MLP0")]
    assert ev._node_rows(torch.stack([ev.node_edges(["MLP1"]), ev.node_edges([])])).tolist() == [
        [u in ("embed", "MLP1") for u in up], [u == "embed" for u in up]]
    no_embed = ev.node_edges(["MLP1"]) & ~torch.as_tensor([u == "embed" for u in up])[:, None]
    assert ev._node_rows(no_embed[None]) is None
    partial = ev.node_edges(["MLP1"])
    partial[up.index("L0H1"), down.index("logits")] = True  # one edge of a removed node: not a node circuit
    assert ev._node_rows(partial[None]) is None
    with pytest.raises(ValueError, match="unknown ablation"):
        _ev(tiny, "zero")


def _trials(ev, level):
    return ev.full_trials.numpy(), ev.trials(ev.empty_mask(level)).numpy()


def test_baseline_and_undefined_by_hand(tiny):
    """m(empty) is the mean over trials; se the standard error (n - 1) of the per-trial full - empty gap; f is
    defined iff |gap| > max(min_gap, se_factor * se), strictly; f = (m - empty) / (full - empty), NaN when
    undefined. Catches: the se over the wrong quantity or with n, the floor applied with >= or only one of its two
    terms, f's numerator or denominator swapped, NaN replaced by 0."""
    _gpt2_only(tiny)
    ev = _ev(tiny)
    full, empty = _trials(ev, "node")
    gap = full - empty
    se = gap.std(ddof=1) / np.sqrt(len(gap))
    m, got_se, defined = ev.baseline("node")
    assert m == pytest.approx(empty.mean(), abs=1e-5) and got_se == pytest.approx(se, rel=1e-4) and defined
    g = abs(full.mean() - empty.mean())
    clean, bad = _tokens()
    for min_gap, se_factor, want in ((g * 0.999, 0.0, True), (g * 1.001, 0.0, False),
                                     (0.0, g / se * 0.999, True), (0.0, g / se * 1.001, False),
                                     (g * 1.001, g / se * 0.5, False), (g * 0.5, g / se * 1.001, False)):
        e = CircuitEvaluator(tiny, clean, bad, ANSWER, WRONG, min_gap=min_gap, se_factor=se_factor)
        assert e.baseline("node")[2] == want, (min_gap, se_factor)
        keep = e.node_edges(["L0H0", "MLP1"])
        f = e.faithfulness(keep, "node")
        if want:
            mk = float(e.trials(keep).mean())
            assert f == pytest.approx((mk - m) / (full.mean() - m), abs=1e-4)
            assert e.faithfulness(e.node_edges(NODES), "node") == pytest.approx(1.0, abs=1e-5)
            assert e.faithfulness(e.empty_mask("node"), "node") == pytest.approx(0.0, abs=1e-5)
        else:
            assert np.isnan(f) and all(np.isnan(e.faithfulness_many(torch.stack([keep, keep]), "node")))
    ev = _ev(tiny, "mean")  # the edge level's empty circuit (embeddings ablated too) is another one, cached apart
    edge_m, node_m = ev.baseline("edge")[0], ev.baseline("node")[0]
    assert edge_m == pytest.approx(_trials(ev, "edge")[1].mean(), abs=1e-5)
    assert node_m == pytest.approx(_trials(ev, "node")[1].mean(), abs=1e-5) and abs(edge_m - node_m) > 1e-3


def test_one_trial_has_no_standard_error_and_is_never_defined(tiny):
    """One trial: the gap's standard error is infinite (not NaN from a 0-dof std), so f is undefined however
    large the gap. Catches the one-trial case falling through to std()."""
    clean, bad = _tokens()
    ev = CircuitEvaluator(tiny, clean[:1], bad[:1], ANSWER[:1], WRONG[:1], min_gap=0.0, se_factor=3.0)
    m, se, defined = ev.baseline("node")
    assert se == float("inf") and not defined and np.isfinite(m)
    ev = CircuitEvaluator(tiny, clean[:2], bad[:2], ANSWER[:2], WRONG[:2], min_gap=0.0, se_factor=0.0)
    assert np.isfinite(ev.baseline("node")[1])


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


@pytest.fixture(scope="module")
def writer():
    """The GPT-2's planted single writer: f is exactly 1 with L1H2 in the circuit and exactly 0 without."""
    m = _single_writer(_model("gpt2"))
    return _ev(m, per_forward=16)


def test_planted_curve_by_hand(writer):
    """10 nodes, L1H2 first: sizes int(p * 10), f 0 until L1H2 is in, CPR / CMD by the trapezoid rule, size at 80%
    1; random circuits of k nodes hold L1H2 with probability k / 10, their f is 0 or 1, the empty and full sizes
    are exactly 0 and 1 without a draw; every field and the level reached by hand.

    Catches: sizes rounded up or off by one, the curve ranking from the wrong end, the empty / full shortcut for
    random circuits giving the wrong value, random draws of the wrong size, per-draw CPR / CMD from the wrong
    index, the percentile with >= for >, the random share with > for >=, f_empty / f_full lost in to_dict."""
    ranked = ["L1H2"] + [n for n in NODES if n != "L1H2"]
    c = curve(writer, ranked, "node", n_random=8, seed=0)
    assert c.sizes == (0, 0, 0, 0, 0, 0, 1, 2, 5, 10) and c.n_items == 10 and c.grid == GRID
    np.testing.assert_allclose(c.faithfulness, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1], atol=1e-5)
    assert c.cpr == pytest.approx(0.025 + 0.1 + 0.3 + 0.5, abs=1e-5)
    assert c.cmd == pytest.approx(0.049 + 0.025, abs=1e-5)
    assert size_at(c) == 1 and c.defined and c.level == "node" and c.ablation == "corrupted"
    assert c.m_full == pytest.approx(writer.full) and c.m_empty == pytest.approx(writer.baseline("node")[0])
    assert c.gap_se == pytest.approx(writer.baseline("node")[1])
    assert len(c.random_faithfulness) == 10 and all(len(r) == 8 for r in c.random_faithfulness)
    assert c.random_faithfulness[0] == (0.0,) * 8 and c.random_faithfulness[-1] == (1.0,) * 8
    assert set(np.round(np.concatenate(c.random_faithfulness), 4)) <= {0.0, 1.0}
    for j in range(8):  # each draw's CPR / CMD from its own column
        col = [c.random_faithfulness[i][j] for i in range(10)]
        assert (c.random_cpr[j], c.random_cmd[j]) == pytest.approx(area(GRID, col), abs=1e-5)
    r1 = c.random_faithfulness[6]  # k = 1: f = 1 only if the drawn node is L1H2
    reached = c.level_reached
    assert reached["level"] == 0.8 and reached["size"] == 1 and reached["fraction"] == pytest.approx(0.1)
    assert reached["random_share_reaching"] == pytest.approx(np.mean([v >= 0.8 for v in r1]))
    assert reached["cpr_percentile_among_random"] == pytest.approx(np.mean([c.cpr > r for r in c.random_cpr]))
    d = c.to_dict()
    assert d["f_empty"] == 0.0 and d["f_full"] == 1.0 and d["sizes"] == c.sizes
    at_full = curve(writer, ranked, "node", n_random=3, at_level=1.0)  # f = 1 counts as reaching 1.0 (>=)
    assert at_full.level_reached["size"] == 1 and at_full.level_reached["random_share_reaching"] == pytest.approx(
        np.mean([v >= 1.0 - 1e-6 for v in at_full.random_faithfulness[6]]))


def test_random_draws_of_every_size_and_the_share_reaching_a_level(writer):
    """Random node sets of k = 2 and 5 hold L1H2 with probability k / 10; ties at the level count as reaching it.
    Catches random circuits drawn with replacement or of another size, the share computed with > for >=."""
    rng = np.random.default_rng(0)
    for k in (1, 2, 5):
        masks = [_random_masks(writer, "node", NODES, k, rng) for _ in range(30)]
        kept = [{u for u in NODES if m[writer.up.index(u)].any()} for m in masks]
        assert all(len(s) == k for s in kept), k
    assert not _random_masks(writer, "node", NODES, 0, rng)[1:].any()  # only the embeddings
    edges = [(writer.up[i], writer.down[j]) for i, j in zip(*np.nonzero(writer.valid.numpy()))]
    e = _random_masks(writer, "edge", edges, 7, rng)
    assert int(e.sum()) == 7 and bool((e & ~writer.valid).any()) is False
    ranked = ["L1H2"] + [n for n in NODES if n != "L1H2"]
    c = curve(writer, ranked, "node", n_random=40, seed=1)
    share = {k: np.mean(c.random_faithfulness[c.sizes.index(k)]) for k in (1, 2, 5)}
    assert share[1] < share[2] < share[5] < 1.0 and share[5] > 0.2  # about 0.1, 0.2, 0.5


def test_worst_first_never_reaches_the_level_and_undefined_curves(writer, tiny):
    """Only the full graph holds the writer: size at 80% is None (the full graph is not counted), and so is the
    level reached. Identical clean and corrupted inputs: f undefined everywhere, CPR NaN, f_empty / f_full NaN,
    random circuits NaN too, no percentile. Catches the full graph counted as a size, `size_at` skipping the NaN
    test, the undefined curve filled with 0 / 1."""
    worst = [n for n in NODES if n != "L1H2"] + ["L1H2"]
    c = curve(writer, worst, "node", n_random=2)
    assert c.faithfulness[-1] == pytest.approx(1.0, abs=1e-5) and size_at(c) is None
    assert c.level_reached["size"] is None and c.level_reached["fraction"] is None
    assert "random_share_reaching" not in c.level_reached
    clean, _ = _tokens()
    ev = CircuitEvaluator(tiny, clean, clean, ANSWER, WRONG)
    u = curve(ev, NODES, "node", n_random=2)
    assert not u.defined and all(np.isnan(u.faithfulness)) and np.isnan(u.cpr) and np.isnan(u.cmd)
    assert np.isnan(u.f_empty) and np.isnan(u.f_full) and size_at(u) is None
    assert all(np.isnan(v) for r in u.random_faithfulness for v in r) and len(u.random_faithfulness[0]) == 2
    assert u.level_reached["cpr_percentile_among_random"] is None
    with pytest.raises(ValueError, match="level must be"):
        curve(ev, NODES, "nodes")


def test_edge_curve_sizes_and_no_random_draws(writer):
    """Edge level: sizes int(p * n_edges), the full edge set is f = 1; n_random = 0 gives empty draws (and the
    empty / full sizes no draw either). Catches the edge level ranked as nodes, n_random ignored."""
    edges = [(writer.up[i], writer.down[j]) for i, j in zip(*np.nonzero(writer.valid.numpy()))]
    c = curve(writer, edges, "edge", n_random=0)
    n = len(edges)
    assert c.sizes == tuple(int(p * n) for p in GRID) and c.n_items == n == int(writer.valid.sum())
    assert c.faithfulness[-1] == pytest.approx(1.0, abs=1e-5)
    assert all(r == () for r in c.random_faithfulness) and c.random_cpr == ()


def _hand_curve(sizes, f, n_items):
    return CircuitCurve(level="node", n_items=n_items, grid=tuple(np.linspace(0, 1, len(sizes))), sizes=tuple(sizes),
                        faithfulness=tuple(f), cpr=0.0, cmd=0.0, random_faithfulness=(), random_cpr=(), random_cmd=(),
                        m_full=1.0, m_empty=0.0, gap_se=0.0, defined=True, ablation="mean")


def test_size_at_by_hand():
    """The smallest size below the full graph with f >= level (exactly the level counts), NaN skipped. Catches >
    for >=, the full graph counted, NaN treated as reaching."""
    assert size_at(_hand_curve([1, 2, 3, 10], [0.5, 0.8, 0.9, 1.0], 10)) == 2
    assert size_at(_hand_curve([1, 2, 3, 10], [np.nan, 0.7, 0.85, 1.0], 10)) == 3
    assert size_at(_hand_curve([1, 10], [0.1, 1.0], 10)) is None
    assert size_at(_hand_curve([1, 10], [0.1, 1.0], 10), level=0.1) == 1


def test_area_by_hand():
    """Trapezoids on an uneven grid, |1 - f| above 1 too. Catches dx taken the wrong way, the mean of the two ends
    replaced, |1 - f| without the absolute value."""
    cpr, cmd = area([0.0, 0.1, 0.5, 1.0], [0.0, 1.0, 1.5, 0.5])
    assert cpr == pytest.approx(0.1 * 0.5 + 0.4 * 1.25 + 0.5 * 1.0)
    assert cmd == pytest.approx(0.1 * 0.5 + 0.4 * 0.25 + 0.5 * 0.5)
    assert all(np.isnan(area([0, 1], [np.nan, 1.0]))) and all(np.isnan(area([0, 1], [0.5, np.inf])))


def test_defaults_the_floor_exactly_and_the_fast_path_chosen(tiny):
    """The documented defaults (min_gap 0.25 logits, se_factor 3, one circuit per forward), the project's forward
    chosen for the architectures it supports, and a gap exactly at the floor undefined ("above", strictly).
    Catches other defaults, the hooks path taken where the fast one exists, `>=` for `>` in the floor, an error
    that does not list the ablations."""
    clean, bad = _tokens()
    ev = CircuitEvaluator(tiny, clean, bad, ANSWER, WRONG)
    assert (ev.min_gap, ev.se_factor, ev.per_forward, ev.ablation) == (0.25, 3.0, 1, "corrupted")
    assert ev.fast is True
    m = ev.baseline("node")[0]
    at = CircuitEvaluator(tiny, clean, bad, ANSWER, WRONG, min_gap=abs(ev.full - m), se_factor=0.0)
    assert at.full == ev.full and at.baseline("node")[0] == m and not at.baseline("node")[2]
    with pytest.raises(ValueError, match="choose from corrupted, mean, resample"):
        CircuitEvaluator(tiny, clean, bad, ANSWER, WRONG, ablation="zero")


def test_a_curve_reads_its_own_level_and_the_random_draws_it_says(tiny):
    """A node curve under mean ablation (where the node and edge levels' empty circuits differ): m_empty, f of the
    ranked sets and of the random sets are (m - m_empty(node)) / (m_full - m_empty(node)) by hand, the random sets
    being the seed's draws of each size other than empty and full; the same seed gives the same curve, the
    default draws 20 per size. Catches the level not passed on (the edge level's empty circuit used), an unseeded
    draw, another default number of draws."""
    _gpt2_only(tiny)
    ev = _ev(tiny, "mean", per_forward=16)
    m_node, m_edge = ev.baseline("node")[0], ev.baseline("edge")[0]
    assert abs(m_node - m_edge) > 1e-3
    ranked = NODES[::-1]
    c = curve(ev, ranked, "node", n_random=2, seed=5)
    f = lambda keep: (float(ev.trials(keep).mean()) - m_node) / (ev.full - m_node)  # noqa: E731
    assert c.m_empty == pytest.approx(m_node)
    np.testing.assert_allclose(c.faithfulness, [f(ev.node_edges(ranked[:k])) for k in c.sizes], atol=1e-5)
    assert ev.faithfulness(ev.node_edges(ranked[:2]), "node") == pytest.approx(f(ev.node_edges(ranked[:2])), abs=1e-5)
    rng = np.random.default_rng(5)
    for i, k in enumerate(c.sizes):
        if k in (0, len(ranked)):
            continue
        want = [f(_random_masks(ev, "node", ranked, k, rng)) for _ in range(2)]
        np.testing.assert_allclose(c.random_faithfulness[i], want, atol=1e-5, err_msg=str(k))
    assert curve(ev, ranked, "node", n_random=2, seed=5) == c


def test_the_empty_and_full_circuits_are_not_drawn(writer, monkeypatch):
    """The ranked curve is one batch of circuits and each size other than empty and full one batch of random
    ones; the empty and full sizes are 0 and 1 without a forward. Catches the shortcut for them lost (their random
    "draws" evaluated)."""
    calls = []
    real = CircuitEvaluator.trials_many

    def count(self, keeps):
        calls.append(len(keeps))
        return real(self, keeps)

    monkeypatch.setattr(CircuitEvaluator, "trials_many", count)
    ranked = ["L1H2"] + [n for n in NODES if n != "L1H2"]
    c = curve(writer, ranked, "node", n_random=4)
    assert c.sizes == (0, 0, 0, 0, 0, 0, 1, 2, 5, 10)
    assert calls == [10, 4, 4, 4]


def test_levels_reached_at_their_edges(writer):
    """at_level is the level asked for (0: the empty circuit reaches it, size 0); a random circuit exactly at the
    level reaches it (>=); the CPR percentile counts random circuits the ranked one strictly beats (a tie is not
    beaten). Catches size_at called with its default level, > for >= in the share, >= for > in the percentile."""
    ranked = ["L1H2"] + [n for n in NODES if n != "L1H2"]
    c = curve(writer, ranked, "node", n_random=4, at_level=0.0)
    assert c.level_reached["size"] == 0 and c.level_reached["fraction"] == 0.0
    assert c.level_reached["random_share_reaching"] == 1.0  # the empty circuit's 0.0 reaches 0.0
    worst = [n for n in NODES if n != "L1H2"] + ["L1H2"]
    c = curve(writer, worst, "node", n_random=12, seed=0)
    assert c.cpr == pytest.approx(0.25, abs=1e-5)  # f = 0 until the full graph: the least any draw can reach
    assert any(abs(r - c.cpr) < 1e-9 for r in c.random_cpr)  # some draws never hold L1H2 below the full size
    assert c.level_reached["cpr_percentile_among_random"] == 0.0


def test_progress_off_by_default_and_named(writer, capsys):
    """Catches a progress bar on by default or never shown (tqdm's `disable=None` off a terminal), its name lost,
    and another default number of random draws than 20."""
    c = curve(writer, NODES, "node")
    assert capsys.readouterr().err == "" and all(len(r) == 20 for r in c.random_faithfulness)
    curve(writer, NODES, "node", n_random=1, progress=True)
    assert "random node circuits" in capsys.readouterr().err


def test_area_reads_none_as_missing():
    """Catches the float conversion of f dropped (None would reach isfinite as an object)."""
    assert all(np.isnan(area([0.0, 0.5, 1.0], [0.0, None, 1.0])))
