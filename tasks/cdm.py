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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.base import (SPLITS, Corruption, Task, TaskError, TokenTask, TrialBatch, check_coherences,  # noqa: F401
                        check_draw, check_finite, check_name, check_number_ranges, check_split_fractions, layout_of,
                        render_text, round_half_up, same_length, single_token, split_of, token_ids, trial_hash,
                        with_number_symbols)
from tasks.base import split_range as _split_range

NAME = "ContextDecisionMaking"
CORRUPTION_INFO = {
    "context-flip": Corruption("same stimuli, the other cue: the answer flips", True,
                               "incongruent trials only (the cue flips the answer only there)"),
    "relevant-flip": Corruption("the relevant modality's left and right numbers swapped: the answer flips", True),
    "irrelevant-flip": Corruption("the irrelevant modality's numbers swapped: the answer is unchanged (a control)",
                                  False),
}
CORRUPTIONS = tuple(CORRUPTION_INFO)


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
    name: the task's registered name (fixed).
    """

    name: str = NAME
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
        check_name(self.name, NAME)
        check_finite(self)
        check_coherences(self.coherences)
        check_number_ranges(self.number_range, self.heldout_number_range)
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
        for split in ("train", "gen"):
            if split == "gen" and not self.has_gen:
                continue
            lo, hi = self.split_range(split)
            if hi - lo < max(self.diff(c) for c in self.split_coherences(split)):
                raise TaskError(f"number range {lo}..{hi} ({split}) is too small for coherence "
                                f"{max(self.split_coherences(split))} (difference "
                                f"{max(self.diff(c) for c in self.split_coherences(split))})")
        check_split_fractions(self.split_fractions)

    def diff(self, coherence: int) -> int:
        return max(1, round_half_up(coherence * self.diff_per_coherence))

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
        return _split_range(self.number_range, self.heldout_number_range, split)


def task_symbols(config: CDMConfig) -> list[str]:
    """Every symbol the task renders (a tokenizer made for this project keeps each one whole)."""
    lo, hi = config.number_range
    return [config.cue_word, *config.modality_words, *config.answer_words, config.separator, config.query_word,
            *(f" {n}" for n in range(lo, hi + 1))]


def required_symbols(config: CDMConfig) -> list[str]:
    """What a tokenizer made for this project keeps whole: the task symbols and the numbers without a space."""
    words = [config.cue_word, *config.modality_words, *config.answer_words, config.separator, config.query_word]
    return with_number_symbols(words, config.number_range)


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


def _build_vocab(config: CDMConfig, tokenizer: Any) -> Vocab:
    lo, hi = config.number_range
    bos = getattr(tokenizer, "bos_token_id", None) if config.prepend_bos else None
    if config.prepend_bos and bos is None:
        raise TaskError("prepend_bos is set but the tokenizer has no BOS token")
    mods = same_length(tokenizer, list(config.modality_words), "the modality words")
    numbers = same_length(tokenizer, [f" {n}" for n in range(lo, hi + 1)], f"the numbers {lo}..{hi}")
    return Vocab(
        cue=token_ids(tokenizer, config.cue_word), modalities=(mods[0], mods[1]),
        answers=(single_token(tokenizer, config.answer_words[0], "answer word"),
                 single_token(tokenizer, config.answer_words[1], "answer word")),
        separator=token_ids(tokenizer, config.separator), query=token_ids(tokenizer, config.query_word),
        bos=bos, number_offset=lo, numbers=np.array(numbers, dtype=np.int64))


def seq_len(config: CDMConfig, tokenizer: Any) -> int:
    """Tokens per trial of this config under this tokenizer."""
    return len(layout(config, vocab(config, tokenizer))[1])


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
    """Named positions and a label per position (`tasks.base.layout_of`), the same for every trial of a config."""
    return layout_of(_segments(config, v))


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
    meta["relevant_coherence"] = np.abs(meta["relevant_signed_coherence"])
    positions, labels = layout(config, v)
    return TrialBatch(tokens=tokens, answer_ids=answers[label], wrong_ids=answers[1 - label], labels=label,
                      meta=meta, positions=positions, position_labels=labels, split=split, seed=seed, task=NAME,
                      answer_words=tuple(config.answer_words),
                      variables={"context": "context", "relevant_evidence": "relevant_signed_coherence",
                                 "irrelevant_evidence": "irrelevant_signed_coherence"},
                      evidence={"relevant": "relevant_signed_coherence", "irrelevant": "irrelevant_signed_coherence"},
                      group="context",
                      conditions={"context": "context", "relevant_coherence": "relevant_coherence",
                                  "congruent": "congruent"},
                      key_position="context")


class _ContextDecision(TokenTask):
    def build_vocab(self, config: CDMConfig, tokenizer: Any) -> Vocab:
        """The token ids of the config's symbols, or one clear error naming a symbol that breaks the alignment."""
        return _build_vocab(config, tokenizer)

    def sample(self, config: CDMConfig, n: int, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        return _sample_conditions(config, n, rng, split)

    def render(self, config: CDMConfig, v: Vocab, cond: dict[str, np.ndarray]) -> np.ndarray:
        return _render(config, v, cond["context"], cond["numbers"])

    def assemble(self, config: CDMConfig, v: Vocab, cond: dict[str, np.ndarray], split: str, seed: int
                 ) -> TrialBatch:
        return _assemble(config, v, cond, split, seed)

    def check_split(self, config: CDMConfig, split: str, n: int) -> None:
        if split == "gen" and not config.has_gen:
            raise TaskError("the generalisation split is empty: set heldout_coherences or heldout_number_range")
        check_draw(split, n, config.has_gen)

    def cells(self, config: CDMConfig, corruption: str | None = None) -> Any:
        """Answer side x congruence (4 cells); the pairs of context-flip (incongruent trials only): answer side."""
        def side_and_congruence(c: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
            side = c["choice"][np.arange(len(c["context"])), c["context"]]
            if corruption == "context-flip":
                return side.astype(np.int64), 2
            return (2 * side + (c["choice"][:, 0] == c["choice"][:, 1])).astype(np.int64), 4
        return side_and_congruence

    def pair_filter(self, config: CDMConfig, corruption: str, split: str) -> Any:
        """context-flip draws incongruent trials only, so that the answer flips."""
        return (lambda c: c["choice"][:, 0] != c["choice"][:, 1]) if corruption == "context-flip" else None

    def corrupt(self, config: CDMConfig, cond: dict[str, np.ndarray], corruption: str, split: str, seed: int
                ) -> dict[str, np.ndarray]:
        """context-flip: same stimuli, the other cue; the answer flips. relevant-flip: the relevant modality's
        left/right numbers swapped; the answer flips. irrelevant-flip: the irrelevant modality's numbers swapped;
        the answer is unchanged (a control)."""
        bad = {k: a.copy() for k, a in cond.items()}
        idx = np.arange(len(cond["context"]))
        if corruption == "context-flip":
            bad["context"] = 1 - cond["context"]
        else:
            m = cond["context"] if corruption == "relevant-flip" else 1 - cond["context"]
            bad["choice"][idx, m] = 1 - cond["choice"][idx, m]
            bad["numbers"][idx, m] = cond["numbers"][idx, m][..., ::-1]
            bad["clean_numbers"][idx, m] = cond["clean_numbers"][idx, m][..., ::-1]
        return bad


IMPL = _ContextDecision(NAME, CORRUPTION_INFO)
vocab, generate, make_pairs = IMPL.vocab, IMPL.generate, IMPL.make_pairs


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
    post_right = 0.5 * (1.0 + np.tanh((loglik[:, 1] - loglik[:, 0]) / 2.0))  # logistic, without overflow
    return float(np.mean(np.maximum(post_right, 1 - post_right)))


TASK = Task(
    name=NAME,
    summary="Context-dependent decision (Mante et al. 2013): a cue names which of two modalities to compare; "
            "answer the side whose number is larger in that modality.",
    neurogym="NeuroGym ContextDecisionMaking: two modalities carry evidence for choice 1 or 2, a context input "
             "says which one counts; the other modality's choice is drawn independently (about half the trials "
             "congruent). Here each modality shows two numbers and coherence sets their difference; no time "
             "steps (one sample by default) and no fixation/delay periods.",
    shortcut="answer with the choice of the modality not named by the cue (wrong on every incongruent trial)",
    config=CDMConfig, generate=generate, make_pairs=make_pairs, symbols=required_symbols,
    corruptions=CORRUPTION_INFO, default_corruption="context-flip",
    bayes_optimal_accuracy=lambda config, **kw: bayes_optimal_accuracy(config, **kw))
