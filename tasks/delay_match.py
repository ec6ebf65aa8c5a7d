"""The delayed match-to-sample task (Miller, Erickson & Desimone 1996; NeuroGym `DelayMatchSample`) as tokens.

What NeuroGym does (neurogym/neurogym, neurogym/envs/delaymatchsample.py, class DelayMatchSample):
  periods    fixation 300 ms, sample 500, delay 1000, test 500, decision 900 (dt = 100 ms); the fixation input
             stays on until the decision period; the delay shows no stimulus at all
  stimulus   an angle on a ring, seen through `dim_ring` (default 2) input units tuned as 0.5 + 0.5 cos(unit angle
             - angle), with Gaussian input noise (sigma = 1, scaled by 1/sqrt(dt)) during sample and test
  trial      ground truth match (1) or non-match (2) with probability 1/2 each; the sample angle is one of the
             `dim_ring` equally spaced angles (by default just 0 and pi), uniformly; a match test repeats the
             sample angle, a non-match test is always the diametrically opposite angle (sample + pi): the least
             similar stimulus, never a near one
  response   fixate / match / non-match in the decision period; reward +1 correct, 0 wrong, -0.1 for breaking
             fixation. (The sibling `DelayMatchSampleDistractor1D` shows three tests, one matching, the others
             uniform random angles, and asks for a response at the matching one.)

This token version:
  <bos> sample 43 then 17 62 test 43. answer   ->  " same"       (side 1; " different" is side 0)
Departures from NeuroGym: integers from `number_range` instead of ring angles; no noise, time steps, fixation
input or rewards, one answer word at the "answer" position; the match share is `match_fraction` (NeuroGym 1/2);
a non-match test is a *near lure* 1..`lure_distance` from the sample with share `lure_fraction` (uniform over the
offsets that stay in range), otherwise uniform over the numbers farther away (never the "opposite" stimulus), so
similarity is graded and closeness alone does not answer; the delay holds `n_distractors` random numbers after
" then" (NeuroGym's delay is empty), uniform over the range but never the sample or the test, so none can act as
a match (they may repeat each other); a held-out number range gives a "gen" split, and train/val/test partition
the trials by a hash of their tokens.

Conventions: trials = the batch axis; `distance` = |test - sample| (P(same) against it is the generalisation
curve; it grows towards " different"); congruent = the shortcut "same iff distance <= lure_distance" is right,
so the incongruent trials are exactly the near lures ((1 - match_fraction) * lure_fraction of trials).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.base import (SPLITS, Corruption, Task, TaskError, TokenTask, TrialBatch, check_finite, check_name,
                        check_number_ranges, check_split_fractions, columns, layout_of, number_columns, number_table,
                        single_token, split_range, token_ids, with_number_symbols)

NAME = "DelayMatchSample"
CORRUPTION_INFO = {
    "test-change": Corruption("a match test becomes a near lure, a non-match test becomes the sample: the answer "
                              "flips", True, "all trials (match trials whose distractors cover every near lure "
                              "are skipped)"),
    "distractor-change": Corruption("every distractor redrawn (another number, still neither sample nor test): the "
                                    "answer is unchanged (a control)", False),
}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class DelayMatchConfig:
    """Every choice of the token format, with documented defaults.

    number_range: inclusive range of the integers shown (sample, test, distractors).
    n_distractors: random numbers shown in the delay after `delay_word`, never equal to the sample or the test.
    match_fraction: share of match trials (test == sample).
    lure_fraction: share of the non-match trials whose test is a near lure, 1..lure_distance from the sample.
    heldout_number_range: () or (a, b) at one end of number_range: train/val/test numbers avoid it, "gen" uses it.
    split_fractions: train/val/test shares of the trial space, assigned by a hash of the trial's tokens.
    answer_words: (non-match, match) answer words, each a single token.
    """

    name: str = NAME
    number_range: tuple[int, int] = (10, 99)
    n_distractors: int = 2
    match_fraction: float = 0.5
    lure_fraction: float = 0.5
    lure_distance: int = 2
    sample_word: str = " sample"
    delay_word: str = " then"
    test_word: str = " test"
    separator: str = "."
    query_word: str = " answer"
    answer_words: tuple[str, ...] = (" different", " same")
    heldout_number_range: tuple[int, ...] = ()
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    prepend_bos: bool = True

    def __post_init__(self) -> None:
        check_name(self.name, NAME)
        check_finite(self)
        if not all(_is_int(x) for x in (*self.number_range, *self.heldout_number_range)):
            raise TaskError("number_range and heldout_number_range must hold integers")
        check_number_ranges(self.number_range, self.heldout_number_range)
        for key, low in (("n_distractors", 0), ("lure_distance", 1)):
            if not _is_int(getattr(self, key)) or getattr(self, key) < low:
                raise TaskError(f"{key} must be an integer >= {low}, got {getattr(self, key)!r}")
        for key in ("match_fraction", "lure_fraction"):
            f = getattr(self, key)
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and 0 <= f <= 1):
                raise TaskError(f"{key} must be a number in [0, 1], got {f!r}")
        self._check_words()
        for split in ("train", "gen") if self.has_gen else ("train",):
            lo, hi = self.split_range(split)
            if hi - lo < 2 * self.lure_distance + 1:
                raise TaskError(f"number range {lo}..{hi} ({split}) is too small for lure_distance "
                                f"{self.lure_distance}: every sample needs a non-match farther than that")
        check_split_fractions(self.split_fractions)
        if not isinstance(self.prepend_bos, bool):
            raise TaskError(f"prepend_bos must be True or False, got {self.prepend_bos!r}")

    def _check_words(self) -> None:
        if len(self.answer_words) != 2 or len(set(self.answer_words)) != 2:
            raise TaskError(f"answer_words must be two distinct words, got {list(self.answer_words)}")
        words = [self.sample_word, self.delay_word, self.test_word, self.separator, self.query_word,
                 *self.answer_words]
        if not all(isinstance(w, str) and w for w in words):
            raise TaskError(f"task words must be non-empty strings, got {words}")
        if len(set(words)) != len(words):
            raise TaskError(f"task words must all differ, got {words}")
        numbers = {f" {n}" for n in range(self.number_range[0], self.number_range[1] + 1)}
        if numbers & set(words):
            raise TaskError(f"a task word collides with a number symbol: {sorted(numbers & set(words))}")

    @property
    def has_gen(self) -> bool:
        return bool(self.heldout_number_range)

    def split_range(self, split: str) -> tuple[int, int]:
        return split_range(self.number_range, self.heldout_number_range, split)


def required_symbols(config: DelayMatchConfig) -> list[str]:
    """What a tokenizer made for this project keeps whole (`tasks.base.with_number_symbols`)."""
    words = [config.sample_word, config.delay_word, config.test_word, config.separator, config.query_word,
             *config.answer_words]
    return with_number_symbols(words, config.number_range)


@dataclass(frozen=True)
class Vocab:
    """Token ids of every symbol; words may be several tokens, every number has one token length."""

    words: dict[str, tuple[int, ...]]  # sample_word, delay_word, test_word, separator, query_word
    answers: tuple[int, int]
    bos: int | None
    lo: int
    numbers: np.ndarray  # [number, token] ids of " n" at row n - lo


def _build_vocab(config: DelayMatchConfig, tokenizer: Any) -> Vocab:
    bos = getattr(tokenizer, "bos_token_id", None) if config.prepend_bos else None
    if config.prepend_bos and bos is None:
        raise TaskError("prepend_bos is set but the tokenizer has no BOS token")
    words = {k: token_ids(tokenizer, getattr(config, k))
             for k in ("sample_word", "delay_word", "test_word", "separator", "query_word")}
    answers = tuple(single_token(tokenizer, w, "answer word") for w in config.answer_words)
    lo, hi = config.number_range
    return Vocab(words, (answers[0], answers[1]), bos, lo, number_table(tokenizer, lo, hi))


def _parts(config: DelayMatchConfig, v: Vocab) -> list[tuple[str, Any]]:
    """(position name, fixed token ids, or "sample" / "test" / a distractor index) of each symbol, in order."""
    w = v.words
    parts: list[tuple[str, Any]] = [("bos", (v.bos,))] if v.bos is not None else []
    parts += [("sample_word", w["sample_word"]), ("sample", "sample"), ("delay", w["delay_word"])]
    parts += [(f"distractor{d}", d) for d in range(config.n_distractors)]
    return parts + [("test_word", w["test_word"]), ("test", "test"), ("sep", w["separator"]),
                    ("answer", w["query_word"])]


def layout(config: DelayMatchConfig, v: Vocab) -> tuple[dict[str, int], list[str]]:
    """Named positions and a label per position, the same for every trial of a config."""
    k = v.numbers.shape[1]
    return layout_of([(name, len(p) if isinstance(p, tuple) else k) for name, p in _parts(config, v)])


def _render(config: DelayMatchConfig, v: Vocab, c: dict[str, np.ndarray]) -> np.ndarray:
    n, cols = len(c["sample"]), []
    for _, p in _parts(config, v):
        number = c[p] if isinstance(p, str) else None if isinstance(p, tuple) else c["distractors"][:, p]
        cols += columns(n, p) if number is None else number_columns(v.numbers, v.lo, number)
    return np.stack(cols, axis=1)


def _near(sample: np.ndarray, lo: int, hi: int, dist: int, avoid: np.ndarray | None = None):
    """Candidate near lures [trials, 2 * dist] (sample -dist..-1, +1..+dist) and which are allowed (in range and,
    given `avoid` [trials, k], not among those numbers)."""
    offsets = np.r_[np.arange(-dist, 0), np.arange(1, dist + 1)]
    cand = sample[:, None] + offsets[None, :]
    ok = (cand >= lo) & (cand <= hi)
    if avoid is not None and avoid.shape[1]:
        ok &= ~(cand[:, :, None] == avoid[:, None, :]).any(-1)
    return cand, ok


def _pick(cand: np.ndarray, ok: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One allowed candidate per trial, uniformly (rows without one give their first candidate)."""
    score = np.where(ok, rng.random(cand.shape), -1.0)
    return cand[np.arange(len(cand)), score.argmax(1)]


def _excluding(exclude: np.ndarray, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
    """A number of lo..hi per trial, uniformly over those not in its row of `exclude` [trials, k]."""
    ex = np.sort(exclude, axis=1)
    new = np.ones(ex.shape, dtype=bool)
    new[:, 1:] = ex[:, 1:] != ex[:, :-1]
    x = lo + np.floor(rng.random(len(ex)) * (hi - lo + 1 - new.sum(1))).astype(np.int64)
    for j in range(ex.shape[1]):  # step past each excluded number in increasing order
        x += new[:, j] & (x >= ex[:, j])
    return x


def _distractors(sample: np.ndarray, test: np.ndarray, old: np.ndarray | None, config: DelayMatchConfig, lo: int,
                 hi: int, rng: np.random.Generator) -> np.ndarray:
    """[trials, n_distractors] numbers, each neither the sample nor the test (nor, given `old`, the one it replaces)."""
    cols = [_excluding(np.stack([sample, test] + ([] if old is None else [old[:, d]]), 1), lo, hi, rng)
            for d in range(config.n_distractors)]
    return np.stack(cols, 1) if cols else np.zeros((len(sample), 0), dtype=np.int64)


def _sample(config: DelayMatchConfig, n: int, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
    lo, hi = config.split_range(split)
    dist = config.lure_distance
    sample = rng.integers(lo, hi + 1, n)
    match = rng.random(n) < config.match_fraction
    lure = ~match & (rng.random(n) < config.lure_fraction)
    block = np.clip(sample[:, None] + np.arange(-dist, dist + 1), lo, hi)  # the sample and its near lures
    test = np.where(match, sample, np.where(lure, _pick(*_near(sample, lo, hi, dist), rng),
                                            _excluding(block, lo, hi, rng)))  # far: uniform outside the block
    return {"sample": sample, "test": test, "distractors": _distractors(sample, test, None, config, lo, hi, rng)}


def _assemble(config: DelayMatchConfig, v: Vocab, c: dict[str, np.ndarray], split: str, seed: int) -> TrialBatch:
    signed = c["test"] - c["sample"]
    distance = np.abs(signed)
    match = distance == 0
    lure = ~match & (distance <= config.lure_distance)
    label = match.astype(np.int64)
    answers = np.asarray(v.answers, dtype=np.int64)
    meta = {"sample": c["sample"], "test": c["test"], "match": match, "match_sign": np.where(match, 1, -1),
            "distance": distance, "test_minus_sample": signed, "lure": lure, "distractors": c["distractors"],
            "congruent": ~lure}
    positions, labels = layout(config, v)
    return TrialBatch(tokens=_render(config, v, c), answer_ids=answers[label], wrong_ids=answers[1 - label],
                      labels=label, meta=meta, positions=positions, position_labels=labels, split=split, seed=seed,
                      task=NAME, answer_words=tuple(config.answer_words),
                      variables={"sample": "sample", "test": "test", "match": "match_sign"},
                      evidence={"distance": "distance"}, group=None,
                      conditions={"match": "match", "lure": "lure"}, key_position="sample")


class _DelayMatch(TokenTask):
    def build_vocab(self, config: DelayMatchConfig, tokenizer: Any) -> Vocab:
        return _build_vocab(config, tokenizer)

    def sample(self, config: DelayMatchConfig, n: int, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        return _sample(config, n, rng, split)

    def render(self, config: DelayMatchConfig, v: Vocab, cond: dict[str, np.ndarray]) -> np.ndarray:
        return _render(config, v, cond)

    def assemble(self, config: DelayMatchConfig, v: Vocab, cond: dict[str, np.ndarray], split: str,
                 seed: int) -> TrialBatch:
        return _assemble(config, v, cond, split, seed)

    def check_pairs(self, config: DelayMatchConfig, corruption: str) -> None:
        if corruption == "distractor-change" and config.n_distractors == 0:
            raise TaskError("corruption 'distractor-change' needs n_distractors >= 1")

    def pair_filter(self, config: DelayMatchConfig, corruption: str, split: str) -> Any:
        """test-change: a match trial needs a near lure that no distractor shows."""
        if corruption != "test-change":
            return None
        (lo, hi), dist = config.split_range(split), config.lure_distance
        return lambda c: (c["test"] != c["sample"]) | _near(c["sample"], lo, hi, dist, c["distractors"])[1].any(1)

    def corrupt(self, config: DelayMatchConfig, cond: dict[str, np.ndarray], corruption: str, split: str,
                seed: int) -> dict[str, np.ndarray]:
        """Only the test, or only the distractors, differ. test-change: a match trial's test becomes a near lure
        not among its distractors, a non-match trial's test becomes the sample; the answer flips on every pair.
        distractor-change: every distractor replaced by another number that is neither sample nor test; the
        answer is unchanged (a control)."""
        (lo, hi), dist = config.split_range(split), config.lure_distance
        rng = np.random.default_rng([seed, SPLITS.index(split), 1 + list(CORRUPTION_INFO).index(corruption)])
        bad = dict(cond)
        if corruption == "test-change":
            lure = _pick(*_near(cond["sample"], lo, hi, dist, cond["distractors"]), rng)
            bad["test"] = np.where(cond["test"] == cond["sample"], lure, cond["sample"])
        else:
            bad["distractors"] = _distractors(cond["sample"], cond["test"], cond["distractors"], config, lo, hi, rng)
        return bad


IMPL = _DelayMatch(NAME, CORRUPTION_INFO)
vocab, generate, make_pairs = IMPL.vocab, IMPL.generate, IMPL.make_pairs


TASK = Task(
    name=NAME,
    summary="Delayed match-to-sample: a sample number, a delay with distractor numbers, then a test number; answer "
            "whether the test equals the sample.",
    neurogym="NeuroGym DelayMatchSample: sample, empty delay, test, decision; half the trials match (test = "
             "sample), a non-match test is the opposite angle on the ring; noisy ring-coded inputs over time. Here "
             "the stimuli are numbers without noise or time steps, the delay shows distractor numbers, and a "
             "configurable share of non-match tests are near lures 1..lure_distance from the sample.",
    shortcut="answer same when the test is within lure_distance of the sample (wrong on every near-lure trial)",
    config=DelayMatchConfig, generate=generate, make_pairs=make_pairs, symbols=required_symbols,
    corruptions=CORRUPTION_INFO, default_corruption="test-change")
