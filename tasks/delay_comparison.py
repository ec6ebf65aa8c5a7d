"""Parametric working memory: delayed comparison of two numbers (Romo et al. 1999; NeuroGym `DelayComparison`).

NeuroGym (neurogym/neurogym, neurogym/envs/native/delaycomparison.py; the same in neurogym/envs/delaycomparison.py)
implements the vibrotactile flutter task of Romo et al. 1999 (its metadata cites Barak, Tsodyks & Romo 2010):
a first stimulus frequency f1, a delay, a second frequency f2, then a choice of which was higher. Each trial picks
a pair uniformly from `vpairs` (default (18, 10), (22, 14), (26, 18), (30, 22), (34, 26): bases 10..34 Hz, every
pair 8 Hz apart, listed larger first) and a ground truth uniformly from choices {1, 2}; for choice 1 the pair is
shown as is (f1 > f2), for choice 2 it is reversed (f2 > f1). Timing (ms, dt = 100): fixation 500, stimulus1 500,
delay 1000, stimulus2 500, decision 100. Inputs are a fixation channel (on until the decision) and one stimulus
channel carrying (1 + (f - fmin) / (fmax - fmin)) / 2 (0.5..1) during the two stimulus periods, with Gaussian noise
of sd sigma / sqrt(dt) there; the delay shows no stimulus. Actions: 0 fixate, 1 or 2 choose; rewards: abort -0.1,
correct +1, fail 0.

The token version:
  <bos> first 43 then 17 62 second 51. answer   ->  " more"
answers whether the second number is more or less than the first. answer_words[0] (" less") is NeuroGym's choice 1
(f1 > f2), answer_words[1] (" more") its choice 2; the signed difference f2 - f1 is the evidence, positive towards
" more". Departures from NeuroGym: numbers are tokens, shown once and without noise (no time steps, no fixation,
no rewards); f1 ranges over the whole (split's) number range and |f2 - f1| over several `differences` (the analogue
of coherence) instead of five fixed pairs 8 apart; the delay is the word " then" followed by `n_distractors` random
numbers of the same range (NeuroGym's delay is silent); the choice is named relative to the second number
("more"/"less") rather than as "stimulus 1/2 was higher"; train/val/test/gen splits and a held-out number range are
additions. The shortcut (f2 alone against the middle of the split's range) is ours, not NeuroGym's.

Conventions: trials = the batch axis; seq = token positions (one layout per config, so clean and corrupted trials
align); side 0 = `answer_words[0]` (less), 1 = `answer_words[1]` (more). This module imports nothing of the
project except `tasks.base`; a tokenizer is anything with `encode(text, add_special_tokens=False)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.base import (SPLITS, Corruption, Task, TaskError, TokenTask, TrialBatch, check_finite, check_name,
                        check_number_ranges, check_split_fractions, columns, layout_of, number_columns, number_table,
                        single_token, token_ids, with_number_symbols)
from tasks.base import split_range as _split_range

NAME = "DelayComparison"
CORRUPTION_INFO = {
    "swap": Corruption("the first and second numbers exchanged: the answer flips", True),
    "distractor-change": Corruption("every delay distractor redrawn to another number: the answer is unchanged "
                                    "(a control; needs n_distractors > 0)", False),
}


@dataclass(frozen=True)
class DelayComparisonConfig:
    """Every choice of the token format, with documented defaults.

    differences: |f2 - f1| levels (positive integers), drawn uniformly per trial; the sign is 50/50.
    number_range: inclusive range of f1, f2 and the distractors.
    n_distractors: random numbers shown in the delay, after `delay_word` (0 = just the word).
    heldout_number_range: () or (a, b) at one end of number_range: train/val/test numbers avoid it, "gen" uses it.
    split_fractions: train/val/test shares of the trial space, assigned by a hash of the trial's tokens.
    name: the task's registered name (fixed).
    """

    name: str = NAME
    differences: tuple[int, ...] = (2, 5, 12, 25)
    number_range: tuple[int, int] = (10, 99)
    n_distractors: int = 2
    first_word: str = " first"
    delay_word: str = " then"
    second_word: str = " second"
    separator: str = "."
    query_word: str = " answer"
    answer_words: tuple[str, ...] = (" less", " more")
    heldout_number_range: tuple[int, ...] = ()
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    prepend_bos: bool = True

    def __post_init__(self) -> None:
        check_name(self.name, NAME)
        check_finite(self)
        if not self.differences:
            raise TaskError("differences must not be empty")
        for d in self.differences:
            if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                raise TaskError(f"difference {d!r} must be a positive integer")
        if len(set(self.differences)) != len(self.differences):
            raise TaskError(f"differences contain duplicates: {tuple(self.differences)}")
        check_number_ranges(self.number_range, self.heldout_number_range)
        if isinstance(self.n_distractors, bool) or not isinstance(self.n_distractors, int) or self.n_distractors < 0:
            raise TaskError(f"n_distractors must be an integer >= 0, got {self.n_distractors!r}")
        self._check_words()
        for split in ("train", "gen") if self.has_gen else ("train",):
            lo, hi = self.split_range(split)
            if max(self.differences) > hi - lo:
                raise TaskError(f"number range {lo}..{hi} ({split}) is too small for difference "
                                f"{max(self.differences)}")
        check_split_fractions(self.split_fractions)

    def _check_words(self) -> None:
        if len(self.answer_words) != 2 or len(set(self.answer_words)) != 2 or not all(self.answer_words):
            raise TaskError(f"answer_words must be two distinct non-empty words, got {list(self.answer_words)}")
        words = self.words
        if not all(words):
            raise TaskError("first_word, delay_word, second_word, separator and query_word must be non-empty")
        if len(set(words)) != len(words):
            raise TaskError(f"task words must all differ, got {words}")
        numeric = [w for w in words if w.strip().isdigit()]
        if numeric:
            raise TaskError(f"a task word collides with a number symbol: {numeric}")

    @property
    def words(self) -> list[str]:
        return [self.first_word, self.delay_word, self.second_word, self.separator, self.query_word,
                *self.answer_words]

    @property
    def has_gen(self) -> bool:
        return bool(self.heldout_number_range)

    def split_range(self, split: str) -> tuple[int, int]:
        return _split_range(self.number_range, self.heldout_number_range, split)


def required_symbols(config: DelayComparisonConfig) -> list[str]:
    """What a tokenizer made for this project keeps whole (`tasks.base.with_number_symbols`)."""
    return with_number_symbols(config.words, config.number_range)


def _build_vocab(config: DelayComparisonConfig, tokenizer: Any) -> dict[str, Any]:
    bos = getattr(tokenizer, "bos_token_id", None) if config.prepend_bos else None
    if config.prepend_bos and bos is None:
        raise TaskError("prepend_bos is set but the tokenizer has no BOS token")
    c = config
    return {
        "bos": bos, "first": token_ids(tokenizer, c.first_word), "delay": token_ids(tokenizer, c.delay_word),
        "second": token_ids(tokenizer, c.second_word), "sep": token_ids(tokenizer, c.separator),
        "query": token_ids(tokenizer, c.query_word),
        "answers": np.array([single_token(tokenizer, w, "answer word") for w in c.answer_words], dtype=np.int64),
        "numbers": number_table(tokenizer, *c.number_range)}


def layout(config: DelayComparisonConfig, v: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
    """Named positions (a multi-token symbol at its last token) and a label per position."""
    k = v["numbers"].shape[1]
    segments = ([("bos", 1)] if v["bos"] is not None else []) + [("first_word", len(v["first"])), ("first", k),
                                                                  ("delay", len(v["delay"]))]
    segments += [(f"distractor{j}", k) for j in range(config.n_distractors)]
    segments += [("second_word", len(v["second"])), ("second", k), ("sep", len(v["sep"])),
                 ("answer", len(v["query"]))]
    return layout_of(segments)


def _render(config: DelayComparisonConfig, v: dict[str, Any], cond: dict[str, np.ndarray]) -> np.ndarray:
    """Token ids [trials, seq] from the conditions' first, distractors [trials, n_distractors] and second."""
    n, lo, table = len(cond["first"]), config.number_range[0], v["numbers"]
    cols = columns(n, (v["bos"],)) if v["bos"] is not None else []
    cols += columns(n, v["first"]) + number_columns(table, lo, cond["first"]) + columns(n, v["delay"])
    for j in range(config.n_distractors):
        cols += number_columns(table, lo, cond["distractors"][:, j])
    cols += columns(n, v["second"]) + number_columns(table, lo, cond["second"]) + columns(n, v["sep"])
    return np.stack(cols + columns(n, v["query"]), axis=1)


def _sample(config: DelayComparisonConfig, n: int, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
    lo, hi = config.split_range(split)
    diff = np.asarray(config.differences, dtype=np.int64)[rng.integers(0, len(config.differences), n)]
    more = rng.integers(0, 2, n)  # side: 1 = the second number is the larger
    low = lo + np.floor(rng.random(n) * (hi - lo - diff + 1)).astype(np.int64)
    first = np.where(more == 1, low, low + diff)
    return {"first": first, "second": np.where(more == 1, low + diff, low),
            "distractors": rng.integers(lo, hi + 1, (n, config.n_distractors))}


def _assemble(config: DelayComparisonConfig, v: dict[str, Any], cond: dict[str, np.ndarray], split: str,
              seed: int) -> TrialBatch:
    first, second = cond["first"], cond["second"]
    label = (second > first).astype(np.int64)
    lo, hi = config.split_range(split)
    shortcut = (second > (lo + hi) / 2).astype(np.int64)  # "more" iff the second number lies above the middle
    meta = {"first": first, "second": second, "signed_difference": second - first,
            "difference": np.abs(second - first), "distractors": cond["distractors"], "congruent": shortcut == label}
    positions, labels = layout(config, v)
    return TrialBatch(tokens=_render(config, v, cond), answer_ids=v["answers"][label],
                      wrong_ids=v["answers"][1 - label], labels=label, meta=meta, positions=positions,
                      position_labels=labels, split=split, seed=seed, task=NAME,
                      answer_words=tuple(config.answer_words),
                      variables={"first": "first", "second": "second", "difference": "signed_difference"},
                      evidence={"difference": "signed_difference"}, group=None,
                      conditions={"difference": "difference", "congruent": "congruent"}, key_position="first")


class _DelayComparison(TokenTask):
    def build_vocab(self, config: DelayComparisonConfig, tokenizer: Any) -> dict[str, Any]:
        return _build_vocab(config, tokenizer)

    def sample(self, config: DelayComparisonConfig, n: int, rng: np.random.Generator, split: str
               ) -> dict[str, np.ndarray]:
        return _sample(config, n, rng, split)

    def render(self, config: DelayComparisonConfig, v: dict[str, Any], cond: dict[str, np.ndarray]) -> np.ndarray:
        return _render(config, v, cond)

    def assemble(self, config: DelayComparisonConfig, v: dict[str, Any], cond: dict[str, np.ndarray], split: str,
                 seed: int) -> TrialBatch:
        return _assemble(config, v, cond, split, seed)

    def check_pairs(self, config: DelayComparisonConfig, corruption: str) -> None:
        if corruption == "distractor-change" and config.n_distractors == 0:
            raise TaskError("corruption 'distractor-change' needs n_distractors > 0 (there is nothing to redraw)")

    def corrupt(self, config: DelayComparisonConfig, cond: dict[str, np.ndarray], corruption: str, split: str,
                seed: int) -> dict[str, np.ndarray]:
        """swap: the first and second numbers exchanged; the answer flips. distractor-change: each delay distractor
        replaced by another number of the split's range, drawn uniformly (deterministic under `seed`); the answer
        is unchanged."""
        bad = dict(cond)
        if corruption == "swap":
            bad["first"], bad["second"] = cond["second"], cond["first"]
        else:
            lo, hi = config.split_range(split)
            rng = np.random.default_rng([seed, SPLITS.index(split), 1])
            shift = rng.integers(1, hi - lo + 1, cond["distractors"].shape)  # never 0: every distractor changes
            bad["distractors"] = lo + (cond["distractors"] - lo + shift) % (hi - lo + 1)
        return bad


IMPL = _DelayComparison(NAME, CORRUPTION_INFO)
vocab, generate, make_pairs = IMPL.vocab, IMPL.generate, IMPL.make_pairs


TASK = Task(
    name=NAME,
    summary="Delayed comparison (Romo et al. 1999): a first number, a delay with distractor numbers, a second "
            "number; answer whether the second is more or less than the first.",
    neurogym="NeuroGym DelayComparison: f1, a silent delay, f2, then choose 1 (f1 > f2) or 2 (f2 > f1); pairs from "
             "vpairs (default five pairs 8 Hz apart, bases 10..34), ground truth 50/50, noisy analog inputs over "
             "fixation/stimulus1/delay/stimulus2/decision periods. Here the numbers are tokens shown once without "
             "noise, f1 spans the number range and |f2 - f1| takes several levels, the delay holds a word and "
             "random distractor numbers, and the answer is 'less'/'more' (choice 1/2).",
    shortcut="answer more when the second number lies above the middle of the split's number range (ignoring the "
             "first)",
    config=DelayComparisonConfig, generate=generate, make_pairs=make_pairs, symbols=required_symbols,
    corruptions=CORRUPTION_INFO, default_corruption="swap")
