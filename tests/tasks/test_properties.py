"""Property-based tests of the generator: for any valid config, answers follow the rule, pairs align, splits are
disjoint."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.cdm import CDMConfig, TaskError, generate, make_pairs


@st.composite
def configs(draw):
    lo = draw(st.integers(10, 50))
    hi = draw(st.integers(lo + 30, 99))
    cohs = tuple(sorted(draw(st.sets(st.integers(2, 100), min_size=1, max_size=4))))
    scale = draw(st.sampled_from([0.2, 0.3, 0.5]))
    samples = draw(st.integers(1, 3))
    noise = 0.0 if samples == 1 and draw(st.booleans()) else draw(st.floats(0.5, 6.0))
    try:
        return CDMConfig(coherences=cohs, number_range=(lo, hi), diff_per_coherence=scale,
                         cue_position=draw(st.sampled_from(["before", "after"])), n_samples=samples, noise_sd=noise)
    except TaskError:
        return CDMConfig()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=configs(), seed=st.integers(0, 10_000))
def test_any_valid_config(config, seed, tokenizer):
    b = generate(config, 64, seed=seed, tokenizer=tokenizer, split="train")
    i = np.arange(len(b))
    clean = b.meta["clean_numbers"][i, b.meta["context"]]
    assert np.array_equal(b.labels, (clean[:, 1] > clean[:, 0]).astype(int))
    lo, hi = config.number_range
    assert b.meta["numbers"].min() >= lo and b.meta["numbers"].max() <= hi
    for corruption in ("context-flip", "relevant-flip", "irrelevant-flip"):
        c, d = make_pairs(config, 16, seed=seed, tokenizer=tokenizer, corruption=corruption)
        assert c.tokens.shape == d.tokens.shape == (16, int(config.prepend_bos) + 3 + 2 * (1 + 2 * config.n_samples) + 2)
        assert (c.labels == d.labels).all() == (corruption == "irrelevant-flip")
    val = generate(config, 64, seed=seed, tokenizer=tokenizer, split="val")
    assert not ({bytes(r) for r in b.tokens} & {bytes(r) for r in val.tokens})
