"""Fast checks of interp.patching that kill its mutants (scripts/mutation.sh, docs/testing.md): every sweep on tiny
RANDOM models (built in milliseconds, no training) against TransformerLens's own patching functions, plus the result
type's small pieces against hand-computed values. Each test names the bugs it catches."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from interp.arch import Arch
from interp.metrics import logit_diff
from interp.models import build_scratch, with_a_key_value_head_per_query_head
from tests.interp.test_patching import TL
from interp.patching import (FAST, VARIANTS, CachedRun, PatchResult, default_variants_per_forward, index_setter,
                             patch_sweep, position_token_labels)

# TransformerLens's function for each sweep: the table of tests/interp/test_patching.py
V, P, B = 24, 5, 2  # vocabulary, positions, trials
ANSWER, WRONG = [1, 2], [4, 5]


def _model(family: str):
    """A 2-layer random model with weights drawn large enough that patches move the logit difference by O(1)."""
    kw = dict(family="llama", n_key_value_heads=2, act_fn="silu") if family == "llama" else {}
    return build_scratch(Arch(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_vocab=V, n_ctx=16, initializer_range=0.6,
                              **kw), None, seed=1)


def _tokens():
    """Clean and corrupted trials that differ at positions 2 and 4 only (first difference: 2)."""
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(7, V, (B, P), generator=g)
    bad = clean.clone()
    bad[:, 2] = (bad[:, 2] + 5) % V
    bad[0, 4] = (bad[0, 4] + 3) % V
    return clean, bad


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tiny(request):
    return _model(request.param)


def _metric(logits):
    last = logits[:, -1]
    a, w = torch.tensor(ANSWER), torch.tensor(WRONG)
    return (last.gather(1, a[:, None]) - last.gather(1, w[:, None])).mean()


def _tl_raw(model, clean, bad, what, direction):
    """TransformerLens's own patching function (on the equivalent model with a key / value head per query head).
    One forward per index: used for a few sweeps only (seconds each on 2 cores)."""
    model = with_a_key_value_head_per_query_head(model)
    target, source = (bad, clean) if direction == "denoise" else (clean, bad)
    _, cache = model.run_with_cache(source)
    return TL[what](model, target, cache, _metric).cpu().numpy()


def _hooked_raw(model, clean, bad, what, direction):
    """The same sweep written with TransformerLens hooks on the model's own forward (no code of interp.patching or
    interp.forward): every index patched in its own copy of the target batch, all copies in ONE forward."""
    model = with_a_key_value_head_per_query_head(model)
    target, source = (bad, clean) if direction == "denoise" else (clean, bad)
    _, cache = model.run_with_cache(source)
    kind, axes = VARIANTS[what]
    cfg = model.cfg
    shape = tuple({"layer": cfg.n_layers, "head": cfg.n_heads, "pos": P, "dest_pos": P}[ax] for ax in axes)
    idxs = list(np.ndindex(shape))

    def patch(x, hook, layer):
        x = x.clone()
        src = cache[hook.name]
        for n, idx in enumerate(idxs):
            d = dict(zip(axes, idx))
            if d["layer"] != layer:
                continue
            rows = slice(n * B, (n + 1) * B)
            if kind == "pattern":  # [batch, head, dest, src]
                at = (d["head"],) if "dest_pos" not in d else (d["head"], d["dest_pos"])
            elif "head" not in d:  # [batch, pos, d_model]
                at = (d["pos"],)
            else:  # [batch, pos, head, d_head]
                at = (slice(None), d["head"]) if "pos" not in d else (d["pos"], d["head"])
            x[(rows, *at)] = src[(slice(None), *at)]
        return x

    name = {"resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out"}.get(
        kind, f"attn.hook_{kind}")
    hooks = [(f"blocks.{l}.{name}", lambda x, hook, l=l: patch(x, hook, l)) for l in range(cfg.n_layers)]
    with torch.no_grad():
        logits = model.run_with_hooks(target.repeat(len(idxs), 1), fwd_hooks=hooks)
    last = logits[:, -1]
    a, w = torch.tensor(ANSWER * len(idxs)), torch.tensor(WRONG * len(idxs))
    ld = (last.gather(1, a[:, None]) - last.gather(1, w[:, None]))[:, 0].view(len(idxs), B).mean(1)
    return ld.numpy().reshape(shape)


def test_the_batched_hooked_reference_is_transformer_lens(tiny):
    """The reference below (`_hooked_raw`) equals TransformerLens's own patching functions (two sweeps: a pattern's
    [batch, head, dest, src] and a head's [batch, pos, head, d_head] layouts); tests/interp/test_patching.py
    compares every sweep with them."""
    clean, bad = _tokens()
    if tiny.cfg.positional_embedding_type == "rotary":
        pytest.skip("the layouts do not depend on the architecture (time)")
    for what, direction in (("pattern", "denoise"), ("heads", "noise")):
        np.testing.assert_allclose(_hooked_raw(tiny, clean, bad, what, direction),
                                   _tl_raw(tiny, clean, bad, what, direction), atol=1e-4, rtol=0)


# the Llama (rotary, grouped keys and values, gated MLP) on the sweeps its architecture changes, denoising, one
# stacking (time: the GPT-2 covers every sweep, both directions, other stackings)
LLAMA_SWEEPS = ("resid_pre", "mlp_out", "heads_by_pos", "k_by_pos", "v")
NOISE_SWEEPS = ("resid_pre", "heads_by_pos", "q_by_pos", "pattern")  # the direction's own code: one of each path


# stackings besides the default checked per sweep (denoising, the GPT-2): one variant per forward (the generic
# replay's single-patch path) and every variant of a group in one forward
STACKING = {"q_by_pos": (1,), "pattern": (1,), "heads_by_pos": (1, 64), "resid_pre": (64,), "v": (64,)}


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_every_variant_equals_hooked_patching_on_a_random_model(tiny, direction):
    """Every sweep with the default stacking, one variant per forward and all stacked (STACKING), and NOISE_SWEEPS
    noising, against TransformerLens-hooked patching (the Llama: LLAMA_SWEEPS, denoising).

    Catches: a patch at the wrong layer, head or position (off by one, `pos - start` miscounted), positions before
    the first difference not set to the target's value, the last block's non-final positions patched or not
    skipped, the wrong activation copied (source and target swapped), variants of a stacked forward mixed up, the
    replay starting at the wrong layer (`layer + 1`) or position, the denoise / noise runs swapped."""
    clean, bad = _tokens()
    llama = tiny.cfg.positional_embedding_type == "rotary"
    if llama and direction == "noise":
        pytest.skip("the GPT-2 checks noising")
    for what in LLAMA_SWEEPS if llama else VARIANTS if direction == "denoise" else NOISE_SWEEPS:
        ref = _hooked_raw(tiny, clean, bad, what, direction)
        assert np.ptp(ref) > 0.05, what  # the patches move the logit difference: a wrong patch would show
        for vpf in (None, *STACKING.get(what, ())) if direction == "denoise" and not llama else (None,):
            got = patch_sweep(tiny, clean, bad, ANSWER, WRONG, what, direction, variants_per_forward=vpf)
            assert got.raw.shape == ref.shape, what
            np.testing.assert_allclose(got.raw, ref, atol=2e-4, rtol=0, err_msg=f"{what} {direction} vpf={vpf}")
        assert got.first_diff == 2 and got.axes == VARIANTS[what][1] and got.what == what


def test_normalised_values_and_logit_differences_of_the_two_runs(tiny):
    """`values` = (raw - corrupted) / (clean - corrupted) with both runs' mean logit differences measured by a plain
    forward; `effect` is `values` when denoising and 1 - `values` when noising.

    Catches: clean and corrupted logit differences swapped in either direction (values 1 - v), the target's run
    reported as the source's, the effect of a noising sweep not flipped, labels of the wrong length."""
    clean, bad = _tokens()
    ld_clean = float(logit_diff(tiny, clean, ANSWER, WRONG).mean())
    ld_bad = float(logit_diff(tiny, bad, ANSWER, WRONG).mean())
    assert abs(ld_clean - ld_bad) > 0.25  # a gap the default floor lets through: values are defined
    for direction in ("denoise", "noise"):
        r = patch_sweep(tiny, clean, bad, ANSWER, WRONG, "resid_pre", direction, position_labels=list("abcde"))
        assert r.clean_logit_diff == pytest.approx(ld_clean, abs=1e-4)
        assert r.corrupt_logit_diff == pytest.approx(ld_bad, abs=1e-4)
        np.testing.assert_allclose(r.values, (r.raw - ld_bad) / (ld_clean - ld_bad), atol=1e-4)
        np.testing.assert_allclose(r.effect, r.values if direction == "denoise" else 1 - r.values, atol=1e-12)
        assert r.defined and r.direction == direction
        # before the first difference the patch changes nothing: the target run (corrupted when denoising)
        assert r.values[0, 0] == pytest.approx(0.0 if direction == "denoise" else 1.0, abs=1e-4)
        assert r.labels == {"layer": ["L0", "L1"], "head": [f"H{h}" for h in range(4)], "pos": list("abcde"),
                            "dest_pos": list("abcde")}
    r = patch_sweep(tiny, clean, bad, ANSWER, WRONG, "heads")
    assert "pos" not in r.labels and r.labels["head"] == ["H0", "H1", "H2", "H3"]


def test_min_gap_decides_undefined(tiny):
    """Values are NaN ("undefined") exactly when |clean - corrupted| < min_gap; raw stays. Catches min_gap not
    passed on (the default used instead) and a floor applied the wrong way round."""
    clean, bad = _tokens()
    r = patch_sweep(tiny, clean, bad, ANSWER, WRONG, "attn_out", min_gap=0)
    gap = abs(r.clean_logit_diff - r.corrupt_logit_diff)
    above = patch_sweep(tiny, clean, bad, ANSWER, WRONG, "attn_out", min_gap=gap * 1.01)
    below = patch_sweep(tiny, clean, bad, ANSWER, WRONG, "attn_out", min_gap=gap * 0.99)
    assert not above.defined and np.isnan(above.values).all() and np.isfinite(above.raw).all()
    assert below.defined and np.isfinite(below.values).all()


def test_identical_inputs_patch_nothing(tiny):
    """No position differs: first_diff is the number of positions, every raw value is the target's logit difference
    (no patch run) and values are undefined. Catches first_diff taken as 0 or as the last position."""
    clean, _ = _tokens()
    r = patch_sweep(tiny, clean, clean.clone(), ANSWER, WRONG, "heads_by_pos")
    assert r.first_diff == P and not r.defined
    np.testing.assert_allclose(r.raw, float(logit_diff(tiny, clean, ANSWER, WRONG).mean()), atol=1e-4)


def test_left_padded_tokenizer_takes_transformer_lens_caches_and_agrees(tiny):
    """A model whose tokenizer pads on the left is cached by TransformerLens's run_with_cache (it masks padding):
    the same caches, logit differences and patching results as the project's own forward on unpadded inputs.

    Catches: the two branches giving different caches (keys or values of the wrong run, rot_k not used with
    rotary), the source and target logit differences swapped in that branch."""
    clean, bad = _tokens()
    plain = CachedRun(tiny, bad, clean, torch.tensor(ANSWER), torch.tensor(WRONG))
    tok = SimpleNamespace(padding_side="left")
    tiny.tokenizer = tok
    try:
        left = CachedRun(tiny, bad, clean, torch.tensor(ANSWER), torch.tensor(WRONG))
        got = patch_sweep(tiny, clean, bad, ANSWER, WRONG, "k_by_pos").raw
        np.testing.assert_allclose(got, _hooked_raw(tiny, clean, bad, "k_by_pos", "denoise"), atol=2e-4, rtol=0)
    finally:
        tiny.tokenizer = None
    assert left.target_ld == pytest.approx(plain.target_ld, abs=1e-4)
    assert left.source_ld == pytest.approx(plain.source_ld, abs=1e-4)
    assert abs(left.target_ld - left.source_ld) > 1e-3  # the two runs differ: a swap would show
    for layer in range(tiny.cfg.n_layers):
        for (lk, lv), (pk, pv) in zip(left.kv, plain.kv):
            torch.testing.assert_close(lk, pk, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(lv, pv, atol=1e-4, rtol=1e-4)
        for kind in ("resid_pre", "z", "attn_out", "mlp_out"):
            torch.testing.assert_close(left.act(left.s, kind, layer), plain.act(plain.s, kind, layer), atol=1e-4,
                                       rtol=1e-4)


def test_same_tokens_share_one_cache(tiny):
    """Target and source the same tensor (ablation): one forward, one cache serves both, equal to the run of those
    tokens. Catches the `same` shortcut not taken (the trials run twice), caching half a batch or the logit
    differences of another run."""
    import interp.patching as patching

    clean, _ = _tokens()
    batches = []

    def record(w, tokens):
        batches.append(tokens.shape[0])
        return real(w, tokens)

    real = patching.record
    patching.record = record
    try:
        r = CachedRun(tiny, clean, clean, torch.tensor(ANSWER), torch.tensor(WRONG))
    finally:
        patching.record = real
    assert batches == [B]  # one forward of the B trials, not the same trials twice
    assert r.s is r.t and r.first_diff == P
    want = float(logit_diff(tiny, clean, ANSWER, WRONG).mean())
    assert r.target_ld == pytest.approx(want, abs=1e-4) and r.source_ld == pytest.approx(want, abs=1e-4)
    assert r.act(r.t, "resid_pre", 0).shape[0] == B


def test_residual_sums_and_run_index_errors(tiny):
    """resid_mid = resid_pre + attn_out and resid_post = resid_mid + mlp_out, as TransformerLens caches them;
    run_index refuses what it cannot patch. Catches a sum taken from the wrong run or the wrong activation."""
    clean, bad = _tokens()
    r = CachedRun(tiny, bad, clean, torch.tensor(ANSWER), torch.tensor(WRONG))
    _, cache = tiny.run_with_cache(clean)
    for layer in range(tiny.cfg.n_layers):
        torch.testing.assert_close(r.acts("s", "resid_mid")[layer], cache[f"blocks.{layer}.hook_resid_mid"],
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(r.acts("s", "resid_post")[layer], cache[f"blocks.{layer}.hook_resid_post"],
                                   atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="one position"):
        r.run_index("attn_out", 0, 2, [(None, 0)])
    with pytest.raises(ValueError, match="cannot patch"):
        r.run_index("q", 0, 2, [(3, 0)])


def test_index_setter_copies_one_index_only():
    """index_setter against a hand-built tensor: only the named index takes the source's values, every other
    stays; another activation passes through untouched. Catches a patch at pos instead of pos - start, head and
    position axes swapped, the target modified in place, a pattern patched on the source axis."""
    x = torch.zeros(2, 5, 3, 4)  # [batch, pos (from start 2), head, d_head]
    src = torch.arange(2 * 7 * 3 * 4, dtype=torch.float).view(2, 7, 3, 4) + 1  # positions 0..6
    out = index_setter("z", src, head=1, pos=4)("z", x, 2)
    want = x.clone()
    want[:, 2, 1] = src[:, 4, 1]
    assert torch.equal(out, want) and not x.any()
    out = index_setter("z", src, head=2)("z", x, 2)
    want = x.clone()
    want[:, :, 2] = src[:, 2:, 2]
    assert torch.equal(out, want)
    out = index_setter("resid_pre", src[..., 0, :], pos=3)("resid_pre", x[..., 0, :], 2)
    want = x[..., 0, :].clone()
    want[:, 1] = src[:, 3, 0]
    assert torch.equal(out, want)
    assert torch.equal(index_setter("resid_pre", src[..., 0, :])("resid_pre", x[..., 0, :], 2), src[:, 2:, 0])
    assert index_setter("z", src, head=1)("q", x, 2) is x
    pat = torch.zeros(2, 3, 5, 7)  # [batch, head, dest (from start 2), src]
    psrc = torch.rand(2, 3, 7, 7) + 1
    out = index_setter("pattern", psrc, head=1, pos=5)("pattern", pat, 2)
    want = pat.clone()
    want[:, 1, 3] = psrc[:, 1, 5]
    assert torch.equal(out, want) and not pat.any()
    out = index_setter("pattern", psrc, head=0)("pattern", pat, 2)
    want = pat.clone()
    want[:, 0] = psrc[:, 0, 2:]
    assert torch.equal(out, want)


def test_default_variants_per_forward():
    """The documented stacking: 16 on GPU; a layer's heads for heads / heads_by_pos; 3 positions for the other fast
    sweeps; 4 otherwise. Catches a branch swapped or a device test that never matches."""
    cpu = SimpleNamespace(cfg=SimpleNamespace(device="cpu", n_heads=6))
    gpu = SimpleNamespace(cfg=SimpleNamespace(device=torch.device("cuda", 0), n_heads=6))
    want = {"heads": 6, "heads_by_pos": 6, "resid_pre": 3, "attn_out": 3, "mlp_out": 3, "q": 4, "k_by_pos": 4,
            "pattern": 4, "pattern_by_dest": 4}
    assert {w: default_variants_per_forward(cpu, w) for w in want} == want
    assert {default_variants_per_forward(gpu, w) for w in want} == {16}
    assert set(FAST) == {"resid_pre", "attn_out", "mlp_out", "heads", "heads_by_pos"}


def test_patch_sweep_refuses_bad_arguments(tiny):
    clean, bad = _tokens()
    with pytest.raises(ValueError, match="unknown patching target"):
        patch_sweep(tiny, clean, bad, ANSWER, WRONG, "nope")
    with pytest.raises(ValueError, match="direction"):
        patch_sweep(tiny, clean, bad, ANSWER, WRONG, "heads", direction="both")
    with pytest.raises(ValueError, match="differ in shape"):
        patch_sweep(tiny, clean, bad[:, :-1], ANSWER, WRONG, "heads")


def _result(values, direction="denoise"):
    v = np.asarray(values, float)
    return PatchResult(what="heads", direction=direction, axes=("layer", "head"), values=v, raw=v * 2 + 1,
                       clean_logit_diff=1.0, corrupt_logit_diff=0.0, labels={"head": ["H0", "H1", "H2"]})


def test_top_effect_rows_and_defined_by_hand():
    """Catches: top ranked by value instead of |effect| (a large negative effect is the top one), NaN not ranked
    last, ties broken out of index order, noising effects not 1 - value, rows' labels on the wrong axis, raw and
    value swapped in rows, `defined` true when every value is NaN or false when only some are."""
    r = _result([[0.1, -0.9, np.nan], [0.5, 0.5, 0.2]])
    assert r.top(3) == [((0, 1), -0.9), ((1, 0), 0.5), ((1, 1), 0.5)]
    assert r.top(6)[-1] == ((0, 2), 0.0) and r.defined
    assert len(r.top()) == 5
    n = _result([[1.0, 0.7], [0.0, 1.3]], direction="noise")
    np.testing.assert_allclose(n.effect, [[0.0, 0.3], [1.0, -0.3]])
    assert n.top(2) == [((1, 0), 1.0), ((0, 1), pytest.approx(0.3))]
    assert not _result([[np.nan, np.nan]]).defined
    rows = _result([[0.25, 0.5, 1.0]]).rows()
    assert rows[1] == {"layer": 0, "head": 1, "head_label": "H1", "value": 0.5, "effect": 0.5, "logit_diff": 2.0}
    assert len(rows) == 3 and "layer_label" not in rows[0]
    assert _result([[0.25]], "noise").rows()[0]["effect"] == 0.75


def test_position_token_labels():
    """'name: token' from the FIRST trial's tokens. Catches labels taken from another trial or the decode of the
    wrong token."""
    tok = SimpleNamespace(decode=lambda ids: "".join(f"<{i}>" for i in ids))
    assert position_token_labels(tok, np.array([[5, 6], [7, 8]]), ["a", "b"]) == ["a: <5>", "b: <6>"]


def _schedule(what, first_diff, vpf=None, L=2, H=4):
    """The forwards the module docstring promises for a sweep with the default stacking, derived here from its
    rules: positions before the first difference are not run; fast sweeps (FAST) do not run the last block's
    patches at other positions than the last (resid_pre excepted); a layer's heads share a forward (heads_by_pos:
    one position's heads); resid_pre / attn_out / mlp_out run 3 consecutive positions from the first of them; the
    other sweeps 4 variants of one (layer, position), replayed from that position (all-position ones from the first
    difference); `vpf` variants per forward instead, never mixing the groups. Returns (kind of call, layer, start,
    variants as (pos, head))."""
    kind, axes = VARIANTS[what]
    chunks = lambda vs, n: [vs[i:i + n] for i in range(0, len(vs), n)]  # noqa: E731
    out = []
    for layer in range(L):
        if what in ("resid_pre", "attn_out", "mlp_out"):
            last_only = layer == L - 1 and what != "resid_pre"
            pos = [p for p in range(first_diff, P) if not last_only or p == P - 1]
            out += [("run_index", layer, c[0], [(p, None) for p in c]) for c in chunks(pos, vpf or 3)]
        elif what == "heads":
            if first_diff <= P - 1:
                out += [("run_index", layer, first_diff, c) for c in chunks([(None, h) for h in range(H)], vpf or H)]
        elif what == "heads_by_pos":
            for p in range(first_diff, P):
                if layer < L - 1 or p == P - 1:
                    out += [("run_index", layer, p, c) for c in chunks([(p, h) for h in range(H)], vpf or H)]
        else:
            by = "pos" in axes or "dest_pos" in axes  # the heads of one (layer, position)
            for p in (range(first_diff, P) if by else ([first_diff] if first_diff <= P - 1 else [])):
                out += [("run", layer, p, c) for c in chunks([(p if by else None, h) for h in range(H)], vpf or 4)]
    return out


@pytest.mark.parametrize("what", ["resid_pre", "attn_out", "heads", "heads_by_pos", "q", "k_by_pos"])
def test_the_forwards_run_are_the_documented_schedule(monkeypatch, what):
    """What is run, and in which groups, against the rules the module docstring states (`_schedule`), with clean
    and corrupted inputs differing from position 0, from position 2, at the last position only, and not at all;
    the default stacking, and for the by-position head sweeps 3 variants per forward (which does not divide a
    position's 4 heads).

    Catches (all invisible in the numbers, which stay right, and visible in the time): patches before the first
    difference or at the last block's non-final positions run anyway, the fast path not taken, heads_by_pos
    variants of different positions stacked together, the other sweeps grouped across positions, the default
    stacking not used (4 positions in a forward instead of 3), all-position patches skipped when only the last
    position differs."""
    model = _model("gpt2")
    calls = []
    run_index, run = CachedRun.run_index, CachedRun.run

    def rec_index(self, kind, layer, start, variants):
        calls.append(("run_index", layer, start, list(variants)))
        return run_index(self, kind, layer, start, variants)

    def rec_run(self, layer, start, patches, kind=None):
        calls.append(("run", layer, start, len(patches)))
        return run(self, layer, start, patches, kind)

    monkeypatch.setattr(CachedRun, "run_index", rec_index)
    monkeypatch.setattr(CachedRun, "run", rec_run)
    clean, bad = _tokens()
    first, last = clean.clone(), clean.clone()
    first[:, 0] = (first[:, 0] + 1) % V
    last[:, -1] = (last[:, -1] + 1) % V
    for tokens, first_diff in ((first, 0), (bad, 2), (last, P - 1), (clean.clone(), P)):
        for vpf in (None, 3) if what in ("heads_by_pos", "k_by_pos") else (None,):
            calls.clear()
            patch_sweep(model, clean, tokens, ANSWER, WRONG, what, variants_per_forward=vpf)
            want = [c if c[0] == "run_index" else (*c[:3], len(c[3])) for c in _schedule(what, first_diff, vpf)]
            assert sorted(calls, key=repr) == sorted(want, key=repr), (what, first_diff, vpf)


def test_progress_is_off_by_default_and_errors_name_the_choices(capsys):
    """No progress bar by default; `progress=True` shows one named after the sweep, even off a terminal. Catches
    a progress bar on by default or never (tqdm's `disable=None` hides it off a terminal), the bar's name lost,
    and an error that does not list the valid targets."""
    model = _model("gpt2")
    clean, bad = _tokens()
    patch_sweep(model, clean, bad, ANSWER, WRONG, "heads")
    assert capsys.readouterr().err == ""
    patch_sweep(model, clean, bad, ANSWER, WRONG, "heads", progress=True)
    assert "patch heads" in capsys.readouterr().err
    with pytest.raises(ValueError, match="choose from resid_pre, attn_out, mlp_out, heads"):
        patch_sweep(model, clean, bad, ANSWER, WRONG, "nope")


def test_top_breaks_ties_by_index_in_large_results():
    """Many equal |effect| values in an array long enough that numpy's default sort is not stable: the earlier
    index ranks first, NaN counts as no effect. Catches an unstable sort and NaN left in the ranking."""
    rng = np.random.default_rng(0)
    v = rng.integers(-2, 3, size=(12, 20)).astype(float)
    v[rng.random(v.shape) < 0.1] = np.nan
    r = _result(v)
    e = np.nan_to_num(v, nan=0.0)
    want = sorted(np.ndindex(e.shape), key=lambda i: (-abs(e[i]), i))[:40]
    assert [i for i, _ in r.top(40)] == want
    assert [x for _, x in r.top(40)] == [e[i] for i in want]


def test_which_forward_caches_the_runs(monkeypatch):
    """A tokenizer that pads on the left routes the caching through TransformerLens's run_with_cache (which masks
    padding), one call per distinct run, caching only the hooks patching reads; any other model (no tokenizer, or
    padding on the right) through the project's own forward, one call for both runs. An architecture the replay
    does not support is refused by name. Catches the branch test inverted or reading the wrong attribute, the
    same-tokens shortcut lost in that branch, every activation cached (no filter), the refusal's message lost."""
    import interp.patching as patching
    from interp.arch import UnsupportedArchitecture

    model = _model("gpt2")
    clean, bad = _tokens()
    a, w = torch.tensor(ANSWER), torch.tensor(WRONG)
    seen = []
    real_cache, real_record = patching.cache_last, patching.record
    monkeypatch.setattr(patching, "cache_last", lambda m, t, f: seen.append("tl") or real_cache(m, t, f))
    monkeypatch.setattr(patching, "record", lambda wts, t: seen.append("own") or real_record(wts, t))
    for tok, want in ((None, ["own"]), (SimpleNamespace(padding_side="right"), ["own"]),
                      (SimpleNamespace(), ["own"]), (SimpleNamespace(padding_side="left"), ["tl", "tl"])):
        model.tokenizer, seen[:] = tok, []
        r = CachedRun(model, bad, clean, a, w)
        assert seen == want, tok
    hooks = tuple(patching.HOOK.values())
    assert all(c and all(k.endswith(hooks) for k in c) for c in (r.t, r.s)), sorted(r.s)[:5]
    seen[:] = []
    r = CachedRun(model, clean, clean, a, w)  # the same tokens: one run cached
    assert seen == ["tl"] and r.s is r.t
    model.tokenizer = None
    cfg = SimpleNamespace(**{**model.cfg.__dict__, "original_architecture": "MistralForCausalLM"})
    with pytest.raises(UnsupportedArchitecture, match="supports GPT-2 and Llama.*not MistralForCausalLM"):
        CachedRun(SimpleNamespace(cfg=cfg), bad, clean, a, w)
