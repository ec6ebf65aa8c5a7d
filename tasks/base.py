"""What every task provides, and the pieces tasks share.

A task is a `Task` record (registered in `tasks.registry`) holding its frozen config dataclass and the functions
that generate trials and clean/corrupted pairs from it. Everything downstream (training, every analysis, the
report) reads only this interface and the `TrialBatch` it returns, never one task's own metadata keys.

The contract of a `TrialBatch`:
  tokens [trials, seq]   one token layout for every trial of a config (clean and corrupted trials align)
  answer_ids/wrong_ids   the correct and the other answer word's (single) token id; labels = side of the answer
                         (0 = answer_words[0], 1 = answer_words[1])
  meta                   per-trial task variables; always `congruent` (bool): the task's documented *shortcut*
                         (a heuristic that does not solve the task) gives the right answer. Accuracy on the
                         incongruent trials is the training criterion's second part: a model that learned the
                         shortcut fails it.
  variables              {name: meta key} of the numbers regressed against neuron activations
  evidence, group        {name: meta key} of the variables P(answer_words[1]) is plotted against (psychometric
                         curves; signed evidence is positive towards answer_words[1]), one curve per value of
                         the meta key `group` (or one curve when None)
  conditions             {name: meta key} crossed for accuracy per condition
  positions              named token positions; always "answer" (the last) and the task's `key_position`

A tokenizer is anything with `encode(text, add_special_tokens=False)` and `decode(ids)`. This package imports
nothing of the project.
"""

from __future__ import annotations

import math
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test", "gen")


class TaskError(ValueError):
    """The task cannot be generated as asked (a bad config value, a tokenizer that splits a symbol, ...)."""


@dataclass
class TrialBatch:
    """n trials of one config. `meta` arrays share the trials axis; `positions` names token positions."""

    tokens: np.ndarray  # [trials, seq] int64
    answer_ids: np.ndarray  # [trials]
    wrong_ids: np.ndarray  # [trials]
    labels: np.ndarray  # [trials] side of the answer (0 or 1)
    meta: dict[str, np.ndarray]
    positions: dict[str, int]
    position_labels: list[str]
    split: str
    seed: int
    task: str = "ContextDecisionMaking"
    answer_words: tuple[str, ...] = ()
    variables: dict[str, str] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)
    group: str | None = None
    conditions: dict[str, str] = field(default_factory=dict)
    key_position: str = "answer"

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> TrialBatch:
        return replace(self, tokens=self.tokens[idx], answer_ids=self.answer_ids[idx], wrong_ids=self.wrong_ids[idx],
                       labels=self.labels[idx], meta={k: v[idx] for k, v in self.meta.items()})


@dataclass(frozen=True)
class Corruption:
    """A named way to make a corrupted twin of a clean trial. `flips` says whether the answer changes (patching
    needs one that does); `pairs` says which clean trials it is drawn from."""

    description: str
    flips: bool
    pairs: str = "all trials"


@dataclass(frozen=True)
class Task:
    """A registered task: its config class and the functions every consumer calls (see the module doc)."""

    name: str
    summary: str
    neurogym: str  # the NeuroGym semantics this token version follows, and where it departs from them
    shortcut: str  # the heuristic whose failures define the incongruent trials
    config: type
    generate: Callable[..., TrialBatch]  # (config, n, seed, tokenizer, split="train")
    make_pairs: Callable[..., tuple[TrialBatch, TrialBatch]]  # (config, n, seed, tokenizer, corruption, split)
    symbols: Callable[[Any], list[str]]  # every word the task renders (for a tokenizer made for the project)
    corruptions: dict[str, Corruption]
    default_corruption: str
    bayes_optimal_accuracy: Callable[..., float] = lambda config, **_: 1.0

    def check_corruption(self, corruption: str) -> None:
        if corruption not in self.corruptions:
            raise TaskError(f"task {self.name} has no corruption {corruption!r} (choose from "
                            f"{', '.join(self.corruptions)})")


def cached(cache: dict[Any, Any], tokenizer: Any, config: Any, build: Callable[[], Any]) -> Any:
    """`build()` once per (tokenizer object, config). The entry holds a weak reference to its tokenizer and is
    used only while that very object is alive: a new tokenizer that Python places at a freed one's address (same
    id) does not get the old one's token ids."""
    key = (id(tokenizer), config)
    hit = cache.get(key)
    if hit is not None and hit[0]() is tokenizer:
        return hit[1]
    value = build()
    for k in [k for k, (r, _) in cache.items() if r() is None]:  # entries of freed tokenizers
        del cache[k]
    try:
        ref = weakref.ref(tokenizer)
    except TypeError:  # an object without weak references: keep it alive instead
        ref = lambda t=tokenizer: t  # noqa: E731
    cache[key] = (ref, value)
    return value


def non_finite(config: Any) -> tuple[str, float] | None:
    """The first float of a dataclass's fields that is NaN or infinite, as (option, value): a float field, or a
    float inside a tuple / list (option "name[i]") or dict (option "name.key") field; None when all are finite.
    By introspection, so a new float option is covered without a list to update."""
    for f in fields(config):
        v = getattr(config, f.name)
        if isinstance(v, dict):
            items = [(f"{f.name}.{k}", x) for k, x in v.items()]
        elif isinstance(v, (tuple, list)):
            items = [(f"{f.name}[{i}]", x) for i, x in enumerate(v)]
        else:
            items = [(f.name, v)]
        for name, x in items:
            if isinstance(x, float) and not math.isfinite(x):
                return name, x
    return None


def check_finite(config: Any, prefix: str = "", error: type[Exception] = TaskError) -> None:
    """Refuse NaN and +/-infinity in any float option of a config dataclass (`non_finite`), naming the option:
    "<prefix><option> must be a finite number, got nan". Config classes call it first in `__post_init__`, before
    a comparison with NaN (always False) lets the value through."""
    bad = non_finite(config)
    if bad is not None:
        raise error(f"{prefix}{bad[0]} must be a finite number, got {bad[1]}")


def check_name(name: str, expected: str) -> None:
    if name != expected:
        raise TaskError(f"name must be {expected!r} for this config class, got {name!r}")


def check_coherences(coherences: tuple[int, ...]) -> None:
    """Coherence levels (percent, as in NeuroGym): a non-empty set of integers in 1..100."""
    if not coherences:
        raise TaskError("coherences must not be empty")
    for c in coherences:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 < c <= 100:
            raise TaskError(f"coherence {c!r} is outside 1..100")
    if len(set(coherences)) != len(coherences):
        raise TaskError(f"coherences contain duplicates: {coherences}")


def with_number_symbols(words: list[str], number_range: tuple[int, ...]) -> list[str]:
    """What a tokenizer made for this project keeps whole: the task's words, " n" over the number range, the
    numbers without a space (0..high) and with one below the range (0..low-1)."""
    lo, hi = number_range
    return [*words, *(f" {n}" for n in range(lo, hi + 1)), *(str(n) for n in range(0, hi + 1)),
            *(f" {n}" for n in range(0, lo))]


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def token_ids(tokenizer: Any, symbol: str) -> tuple[int, ...]:
    ids = tokenizer.encode(symbol, add_special_tokens=False)
    if not ids:
        raise TaskError(f"task symbol {symbol!r} encodes to no token at all")
    return tuple(int(i) for i in ids)


def single_token(tokenizer: Any, symbol: str, role: str) -> int:
    ids = token_ids(tokenizer, symbol)
    if len(ids) != 1:
        raise TaskError(f"{role} {symbol!r} is not a single token for this tokenizer (it encodes to {len(ids)} "
                        f"tokens {list(ids)}): the logit difference needs one token per answer; choose another word")
    return ids[0]


def same_length(tokenizer: Any, symbols: list[str], role: str) -> list[tuple[int, ...]]:
    """Token ids of symbols that must share one token layout (so clean and corrupted trials align)."""
    ids = [token_ids(tokenizer, s) for s in symbols]
    lengths = {len(i) for i in ids}
    if len(lengths) > 1:
        by = {n: next(s for s, i in zip(symbols, ids) if len(i) == n) for n in sorted(lengths)}
        raise TaskError(f"{role} do not all encode to the same number of tokens ("
                        + ", ".join(f"{s!r}: {n}" for n, s in by.items())
                        + "): trials would not align position by position; choose other words or another number range")
    return ids


def trial_hash(tokens: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per trial from its token ids (splitmix64-style mixing)."""
    h = np.full(len(tokens), 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(tokens.shape[1]):
            h = (h ^ tokens[:, j].astype(np.uint64)) * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
            h = h * np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_of(split_fractions: tuple[float, ...], tokens: np.ndarray) -> np.ndarray:
    """Which of train (0) / val (1) / test (2) each trial's tokens belong to."""
    check_split_fractions(tuple(split_fractions))
    edges = np.cumsum(split_fractions)[:-1]
    return np.searchsorted(edges, trial_hash(tokens), side="right")


def check_split_fractions(split_fractions: tuple[float, ...]) -> None:
    if len(split_fractions) != 3 or any(f <= 0 for f in split_fractions) or abs(sum(split_fractions) - 1) > 1e-6:
        raise TaskError(f"split_fractions must be three positive numbers summing to 1, got {split_fractions}")


def check_number_ranges(number_range: tuple[int, ...], heldout: tuple[int, ...]) -> None:
    """number_range is (low, high); a held-out range lies at one end of it and leaves part of it for training."""
    if len(number_range) != 2 or number_range[0] >= number_range[1] or number_range[0] < 0:
        raise TaskError(f"number_range must be (low, high) with 0 <= low < high, got {number_range}")
    if len(heldout) not in (0, 2):
        raise TaskError("heldout_number_range must be [] or [low, high]")
    if heldout:
        (a, b), (lo, hi) = heldout, number_range
        if not (lo <= a <= b <= hi) or (a != lo and b != hi) or (a == lo and b == hi):
            raise TaskError(f"heldout_number_range {list(heldout)} must lie at one end of number_range "
                            f"{list(number_range)} and leave part of it for training")


def split_range(number_range: tuple[int, ...], heldout: tuple[int, ...], split: str) -> tuple[int, int]:
    """The numbers a split draws from: "gen" only the held-out range, the others the rest."""
    lo, hi = number_range
    if not heldout:
        return lo, hi
    a, b = heldout
    if split == "gen":
        return a, b
    return (b + 1, hi) if a == lo else (lo, a - 1)


def check_draw(split: str, n: int, has_gen: bool) -> None:
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    if split == "gen" and not has_gen:
        raise TaskError("the generalisation split is empty: set heldout_number_range (or the task's held-out option)")
    if n < 1:
        raise TaskError(f"number of trials must be >= 1, got {n}")


Cells = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, int]]


def quotas(n: int, k: int) -> np.ndarray:
    """Trials per cell of a balanced draw: n // k each, the first n % k cells one more."""
    return np.array([n // k + (c < n % k) for c in range(k)], dtype=np.int64)


def take_quota(ok: np.ndarray, cell: np.ndarray, room: np.ndarray) -> np.ndarray:
    """Of the candidates `ok`, in order, the first ones of each cell that still has room (room[c] more)."""
    out = np.zeros_like(ok)
    for c, r in enumerate(room):
        idx = np.flatnonzero(ok & (cell == c))[:max(int(r), 0)]
        out[idx] = True
    return out


def draw(n: int, seed: int, split: str, split_fractions: tuple[float, ...],
         sample: Callable[[int, np.random.Generator], dict[str, np.ndarray]],
         render: Callable[[dict[str, np.ndarray]], np.ndarray],
         keep: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
         cells: Cells | None = None) -> dict[str, np.ndarray]:
    """n trial conditions of `split`, deterministic under `seed`: `sample(k, rng)` draws k candidate conditions
    (arrays sharing the trials axis), `render` gives their tokens; train/val/test keep the candidates whose
    token hash falls in their share (so the three never share a trial), "gen" keeps all; `keep` filters more.
    `cells(cond)` -> (cell of each candidate, number of cells) makes the draw balanced: `quotas(n, k)` trials of
    each cell, the first drawn of each."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    parts: list[dict[str, np.ndarray]] = []
    have = np.zeros(1, dtype=np.int64) if cells is None else None
    want = np.array([n]) if cells is None else None
    for _ in range(200):
        cond = sample(max(64, 2 * (n - (0 if have is None else int(have.sum())))), rng)
        ok = np.ones(len(next(iter(cond.values()))), dtype=bool)
        if split != "gen":
            ok &= split_of(split_fractions, render(cond)) == SPLITS.index(split)
        if keep is not None:
            ok &= keep(cond)
        cell, k = cells(cond) if cells is not None else (np.zeros(len(ok), dtype=np.int64), 1)
        if want is None or have is None:
            want, have = quotas(n, k), np.zeros(k, dtype=np.int64)
        ok = take_quota(ok, cell, want - have)
        have += np.bincount(cell[ok], minlength=len(want))
        parts.append({key: a[ok] for key, a in cond.items()})
        if (have >= want).all():
            return {key: np.concatenate([p[key] for p in parts])[:n] for key in parts[0]}
    raise TaskError(f"split {split!r} cannot be filled with {n} trials under this config"
                    + (" balanced over its cells" if cells is not None else ""))


def number_table(tokenizer: Any, lo: int, hi: int) -> np.ndarray:
    """[number, token] ids of " n" for n in lo..hi (row n - lo), all of one token length."""
    return np.array(same_length(tokenizer, [f" {n}" for n in range(lo, hi + 1)], f"the numbers {lo}..{hi}"),
                    dtype=np.int64)


def columns(n: int, ids: tuple[int, ...]) -> list[np.ndarray]:
    """Token columns of a fixed symbol repeated over n trials."""
    return [np.full(n, t, dtype=np.int64) for t in ids]


def number_columns(table: np.ndarray, offset: int, values: np.ndarray) -> list[np.ndarray]:
    """Token columns of one number per trial (values [trials])."""
    return list(table[np.asarray(values) - offset].T)


def layout_of(segments: list[tuple[str, int]]) -> tuple[dict[str, int], list[str]]:
    """Named positions from (name, tokens) segments in order. A multi-token symbol is named at its LAST token,
    which has read all of it; its label per position is "name (i/n)"."""
    positions: dict[str, int] = {}
    labels: list[str] = []
    for name, k in segments:
        labels += [name] if k == 1 else [f"{name} ({i + 1}/{k})" for i in range(k)]
        positions[name] = len(labels) - 1
    return positions, labels


def render_text(batch: TrialBatch, tokenizer: Any, i: int) -> str:
    return tokenizer.decode([int(t) for t in batch.tokens[i]])


class TokenTask(ABC):
    """The skeleton every task module shares, written once. A task subclasses it with its own steps:
    `build_vocab` (token ids of its symbols), `sample` (candidate trial conditions), `render` (their tokens),
    `assemble` (the TrialBatch), and for pairs `corrupt` (the corrupted copy of the conditions), `pair_filter` (the
    trials a corruption needs, e.g. incongruent ones) and `check_pairs`. Shared here: the vocabulary cached per
    (tokenizer, config), drawing through the splits' hash partition (`draw`), `generate` and `make_pairs`.

    A new task is one module (its config dataclass, a subclass, `TASK = Task(..., generate=impl.generate,
    make_pairs=impl.make_pairs)`) and one line in `tasks.registry`."""

    def __init__(self, name: str, corruptions: dict[str, Corruption]) -> None:
        self.name, self.corruptions = name, corruptions
        self._vocab_cache: dict[Any, Any] = {}

    # -- the task's own steps
    @abstractmethod
    def build_vocab(self, config: Any, tokenizer: Any) -> Any:
        """(the task's own)"""

    @abstractmethod
    def sample(self, config: Any, n: int, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        """(the task's own)"""

    @abstractmethod
    def render(self, config: Any, v: Any, cond: dict[str, np.ndarray]) -> np.ndarray:
        """(the task's own)"""

    @abstractmethod
    def assemble(self, config: Any, v: Any, cond: dict[str, np.ndarray], split: str, seed: int) -> TrialBatch:
        """(the task's own)"""

    @abstractmethod
    def corrupt(self, config: Any, cond: dict[str, np.ndarray], corruption: str, split: str, seed: int
                ) -> dict[str, np.ndarray]:
        """The corrupted copy of a draw's conditions (the task's own)."""

    def pair_filter(self, config: Any, corruption: str, split: str
                    ) -> Callable[[dict[str, np.ndarray]], np.ndarray] | None:
        """Which candidate trials a corruption can use (None: all)."""
        return None

    def check_pairs(self, config: Any, corruption: str) -> None:
        """Refuse a corruption this config cannot make (TaskError)."""

    def check_split(self, config: Any, split: str, n: int) -> None:
        check_draw(split, n, config.has_gen)

    # -- shared
    def vocab(self, config: Any, tokenizer: Any) -> Any:
        """Token ids of every symbol, built once per tokenizer object and config (`cached`)."""
        return cached(self._vocab_cache, tokenizer, config, lambda: self.build_vocab(config, tokenizer))

    def cells(self, config: Any, corruption: str | None = None) -> Cells | None:
        """The cells a balanced draw fills equally (e.g. answer side x congruence), for plain trials or for the
        pairs of `corruption`; None: this task cannot balance its trials."""
        return None

    def _cells(self, config: Any, balanced: bool, corruption: str | None = None) -> Cells | None:
        if not balanced:
            return None
        cells = self.cells(config, corruption)
        if cells is None:
            raise TaskError(f"task {self.name} cannot balance its trials (it names no cells to balance)")
        return cells

    def draw_conditions(self, config: Any, n: int, seed: int, tokenizer: Any, split: str,
                        keep: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
                        cells: Cells | None = None) -> tuple[dict[str, np.ndarray], Any]:
        self.check_split(config, split, n)
        v = self.vocab(config, tokenizer)
        cond = draw(n, seed, split, config.split_fractions, lambda k, rng: self.sample(config, k, rng, split),
                    lambda c: self.render(config, v, c), keep, cells)
        return cond, v

    def generate(self, config: Any, n: int, seed: int, tokenizer: Any, split: str = "train",
                 balanced: bool = False) -> TrialBatch:
        """n trials of `split`, deterministic under `seed`; train/val/test partition the trial space by a hash of
        the tokens (never sharing a trial), "gen" holds the held-out conditions only. `balanced`: equal numbers
        of trials in each of the task's cells (`cells`), so that a model that always gives one answer scores
        chance exactly."""
        cond, v = self.draw_conditions(config, n, seed, tokenizer, split, cells=self._cells(config, balanced))
        return self.assemble(config, v, cond, split, seed)

    def make_pairs(self, config: Any, n: int, seed: int, tokenizer: Any, corruption: str, split: str = "test",
                   balanced: bool = False) -> tuple[TrialBatch, TrialBatch]:
        """Clean / corrupted pairs of equal length and aligned positions (the task's `corrupt` says what differs);
        `balanced`: the clean trials fill the corruption's cells equally (`cells`)."""
        if corruption not in self.corruptions:
            raise TaskError(f"task {self.name} has no corruption {corruption!r} (choose from "
                            f"{', '.join(self.corruptions)})")
        self.check_pairs(config, corruption)
        cond, v = self.draw_conditions(config, n, seed, tokenizer, split, self.pair_filter(config, corruption, split),
                                       self._cells(config, balanced, corruption))
        bad = self.corrupt(config, cond, corruption, split, seed)
        return self.assemble(config, v, cond, split, seed), self.assemble(config, v, bad, split, seed)
