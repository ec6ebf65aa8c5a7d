from __future__ import annotations

import numpy as np
import pytest

from tasks.cdm import (CDMConfig, TaskError, bayes_optimal_accuracy, generate, make_pairs, split_of, task_symbols,
                       trial_hash)

VARIANTS = {
    "default": CDMConfig(),
    "cue-after": CDMConfig(cue_position="after"),
    "noisy-3": CDMConfig(n_samples=3, noise_sd=4.0),
    "range-20-60": CDMConfig(number_range=(20, 60), coherences=(10, 30, 60)),
}


def span(batch, name: str) -> list[int]:
    """The positions of one symbol (several when the tokenizer splits it), from the position labels."""
    return [i for i, lab in enumerate(batch.position_labels) if lab == name or lab.startswith(name + " (")]


def read(tokenizer, batch, i: int, name: str) -> str:
    return tokenizer.decode([int(batch.tokens[i, p]) for p in span(batch, name)])


def rederive(config: CDMConfig, batch, tokenizer) -> np.ndarray:
    """Answer side per trial recomputed from the rendered text and the metadata, independently of the generator:
    the context word is read back from the tokens; the relevant modality's side with the larger clean number wins;
    noise-free trials must also show that comparison in the rendered numbers."""
    assert read(tokenizer, batch, 0, "answer") == config.query_word
    out = np.empty(len(batch), dtype=np.int64)
    mods = list(config.modality_words)
    for i in range(len(batch)):
        ctx_word = read(tokenizer, batch, i, "context")
        rel = mods.index(ctx_word)
        name = ctx_word.strip()
        shown = [[int(read(tokenizer, batch, i, f"{name}.{side}{s}")) for s in range(config.n_samples)]
                 for side in ("left", "right")]
        assert shown == [list(batch.meta["numbers"][i, rel, :, 0]), list(batch.meta["numbers"][i, rel, :, 1])]
        clean = batch.meta["clean_numbers"][i, rel]
        out[i] = int(clean[1] > clean[0])
        if config.noise_sd == 0:
            assert int(shown[1][0] > shown[0][0]) == out[i]
        assert abs(int(clean[1]) - int(clean[0])) == config.diff(int(batch.meta["coherence"][i, rel]))
    return out


@pytest.mark.parametrize("name", list(VARIANTS))
def test_answers_rederived_on_10000_trials(name, tokenizer):
    config = VARIANTS[name]
    batch = generate(config, 10_000, seed=1, tokenizer=tokenizer)
    side = rederive(config, batch, tokenizer)
    assert np.array_equal(side, batch.labels)
    answers = np.array([tokenizer.encode(w, add_special_tokens=False)[0] for w in config.answer_words])
    assert np.array_equal(batch.answer_ids, answers[side])
    assert np.array_equal(batch.wrong_ids, answers[1 - side])
    assert 0.45 < batch.meta["congruent"].mean() < 0.55
    assert 0.45 < batch.meta["context"].mean() < 0.55
    assert batch.tokens.shape == (10_000, 1 + 3 + 2 * (1 + 2 * config.n_samples) + 2)  # every symbol one token here


def test_deterministic_under_seed(tokenizer):
    a = generate(CDMConfig(), 200, seed=7, tokenizer=tokenizer)
    b = generate(CDMConfig(), 200, seed=7, tokenizer=tokenizer)
    c = generate(CDMConfig(), 200, seed=8, tokenizer=tokenizer)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.tokens, c.tokens)


def _rows(batch):
    return {bytes(r) for r in batch.tokens.astype(np.int64)}


def test_splits_never_share_a_trial(tokenizer):
    config = CDMConfig(heldout_coherences=(15,))
    sets = {s: _rows(generate(config, 3000, seed=0, tokenizer=tokenizer, split=s)) for s in ("train", "val", "test", "gen")}
    for a in sets:
        for b in sets:
            if a < b:
                assert not sets[a] & sets[b], (a, b)
    gen = generate(config, 500, seed=0, tokenizer=tokenizer, split="gen")
    assert set(np.unique(gen.meta["coherence"])) == {15}
    train = generate(config, 500, seed=0, tokenizer=tokenizer, split="train")
    assert 15 not in set(np.unique(train.meta["coherence"]))
    assert (split_of(config.split_fractions, train.tokens) == 0).all()
    test = generate(config, 500, seed=0, tokenizer=tokenizer, split="test")
    assert (split_of(config.split_fractions, test.tokens) == 2).all()


def test_heldout_number_range(tokenizer):
    config = CDMConfig(heldout_number_range=(60, 99))
    train = generate(config, 2000, seed=0, tokenizer=tokenizer, split="train")
    gen = generate(config, 2000, seed=0, tokenizer=tokenizer, split="gen")
    assert train.meta["numbers"].max() <= 59 and train.meta["numbers"].min() >= 10
    assert gen.meta["numbers"].min() >= 60 and gen.meta["numbers"].max() <= 99


@pytest.mark.parametrize("corruption", ["context-flip", "relevant-flip", "irrelevant-flip"])
def test_pairs_align_and_flip(corruption, tokenizer):
    config = CDMConfig()
    clean, bad = make_pairs(config, 300, seed=3, tokenizer=tokenizer, corruption=corruption)
    assert clean.tokens.shape == bad.tokens.shape
    assert clean.position_labels == bad.position_labels
    changed = np.nonzero((clean.tokens != bad.tokens).any(0))[0]
    names = {clean.position_labels[p] for p in changed}
    if corruption == "context-flip":
        assert names == {"context"}
        assert (clean.labels != bad.labels).all()  # drawn from incongruent trials
    elif corruption == "relevant-flip":
        assert (clean.labels != bad.labels).all()
        assert all(n.split(".")[0] in ("motion", "color") and "." in n for n in names)
    else:
        assert (clean.labels == bad.labels).all()
        assert all("." in n for n in names)
    # the corrupted trials still follow the rule
    assert np.array_equal(rederive(config, bad, tokenizer), bad.labels)


def test_answer_word_not_single_token_is_named(tokenizer):
    with pytest.raises(TaskError, match="answer word ' zyxwvutqq' is not a single token"):
        generate(CDMConfig(answer_words=(" left", " zyxwvutqq")), 4, seed=0, tokenizer=tokenizer)


def test_symbols_that_break_the_alignment_are_named(tokenizer):
    with pytest.raises(TaskError, match="modality words do not all encode to the same number of tokens"):
        generate(CDMConfig(modality_words=(" motion", " zyxwvutqq")), 4, seed=0, tokenizer=tokenizer)


def test_a_multi_token_cue_word_keeps_trials_aligned(tokenizer):
    """A cue word of several tokens is allowed: every trial has the same layout, labels say which token is which."""
    config = CDMConfig(cue_word=" zyxwvutqq")
    n = len(tokenizer.encode(" zyxwvutqq", add_special_tokens=False))
    assert n > 1
    clean, bad = make_pairs(config, 16, seed=0, tokenizer=tokenizer, corruption="context-flip")
    assert clean.tokens.shape == bad.tokens.shape == (16, 12 + n - 1)
    assert clean.position_labels[1:1 + n] == [f"cue ({i + 1}/{n})" for i in range(n)]
    assert clean.positions["context"] == n + 1 and clean.positions["answer"] == clean.tokens.shape[1] - 1
    assert np.array_equal(rederive(config, clean, tokenizer), clean.labels)


@pytest.mark.parametrize("kwargs,match", [
    ({"coherences": (0, 15)}, "outside 1..100"),
    ({"coherences": (5, 101)}, "outside 1..100"),
    ({"coherences": ()}, "must not be empty"),
    ({"modality_words": ()}, "modality_words"),
    ({"number_range": (10, 20)}, "too small"),
    ({"cue_position": "middle"}, "cue_position"),
    ({"heldout_coherences": (5, 15, 50)}, "nothing is left"),
    ({"heldout_number_range": (30, 40)}, "one end"),
    ({"n_samples": 3}, "noise_sd"),
    ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
])
def test_bad_configs(kwargs, match):
    with pytest.raises(TaskError, match=match):
        CDMConfig(**kwargs)


def test_gen_split_without_heldout_conditions(tokenizer):
    with pytest.raises(TaskError, match="generalisation split is empty"):
        generate(CDMConfig(), 4, seed=0, tokenizer=tokenizer, split="gen")


def test_bayes_optimal_accuracy_bounds_a_heuristic(tokenizer):
    assert bayes_optimal_accuracy(CDMConfig()) == 1.0
    noisy1 = CDMConfig(n_samples=1 + 1, noise_sd=8.0)
    noisy4 = CDMConfig(n_samples=4, noise_sd=8.0)
    b1, b4 = bayes_optimal_accuracy(noisy1, n=3000), bayes_optimal_accuracy(noisy4, n=3000)
    assert 0.5 < b1 < b4 < 1.0
    # the sum-of-differences rule can never beat the ideal observer (up to Monte Carlo error)
    batch = generate(noisy4, 3000, seed=0, tokenizer=tokenizer)
    i = np.arange(len(batch))
    rel = batch.meta["numbers"][i, batch.meta["context"]]
    heuristic = ((rel[..., 1] - rel[..., 0]).sum(1) > 0).astype(int)
    ties = (rel[..., 1] - rel[..., 0]).sum(1) == 0
    acc = ((heuristic == batch.labels) & ~ties).mean() + 0.5 * ties.mean()
    assert acc <= b4 + 0.02


def test_every_symbol_single_token_in_shipped_tokenizer(tokenizer):
    for s in task_symbols(CDMConfig()):
        assert len(tokenizer.encode(s, add_special_tokens=False)) == 1, s


def test_trial_hash_is_uniformish():
    rng = np.random.default_rng(0)
    u = trial_hash(rng.integers(0, 4000, (20000, 12)))
    assert 0.48 < u.mean() < 0.52 and u.min() >= 0 and u.max() < 1


@pytest.mark.parametrize("name", ["default", "noisy-3"])
def test_digit_splitting_tokenizer(name, digit_tokenizer):
    """Numbers of several tokens (" 37" -> " ", "3", "7"): every trial has the same layout, clean and corrupted
    trials align, positions are labelled per token, and the answers re-derive from the rendered text."""
    config = VARIANTS[name]
    assert digit_tokenizer.convert_ids_to_tokens(digit_tokenizer.encode(" 37", add_special_tokens=False)) == \
        ["Ġ", "3", "7"]
    b = generate(config, 2000, seed=3, tokenizer=digit_tokenizer, split="train")
    assert np.array_equal(rederive(config, b, digit_tokenizer), b.labels)
    assert "motion.left0 (3/3)" in b.position_labels and b.positions["motion.left0"] == \
        b.position_labels.index("motion.left0 (3/3)")
    for corruption in ("context-flip", "relevant-flip"):
        clean, bad = make_pairs(config, 200, seed=1, tokenizer=digit_tokenizer, corruption=corruption)
        assert clean.tokens.shape == bad.tokens.shape and clean.position_labels == bad.position_labels
        assert np.array_equal(rederive(config, bad, digit_tokenizer), bad.labels)
        assert (clean.labels != bad.labels).all()
