"""The shared task skeleton (`tasks.base.TokenTask`): a new task written as its five steps gets generation through
the split partition, a cached vocabulary and aligned pairs from the base class alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from tasks.base import Corruption, TaskError, TokenTask, TrialBatch, columns, number_columns, number_table


@dataclass(frozen=True)
class LargerConfig:
    number_range: tuple[int, int] = (10, 60)
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    has_gen: bool = False


class Larger(TokenTask):
    """' a b' -> which is larger (side 1: the second). The only corruption swaps the two numbers."""

    builds = 0

    def build_vocab(self, config, tokenizer):
        Larger.builds += 1
        return number_table(tokenizer, *config.number_range)

    def sample(self, config, n, rng, split):
        a = rng.integers(config.number_range[0], config.number_range[1] + 1, (n, 2))
        return {"a": a[a[:, 0] != a[:, 1]]}

    def render(self, config, v, cond):
        lo = config.number_range[0]
        return np.stack(number_columns(v, lo, cond["a"][:, 0]) + number_columns(v, lo, cond["a"][:, 1])
                        + columns(len(cond["a"]), (0,)), axis=1)

    def assemble(self, config, v, cond, split, seed):
        label = (cond["a"][:, 1] > cond["a"][:, 0]).astype(np.int64)
        answers = np.array([1, 2])
        return TrialBatch(tokens=self.render(config, v, cond), answer_ids=answers[label], wrong_ids=answers[1 - label],
                          labels=label, meta={"congruent": np.ones(len(label), bool)}, positions={"answer": 2},
                          position_labels=["a", "b", "answer"], split=split, seed=seed, task=self.name,
                          answer_words=("x", "y"), variables={}, evidence={}, group=None, conditions={},
                          key_position="answer")

    def corrupt(self, config, cond, corruption, split, seed):
        return {"a": cond["a"][:, ::-1]}


def test_a_task_written_as_its_steps_gets_the_skeleton(tokenizer):
    t, cfg = Larger("Larger", {"swap": Corruption("the numbers swapped: the answer flips", True)}), LargerConfig()
    splits = {s: t.generate(cfg, 200, seed=1, tokenizer=tokenizer, split=s) for s in ("train", "val", "test")}
    rows = {s: {tuple(r) for r in b.tokens} for s, b in splits.items()}
    assert not (rows["train"] & rows["val"]) and not (rows["train"] & rows["test"]) and not (rows["val"] & rows["test"])
    again = t.generate(cfg, 200, seed=1, tokenizer=tokenizer, split="test")
    assert np.array_equal(again.tokens, splits["test"].tokens)  # deterministic under the seed
    assert not np.array_equal(t.generate(cfg, 200, seed=2, tokenizer=tokenizer, split="test").tokens, again.tokens)
    assert Larger.builds == 1  # the vocabulary is built once per (tokenizer, config)
    clean, bad = t.make_pairs(cfg, 50, seed=3, tokenizer=tokenizer, corruption="swap")
    assert clean.tokens.shape == bad.tokens.shape and np.array_equal(clean.labels, 1 - bad.labels)
    with pytest.raises(TaskError, match="no corruption 'other'"):
        t.make_pairs(cfg, 5, seed=0, tokenizer=tokenizer, corruption="other")
    with pytest.raises(TaskError, match="generalisation split is empty"):
        t.generate(cfg, 5, seed=0, tokenizer=tokenizer, split="gen")


def test_a_task_missing_a_step_is_refused_when_made():
    class NoCorrupt(TokenTask):
        build_vocab, sample, render, assemble = (Larger.build_vocab, Larger.sample, Larger.render, Larger.assemble)

    with pytest.raises(TypeError, match="corrupt"):
        NoCorrupt("NoCorrupt", {})
