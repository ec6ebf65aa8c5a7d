"""Seed-level statistics against brute-force definitions: tie ranks, Spearman, chance overlap, permutation nulls."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from interp.stats import (expected_jaccard, group_contrast, jaccard, mean_ci, pair_contrast, rankdata, spearman,
                          top_k_recall, wilson)


def _brute_ranks(v):
    v = np.asarray(v, float)
    return np.array([(v < x).sum() + ((v == x).sum() - 1) / 2 for x in v])


def test_tie_ranks():
    np.testing.assert_array_equal(rankdata([1, 3, 3, 0]), [1, 2.5, 2.5, 0])
    rng = np.random.default_rng(0)
    for _ in range(50):
        v = rng.integers(0, 5, size=rng.integers(1, 12))
        np.testing.assert_allclose(rankdata(v), _brute_ranks(v))


def test_spearman_is_pearson_of_average_ranks():
    rng = np.random.default_rng(1)
    for _ in range(20):
        x, y = rng.integers(0, 4, 15).astype(float), rng.normal(size=15)
        want = np.corrcoef(_brute_ranks(x), _brute_ranks(y))[0, 1]
        assert spearman(x, y) == pytest.approx(want)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_expected_jaccard_matches_simulation():
    rng = np.random.default_rng(2)
    for k1, k2, n in ((10, 10, 54), (3, 7, 12), (1, 1, 5)):
        sims = [jaccard(rng.choice(n, k1, replace=False), rng.choice(n, k2, replace=False)) for _ in range(20000)]
        assert expected_jaccard(k1, k2, n) == pytest.approx(np.mean(sims), abs=0.005)
    assert expected_jaccard(5, 5, 5) == 1.0


def test_group_contrast_exact_permutation():
    r = group_contrast([0.9, 0.8, 0.85], [0.1, 0.2, 0.15])
    assert r.separated and r.direction == "a>b"
    assert r.p_greater == pytest.approx(1 / 20) and r.min_p == pytest.approx(1 / 20) and r.n_labelings == 20
    assert r.p_less == pytest.approx(1.0) and r.p_two_sided == pytest.approx(2 / 20)
    # brute force over the 20 labelings for overlapping groups
    a, b = [0.3, 0.6, 0.5], [0.4, 0.2, 0.55]
    allv = np.array(a + b)
    obs = np.mean(a) - np.mean(b)
    stats = [allv[list(c)].mean() - np.delete(allv, list(c)).mean() for c in itertools.combinations(range(6), 3)]
    r = group_contrast(a, b)
    assert not r.separated and r.direction == "overlap"
    assert r.p_greater == pytest.approx(np.mean([s >= obs - 1e-12 for s in stats]))


def test_pair_contrast_relabels_models_not_pairs():
    # two groups of three: within-group similarity 0.9, between 0.1
    g = ["finetuned"] * 3 + ["scratch"] * 3
    S = np.array([[0.9 if g[i] == g[j] else 0.1 for j in range(6)] for i in range(6)])
    r = pair_contrast(S, g, chance=0.2)
    assert r.separated and len(r.between) == 9 and len(r.within_a) == len(r.within_b) == 3
    assert r.p_value == pytest.approx(2 / 20) and r.min_p == pytest.approx(2 / 20) and r.chance == 0.2
    # no group structure: not separated, p large
    rng = np.random.default_rng(3)
    R = rng.uniform(size=(6, 6))
    R = (R + R.T) / 2
    r = pair_contrast(R, g)
    assert r.p_value > 0.1 or not r.separated
    assert pair_contrast(S[:3, :3], ["finetuned", "finetuned", "scratch"]) is None  # one scratch model: no null


def test_intervals():
    m, lo, hi = mean_ci(np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 2.0]]))
    np.testing.assert_allclose(m, [2.0, 2.0])
    assert hi[0] - m[0] == pytest.approx(4.303 * 1.0 / math.sqrt(3)) and lo[1] == hi[1] == 2.0
    lo, hi = wilson(45, 50)
    assert lo == pytest.approx(0.7864, abs=1e-3) and hi == pytest.approx(0.9565, abs=1e-3)
    assert top_k_recall([5, 4, 0, 0], [1, 9, 8, 0], 2) == 0.5
