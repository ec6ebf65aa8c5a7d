"""DelayComparison: answers, shortcut and splits re-derived from the rendered text, pairs, and config errors.
Each test's comment names a wrong implementation it would catch."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tasks.base import split_of
from tasks.delay_comparison import (CORRUPTION_INFO, NAME, TASK, DelayComparisonConfig, TaskError, generate,
                                    make_pairs, required_symbols)

VARIANTS = {
    "default": DelayComparisonConfig(),
    "no-distractors-20-60": DelayComparisonConfig(n_distractors=0, number_range=(20, 60), differences=(1, 3, 8)),
    "four-distractors-heldout": DelayComparisonConfig(n_distractors=4, differences=(3, 9),
                                                      heldout_number_range=(80, 99)),
}


def parse(config, batch, tokenizer) -> dict[str, np.ndarray]:
    """first, distractors, second read back from the decoded text with a regex (independent of the generator)."""
    k = config.n_distractors
    pattern = re.compile(re.escape(config.first_word) + r" (\d+)" + re.escape(config.delay_word)
                         + r"((?: \d+){%d})" % k + re.escape(config.second_word) + r" (\d+)"
                         + re.escape(config.separator) + re.escape(config.query_word) + "$")
    rows = [pattern.search(text) for text in tokenizer.batch_decode(batch.tokens.tolist())]
    assert all(rows), "a trial does not render as '<first> n <delay> n.. <second> n<sep><query>'"
    return {"first": np.array([int(m.group(1)) for m in rows]), "second": np.array([int(m.group(3)) for m in rows]),
            "distractors": np.array([[int(x) for x in m.group(2).split()] for m in rows]).reshape(len(rows), k)}


def rederive(config, batch, tokenizer, split="train") -> np.ndarray:
    """The answer side from the text: 1 (more) when the second number exceeds the first. Also checks the shown
    numbers lie in the split's range, differences are configured levels, and meta matches the text."""
    shown = parse(config, batch, tokenizer)
    lo, hi = config.split_range(split)
    for key in ("first", "second", "distractors"):
        assert np.array_equal(shown[key], batch.meta[key]), key
        assert shown[key].size == 0 or (lo <= shown[key].min() and shown[key].max() <= hi), key
    assert set(np.abs(shown["second"] - shown["first"]).tolist()) <= set(config.differences)
    assert np.array_equal(batch.meta["signed_difference"], shown["second"] - shown["first"])
    side = (shown["second"] > shown["first"]).astype(np.int64)
    assert np.array_equal(batch.meta["congruent"], (shown["second"] > (lo + hi) / 2) == side)
    return side


def expected_incongruent(config, split="train") -> float:
    """Incongruent share implied by the design, by enumerating every low number of every difference level."""
    lo, hi = config.split_range(split)
    mid, shares = (lo + hi) / 2, []
    for d in config.differences:
        low = np.arange(lo, hi - d + 1)
        shares.append(0.5 * ((low + d <= mid).mean() + (low > mid).mean()))
    return float(np.mean(shares))


def ids(tokenizer, words):
    return np.array([tokenizer.encode(w, add_special_tokens=False)[0] for w in words])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_answers_rederived_on_10000_trials(name, tokenizer):
    # catches: an inverted answer (less when second > first), a wrong answer-word mapping, numbers outside the
    # split's range, meta out of sync with tokens, unbalanced sides or difference levels, a skewed shortcut
    config = VARIANTS[name]
    batch = generate(config, 10_000, seed=1, tokenizer=tokenizer)
    side = rederive(config, batch, tokenizer)
    assert np.array_equal(side, batch.labels)
    answers = ids(tokenizer, config.answer_words)
    assert np.array_equal(batch.answer_ids, answers[side]) and np.array_equal(batch.wrong_ids, answers[1 - side])
    assert 0.48 < side.mean() < 0.52
    levels, counts = np.unique(batch.meta["difference"], return_counts=True)
    assert levels.tolist() == sorted(config.differences)
    assert np.abs(counts / len(batch) - 1 / len(levels)).max() < 0.02
    incongruent = 1 - batch.meta["congruent"].mean()
    assert abs(incongruent - expected_incongruent(config)) < 0.02 and incongruent > 0.25
    assert batch.tokens.shape == (10_000, 8 + config.n_distractors)  # every symbol one token here


def test_key_position_and_layout(tokenizer):
    # catches: key_position or a named position pointing at the wrong token (e.g. the first word, not f1's number)
    config = VARIANTS["default"]
    b = generate(config, 50, seed=0, tokenizer=tokenizer)
    assert b.key_position == "first" and b.positions["answer"] == b.tokens.shape[1] - 1
    read = lambda name: [int(tokenizer.decode([int(t)])) for t in b.tokens[:, b.positions[name]]]  # noqa: E731
    assert read("first") == b.meta["first"].tolist() and read("second") == b.meta["second"].tolist()
    assert read("distractor1") == b.meta["distractors"][:, 1].tolist()
    assert b.position_labels == ["bos", "first_word", "first", "delay", "distractor0", "distractor1",
                                 "second_word", "second", "sep", "answer"]
    assert b.variables == {"first": "first", "second": "second", "difference": "signed_difference"}
    assert b.evidence == {"difference": "signed_difference"} and b.group is None and b.task == NAME


@pytest.mark.parametrize("name", ["default", "no-distractors-20-60"])
def test_digit_splitting_tokenizer(name, task_digit_tokenizer):
    # catches: misaligned layouts when numbers are three tokens, a key position not at the number's last token,
    # the rule breaking under another tokenizer
    config = VARIANTS[name]
    b = generate(config, 2000, seed=3, tokenizer=task_digit_tokenizer)
    assert np.array_equal(rederive(config, b, task_digit_tokenizer), b.labels)
    assert np.array_equal(b.answer_ids, ids(task_digit_tokenizer, config.answer_words)[b.labels])
    assert b.positions["first"] == b.position_labels.index("first (3/3)")
    assert b.positions["second"] == b.position_labels.index("second (3/3)")
    clean, bad = make_pairs(config, 200, seed=1, tokenizer=task_digit_tokenizer, corruption="swap")
    assert clean.tokens.shape == bad.tokens.shape and clean.position_labels == bad.position_labels
    assert np.array_equal(rederive(config, bad, task_digit_tokenizer, "test"), bad.labels)
    assert (clean.labels != bad.labels).all()


def test_deterministic_under_seed(tokenizer):
    # catches: an unseeded or global RNG, or a seed that is ignored
    a, b = (generate(DelayComparisonConfig(), 200, seed=7, tokenizer=tokenizer) for _ in range(2))
    c = generate(DelayComparisonConfig(), 200, seed=8, tokenizer=tokenizer)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.tokens, c.tokens)


def test_splits_never_share_a_trial_and_gen_is_heldout(tokenizer):
    # catches: splits drawn without the token hash (shared trials), gen numbers outside the held-out range,
    # train/val/test numbers inside it
    config = VARIANTS["four-distractors-heldout"]
    batches = {s: generate(config, 3000, seed=0, tokenizer=tokenizer, split=s) for s in ("train", "val", "test", "gen")}
    rows = {s: {bytes(r) for r in b.tokens} for s, b in batches.items()}
    for a in rows:
        for b in rows:
            if a < b:
                assert not rows[a] & rows[b], (a, b)
    for s, batch in batches.items():
        shown = parse(config, batch, tokenizer)
        every = np.concatenate([shown["first"], shown["second"], shown["distractors"].ravel()])
        assert (every >= 80).all() if s == "gen" else (every <= 79).all(), s
        assert np.array_equal(rederive(config, batch, tokenizer, s), batch.labels)
        if s != "gen":
            assert (split_of(config.split_fractions, batch.tokens) == ("train", "val", "test").index(s)).all()


@pytest.mark.parametrize("corruption", list(CORRUPTION_INFO))
def test_pairs_align_and_flip(corruption, tokenizer):
    # catches: a swap that leaves the answer (or changes other tokens), a distractor change that touches f1/f2 or
    # leaves some trial unchanged, misaligned pairs, corrupted trials whose labels disagree with their text
    config = VARIANTS["default"]
    clean, bad = make_pairs(config, 500, seed=3, tokenizer=tokenizer, corruption=corruption)
    assert clean.tokens.shape == bad.tokens.shape and clean.position_labels == bad.position_labels
    assert np.array_equal(clean.tokens, make_pairs(config, 500, 3, tokenizer, corruption)[0].tokens)
    diff = clean.tokens != bad.tokens
    names = {clean.position_labels[p] for p in np.nonzero(diff.any(0))[0]}
    assert diff.any(1).all()  # every pair differs
    if corruption == "swap":
        assert names == {"first", "second"} and diff[:, [clean.positions["first"], clean.positions["second"]]].all()
        assert (clean.labels != bad.labels).all()
        assert np.array_equal(bad.meta["signed_difference"], -clean.meta["signed_difference"])
    else:
        assert names == {"distractor0", "distractor1"}
        assert diff[:, [clean.positions["distractor0"], clean.positions["distractor1"]]].all()  # each one redrawn
        assert (clean.labels == bad.labels).all()
    assert CORRUPTION_INFO[corruption].flips == (corruption == "swap")
    assert np.array_equal(rederive(config, clean, tokenizer, "test"), clean.labels)
    assert np.array_equal(rederive(config, bad, tokenizer, "test"), bad.labels)


def test_bad_corruptions(tokenizer):
    # catches: an unknown corruption silently treated as one, redrawing distractors that do not exist
    with pytest.raises(TaskError, match="no corruption 'shuffle'"):
        make_pairs(DelayComparisonConfig(), 8, 0, tokenizer, "shuffle")
    with pytest.raises(TaskError, match="needs n_distractors > 0"):
        make_pairs(VARIANTS["no-distractors-20-60"], 8, 0, tokenizer, "distractor-change")
    assert TASK.default_corruption in TASK.corruptions and TASK.config is DelayComparisonConfig


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "ContextDecisionMaking"}, "name must be"),
    ({"differences": ()}, "must not be empty"),
    ({"differences": (0, 5)}, "positive integer"),
    ({"differences": (2.5,)}, "positive integer"),
    ({"differences": (5, 5)}, "duplicates"),
    ({"number_range": (10, 30)}, "too small for difference 25"),
    ({"heldout_number_range": (90, 99)}, r"90\.\.99 \(gen\) is too small"),
    ({"heldout_number_range": (30, 40)}, "one end"),
    ({"n_distractors": -1}, "n_distractors"),
    ({"answer_words": (" more", " more")}, "answer_words"),
    ({"delay_word": " first"}, "must all differ"),
    ({"query_word": " more"}, "must all differ"),
    ({"separator": ""}, "non-empty"),
    ({"delay_word": " 7"}, "collides with a number"),
    ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
])
def test_bad_configs(kwargs, match):
    # catches: any of these values accepted (and failing later, or silently producing a broken task)
    with pytest.raises(TaskError, match=match):
        DelayComparisonConfig(**kwargs)


def test_generation_errors_are_named(tokenizer, task_digit_tokenizer):
    # catches: a multi-token answer word or misaligned number widths accepted; gen drawn without a held-out range
    with pytest.raises(TaskError, match="answer word ' zyxwvutqq' is not a single token"):
        generate(DelayComparisonConfig(answer_words=(" less", " zyxwvutqq")), 4, 0, tokenizer)
    with pytest.raises(TaskError, match="same number of tokens"):
        generate(DelayComparisonConfig(number_range=(5, 60)), 4, 0, task_digit_tokenizer)
    with pytest.raises(TaskError, match="generalisation split is empty"):
        generate(DelayComparisonConfig(), 4, 0, tokenizer, split="gen")


def test_required_symbols(tokenizer):
    # catches: a task word or number missing from the symbols a project tokenizer is built from
    config = DelayComparisonConfig()
    symbols = required_symbols(config)
    for s in (*config.words, " 10", " 99", " 0", " 9", "0", "99"):
        assert s in symbols, s
    assert " 100" not in symbols and "100" not in symbols
    for s in [*config.words, *(f" {n}" for n in range(10, 100))]:
        assert len(tokenizer.encode(s, add_special_tokens=False)) == 1, s
