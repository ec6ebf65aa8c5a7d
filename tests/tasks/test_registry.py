"""The task interface: every registered task keeps the contract the pipeline relies on; the context-dependent task
gives exactly what it gave before it moved behind the interface; bad task input is refused by name."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from experiments.core.config import ConfigError, build_task
from tasks.base import TaskError
from tasks.cdm import CDMConfig
from tasks.registry import TASKS, generate, get_task, make_pairs, task_of

# Digests of trials made by tasks/cdm.py at commit 63ddb09, before the task interface existed (same seeds and
# configs, the shipped tokenizer): moving the task behind the interface must not change a single token or label.
BEFORE = {
    "default/train": "e60d6b5a932c4964", "default/val": "b9c74c83df937f6a", "default/test": "26a1b8d61d0537d1",
    "default/context-flip": "9b80eadd6dfca344235d2075f78bfdfb",
    "default/relevant-flip": "17e9fc58089a039fdd43baf982d1b6c3",
    "default/irrelevant-flip": "17e9fc58089a039fcd2eca6d43267eeb",
    "noisy/train": "b7f4e1814f444d0f", "noisy/val": "c80043f381aa23a0", "noisy/test": "0a8699ef5afbeb1f",
    "noisy/gen": "06d347bc0f0433b7", "noisy/context-flip": "3ea8553d061eb69cac642536dd4ef2c1",
    "noisy/relevant-flip": "60d6398feb3633e7c845e607ed17f0a4",
    "noisy/irrelevant-flip": "60d6398feb3633e7b6ea601de56fd84e",
}
OLD_META = ["clean_numbers", "choice", "coherence", "congruent", "context", "irrelevant_signed_coherence", "numbers",
            "relevant_signed_coherence", "signed_coherence"]


def _digest(b) -> str:
    h = hashlib.sha256()
    for a in (b.tokens, b.answer_ids, b.wrong_ids, b.labels):
        h.update(np.ascontiguousarray(a).tobytes())
    for k in sorted(OLD_META):
        h.update(k.encode())
        h.update(np.ascontiguousarray(b.meta[k]).tobytes())
    h.update(json.dumps(b.positions, sort_keys=True).encode())
    h.update(json.dumps(b.position_labels).encode())
    return h.hexdigest()[:16]


def test_context_decision_task_is_unchanged_behind_the_interface(tokenizer):
    configs = {"default": CDMConfig(),
               "noisy": CDMConfig(n_samples=3, noise_sd=2.0, cue_position="after", heldout_number_range=(70, 99))}
    got = {}
    for name, c in configs.items():
        for split in ("train", "val", "test") + (("gen",) if c.has_gen else ()):
            got[f"{name}/{split}"] = _digest(generate(c, 300, 7, tokenizer, split))
        for cor in ("context-flip", "relevant-flip", "irrelevant-flip"):
            a, b = make_pairs(c, 64, 3, tokenizer, cor)
            got[f"{name}/{cor}"] = _digest(a) + _digest(b)
    assert got == BEFORE
    assert get_task("ContextDecisionMaking").bayes_optimal_accuracy(configs["noisy"], n=500) == \
        pytest.approx(0.9897633370422286, abs=1e-12)


def test_at_least_four_tasks_are_registered():
    assert {"ContextDecisionMaking", "DelayComparison", "MultiSensoryIntegration", "DelayMatchSample"} <= set(TASKS)


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_keeps_the_batch_contract(name, tokenizer):
    """What the pipeline reads of any task: catches a task whose variables, conditions or evidence name a
    metadata key it does not write, a key position that is not a position, answers that are not the named words,
    a corruption that does not flip (or keep) the answer as it declares, or pairs that do not align."""
    task = get_task(name)
    config = task.config()
    assert task_of(config) is task and config.name == name
    b = generate(config, 400, seed=5, tokenizer=tokenizer, split="test")
    assert b.task == name and len(b.answer_words) == 2
    for key in [*b.variables.values(), *b.evidence.values(), *b.conditions.values(), "congruent"] + \
            ([b.group] if b.group else []):
        assert key in b.meta and len(b.meta[key]) == len(b), key
    assert b.meta["congruent"].dtype == bool and 0 < b.meta["congruent"].mean() < 1  # both kinds of trial occur
    assert b.key_position in b.positions and b.positions["answer"] == b.tokens.shape[1] - 1
    words = [tokenizer.encode(w, add_special_tokens=False) for w in b.answer_words]
    assert all(len(w) == 1 for w in words)
    assert np.array_equal(b.answer_ids, np.array([w[0] for w in words])[b.labels])
    assert np.array_equal(b.wrong_ids, np.array([w[0] for w in words])[1 - b.labels])
    assert 0.35 < b.labels.mean() < 0.65
    assert task.default_corruption in task.corruptions and task.corruptions[task.default_corruption].flips
    for cor, info in task.corruptions.items():
        clean, bad = make_pairs(config, 64, seed=2, tokenizer=tokenizer, corruption=cor)
        assert clean.tokens.shape == bad.tokens.shape and clean.position_labels == bad.position_labels
        assert (clean.tokens != bad.tokens).any(1).all(), cor  # every pair differs somewhere
        assert ((clean.labels != bad.labels).all() if info.flips else (clean.labels == bad.labels).all()), cor
    assert set(task.symbols(config)) >= set(b.answer_words)


def test_an_unknown_task_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown task 'Nope' .*DelayComparison"):
        build_task({"name": "Nope"}, "cfg [task]")


def test_a_key_the_named_task_does_not_have_is_refused_by_name():
    with pytest.raises(ConfigError, match="unknown key.*coherences"):
        build_task({"name": "DelayMatchSample", "coherences": [5, 15]}, "cfg [task]")
    assert build_task({"coherences": [5, 15]}, "cfg [task]") == CDMConfig(coherences=(5, 15))  # no name: default


def test_a_corruption_the_task_does_not_define_is_refused(tokenizer):
    from tasks.delay_comparison import DelayComparisonConfig

    with pytest.raises(TaskError, match="no corruption 'context-flip'.*swap"):
        make_pairs(DelayComparisonConfig(), 8, 0, tokenizer, "context-flip")


def test_a_config_class_refuses_another_tasks_name():
    with pytest.raises(TaskError, match="name must be"):
        CDMConfig(name="DelayComparison")


def test_the_vocabulary_cache_never_serves_a_dead_tokenizers_ids():
    """Python may place a new tokenizer at a freed one's address (same id): catches a cache keyed on id alone."""
    from tasks.base import cached

    class Tok:
        pass

    cache, t = {}, Tok()
    assert cached(cache, t, "cfg", lambda: "ids of t") == "ids of t"
    assert cached(cache, t, "cfg", lambda: "rebuilt") == "ids of t"  # same live object: cached

    class Dead:
        pass

    import weakref

    d = Dead()
    cache[(id(t), "cfg")] = (weakref.ref(d), "ids of a dead tokenizer")  # an entry left by another object at t's id
    del d
    assert cached(cache, t, "cfg", lambda: "ids of t, rebuilt") == "ids of t, rebuilt"
