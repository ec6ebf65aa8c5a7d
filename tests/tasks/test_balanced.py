"""Balanced trial sets (the referee's "unbalanced trial sets scored against an assumed chance"): each test names the
wrong implementation it catches."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tasks.base import TaskError, quotas
from tasks.cdm import CDMConfig, generate, make_pairs
from tasks.delay_match import DelayMatchConfig
from tasks.registry import generate as registry_generate


def _cell_counts(batch) -> dict[tuple[int, bool], int]:
    """(answer side, congruent) counts read from the assembled batch (its labels and meta), not from the cell
    function that balanced the draw."""
    keys, counts = np.unique(np.c_[batch.labels, batch.meta["congruent"]], axis=0, return_counts=True)
    return {(int(k[0]), bool(k[1])): int(c) for k, c in zip(keys, counts)}


@pytest.mark.parametrize("n", [64, 66, 4])
def test_a_balanced_set_fills_side_by_congruence_equally(tokenizer, n):
    """Catches a cell function that reads the wrong modality's choice (the first instead of the relevant one):
    the answer sides would then be unbalanced although the draw counted 'cells' equally; and a remainder that is
    dropped or given to one cell twice."""
    batch = generate(CDMConfig(), n, 0, tokenizer, "test", balanced=True)
    assert len(batch) == n
    counts = _cell_counts(batch)
    assert sorted(counts.values(), reverse=True) == sorted(quotas(n, 4).tolist(), reverse=True)
    assert set(counts) == {(s, c) for s in (0, 1) for c in (False, True)}


def test_balanced_context_flip_pairs_split_the_answer_sides_and_stay_incongruent(tokenizer):
    """Catches balancing context-flip pairs over congruence too (no congruent pair exists: the draw would never
    fill) and a balanced draw that drops the pair filter (congruent pairs, whose answer does not flip)."""
    clean, bad = make_pairs(CDMConfig(), 16, 0, tokenizer, "context-flip", balanced=True)
    assert np.bincount(clean.labels).tolist() == [8, 8]
    assert not clean.meta["congruent"].any()
    assert (bad.labels == 1 - clean.labels).all()


def test_a_task_without_cells_refuses_a_balanced_draw(tokenizer):
    """Catches a silent unbalanced draw when balance was asked for but the task names no cells."""
    with pytest.raises(TaskError, match="cannot balance"):
        registry_generate(DelayMatchConfig(), 8, 0, tokenizer, "test", balanced=True)


def test_unbalanced_draws_are_those_the_committed_records_used(tokenizer):
    """The draw without balancing is unchanged by the balancing code (same candidates, same order): these token ids
    are the trials of every record committed before it (hash taken before the change). Catches a changed
    candidate batch size or order in `tasks.base.draw`."""
    h = hashlib.sha256()
    for n in (1, 17, 64, 300):
        for split in ("train", "test", "val"):
            h.update(generate(CDMConfig(), n, 3, tokenizer, split).tokens.tobytes())
        c, b = make_pairs(CDMConfig(), n, 5, tokenizer, "context-flip")
        h.update(c.tokens.tobytes())
        h.update(b.tokens.tobytes())
    assert h.hexdigest() == "c28caea114833fc20b7fe3c82a38bd9726a83ba4dc9071a195852944845edae7"


def test_a_balanced_draw_is_deterministic_and_keeps_the_split(tokenizer):
    """Catches a balanced draw that takes trials of another split (test trials must never be training trials)."""
    a = generate(CDMConfig(), 32, 7, tokenizer, "test", balanced=True)
    b = generate(CDMConfig(), 32, 7, tokenizer, "test", balanced=True)
    assert (a.tokens == b.tokens).all()
    train = {t.tobytes() for t in generate(CDMConfig(), 2000, 7, tokenizer, "train").tokens}
    assert not any(t.tobytes() in train for t in a.tokens)
