"""Multi-sensory integration (NeuroGym `MultiSensoryIntegration`) as tokens.

Conventions (as in `tasks.cdm`): trials = the batch axis; seq = token positions (one layout per config, so
positions align); mod = the two modalities (0 = `modality_words[0]`, sound; 1 = light); side 0 = left, 1 = right.

A trial (default config):
  <bos> sound 43 51 light 62 58 . answer   ->  " right"
Each modality shows a left and a right number; its signed evidence is right - left (positive towards `right`),
its |difference| set by its coherence. The answer is the side of the summed evidence of both modalities: above,
sound says right by 8, light left by 4, the sum (+4) right.

NeuroGym (neurogym/neurogym, neurogym/envs/multisensory.py): a trial draws a ground truth (one of dim_ring = 2
choices), one coherence from (5, 15, 50) and p ~ Uniform(0, 1); modality 1 gets coherence coh * p, modality 2
coh * (1 - p), so the two strengths sum to the drawn coherence. Both ring inputs are tuned to the SAME direction,
the ground truth: the modalities never disagree (a TODO in the source says so). Gaussian noise sigma / sqrt(dt) is
added; timing is fixation 300 ms, stimulus 750 ms, decision 100 ms (inputs off, target = ground truth), dt 100 ms.

Departures here:
  - each modality draws its own coherence level independently (no one coherence split by a continuous fraction);
    a level becomes a number difference as in CDM.
  - conflict=True (default): each modality's direction is drawn independently, so half the trials conflict and the
    answer is the direction of the modality with the larger |difference| (conflicting modalities always get
    different levels: no ties). Without noise this is what makes integration necessary. conflict=False gives
    NeuroGym's always-agreeing modalities (every trial congruent: the shortcut below is then exact).
  - no noise, time steps, fixation or decision periods: one sample per modality, then the query; named modalities
    in a fixed order.

Shortcut: follow the first modality alone. `congruent` = its direction is the answer; incongruent = conflicting
trials where it is the weaker one, 25% of trials by default. Meta keys of the per-modality evidence are
"<word>_evidence", <word> the stripped modality word ("sound_evidence", "light_evidence").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.base import (Corruption, Task, TaskError, TokenTask, TrialBatch, check_coherences, check_finite, check_name,
                        check_number_ranges, check_split_fractions, columns, layout_of, number_columns, number_table,
                        round_half_up, single_token, split_range, token_ids, with_number_symbols)

NAME = "MultiSensoryIntegration"
STRONGER_DIFFER = "trials whose two modalities differ in |difference|"
CORRUPTION_INFO = {
    "flip-stronger": Corruption("the stronger modality's left and right numbers swapped: the answer flips", True,
                                STRONGER_DIFFER),
    "flip-both": Corruption("both modalities' numbers swapped: the answer flips", True),
    "flip-weaker": Corruption("the weaker modality's numbers swapped: the answer is unchanged (a control)", False,
                              STRONGER_DIFFER),
}
RESERVED = ("bos", "sep", "answer", "total", "signed")  # position names and meta-key stems the task uses itself


@dataclass(frozen=True)
class MultiSensoryConfig:
    """Every choice of the token format, with documented defaults (`name` is fixed).

    coherences: levels (percent, 1..100) as in NeuroGym (5, 15, 50), drawn per modality; a modality's
        |right - left| = max(1, round(coherence * diff_per_coherence)): 5->3, 15->8, 50->25 (distinct per level).
    modality_words: the two modalities in the order shown; stripped, they name positions and meta keys.
    answer_words: (left, right), single tokens; evidence is positive towards the second.
    conflict: draw each modality's direction independently (True) or one shared direction (False, as NeuroGym).
    heldout_number_range: () or (a, b) at one end of number_range: train/val/test numbers avoid it, "gen" uses it.
    split_fractions: train/val/test shares of the trial space, assigned by a hash of the trial's tokens.
    """

    name: str = NAME
    coherences: tuple[int, ...] = (5, 15, 50)
    diff_per_coherence: float = 0.5
    number_range: tuple[int, int] = (10, 99)
    modality_words: tuple[str, ...] = (" sound", " light")
    answer_words: tuple[str, ...] = (" left", " right")
    separator: str = "."
    query_word: str = " answer"
    conflict: bool = True
    heldout_number_range: tuple[int, ...] = ()
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    prepend_bos: bool = True

    def __post_init__(self) -> None:
        check_name(self.name, NAME)
        check_finite(self)
        self._check_coherences()
        check_number_ranges(self.number_range, self.heldout_number_range)
        self._check_words()
        for flag in ("conflict", "prepend_bos"):
            if not isinstance(getattr(self, flag), bool):
                raise TaskError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        for split in ("train", "gen") if self.has_gen else ("train",):
            lo, hi = self.split_range(split)
            if hi - lo < max(self.diff(c) for c in self.coherences):
                raise TaskError(f"number range {lo}..{hi} ({split}) is too small for coherence "
                                f"{max(self.coherences)} (difference {self.diff(max(self.coherences))})")
        check_split_fractions(self.split_fractions)

    def _check_coherences(self) -> None:
        check_coherences(self.coherences)
        if not self.diff_per_coherence > 0:
            raise TaskError(f"diff_per_coherence must be > 0, got {self.diff_per_coherence}")
        diffs = [self.diff(c) for c in self.coherences]
        if len(set(diffs)) != len(diffs):
            raise TaskError(f"coherences {self.coherences} give equal number differences {diffs}: raise "
                            "diff_per_coherence")
        if self.conflict is True and len(self.coherences) < 2:
            raise TaskError("conflict=True needs at least two coherences (conflicting modalities of one strength tie)")

    def _check_words(self) -> None:
        for role in ("modality_words", "answer_words"):
            ws = getattr(self, role)
            if len(ws) != 2 or len(set(ws)) != 2 or not all(isinstance(w, str) and w for w in ws):
                raise TaskError(f"{role} must be two distinct non-empty words, got {list(ws)}")
        names = self.modality_names
        if len(set(names)) != 2 or not all(n.isidentifier() and n not in RESERVED for n in names):
            raise TaskError(f"modality_words must strip to two distinct identifiers other than {RESERVED} (they name "
                            f"positions and meta keys), got {list(self.modality_words)}")
        words = list(task_symbols(self, numbers=False))
        if not self.separator or not self.query_word or len(set(words)) != len(words):
            raise TaskError(f"task words must be non-empty and all differ, got {words}")
        numbers = {f" {n}" for n in range(self.number_range[0], self.number_range[1] + 1)}
        if numbers & set(words):
            raise TaskError(f"a task word collides with a number symbol: {sorted(numbers & set(words))}")

    def diff(self, coherence: int) -> int:
        return max(1, round_half_up(coherence * self.diff_per_coherence))

    @property
    def modality_names(self) -> tuple[str, str]:
        return self.modality_words[0].strip(), self.modality_words[1].strip()

    @property
    def has_gen(self) -> bool:
        return bool(self.heldout_number_range)

    def split_range(self, split: str) -> tuple[int, int]:
        return split_range(self.number_range, self.heldout_number_range, split)


def task_symbols(config: MultiSensoryConfig, numbers: bool = True) -> list[str]:
    """Every symbol the task renders (a tokenizer made for this project keeps each one whole)."""
    lo, hi = config.number_range
    words = [*config.modality_words, *config.answer_words, config.separator, config.query_word]
    return words + ([f" {n}" for n in range(lo, hi + 1)] if numbers else [])


def required_symbols(config: MultiSensoryConfig) -> list[str]:
    """What a tokenizer made for this project keeps whole (`tasks.base.with_number_symbols`)."""
    return with_number_symbols(task_symbols(config, numbers=False), config.number_range)


@dataclass(frozen=True)
class Vocab:
    """Token ids of every symbol (words may be several tokens; all numbers share one length; answers are one)."""

    modalities: tuple[tuple[int, ...], tuple[int, ...]]
    answers: np.ndarray
    separator: tuple[int, ...]
    query: tuple[int, ...]
    bos: int | None
    numbers: np.ndarray  # [number, token] ids of " n" at row n - number_range[0]


def _build_vocab(config: MultiSensoryConfig, tokenizer: Any) -> Vocab:
    bos = getattr(tokenizer, "bos_token_id", None) if config.prepend_bos else None
    if config.prepend_bos and bos is None:
        raise TaskError("prepend_bos is set but the tokenizer has no BOS token")
    return Vocab(modalities=(token_ids(tokenizer, config.modality_words[0]),
                             token_ids(tokenizer, config.modality_words[1])),
                 answers=np.array([single_token(tokenizer, w, "answer word") for w in config.answer_words]),
                 separator=token_ids(tokenizer, config.separator), query=token_ids(tokenizer, config.query_word),
                 bos=bos, numbers=number_table(tokenizer, *config.number_range))


def _segments(config: MultiSensoryConfig, v: Vocab) -> list[tuple[str, int]]:
    """(position name, number of tokens) of each symbol of a trial, in order."""
    k = v.numbers.shape[1]
    mods = [seg for m, name in enumerate(config.modality_names)
            for seg in ((name, len(v.modalities[m])), (f"{name}.left", k), (f"{name}.right", k))]
    bos = [("bos", 1)] if v.bos is not None else []
    return bos + mods + [("sep", len(v.separator)), ("answer", len(v.query))]


def _render(config: MultiSensoryConfig, v: Vocab, numbers: np.ndarray) -> np.ndarray:
    """Token ids [trials, seq] from numbers [trials, mod, side]."""
    n, lo = len(numbers), config.number_range[0]
    cols = columns(n, (v.bos,)) if v.bos is not None else []
    for m in range(2):
        cols += columns(n, v.modalities[m])
        cols += number_columns(v.numbers, lo, numbers[:, m, 0]) + number_columns(v.numbers, lo, numbers[:, m, 1])
    return np.stack(cols + columns(n, v.separator) + columns(n, v.query), axis=1)


def _sample(config: MultiSensoryConfig, n: int, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
    """Directions, coherences and numbers of n candidate trials; conflicting modalities get different levels."""
    lo, hi = config.split_range(split)
    cohs = np.asarray(config.coherences)
    first = rng.integers(0, 2, n)
    choice = np.stack([first, rng.integers(0, 2, n) if config.conflict else first], axis=1)
    i0 = rng.integers(0, len(cohs), n)
    other = (i0 + rng.integers(1, max(len(cohs), 2), n)) % len(cohs)  # any level but i0
    i1 = np.where(choice[:, 0] != choice[:, 1], other, rng.integers(0, len(cohs), n))
    coherence = cohs[np.stack([i0, i1], axis=1)]
    diff = np.array([config.diff(c) for c in config.coherences])[np.stack([i0, i1], axis=1)]
    base = lo + np.floor(rng.random((n, 2)) * (hi - diff - lo + 1)).astype(np.int64)
    numbers = np.stack([base + diff * (choice == 0), base + diff * (choice == 1)], axis=-1)
    return {"coherence": coherence, "numbers": numbers}


def _assemble(config: MultiSensoryConfig, v: Vocab, cond: dict[str, np.ndarray], split: str,
              seed: int) -> TrialBatch:
    """The batch of given numbers: every direction and the answer are read off the numbers themselves."""
    numbers = cond["numbers"]
    signed = numbers[..., 1] - numbers[..., 0]
    total = signed.sum(axis=1)
    if (total == 0).any():
        raise TaskError("internal: a trial's summed evidence is zero")
    label = (total > 0).astype(np.int64)
    choice = (signed > 0).astype(np.int64)
    m0, m1 = config.modality_names
    meta = {"numbers": numbers, "choice": choice, "coherence": cond["coherence"], "signed_evidence": signed,
            f"{m0}_evidence": signed[:, 0], f"{m1}_evidence": signed[:, 1], "total_evidence": total,
            "agree": choice[:, 0] == choice[:, 1], "congruent": choice[:, 0] == label}
    positions, labels = layout_of(_segments(config, v))
    return TrialBatch(tokens=_render(config, v, numbers), answer_ids=v.answers[label], wrong_ids=v.answers[1 - label],
                      labels=label, meta=meta, positions=positions, position_labels=labels, split=split, seed=seed,
                      task=NAME, answer_words=tuple(config.answer_words),
                      variables={f"{m0}_evidence": f"{m0}_evidence", f"{m1}_evidence": f"{m1}_evidence"},
                      evidence={m0: f"{m0}_evidence", m1: f"{m1}_evidence", "total": "total_evidence"}, group=None,
                      conditions={"agree": "agree", "congruent": "congruent"}, key_position=m1)


class _MultiSensory(TokenTask):
    def build_vocab(self, config: MultiSensoryConfig, tokenizer: Any) -> Vocab:
        return _build_vocab(config, tokenizer)

    def sample(self, config: MultiSensoryConfig, n: int, rng: np.random.Generator, split: str
               ) -> dict[str, np.ndarray]:
        return _sample(config, n, rng, split)

    def render(self, config: MultiSensoryConfig, v: Vocab, cond: dict[str, np.ndarray]) -> np.ndarray:
        return _render(config, v, cond["numbers"])

    def assemble(self, config: MultiSensoryConfig, v: Vocab, cond: dict[str, np.ndarray], split: str,
                 seed: int) -> TrialBatch:
        return _assemble(config, v, cond, split, seed)

    def check_pairs(self, config: MultiSensoryConfig, corruption: str) -> None:
        if corruption != "flip-both" and len(config.coherences) < 2:
            raise TaskError(f"{corruption} needs two modalities of different strength: give at least two coherences")

    def pair_filter(self, config: MultiSensoryConfig, corruption: str, split: str) -> Any:
        """flip-stronger and flip-weaker draw only trials whose modalities differ in strength."""
        if corruption == "flip-both":
            return None
        return lambda c: c["coherence"][:, 0] != c["coherence"][:, 1]

    def corrupt(self, config: MultiSensoryConfig, cond: dict[str, np.ndarray], corruption: str, split: str,
                seed: int) -> dict[str, np.ndarray]:
        """Only number positions change. flip-stronger: the modality with the larger |difference| swaps its
        numbers; the answer flips. flip-both: both modalities swap their numbers; the answer flips. flip-weaker:
        the modality with the smaller |difference| swaps its numbers; the answer is unchanged. Corrupted trials
        may conflict even under conflict=False."""
        numbers = cond["numbers"]
        strength = np.abs(numbers[..., 1] - numbers[..., 0])
        flip = np.ones_like(strength, dtype=bool)
        if corruption != "flip-both":
            stronger = np.argmax(strength, axis=1)
            flip = (np.arange(2)[None, :] == stronger[:, None]) == (corruption == "flip-stronger")
        return {**cond, "numbers": np.where(flip[..., None], numbers[..., ::-1], numbers)}


IMPL = _MultiSensory(NAME, CORRUPTION_INFO)
vocab, generate, make_pairs = IMPL.vocab, IMPL.generate, IMPL.make_pairs


TASK = Task(
    name=NAME,
    summary="Multi-sensory integration: two modalities each show a left and a right number; answer the side the "
            "summed evidence (right - left over both modalities) favours.",
    neurogym="NeuroGym: two noisy inputs always point to the same choice, one coherence (5/15/50) split between "
             "them by a uniform fraction; fixation/stimulus/decision periods. Here each modality draws its own "
             "coherence (a number difference) and by default its own direction (conflicts go to the stronger; "
             "conflict=False agrees as NeuroGym); no noise, time steps or periods.",
    shortcut="follow the first modality alone (wrong on conflicting trials where it is the weaker one)",
    config=MultiSensoryConfig, generate=generate, make_pairs=make_pairs, symbols=required_symbols,
    corruptions=CORRUPTION_INFO, default_corruption="flip-stronger")
