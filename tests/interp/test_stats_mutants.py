"""Edges and ties of interp.stats, decided on purpose (the module docstring), each against a brute-force or
hand-computed reference; written to kill the mutants scripts/mutation.sh found alive (docs/testing.md). Each test
names the bugs it catches."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

from interp.stats import (MAX_LABELINGS, _labelings, expected_jaccard, group_contrast, holm, jaccard, mean_ci,
                          pair_contrast, rankdata, spearman, t975, top_k_recall, wilson)


# -- intervals ------------------------------------------------------------------------------------------------------

def test_an_interval_over_one_seed_is_the_value_and_two_seeds_use_dof_1():
    """One seed: low = mean = high. Two seeds: a real t-interval with t(0.975, 1) = 12.706, symmetric about the
    mean. Catches: the one-seed rule applied to two seeds (`n <= 2`), the low end computed as mean + half."""
    m, lo, hi = mean_ci([0.4])
    assert m == lo == hi == pytest.approx(0.4)
    m, lo, hi = mean_ci([1.0, 3.0])
    half = 12.706 * math.sqrt(2.0) / math.sqrt(2)  # sd (n - 1) of [1, 3] is sqrt(2)
    assert (m, lo, hi) == (pytest.approx(2.0), pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    m, lo, hi = mean_ci(np.array([[1.0, 5.0], [2.0, 5.0], [6.0, 5.0]]))
    assert lo[0] < m[0] < hi[0] and m[0] - lo[0] == pytest.approx(hi[0] - m[0])


def test_intervals_are_float64_whatever_the_input():
    """float32 or integer seeds give float64 results. Catches the float conversion dropped (a float32 mean)."""
    m, lo, hi = mean_ci(np.array([0.1, 0.2, 0.4], dtype=np.float32))
    assert m.dtype == lo.dtype == hi.dtype == np.float64
    m, lo, hi = mean_ci(np.array([[1, 2], [3, 5]], dtype=np.int32))
    assert m.dtype == np.float64 and m.tolist() == [2.0, 3.5]


def test_t975_table_between_entries_and_its_floor():
    """dof 1 is the first entry (12.706); between entries the entry below (conservative: 16 -> 15's 2.131); from
    120 on 1.980; dof < 1 refused with its reason. Catches the floor moved to dof 2, the fallback lookup broken
    (`and` instead of `or`, a lookup of nothing) and the refusal's message lost."""
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(15) == 2.131
    assert t975(16) == 2.131 and t975(59) == 2.042 and t975(119) == 2.000 and t975(10_000) == 1.980
    with pytest.raises(ValueError, match="^a t-interval needs at least two values$"):
        t975(0)


def test_wilson_at_one_trial_and_at_none():
    """n = 1 is an interval (k = 1: centre (1 + z^2/2) / (1 + z^2), upper end 1); n = 0 is (NaN, NaN).
    Catches the no-trial rule applied to one trial and NaN replaced by an error."""
    z = 1.96
    centre = (1 + z * z / 2) / (1 + z * z)
    half = z * math.sqrt(z * z / 4) / (1 + z * z)
    lo, hi = wilson(1, 1)
    assert lo == pytest.approx(centre - half) and hi == pytest.approx(1.0)
    lo, hi = wilson(0, 1)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(1 - (centre - half))
    assert all(np.isnan(wilson(0, 0)))


# -- ranks and agreement ---------------------------------------------------------------------------------------------

def _brute_ranks(v):
    v = np.asarray(v, float)
    return np.array([(v < x).sum() + ((v == x).sum() - 1) / 2 for x in v])


def test_ranks_of_booleans_integers_and_numbers_read_as_text():
    """A 0/1 membership mask ranks like its floats; numbers read as text (a CSV column) rank as numbers, not
    lexicographically. Catches the float conversion dropped ("10" sorted before "2", or no ranks at all)."""
    mask = np.array([True, False, True, True, False])
    np.testing.assert_array_equal(rankdata(mask), _brute_ranks(mask.astype(float)))
    np.testing.assert_array_equal(rankdata(np.array([3, 1, 3], dtype=np.uint8)), [1.5, 0, 1.5])
    np.testing.assert_array_equal(rankdata(np.array(["1", "10", "2", "2"])), [0, 3, 1.5, 1.5])


def test_spearman_leaves_out_pairs_missing_on_either_side():
    """A NaN or None on one side drops that pair only. Catches `|` for `&` in the finite mask (a NaN ranked as a
    value) and the float conversion dropped (None)."""
    x = [1.0, 2.0, np.nan, 4.0, 5.0, 6.0]
    y = [2.0, 1.0, 3.0, 4.0, np.nan, 7.0]
    assert spearman(x, y) == pytest.approx(spearman([1, 2, 4, 6], [2, 1, 4, 7]))
    assert spearman([1, None, 3, 4, 2], [1, 2, 3, 4, 3]) == pytest.approx(spearman([1, 3, 4, 2], [1, 3, 4, 3]))
    assert spearman([1, 2, 3, 4], [1, None, 3, 4]) == pytest.approx(1.0)


def test_spearman_at_three_pairs_and_below():
    """Three finite pairs are enough; two are undefined (NaN). Catches the floor moved to 4 and NaN replaced by an
    error."""
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)  # brute: ranks (0,1,2) vs (0,2,1)
    assert np.isnan(spearman([1, 2], [2, 1])) and np.isnan(spearman([1, 2, np.nan], [1, 2, 3]))


def test_spearman_constant_side_is_undefined_without_a_warning_and_unit_spread_is_not_constant():
    """A constant side is NaN by the rule, not by numpy dividing by zero (no RuntimeWarning); ranks whose spread
    happens to be 1 (ties [0.5, 0.5, 2.5, 2.5]) are not constant. Catches `and` for `or` (one constant side reaches
    corrcoef) and the constant test comparing with 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(spearman([1, 1, 1, 1], [1, 2, 3, 4]))
        assert np.isnan(spearman([1, 2, 3, 4], [5, 5, 5, 5]))
    assert rankdata([1, 1, 2, 2]).std() == 1.0
    want = np.corrcoef(_brute_ranks([1, 1, 2, 2]), _brute_ranks([1, 2, 3, 4]))[0, 1]
    assert spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(want)
    assert spearman([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(want)


def _brute_top(v, k):
    """The k largest |v|, ties broken by position (the earlier first)."""
    v = np.abs(np.asarray(v, float))
    return set(sorted(range(len(v)), key=lambda i: (-v[i], i))[:k])


def test_top_k_recall_against_brute_force_with_ties():
    """Ties in |value| (many, in vectors long enough that numpy's default sort is not stable) are broken by
    position on both sides. Catches an unstable sort, the reference or the estimate ranked smallest first, the
    reference's ranking not read at all."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(20, 200))
        x = rng.integers(-2, 3, n).astype(float)
        y = rng.integers(-2, 3, n).astype(float) if rng.random() < 0.5 else rng.normal(size=n)
        for k in (1, 5, 17):
            want = len(_brute_top(x, k) & _brute_top(y, k)) / k
            assert top_k_recall(x, y, k) == pytest.approx(want), (n, k)
            assert top_k_recall(y, x, k) == pytest.approx(len(_brute_top(y, k) & _brute_top(x, k)) / k)
    assert top_k_recall([0, 0, 1, 2], [3, 2, 1, 0], 2) == 0.0  # opposite orders: nothing shared


def test_top_k_recall_edges():
    """k = 1 is defined; k < 1 or no entries are NaN; k above the length is capped; a boolean mask is an estimate
    like its 0/1 floats. Catches the floor moved to 2, NaN replaced by an error, the float conversion dropped."""
    assert top_k_recall([0.1, 0.9], [0.2, 0.8], 1) == 1.0 and top_k_recall([0.9, 0.1], [0.2, 0.8], 1) == 0.0
    assert np.isnan(top_k_recall([1, 2], [1, 2], 0)) and np.isnan(top_k_recall([], [], 3))
    assert top_k_recall([1, 2, 3], [3, 2, 1], 10) == 1.0
    mask = np.array([False, True, True, False])
    assert top_k_recall(mask, [0.1, 0.9, 0.8, 0.0], 2) == 1.0
    assert top_k_recall([0.1, 0.9, 0.8, 0.0], mask, 2) == 1.0


# -- overlaps --------------------------------------------------------------------------------------------------------

def test_jaccard_of_two_empty_sets_is_undefined():
    """Catches the empty case reaching 0 / 0 and NaN replaced by an error."""
    assert np.isnan(jaccard([], [])) and jaccard([1, 2], []) == 0.0 and jaccard([1, 2, 2], [2, 3]) == 1 / 3


def _brute_expected_jaccard(k1, k2, n):
    """Every pair of subsets of sizes k1 and k2 of n items, averaged (tiny n)."""
    vals = [jaccard(a, b) for a in itertools.combinations(range(n), k1) for b in itertools.combinations(range(n), k2)]
    return float(np.mean(vals))


def test_expected_jaccard_against_every_pair_of_subsets():
    """Exact against enumeration, including an empty subset (0, not undefined: |a | b| > 0), one item, and full
    subsets. Catches: one empty subset treated as two (NaN), the validity test requiring non-empty subsets or n >=
    2, the both-empty test checking 1 instead of 0."""
    for n in range(1, 6):
        for k1 in range(n + 1):
            for k2 in range(n + 1):
                if k1 == k2 == 0:
                    continue
                assert expected_jaccard(k1, k2, n) == pytest.approx(_brute_expected_jaccard(k1, k2, n)), (k1, k2, n)
    assert np.isnan(expected_jaccard(0, 0, 5)) and np.isnan(expected_jaccard(0, 0, 1))


@pytest.mark.parametrize("k1, k2, n", [(-1, 2, 5), (2, -1, 5), (6, 2, 5), (2, 6, 5), (0, 0, 0), (1, 1, 0)])
def test_expected_jaccard_refuses_sizes_outside_0_to_n(k1, k2, n):
    """Catches a size check that lets one bad size through (`or` for `and`) or only fails when n < 1 too."""
    with pytest.raises(ValueError, match="must lie in"):
        expected_jaccard(k1, k2, n)


# -- permutation nulls -----------------------------------------------------------------------------------------------

def test_labelings_exact_up_to_the_cap_and_random_beyond_it():
    """Exactly MAX_LABELINGS possible labelings are all enumerated, in order; beyond the cap, MAX_LABELINGS random
    ones, each k distinct sorted models, the same every call. Catches `<` for `<=` at the cap, sampling with
    replacement, an unseeded draw, and a draw that returns nothing usable."""
    exact = _labelings(MAX_LABELINGS, 1)  # C(20000, 1) = MAX_LABELINGS
    assert exact == [(i,) for i in range(MAX_LABELINGS)]
    n, k = 18, 9
    assert math.comb(n, k) > MAX_LABELINGS
    drawn = _labelings(n, k)
    assert len(drawn) == MAX_LABELINGS and drawn == _labelings(n, k)
    assert all(len(set(t)) == k and list(t) == sorted(t) and 0 <= t[0] and t[-1] < n for t in drawn)
    assert len(set(drawn)) > MAX_LABELINGS // 2  # a draw over 48620 labelings, not one repeated


def test_group_contrast_beyond_the_cap_uses_the_random_null():
    """Two groups of 9 (48620 labelings): the null is MAX_LABELINGS random relabelings; well separated groups
    reach p at the resolution of the draw."""
    r = group_contrast(list(range(10, 19)), list(range(9)))
    assert r.n_labelings == MAX_LABELINGS and r.min_p == pytest.approx(1 / math.comb(18, 9))
    assert r.p_greater < 0.001 and r.p_less > 0.999 and r.separated and r.direction == "a>b"


def test_a_tie_between_groups_is_overlap_not_separated():
    """min(a) == max(b) (or max(a) == min(b)) is "overlap": the decided meaning of a tie. Catches `>=` / `<=` in
    the separation test (a tie counted as separated)."""
    for a, b in (([2.0, 3.0], [1.0, 2.0]), ([1.0, 2.0], [2.0, 3.0]), ([1.0], [1.0])):
        r = group_contrast(a, b)
        assert r.direction == "overlap" and not r.separated, (a, b)


def test_group_contrast_below_and_its_fields():
    """Every a below every b is "a<b" with p_less the smallest attainable; the fields hold the finite values, their
    means and difference; to_dict has them all. Catches the "a<b" branch lost or renamed, any field dropped."""
    r = group_contrast([0.1, 0.2, np.nan], [0.5, 0.7, float("inf")])
    assert r.direction == "a<b" and r.separated
    assert r.a == (0.1, 0.2) and r.b == (0.5, 0.7)
    assert r.mean_a == pytest.approx(0.15) and r.mean_b == pytest.approx(0.6) and r.difference == pytest.approx(-0.45)
    assert r.p_less == pytest.approx(1 / 6) == r.min_p and r.p_greater == pytest.approx(1.0)
    d = r.to_dict()
    assert d["direction"] == "a<b" and d["a"] == (0.1, 0.2) and d["n_labelings"] == 6 and len(d) == 12


def test_group_contrast_with_an_empty_or_all_missing_group_is_none():
    """Catches `and` for `or` in the emptiness test (one empty group reaching min() of nothing)."""
    assert group_contrast([1.0, 2.0], []) is None and group_contrast([], [1.0]) is None
    assert group_contrast([np.nan], [1.0, 2.0]) is None
    r = group_contrast([2.0], [1.0])
    assert r.separated and r.min_p == 0.5 and r.n_labelings == 2


def test_group_contrast_p_values_against_brute_force_with_ties_in_the_null():
    """Integer values make many relabelings tie the observed difference exactly: they count as at least as
    extreme (p_greater, p_less, two-sided), as the brute force over every labeling says."""
    a, b = [1, 2, 3, 3], [2, 3, 1, 2]
    allv = np.array(a + b, float)
    obs = np.mean(a) - np.mean(b)
    stats = [allv[list(c)].mean() - np.delete(allv, list(c)).mean() for c in itertools.combinations(range(8), 4)]
    r = group_contrast(a, b)
    assert r.p_greater == pytest.approx(np.mean([s >= obs - 1e-9 for s in stats]))
    assert r.p_less == pytest.approx(np.mean([s <= obs + 1e-9 for s in stats]))
    assert r.p_two_sided == pytest.approx(np.mean([abs(s) >= abs(obs) - 1e-9 for s in stats]))


def _pair_matrix(groups, within=0.9, between=0.1):
    return np.array([[within if gi == gj else between for gj in groups] for gi in groups])


def _brute_pair_p(S, groups, a="finetuned"):
    """p of (mean within - mean between) over every relabelling of the models, leaving out pairs that are not
    finite and relabelings without a finite within or between pair."""
    n = len(groups)
    k = sum(g == a for g in groups)

    def stat(members):
        w, t = [], []
        for i, j in itertools.combinations(range(n), 2):
            if np.isfinite(S[i, j]):
                (w if (i in members) == (j in members) else t).append(S[i, j])
        return (np.mean(w) - np.mean(t)) if w and t else None

    obs = stat({i for i, g in enumerate(groups) if g == a})
    null = [s for s in (stat(set(c)) for c in itertools.combinations(range(n), k)) if s is not None]
    return float(np.mean([s >= obs - 1e-9 for s in null])), len(null)


def test_pair_contrast_min_p_and_p_for_unequal_and_smallest_groups():
    """Perfectly structured similarities reach the smallest attainable p: 2 / C(n, k) for equal groups (swapping
    the labels changes nothing), 1 / C(n, k) for unequal ones; two models per group is enough. Catches the
    unequal-size case given 2 / C(n, k), the two-model floor moved to three, the fields dropped."""
    for groups in (["finetuned"] * 3 + ["scratch"] * 2, ["finetuned"] * 2 + ["scratch"] * 2,
                   ["scratch", "finetuned", "scratch", "finetuned", "finetuned"]):
        S = _pair_matrix(groups)
        r = pair_contrast(S, groups)
        n, k = len(groups), groups.count("finetuned")
        assert r is not None, groups
        assert r.p_value == pytest.approx(_brute_pair_p(S, groups)[0]) == pytest.approx(r.min_p), groups
        assert r.min_p == pytest.approx((2 if 2 * k == n else 1) / math.comb(n, k))
        assert r.n_models == (k, n - k) and r.mean_within == pytest.approx(0.9)
        assert r.mean_between == pytest.approx(0.1) and r.separated
        assert r.to_dict()["n_models"] == (k, n - k)
    assert pair_contrast(_pair_matrix(["finetuned"] * 2 + ["scratch"]), ["finetuned"] * 2 + ["scratch"]) is None


def test_pair_contrast_missing_pairs_are_left_out_one_by_one():
    """A NaN (or None) similarity drops that pair only, later pairs still count; the null leaves out relabelings
    that have no finite within or between pair, as the brute force does. Catches `break` for `continue`, the
    float conversion dropped (None), `or` for `and` in the null's filter."""
    groups = ["finetuned", "finetuned", "scratch", "scratch"]
    S = np.full((4, 4), np.nan)
    for (i, j), v in {(0, 1): 0.8, (2, 3): 0.7, (0, 2): 0.3, (1, 3): 0.5}.items():
        S[i, j] = S[j, i] = v
    r = pair_contrast(S, groups)
    assert sorted(r.within_a + r.within_b) == [0.7, 0.8] and sorted(r.between) == [0.3, 0.5]
    p, n_null = _brute_pair_p(S, groups)
    assert n_null < math.comb(4, 2)  # some relabelings have no finite within or between pair: the filter matters
    assert r.p_value == pytest.approx(p)
    S_obj = S.astype(object)
    S_obj[np.isnan(S)] = None
    assert pair_contrast(S_obj.tolist(), groups) == r
    first_missing = S.copy()
    first_missing[0, 1] = first_missing[1, 0] = np.nan  # the first pair in order: every later one must still count
    r = pair_contrast(first_missing, groups)
    assert r.within_a == () and r.within_b == (0.7,) and sorted(r.between) == [0.3, 0.5]


def test_pair_contrast_without_finite_within_pairs_is_none():
    """Catches `and` for `or` in the emptiness test (no within pair, yet a mean of nothing)."""
    groups = ["finetuned", "finetuned", "scratch", "scratch"]
    S = _pair_matrix(groups)
    S[0, 1] = S[1, 0] = S[2, 3] = S[3, 2] = np.nan
    assert pair_contrast(S, groups) is None


def test_a_between_value_tying_a_within_value_is_not_separated():
    """Catches `<=` for `<` in the pair separation (a tie counted as separated)."""
    groups = ["finetuned", "finetuned", "scratch", "scratch"]
    S = _pair_matrix(groups, within=0.9, between=0.1)
    S[0, 2] = S[2, 0] = 0.9  # one between pair as similar as the within pairs
    r = pair_contrast(S, groups)
    assert max(r.between) == min(r.within_a + r.within_b) and not r.separated


# -- multiplicity ----------------------------------------------------------------------------------------------------

def _brute_holm(p):
    """Holm (1979) from its definition: the i-th smallest of the m finite p-values becomes
    max over j <= i of min(1, (m - j) p_(j)); NaN stays NaN."""
    p = [float("nan") if v is None else float(v) for v in p]
    fin = sorted((v, i) for i, v in enumerate(p) if np.isfinite(v))
    m, out = len(fin), [float("nan")] * len(p)
    for r, (_, i) in enumerate(fin):
        out[i] = max(min(1.0, (m - j) * fin[j][0]) for j in range(r + 1))
    return out


def test_holm_against_its_definition():
    """Random families with ties and NaN, against the definition; adjusted p capped at exactly 1; None counts as
    missing. Catches a cap above 1 (values like 1.2), None not read as NaN, NaN counted in m."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.choice([0.001, 0.01, 0.02, 0.04, 0.3, 0.6, np.nan], size=int(rng.integers(1, 8))).tolist()
        np.testing.assert_allclose(holm(p), _brute_holm(p))
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.01, None, 0.03]), [0.02, np.nan, 0.03])


def test_pair_contrast_records_its_reference_and_refuses_an_unknown_one():
    """Catches the reference not stored in the result (a "within_b" contrast read back as "within") and an
    error that does not name the choices."""
    groups = ["finetuned"] * 2 + ["scratch"] * 3
    r = pair_contrast(_pair_matrix(groups), groups, reference="within_b")
    assert r.reference == "within_b" and r.to_dict()["reference"] == "within_b"
    assert pair_contrast(_pair_matrix(groups), groups).reference == "within"
    with pytest.raises(ValueError, match="'within' or 'within_b'"):
        pair_contrast(_pair_matrix(groups), groups, reference="between")
