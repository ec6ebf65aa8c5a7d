"""No analysis unembeds more than the answer position: the unembedding's output is counted through a forward hook
on `model.unembed` while every per-model stage of `run` runs (evaluation, patching in every variant, attribution
patching, DLA, ablation, neurons, circuits with faithfulness, representations, reversion, cross-model patching).

Catches: a `run_with_cache(tokens)` (or `model(tokens)`) left somewhere, which unembeds [batch, pos, vocab]."""

from __future__ import annotations

import pytest
import torch

from experiments.analysis import stages
from interp.models import load_model
from tasks.cdm import CDMConfig, generate


class UnembedCounter:
    def __init__(self, model) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.handle = model.unembed.register_forward_hook(lambda mod, inp, out: self.shapes.append(tuple(out.shape)))

    def positions(self) -> set[int]:
        return {s[-2] if len(s) == 3 else 1 for s in self.shapes}


@pytest.fixture(scope="module")
def two_models(tiny_trained, tiny_base):
    return load_model(tiny_trained)[0], load_model(tiny_base)[0]


def test_counter_sees_a_full_unembedding(two_models):
    """The counter itself: a plain forward unembeds every position, so the check below could fail."""
    model, _ = two_models
    c = UnembedCounter(model)
    t = torch.tensor(generate(CDMConfig(), 4, seed=0, tokenizer=model.tokenizer).tokens)
    with torch.no_grad():
        model(t)
    c.handle.remove()
    assert c.positions() == {t.shape[1]}


def test_every_stage_unembeds_the_last_position_only(two_models):
    model, base = two_models
    task = CDMConfig()
    counters = [UnembedCounter(model), UnembedCounter(base)]
    try:
        stages.evaluate_model(model, task, 32, seed=0)
        stages.analyse_model(model, task, "context-flip", 8, seed=0, ablation="mean", detailed=True)
        stages.discover(model, task, "context-flip", 8, seed=0, method="eap-ig", ablation="corrupted", n_random=2,
                        level=0.8, overlap_fraction=0.2)
        test, reps = stages.representations_of({"m": model, "b": base}, task, 16, seed=0)
        stages.reliance(model, base, test, cmap=True)
        stages.base_ranking(base, task, "context-flip", 8, seed=0, method="eap")
        from experiments.analysis.attention import attention_page_of

        attention_page_of(model, {"name": "m"}, task, top=2, n=4, seed=0, corruption="context-flip")
    finally:
        for c in counters:
            c.handle.remove()
    assert counters[0].shapes, "the model was never unembedded: the counter is not attached"
    assert counters[0].positions() == {1} and counters[1].positions() == {1}, \
        f"full-sequence unembedding seen: {sorted(set(counters[0].shapes) | set(counters[1].shapes))[:5]}"
