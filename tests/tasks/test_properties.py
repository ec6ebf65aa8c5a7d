"""Property-based tests of the generator: for any valid config, answers follow the rule, pairs align, splits are
disjoint."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.cdm import CDMConfig, generate, make_pairs

MAX_EXAMPLES = 25


@st.composite
def configs(draw):
    """Only valid configs, by construction (no example is rejected or replaced): coherences whose number
    differences all differ (`unique_by`), a number range wide enough for the largest difference."""
    scale = draw(st.sampled_from([0.2, 0.3, 0.5]))
    diff = CDMConfig(diff_per_coherence=scale).diff
    cohs = tuple(sorted(draw(st.lists(st.integers(2, 100), min_size=1, max_size=4, unique_by=diff))))
    gap = max(30, max(diff(c) for c in cohs))  # hi - lo >= the largest difference (and at least 30, as before)
    lo = draw(st.integers(10, min(50, 99 - gap)))
    hi = draw(st.integers(lo + gap, 99))
    samples = draw(st.integers(1, 3))
    noise = 0.0 if samples == 1 and draw(st.booleans()) else draw(st.floats(0.5, 6.0))
    return CDMConfig(coherences=cohs, number_range=(lo, hi), diff_per_coherence=scale,
                     cue_position=draw(st.sampled_from(["before", "after"])), n_samples=samples, noise_sd=noise)


def test_any_valid_config(tokenizer):
    """Catches a generator whose labels do not follow the relevant modality's numbers, numbers outside the range
    (e.g. noisy samples not clipped), pairs of the wrong length for n_samples, a corruption that changes the wrong
    thing, or splits that share trials, on configs across the whole valid space. The strategy builds only valid
    configs (a TaskError here fails the test): it used to replace an invalid draw by the default config, a third of
    all examples, so much of the run tested the default only. The checks after the run count what was tested: never
    the default, mostly distinct configs, every kind of config (bounds loose enough never to fail by chance: 0 of
    800 runs of the strategy alone did)."""
    seen: list[CDMConfig] = []

    @settings(max_examples=MAX_EXAMPLES, deadline=None)
    @given(config=configs(), seed=st.integers(0, 10_000))
    def check(config, seed):
        seen.append(config)
        b = generate(config, 64, seed=seed, tokenizer=tokenizer, split="train")
        i = np.arange(len(b))
        clean = b.meta["clean_numbers"][i, b.meta["context"]]
        assert np.array_equal(b.labels, (clean[:, 1] > clean[:, 0]).astype(int))
        lo, hi = config.number_range
        assert b.meta["numbers"].min() >= lo and b.meta["numbers"].max() <= hi
        for corruption in ("context-flip", "relevant-flip", "irrelevant-flip"):
            c, d = make_pairs(config, 16, seed=seed, tokenizer=tokenizer, corruption=corruption)
            n_tokens = int(config.prepend_bos) + 3 + 2 * (1 + 2 * config.n_samples) + 2
            assert c.tokens.shape == d.tokens.shape == (16, n_tokens)
            assert (c.labels == d.labels).all() == (corruption == "irrelevant-flip")
        val = generate(config, 64, seed=seed, tokenizer=tokenizer, split="val")
        assert not ({bytes(r) for r in b.tokens} & {bytes(r) for r in val.tokens})

    check()
    # what was tested: configs across the valid space, not one config again and again (the default least of all)
    distinct = set(seen)
    assert len(seen) >= MAX_EXAMPLES and CDMConfig() not in distinct, "the default config was tested"
    assert len(distinct) >= 0.5 * len(seen), f"only {len(distinct)} distinct configs in {len(seen)} examples"
    assert {c.cue_position for c in distinct} == {"before", "after"}
    assert {len(c.coherences) > 1 for c in distinct} == {True, False}  # one coherence, and several
    assert len({c.n_samples for c in distinct}) >= 2 and len({c.diff_per_coherence for c in distinct}) >= 2
    assert sum(c.noise_sd > 0 for c in distinct) >= 0.25 * len(distinct)  # noisy samples (clipping) are tested
