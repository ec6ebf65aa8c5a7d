"""Statistics over trained models: intervals over seeds, ranks, overlaps with their chance levels, and the nulls
behind every fine-tuned vs scratch contrast.

The unit of replication is the trained model (one seed), never the trial. Two kinds of contrast:

- Group contrast: one number per model (e.g. CKA with the base at one layer). The between-group difference of
  means is set against the spread within each group: "separated" means every value of one group lies above every
  value of the other; the exact permutation test over model labels gives p (with k seeds per group there are
  C(2k, k) labelings, so the smallest attainable one-sided p is 1 / C(2k, k): 0.05 for k = 3).
- Pair contrast: one number per PAIR of models (a similarity: CKA between two models, circuit overlap, the
  correlation of two patching maps). Between-group pairs (fine-tuned i vs scratch j) are set against
  within-group pairs (fine-tuned i vs j, scratch i vs j): "separated" means every between value lies below every
  within value; the permutation test relabels models, not pairs (pairs sharing a model are not independent).

Every 95% interval in the project is `mean_ci`: the mean over seeds +- t(0.975, n - 1) * sd / sqrt(n).

Ties and edges, decided on purpose (tests/interp/test_stats_mutants.py):

- A tie between groups is not a separation. Group contrast: "a>b" needs min(a) > max(b) strictly, "a<b" needs
  max(a) < min(b); one a value equal to one b value makes the direction "overlap" and `separated` False (so a claim
  resting on a separation does not hold on a tie). Pair contrast: a between value equal to a within value makes
  `separated` False. Permutation p-values count relabelings whose statistic ties the observed one (within 1e-12) as
  at least as extreme, so a tie never makes p smaller.
- An interval over one seed is the value itself (low = mean = high): zero width means "no spread measured", not
  certainty; `t975` refuses fewer than two values (dof < 1) rather than inventing a width.
- "Undefined" is NaN (or None for a whole contrast), never 0: Spearman with fewer than 3 pairs finite in both or a
  constant side, top-k recall with k < 1, the Jaccard index of two empty sets, the expected Jaccard index of two
  empty subsets, a Wilson interval over no trials; `group_contrast` is None when a group has no finite value and
  `pair_contrast` when a group has fewer than two models or no finite within or between pair. Inputs are read as
  floats: None is missing (NaN) and booleans count as 0 / 1.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from jaxtyping import Float

_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 60: 2.000,
         120: 1.980}
MAX_LABELINGS = 20_000


def t975(dof: int) -> float:
    """The 0.975 quantile of Student's t with `dof` degrees of freedom (table; between entries the entry below,
    which is larger: conservative; 1.980 from 120 on). ValueError for dof < 1 (fewer than two values)."""
    if dof < 1:
        raise ValueError("a t-interval needs at least two values")
    return _T975.get(dof) or _T975[max(k for k in _T975 if k <= dof)]


def mean_ci(values: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% t-interval (low, high) over `axis` (seeds), as float64 whatever the input's dtype. With one
    value the interval is the value itself (low = mean = high: no spread measured, not certainty); from two on
    it is mean -+ t975(n - 1) * sd / sqrt(n) (sd with n - 1)."""
    v = np.asarray(values, dtype=float)
    n = v.shape[axis]
    m = v.mean(axis)
    if n < 2:
        return m, m, m
    half = t975(n - 1) * v.std(axis, ddof=1) / np.sqrt(n)
    return m, m - half, m + half


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of a proportion k / n (how precisely ONE model's accuracy was measured over trials);
    (NaN, NaN), undefined, with no trials (n < 1)."""
    if n < 1:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def rankdata(v: Float[np.ndarray, " n"]) -> Float[np.ndarray, " n"]:
    """Ranks from 0, ties sharing the average of the ranks they span ([1, 3, 3, 0] -> [1, 2.5, 2.5, 0])."""
    v = np.asarray(v, dtype=float)
    order = np.argsort(v, kind="mergesort")
    sv = v[order]
    edges = np.r_[0, np.flatnonzero(np.diff(sv) != 0) + 1, len(v)]
    ranks = np.empty(len(v))
    for s, e in zip(edges[:-1], edges[1:]):
        ranks[order[s:e]] = (s + e - 1) / 2
    return ranks


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation over the entries finite in both (NaN with fewer than 3 or a constant side)."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    rx, ry = rankdata(x[ok]), rankdata(y[ok])
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def top_k_recall(estimate: Any, reference: Any, k: int) -> float:
    """Share of the reference's top k entries (by |value|) that are also among the estimate's top k. Ties in
    |value| are broken by position (the earlier entry ranks higher); k is capped at the number of entries; NaN
    (undefined) when k < 1 or there are no entries."""
    e, r = np.abs(np.asarray(estimate, float).ravel()), np.abs(np.asarray(reference, float).ravel())
    k = min(k, len(r))
    if k < 1:
        return float("nan")
    top_r = set(np.argsort(-r, kind="stable")[:k].tolist())
    top_e = set(np.argsort(-e, kind="stable")[:k].tolist())
    return len(top_r & top_e) / k


def jaccard(a: Any, b: Any) -> float:
    """|a & b| / |a | b| of two collections taken as sets; NaN (undefined) when both are empty."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else float("nan")


def expected_jaccard(k1: int, k2: int, n: int) -> float:
    """Expected Jaccard index of two independent uniformly random subsets of sizes k1 and k2 of n items (exact,
    summing over the hypergeometric distribution of their intersection). NaN when both sizes are 0 (the Jaccard
    index of two empty sets is undefined); ValueError unless 0 <= k1, k2 <= n and n >= 1."""
    if not (0 <= k1 <= n and 0 <= k2 <= n) or n < 1:
        raise ValueError(f"subset sizes {k1}, {k2} must lie in 0..{n}")
    if k1 == 0 and k2 == 0:
        return float("nan")
    total = math.comb(n, k2)
    out = 0.0
    for i in range(max(0, k1 + k2 - n), min(k1, k2) + 1):
        p = math.comb(k1, i) * math.comb(n - k1, k2 - i) / total
        out += p * i / (k1 + k2 - i)
    return out


def _labelings(n: int, k: int, seed: int = 0) -> list[tuple[int, ...]]:
    """Every way to pick the k members of group A among n models, in lexicographic order, when there are at most
    MAX_LABELINGS; else MAX_LABELINGS random ones (each k distinct models, sorted; drawn with `seed`: the same
    draw every call)."""
    if math.comb(n, k) <= MAX_LABELINGS:
        return list(itertools.combinations(range(n), k))
    rng = np.random.default_rng(seed)
    return [tuple(sorted(rng.choice(n, k, replace=False).tolist())) for _ in range(MAX_LABELINGS)]


@dataclass(frozen=True)
class GroupContrast:
    """One value per model in groups a and b (e.g. fine-tuned and scratch)."""

    a: tuple[float, ...]
    b: tuple[float, ...]
    mean_a: float
    mean_b: float
    difference: float  # mean_a - mean_b
    separated: bool  # every a above every b, or every a below every b (strictly: a tie is "overlap")
    direction: str  # "a>b", "a<b" or "overlap"
    p_greater: float  # permutation p of mean_a - mean_b >= observed
    p_less: float
    p_two_sided: float
    min_p: float  # the smallest one-sided p this design can reach: 1 / C(n_a + n_b, n_a)
    n_labelings: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def group_contrast(a: Any, b: Any) -> GroupContrast | None:
    """Between-group difference with its exact permutation null; None when a group has no finite value (NaN and
    inf values are dropped first). A tie between the groups (min of one = max of the other) is "overlap", not
    separated. With one value per group the contrast exists (separated when the two differ) and min_p is 1/2."""
    a = [float(v) for v in a if np.isfinite(v)]
    b = [float(v) for v in b if np.isfinite(v)]
    if not a or not b:
        return None
    allv = np.array(a + b)
    obs = np.mean(a) - np.mean(b)
    labs = _labelings(len(allv), len(a))
    stats = []
    for lab in labs:
        mask = np.zeros(len(allv), bool)
        mask[list(lab)] = True
        stats.append(allv[mask].mean() - allv[~mask].mean())
    s = np.array(stats)
    eps = 1e-12
    direction = "a>b" if min(a) > max(b) else "a<b" if max(a) < min(b) else "overlap"
    return GroupContrast(a=tuple(a), b=tuple(b), mean_a=float(np.mean(a)), mean_b=float(np.mean(b)),
                         difference=float(obs), separated=direction != "overlap", direction=direction,
                         p_greater=float((s >= obs - eps).mean()), p_less=float((s <= obs + eps).mean()),
                         p_two_sided=float((np.abs(s) >= abs(obs) - eps).mean()),
                         min_p=1 / math.comb(len(allv), len(a)), n_labelings=len(labs))


@dataclass(frozen=True)
class PairContrast:
    """Similarities of model pairs: within group a, within group b, and between the groups."""

    within_a: tuple[float, ...]
    within_b: tuple[float, ...]
    between: tuple[float, ...]
    mean_within: float
    mean_between: float
    separated: bool  # every between value below every within value (strictly: a tie is not separated)
    p_value: float  # permutation p of (mean within - mean between) >= observed, relabelling models
    min_p: float
    n_models: tuple[int, int]
    chance: float | None = None  # the similarity expected by chance (e.g. random circuits of the same sizes)
    reference: str = "within"  # the pairs `between` is set against: "within" (both groups) or "within_b" (b's only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pair_contrast(sim: Any, groups: list[str], a: str = "finetuned", b: str = "scratch",
                  chance: float | None = None, reference: str = "within") -> PairContrast | None:
    """`sim[i, j]` is the similarity of models i and j (symmetric; the diagonal is ignored); `groups[i]` names
    model i's group. None when a group has fewer than two models (no within-group pair). `reference`: what the
    between-group pairs are set against, "within" (the pairs within either group) or "within_b" (group b's own
    pairs only: when group a's models share their initialisation, their similarity to each other is inflated by
    it, and only b's pairs, which share nothing, are a fair null). The statistic, `separated` and the permutation
    (relabelling models) all read the same reference."""
    if reference not in ("within", "within_b"):
        raise ValueError(f"reference must be 'within' or 'within_b', not {reference!r}")
    S = np.asarray(sim, dtype=float)
    idx_a = [i for i, g in enumerate(groups) if g == a]
    idx_b = [i for i, g in enumerate(groups) if g == b]
    if len(idx_a) < 2 or len(idx_b) < 2:
        return None
    models = idx_a + idx_b

    def split(members_a: set[int]) -> tuple[list[float], list[float], list[float]]:
        wa, wb, bt = [], [], []
        for i, j in itertools.combinations(models, 2):
            v = S[i, j]
            if not np.isfinite(v):
                continue
            ia, ja = i in members_a, j in members_a
            (wa if ia and ja else wb if not ia and not ja else bt).append(float(v))
        return wa, wb, bt

    ref = (lambda xa, xb: xa + xb) if reference == "within" else (lambda xa, xb: xb)  # noqa: E731
    wa, wb, bt = split(set(idx_a))
    within = ref(wa, wb)
    if not within or not bt:
        return None
    obs = np.mean(within) - np.mean(bt)
    stats = []
    labs = _labelings(len(models), len(idx_a))
    for lab in labs:
        xa, xb, xt = split({models[i] for i in lab})
        if ref(xa, xb) and xt:
            stats.append(np.mean(ref(xa, xb)) - np.mean(xt))
    s = np.array(stats)
    return PairContrast(within_a=tuple(wa), within_b=tuple(wb), between=tuple(bt), mean_within=float(np.mean(within)),
                        mean_between=float(np.mean(bt)), separated=max(bt) < min(within),
                        p_value=float((s >= obs - 1e-12).mean()),
                        min_p=(2 if len(idx_a) == len(idx_b) and reference == "within" else 1) / len(labs),
                        n_models=(len(idx_a), len(idx_b)), chance=chance, reference=reference)


def holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (the family-wise error rate; Holm 1979): sorted
    ascending, the i-th (from 0) becomes max over j <= i of min(1, (m - j) p_(j)), m the number of finite p-values;
    NaN stays NaN and does not count in m. A part is significant at level alpha when its adjusted p <= alpha."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out
