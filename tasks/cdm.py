"""The context-dependent decision-making task (Mante et al. 2013; NeuroGym `ContextDecisionMaking`) as tokens.

Conventions (named once here, used by every array below):
  trials   n, the batch axis
  seq      token positions; every trial of one config has the same length and layout, so positions align
  mod      the two modalities, index 0 = `modality_words[0]` (motion), 1 = `modality_words[1]` (color)
  sample   the `n_samples` noisy evidence samples per modality
  side     0 = left (`answer_words[0]`), 1 = right (`answer_words[1]`)

A trial (default config, cue before the stimuli):
  <bos> context motion . motion 43 51 color 62 58 . answer   ->  " right"
The context cue names the relevant modality; within each modality the side whose number is larger is that
modality's choice; their difference grows with the modality's coherence and their shared base is random, so
only the comparison answers the trial. The answer is the relevant modality's choice. The irrelevant modality's
choice is drawn independently: about half the trials are congruent.

Signed coherence is positive towards `right` (so psychometric curves plot P(right) against it).
This module imports nothing of the project: a tokenizer is anything with `encode(text, add_special_tokens=False)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test", "gen")
CORRUPTIONS = ("context-flip", "relevant-flip", "irrelevant-flip")


class TaskError(ValueError):
    """The task cannot be generated as asked (a bad config value, a tokenizer that splits a symbol, ...)."""


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


@dataclass(frozen=True)
class CDMConfig:
    """Every choice of the token format (the paper's exact format is not public), with documented defaults.

    coherences: coherence levels (percent, 1..100) as in NeuroGym (5, 15, 50).
    number_range: inclusive range of the integers shown.
    diff_per_coherence: |left - right| = max(1, round(coherence * diff_per_coherence)): 5->3, 15->8, 50->25.
    cue_position: "before" the stimuli (as in the monkey task) or "after" them.
    n_samples, noise_sd: evidence samples per modality, each side's number perturbed by round(N(0, noise_sd)) and
        clipped to the split's number range; default one noise-free sample.
    heldout_coherences: levels never used in train/val/test; the "gen" split uses only them.
    heldout_number_range: () or (a, b) at one end of number_range: train/val/test numbers avoid it, "gen" uses it.
    split_fractions: train/val/test shares of the trial space, assigned by a hash of the trial's tokens.
    """

    coherences: tuple[int, ...] = (5, 15, 50)
    number_range: tuple[int, int] = (10, 99)
    diff_per_coherence: float = 0.5
    cue_position: str = "before"
    cue_word: str = " context"
    modality_words: tuple[str, ...] = (" motion", " color")
    answer_words: tuple[str, ...] = (" left", " right")
    separator: str = "."
    query_word: str = " answer"
    n_samples: int = 1
    noise_sd: float = 0.0
    heldout_coherences: tuple[int, ...] = ()
    heldout_number_range: tuple[int, ...] = ()
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    prepend_bos: bool = True

    def __post_init__(self) -> None:  # noqa: C901
        if not self.coherences:
            raise TaskError("coherences must not be empty")
        for c in self.coherences:
            if isinstance(c, bool) or not isinstance(c, int) or not 0 < c <= 100:
                raise TaskError(f"coherence {c!r} is outside 1..100")
        if len(set(self.coherences)) != len(self.coherences):
            raise TaskError(f"coherences contain duplicates: {self.coherences}")
        if len(self.number_range) != 2 or self.number_range[0] >= self.number_range[1] or self.number_range[0] < 0:
            raise TaskError(f"number_range must be (low, high) with 0 <= low < high, got {self.number_range}")
        if self.diff_per_coherence <= 0:
            raise TaskError("diff_per_coherence must be > 0")
        diffs = [self.diff(c) for c in self.coherences]
        if len(set(diffs)) != len(diffs):
            raise TaskError(f"coherences {self.coherences} give equal number differences {diffs}: raise "
                            "diff_per_coherence")
        if self.cue_position not in ("before", "after"):
            raise TaskError(f"cue_position must be 'before' or 'after', got {self.cue_position!r}")
        if len(self.modality_words) != 2 or len(set(self.modality_words)) != 2 or not all(self.modality_words):
            raise TaskError(f"modality_words must be two distinct non-empty words, got {list(self.modality_words)}")
        if len(self.answer_words) != 2 or len(set(self.answer_words)) != 2 or not all(self.answer_words):
            raise TaskError(f"answer_words must be two distinct non-empty words, got {list(self.answer_words)}")
        words = [self.cue_word, *self.modality_words, *self.answer_words, self.separator, self.query_word]
        if not all(words):
            raise TaskError("cue_word, separator and query_word must be non-empty")
        if len(set(words)) != len(words):
            raise TaskError(f"task words must all differ, got {words}")
        numbers = {f" {n}" for n in range(self.number_range[0], self.number_range[1] + 1)}
        if numbers & set(words):
            raise TaskError(f"a task word collides with a number symbol: {sorted(numbers & set(words))}")
        if self.n_samples < 1:
            raise TaskError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.noise_sd < 0 or not math.isfinite(self.noise_sd):
            raise TaskError(f"noise_sd must be finite and >= 0, got {self.noise_sd}")
        if self.n_samples > 1 and self.noise_sd == 0:
            raise TaskError("n_samples > 1 needs noise_sd > 0 (noise-free samples would all be equal)")
        bad = set(self.heldout_coherences) - set(self.coherences)
        if bad:
            raise TaskError(f"heldout_coherences {sorted(bad)} are not among coherences {self.coherences}")
        if set(self.heldout_coherences) == set(self.coherences):
            raise TaskError("heldout_coherences hold out every coherence: nothing is left to train on")
        if len(self.heldout_number_range) not in (0, 2):
            raise TaskError("heldout_number_range must be [] or [low, high]")
        if self.heldout_number_range:
            a, b = self.heldout_number_range
            lo, hi = self.number_range
            if not (lo <= a <= b <= hi) or (a != lo and b != hi) or (a == lo and b == hi):
                raise TaskError(f"heldout_number_range {list(self.heldout_number_range)} must lie at one end of "
                                f"number_range {list(self.number_range)} and leave part of it for training")
        for split in ("train", "gen"):
            if split == "gen" and not self.has_gen:
                continue
            lo, hi = self.split_range(split)
            if hi - lo < max(self.diff(c) for c in self.split_coherences(split)):
                raise TaskError(f"number range {lo}..{hi} ({split}) is too small for coherence "
                                f"{max(self.split_coherences(split))} (difference "
                                f"{max(self.diff(c) for c in self.split_coherences(split))})")
        if len(self.split_fractions) != 3 or any(f <= 0 for f in self.split_fractions) or \
                abs(sum(self.split_fractions) - 1) > 1e-6:
            raise TaskError(f"split_fractions must be three positive numbers summing to 1, got {self.split_fractions}")

    def diff(self, coherence: int) -> int:
        return max(1, _round_half_up(coherence * self.diff_per_coherence))

    @property
    def has_gen(self) -> bool:
        return bool(self.heldout_coherences) or bool(self.heldout_number_range)

    def split_coherences(self, split: str) -> tuple[int, ...]:
        if split == "gen" and self.heldout_coherences:
            return tuple(self.heldout_coherences)
        if split == "gen":
            return tuple(self.coherences)
        return tuple(c for c in self.coherences if c not in self.heldout_coherences)

    def split_range(self, split: str) -> tuple[int, int]:
        lo, hi = self.number_range
        if not self.heldout_number_range:
            return lo, hi
        a, b = self.heldout_number_range
        if split == "gen":
            return a, b
        return (b + 1, hi) if a == lo else (lo, a - 1)


def task_symbols(config: CDMConfig) -> list[str]:
    """Every symbol the task renders (a tokenizer made for this project keeps each one whole)."""
    lo, hi = config.number_range
    return [config.cue_word, *config.modality_words, *config.answer_words, config.separator, config.query_word,
            *(f" {n}" for n in range(lo, hi + 1))]


def required_symbols(config: CDMConfig) -> list[str]:
    """What a tokenizer made for this project keeps whole: the task symbols and the numbers without a space."""
    lo, hi = config.number_range
    return task_symbols(config) + [str(n) for n in range(0, hi + 1)] + [f" {n}" for n in range(0, lo)]


def _token_ids(tokenizer: Any, symbol: str) -> tuple[int, ...]:
    ids = tokenizer.encode(symbol, add_special_tokens=False)
    if not ids:
        raise TaskError(f"task symbol {symbol!r} encodes to no token at all")
    return tuple(int(i) for i in ids)


def _single(tokenizer: Any, symbol: str, role: str) -> int:
    ids = _token_ids(tokenizer, symbol)
    if len(ids) != 1:
        raise TaskError(f"{role} {symbol!r} is not a single token for this tokenizer (it encodes to {len(ids)} "
                        f"tokens {list(ids)}): the logit difference needs one token per answer; choose another word")
    return ids[0]


def _same_length(tokenizer: Any, symbols: list[str], role: str) -> list[tuple[int, ...]]:
    """Token ids of symbols that must share one token layout (so clean and corrupted trials align)."""
    ids = [_token_ids(tokenizer, s) for s in symbols]
    lengths = {len(i) for i in ids}
    if len(lengths) > 1:
        by = {n: next(s for s, i in zip(symbols, ids) if len(i) == n) for n in sorted(lengths)}
        raise TaskError(f"{role} do not all encode to the same number of tokens ("
                        + ", ".join(f"{s!r}: {n}" for n, s in by.items())
                        + "): trials would not align position by position; choose other words or another number range")
    return ids


@dataclass(frozen=True)
class Vocab:
    """Token ids of every symbol. A symbol may be several tokens (SmolLM2 splits " 37" into " ", "3", "7") as long
    as every trial of a config gets the same token layout; answer words are single tokens."""

    cue: tuple[int, ...]
    modalities: tuple[tuple[int, ...], tuple[int, ...]]
    answers: tuple[int, int]
    separator: tuple[int, ...]
    query: tuple[int, ...]
    bos: int | None
    number_offset: int
    numbers: np.ndarray = field(compare=False)  # [number, token] ids of " n" at row n - number_offset

    @property
    def number_tokens(self) -> int:
        return int(self.numbers.shape[1])


_VOCAB_CACHE: dict[tuple[int, CDMConfig], Vocab] = {}


def vocab(config: CDMConfig, tokenizer: Any) -> Vocab:
    """The token ids of the config's symbols, or one clear error naming a symbol that breaks the alignment."""
    key = (id(tokenizer), config)
    if key not in _VOCAB_CACHE:
        lo, hi = config.number_range
        bos = getattr(tokenizer, "bos_token_id", None) if config.prepend_bos else None
        if config.prepend_bos and bos is None:
            raise TaskError("prepend_bos is set but the tokenizer has no BOS token")
        mods = _same_length(tokenizer, list(config.modality_words), "the modality words")
        numbers = _same_length(tokenizer, [f" {n}" for n in range(lo, hi + 1)], f"the numbers {lo}..{hi}")
        _VOCAB_CACHE[key] = Vocab(
            cue=_token_ids(tokenizer, config.cue_word), modalities=(mods[0], mods[1]),
            answers=(_single(tokenizer, config.answer_words[0], "answer word"),
                     _single(tokenizer, config.answer_words[1], "answer word")),
            separator=_token_ids(tokenizer, config.separator), query=_token_ids(tokenizer, config.query_word),
            bos=bos, number_offset=lo, numbers=np.array(numbers, dtype=np.int64))
    return _VOCAB_CACHE[key]


def seq_len(config: CDMConfig, tokenizer: Any) -> int:
    """Tokens per trial of this config under this tokenizer."""
    return len(layout(config, vocab(config, tokenizer))[1])


@dataclass
class TrialBatch:
    """n trials of one config. `meta` arrays share the trials axis; `positions` names token positions."""

    tokens: np.ndarray  # [trials, seq] int64
    answer_ids: np.ndarray  # [trials]
    wrong_ids: np.ndarray  # [trials]
    labels: np.ndarray  # [trials] side of the answer (0 left, 1 right)
    meta: dict[str, np.ndarray]
    positions: dict[str, int]
    position_labels: list[str]
    split: str
    seed: int

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> TrialBatch:
        return replace(self, tokens=self.tokens[idx], answer_ids=self.answer_ids[idx], wrong_ids=self.wrong_ids[idx],
                       labels=self.labels[idx], meta={k: v[idx] for k, v in self.meta.items()})


def _segments(config: CDMConfig, v: Vocab) -> list[tuple[str, int]]:
    """(name, number of tokens) of each symbol of a trial, in order."""
    mod_names = [w.strip() or f"mod{i}" for i, w in enumerate(config.modality_words)]
    cue = [("cue", len(v.cue)), ("context", len(v.modalities[0])), ("sep_cue", len(v.separator))]
    stim: list[tuple[str, int]] = []
    for m, name in enumerate(mod_names):
        stim.append((name, len(v.modalities[m])))
        for s in range(config.n_samples):
            stim += [(f"{name}.left{s}", v.number_tokens), (f"{name}.right{s}", v.number_tokens)]
    sep = [("sep_stim", len(v.separator))]
    body = (cue + stim + sep) if config.cue_position == "before" else (stim + sep + cue)
    return ([("bos", 1)] if v.bos is not None else []) + body + [("answer", len(v.query))]


def layout(config: CDMConfig, v: Vocab) -> tuple[dict[str, int], list[str]]:
    """Named positions (a multi-token symbol is named at its LAST token, which has read all of it) and a label per
    position: the symbol's name, with "(i/n)" when it spans n tokens. The same for every trial of a config."""
    positions: dict[str, int] = {}
    labels: list[str] = []
    for name, n in _segments(config, v):
        labels += [name] if n == 1 else [f"{name} ({i + 1}/{n})" for i in range(n)]
        positions[name] = len(labels) - 1
    return positions, labels


def _render(config: CDMConfig, v: Vocab, context: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """Token ids [trials, seq] from context [trials] and numbers [trials, mod, sample, side]."""
    n = len(context)
    fixed = lambda ids: [np.full(n, t, dtype=np.int64) for t in ids]  # noqa: E731
    num = lambda values: list(v.numbers[values - v.number_offset].T)  # noqa: E731
    cue = fixed(v.cue) + list(np.asarray(v.modalities, dtype=np.int64)[context].T) + fixed(v.separator)
    stim: list[np.ndarray] = []
    for m in range(2):
        stim += fixed(v.modalities[m])
        for s in range(config.n_samples):
            stim += num(numbers[:, m, s, 0]) + num(numbers[:, m, s, 1])
    cols = fixed((v.bos,)) if v.bos is not None else []
    sep = fixed(v.separator)
    cols += (cue + stim + sep) if config.cue_position == "before" else (stim + sep + cue)
    cols += fixed(v.query)
    return np.stack(cols, axis=1)


def _sample_conditions(config: CDMConfig, n: int, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
    cohs = np.asarray(config.split_coherences(split))
    lo, hi = config.split_range(split)
    context = rng.integers(0, 2, n)
    choice = rng.integers(0, 2, (n, 2))  # per modality; relevant one is the answer, the other independent
    coherence = cohs[rng.integers(0, len(cohs), (n, 2))]
    diff = np.vectorize(config.diff)(coherence) if n else np.zeros((0, 2), dtype=np.int64)
    base = lo + np.floor(rng.random((n, 2)) * (hi - diff - lo + 1)).astype(np.int64)
    clean = np.stack([base, base], axis=-1)  # [trials, mod, side]
    winner = np.take_along_axis(clean, choice[..., None], axis=-1)[..., 0] + diff
    np.put_along_axis(clean, choice[..., None], winner[..., None], axis=-1)
    k = config.n_samples
    noisy = np.repeat(clean[:, :, None, :], k, axis=2).astype(np.float64)
    if config.noise_sd > 0:
        noisy = noisy + rng.normal(0.0, config.noise_sd, noisy.shape)
    numbers = np.clip(np.floor(noisy + 0.5), lo, hi).astype(np.int64)
    return {"context": context, "choice": choice, "coherence": coherence, "clean_numbers": clean, "numbers": numbers}


def _assemble(config: CDMConfig, v: Vocab, cond: dict[str, np.ndarray], split: str, seed: int) -> TrialBatch:
    ctx, choice = cond["context"], cond["choice"]
    idx = np.arange(len(ctx))
    label = choice[idx, ctx]
    tokens = _render(config, v, ctx, cond["numbers"])
    answers = np.asarray(v.answers, dtype=np.int64)
    signed = np.where(choice == 1, cond["coherence"], -cond["coherence"])
    meta = {**cond, "signed_coherence": signed, "congruent": choice[:, 0] == choice[:, 1],
            "relevant_signed_coherence": signed[idx, ctx], "irrelevant_signed_coherence": signed[idx, 1 - ctx]}
    positions, labels = layout(config, v)
    return TrialBatch(tokens=tokens, answer_ids=answers[label], wrong_ids=answers[1 - label], labels=label,
                      meta=meta, positions=positions, position_labels=labels, split=split, seed=seed)


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


def split_of(config: CDMConfig, tokens: np.ndarray) -> np.ndarray:
    """Which of train (0) / val (1) / test (2) each trial's tokens belong to."""
    u = trial_hash(tokens)
    edges = np.cumsum(config.split_fractions)[:-1]
    return np.searchsorted(edges, u, side="right")


def _draw(config: CDMConfig, n: int, seed: int, tokenizer: Any, split: str,
          keep: Any = None) -> tuple[dict[str, np.ndarray], Vocab]:
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    if split == "gen" and not config.has_gen:
        raise TaskError("the generalisation split is empty: set heldout_coherences or heldout_number_range")
    if n < 1:
        raise TaskError(f"number of trials must be >= 1, got {n}")
    v = vocab(config, tokenizer)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    parts: list[dict[str, np.ndarray]] = []
    have = 0
    for _ in range(200):
        cond = _sample_conditions(config, max(64, 2 * (n - have)), rng, split)
        ok = np.ones(len(cond["context"]), dtype=bool)
        if split != "gen":
            ok &= split_of(config, _render(config, v, cond["context"], cond["numbers"])) == SPLITS.index(split)
        if keep is not None:
            ok &= keep(cond)
        parts.append({k: a[ok] for k, a in cond.items()})
        have += int(ok.sum())
        if have >= n:
            break
    else:
        raise TaskError(f"split {split!r} cannot be filled with {n} trials under this config")
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}, v


def generate(config: CDMConfig, n: int, seed: int, tokenizer: Any, split: str = "train") -> TrialBatch:
    """n trials of `split`, deterministic under `seed`. train/val/test partition the trial space by a hash of
    the tokens (never sharing a trial); "gen" holds only held-out conditions, absent from the other three."""
    cond, v = _draw(config, n, seed, tokenizer, split)
    return _assemble(config, v, cond, split, seed)


def make_pairs(config: CDMConfig, n: int, seed: int, tokenizer: Any, corruption: str,
               split: str = "test") -> tuple[TrialBatch, TrialBatch]:
    """Clean/corrupted pairs of equal length and aligned positions.

    context-flip: same stimuli, the other cue; drawn from incongruent trials only so the answer flips.
    relevant-flip: the relevant modality's left/right numbers swapped; the answer flips.
    irrelevant-flip: the irrelevant modality's numbers swapped; the answer is unchanged (a control).
    """
    if corruption not in CORRUPTIONS:
        raise TaskError(f"unknown corruption {corruption!r} (choose from {', '.join(CORRUPTIONS)})")
    keep = (lambda c: c["choice"][:, 0] != c["choice"][:, 1]) if corruption == "context-flip" else None
    cond, v = _draw(config, n, seed, tokenizer, split, keep=keep)
    bad = {k: a.copy() for k, a in cond.items()}
    idx = np.arange(len(cond["context"]))
    if corruption == "context-flip":
        bad["context"] = 1 - cond["context"]
    else:
        m = cond["context"] if corruption == "relevant-flip" else 1 - cond["context"]
        bad["choice"][idx, m] = 1 - cond["choice"][idx, m]
        bad["numbers"][idx, m] = cond["numbers"][idx, m][..., ::-1]
        bad["clean_numbers"][idx, m] = cond["clean_numbers"][idx, m][..., ::-1]
    return _assemble(config, v, cond, split, seed), _assemble(config, v, bad, split, seed)


def render_text(batch: TrialBatch, tokenizer: Any, i: int) -> str:
    return tokenizer.decode([int(t) for t in batch.tokens[i]])


def bayes_optimal_accuracy(config: CDMConfig, n: int = 4000, seed: int = 0, split: str = "test") -> float:
    """Accuracy of the ideal observer that knows the generative model and the context, estimated as the mean
    posterior probability of its choice over n simulated trials (exactly 1.0 without noise)."""
    if config.noise_sd == 0:
        return 1.0
    lo, hi = config.split_range(split)
    values = np.arange(lo, hi + 1)
    sd = config.noise_sd
    erf = np.vectorize(math.erf)
    cdf = lambda x: 0.5 * (1 + erf(x / (sd * math.sqrt(2))))  # noqa: E731
    c = values[None, :]
    upper = np.where(values[:, None] == hi, 1.0, cdf(values[:, None] + 0.5 - c))
    lower = np.where(values[:, None] == lo, 0.0, cdf(values[:, None] - 0.5 - c))
    logp = np.log(np.clip(upper - lower, 1e-300, None))  # [observed, clean]
    rng = np.random.default_rng(seed)
    cond = _sample_conditions(config, n, rng, split if split != "test" else "train")
    i = np.arange(n)
    obs = cond["numbers"][i, cond["context"]] - lo  # [trials, sample, side]
    loglik = np.full((n, 2), -np.inf)
    for coh in config.split_coherences(split if split != "test" else "train"):
        d = config.diff(coh)
        bases = np.arange(lo, hi - d + 1) - lo
        for side in (0, 1):
            clean_l = bases + (d if side == 0 else 0)
            clean_r = bases + (d if side == 1 else 0)
            ll = logp[obs[:, :, 0][..., None], clean_l].sum(1) + logp[obs[:, :, 1][..., None], clean_r].sum(1)
            ll = ll - math.log(len(bases))
            loglik[:, side] = np.logaddexp(loglik[:, side], np.logaddexp.reduce(ll, axis=1))
    post_right = 1.0 / (1.0 + np.exp(loglik[:, 0] - loglik[:, 1]))
    return float(np.mean(np.maximum(post_right, 1 - post_right)))
