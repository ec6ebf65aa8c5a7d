"""Tests of the delayed match-to-sample task. Answers are re-derived from the decoded text with a rule written
here (parse the numbers, compare sample and test), never from the generator's metadata."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tasks.base import TaskError, split_of
from tasks.delay_match import TASK, DelayMatchConfig, generate, make_pairs, required_symbols

VARIANTS = {
    "default": DelayMatchConfig(),
    "no-distractors": DelayMatchConfig(n_distractors=0),
    "range-20-60-wide-lures": DelayMatchConfig(number_range=(20, 60), n_distractors=4, match_fraction=0.3,
                                               lure_fraction=0.8, lure_distance=3),
}


def parse(config: DelayMatchConfig, batch, tokenizer) -> dict[str, np.ndarray]:
    """sample, test and distractors [trials, k] read back from the decoded text (the BOS token checked apart)."""
    if config.prepend_bos:
        assert (batch.tokens[:, 0] == tokenizer.bos_token_id).all()
    texts = tokenizer.batch_decode(batch.tokens[:, int(config.prepend_bos):].tolist())
    e = re.escape
    pattern = re.compile(f"{e(config.sample_word)} (\\d+){e(config.delay_word)}((?: \\d+)*){e(config.test_word)} "
                         f"(\\d+){e(config.separator)}{e(config.query_word)}")
    rows = []
    for text in texts:
        m = pattern.fullmatch(text)
        assert m, text
        rows.append((int(m[1]), int(m[3]), [int(x) for x in m[2].split()]))
    return {"sample": np.array([r[0] for r in rows]), "test": np.array([r[1] for r in rows]),
            "distractors": np.array([r[2] for r in rows], dtype=np.int64).reshape(len(rows), config.n_distractors)}


def check_rule(config: DelayMatchConfig, batch, tokenizer) -> dict[str, np.ndarray]:
    """Every per-trial fact re-derived from the text: the answer, the answer ids, lure/congruent, the distractors."""
    p = parse(config, batch, tokenizer)
    same = p["sample"] == p["test"]
    # catches: answering by closeness, an inverted side, or labels/meta not matching what is rendered
    assert np.array_equal(batch.labels, same.astype(int))
    ids = [tokenizer.encode(w, add_special_tokens=False)[0] for w in config.answer_words]
    # catches: answer ids swapped or taken from the wrong word
    assert np.array_equal(batch.answer_ids, np.where(same, ids[1], ids[0]))
    assert np.array_equal(batch.wrong_ids, np.where(same, ids[0], ids[1]))
    dist = np.abs(p["test"] - p["sample"])
    near = (dist >= 1) & (dist <= config.lure_distance)
    # catches: lure/congruent computed with a wrong threshold or counting matches as lures
    assert np.array_equal(batch.meta["lure"], near) and np.array_equal(batch.meta["congruent"], ~near)
    assert np.array_equal(batch.meta["distance"], dist)
    assert np.array_equal(batch.meta["test_minus_sample"], p["test"] - p["sample"])
    # catches: a distractor that equals the sample or the test (a second "match" in the delay)
    assert not (p["distractors"] == p["sample"][:, None]).any()
    assert not (p["distractors"] == p["test"][:, None]).any()
    for key in ("sample", "test", "distractors"):
        assert np.array_equal(batch.meta[key], p[key]), key
    return p


@pytest.mark.parametrize("name", list(VARIANTS))
def test_answers_rederived_on_10000_trials(name, tokenizer):
    config = VARIANTS[name]
    batch = generate(config, 10_000, seed=1, tokenizer=tokenizer)
    p = check_rule(config, batch, tokenizer)
    lo, hi = config.number_range
    numbers = np.concatenate([p["sample"], p["test"], p["distractors"].ravel()])
    assert numbers.min() >= lo and numbers.max() <= hi  # catches: numbers drawn outside the range
    same = p["sample"] == p["test"]
    lure = batch.meta["lure"]
    # catches: match_fraction / lure_fraction ignored or applied to the wrong trials
    assert abs(same.mean() - config.match_fraction) < 0.02
    assert abs(lure[~same].mean() - config.lure_fraction) < 0.03
    assert abs((~batch.meta["congruent"]).mean() - (1 - config.match_fraction) * config.lure_fraction) < 0.02
    # catches: lures on one side only or at one offset; far non-matches that are not farther than lure_distance
    signed = (p["test"] - p["sample"])[lure]
    L = config.lure_distance
    assert set(np.unique(signed)) == set(range(-L, 0)) | set(range(1, L + 1))
    far = ~same & ~lure
    assert (np.abs(p["test"] - p["sample"])[far] > L).all()
    assert np.abs(p["test"] - p["sample"])[far].max() >= (hi - lo) * 0.9
    if config.n_distractors:  # catches: distractors that avoid more than the sample and test
        gap = (p["distractors"] - p["sample"][:, None]).ravel()
        assert {-1, 1} <= set(gap.tolist())
        assert p["distractors"].min() == lo and p["distractors"].max() == hi
    assert 0.45 < (p["sample"] - lo).mean() / (hi - lo) < 0.55  # samples spread over the range


def test_batch_contract(tokenizer):
    config = DelayMatchConfig()
    b = generate(config, 50, seed=0, tokenizer=tokenizer, split="val")
    assert b.task == TASK.name == "DelayMatchSample" and b.answer_words == (" different", " same")
    assert b.positions["answer"] == b.tokens.shape[1] - 1 and b.key_position == "sample"
    assert b.position_labels[b.positions["sample"]] == "sample" and b.position_labels[b.positions["test"]] == "test"
    assert [lab for lab in b.position_labels if lab.startswith("distractor")] == ["distractor0", "distractor1"]
    for key in [*b.variables.values(), *b.evidence.values(), *b.conditions.values(), "congruent"]:
        assert len(b.meta[key]) == len(b), key
    assert np.array_equal(b.meta["match_sign"], np.where(b.meta["match"], 1, -1))
    assert b.meta["distractors"].shape == (50, 2) and b.group is None
    symbols = required_symbols(config)
    assert {" sample", " then", " test", ".", " answer", " same", " different", " 10", " 99", "0", "99", " 9"} <= \
        set(symbols)
    assert TASK.default_corruption in TASK.corruptions and TASK.corruptions["test-change"].flips
    assert not TASK.corruptions["distractor-change"].flips


def test_digit_splitting_tokenizer(task_digit_tokenizer):
    """Numbers of three tokens (" 37" -> " ", "3", "7"): one layout, positions named at the last token, answers
    re-derived from the text, pairs aligned."""
    config = DelayMatchConfig()
    b = generate(config, 1500, seed=2, tokenizer=task_digit_tokenizer)
    check_rule(config, b, task_digit_tokenizer)
    assert b.positions["sample"] == b.position_labels.index("sample (3/3)")
    assert b.positions["distractor1"] == b.position_labels.index("distractor1 (3/3)")
    for corruption in TASK.corruptions:
        clean, bad = make_pairs(config, 200, seed=1, tokenizer=task_digit_tokenizer, corruption=corruption)
        assert clean.tokens.shape == bad.tokens.shape and clean.position_labels == bad.position_labels
        check_rule(config, bad, task_digit_tokenizer)
        if corruption == "test-change":  # every answer flips ...
            assert (clean.labels != bad.labels).all()
        else:  # ... or none does (catches a distractor change that sometimes touches the test)
            assert (clean.labels == bad.labels).all()


def test_deterministic_under_seed(tokenizer):
    config = DelayMatchConfig()
    a, b, c = (generate(config, 300, seed=s, tokenizer=tokenizer) for s in (7, 7, 8))
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.tokens, c.tokens)  # catches: the seed ignored
    p1, p2 = (make_pairs(config, 100, seed=3, tokenizer=tokenizer, corruption="test-change") for _ in range(2))
    assert np.array_equal(p1[1].tokens, p2[1].tokens)  # catches: an unseeded corruption


def _rows(batch) -> set[bytes]:
    return {bytes(r) for r in batch.tokens.astype(np.int64)}


def test_splits_never_share_a_trial_and_gen_is_held_out(tokenizer):
    config = DelayMatchConfig(heldout_number_range=(88, 99))
    batches = {s: generate(config, 3000, seed=0, tokenizer=tokenizer, split=s) for s in ("train", "val", "test", "gen")}
    sets = {s: _rows(b) for s, b in batches.items()}
    for a in sets:  # catches: splits drawn from one stream without the token-hash partition
        for b in sets:
            if a < b:
                assert not sets[a] & sets[b], (a, b)
    for s, b in batches.items():  # catches: gen not restricted to the held-out range, or train leaking into it
        p = check_rule(config, b, tokenizer)
        numbers = np.concatenate([p["sample"], p["test"], p["distractors"].ravel()])
        if s == "gen":
            assert numbers.min() >= 88 and numbers.max() <= 99
        else:
            assert numbers.min() >= 10 and numbers.max() <= 87
            assert (split_of(config.split_fractions, b.tokens) == ("train", "val", "test").index(s)).all()


@pytest.mark.parametrize("name", ["default", "range-20-60-wide-lures"])
@pytest.mark.parametrize("corruption", ["test-change", "distractor-change"])
def test_pairs_align_and_change_only_what_they_should(name, corruption, tokenizer):
    config = VARIANTS[name]
    clean, bad = make_pairs(config, 2000, seed=4, tokenizer=tokenizer, corruption=corruption)
    assert clean.tokens.shape == bad.tokens.shape and clean.position_labels == bad.position_labels
    c, d = check_rule(config, clean, tokenizer), check_rule(config, bad, tokenizer)  # corrupted trials obey the rule
    changed = {clean.position_labels[j] for j in np.nonzero((clean.tokens != bad.tokens).any(0))[0]}
    if corruption == "test-change":
        assert changed == {"test"}  # catches: a corruption that also moves the sample or distractors
        assert (clean.labels != bad.labels).all()  # catches: a "change" that sometimes keeps the answer
        was_match = c["sample"] == c["test"]
        assert (d["test"][~was_match] == c["sample"][~was_match]).all()
        gap = np.abs(d["test"] - d["sample"])[was_match]
        assert ((gap >= 1) & (gap <= config.lure_distance)).all()  # a match becomes a near lure
        assert abs(was_match.mean() - config.match_fraction) < 0.06  # pairs keep the task's match share
    else:
        assert changed == {f"distractor{k}" for k in range(config.n_distractors)}
        assert (clean.labels == bad.labels).all()  # catches: the control changing the answer
        assert (c["distractors"] != d["distractors"]).all()  # every distractor really replaced
        assert np.array_equal(c["test"], d["test"]) and np.array_equal(c["sample"], d["sample"])


@pytest.mark.parametrize("lo,hi,dist", [(10, 15, 2), (10, 13, 1)])
def test_smallest_valid_range(lo, hi, dist, tokenizer):
    """hi - lo = 2 * lure_distance + 1: a middle sample has a single far non-match; every trial still obeys the rule
    (catches: an off-by-one in the far sampler, which would render a lure or an out-of-range number here)."""
    config = DelayMatchConfig(number_range=(lo, hi), lure_distance=dist)
    p = check_rule(config, generate(config, 2000, seed=5, tokenizer=tokenizer), tokenizer)
    far = np.abs(p["test"] - p["sample"]) > dist
    for s in range(lo, hi + 1):  # every far non-match of every sample occurs, and nothing else
        want = {v for v in range(lo, hi + 1) if abs(v - s) > dist}
        assert set(p["test"][far & (p["sample"] == s)].tolist()) == want, s
    non = p["sample"] != p["test"]
    assert abs((non & ~far).sum() / non.sum() - config.lure_fraction) < 0.06
    for corruption in TASK.corruptions:
        check_rule(config, make_pairs(config, 300, seed=5, tokenizer=tokenizer, corruption=corruption)[1], tokenizer)


def test_bad_corruptions(tokenizer):
    with pytest.raises(TaskError, match="no corruption 'swap'"):
        make_pairs(DelayMatchConfig(), 4, seed=0, tokenizer=tokenizer, corruption="swap")
    with pytest.raises(TaskError, match="n_distractors >= 1"):
        make_pairs(DelayMatchConfig(n_distractors=0), 4, seed=0, tokenizer=tokenizer, corruption="distractor-change")


def test_bad_splits_and_words(tokenizer):
    with pytest.raises(TaskError, match="generalisation split is empty"):
        generate(DelayMatchConfig(), 4, seed=0, tokenizer=tokenizer, split="gen")
    with pytest.raises(TaskError, match="unknown split"):
        generate(DelayMatchConfig(), 4, seed=0, tokenizer=tokenizer, split="dev")
    with pytest.raises(TaskError, match="answer word ' zyxwvutqq' is not a single token"):
        generate(DelayMatchConfig(answer_words=(" different", " zyxwvutqq")), 4, seed=0, tokenizer=tokenizer)


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "ContextDecisionMaking"}, "name must be"),
    ({"number_range": (10, 14)}, "too small for lure_distance"),
    ({"number_range": (50, 40)}, "number_range"),
    ({"number_range": (10.0, 99)}, "must hold integers"),
    ({"n_distractors": -1}, "n_distractors"),
    ({"n_distractors": True}, "n_distractors"),
    ({"match_fraction": 1.5}, "match_fraction"),
    ({"match_fraction": float("nan")}, "match_fraction"),
    ({"lure_fraction": -0.1}, "lure_fraction"),
    ({"lure_distance": 0}, "lure_distance"),
    ({"lure_distance": 2.0}, "lure_distance"),
    ({"answer_words": (" same", " same")}, "answer_words"),
    ({"answer_words": (" same",)}, "answer_words"),
    ({"test_word": " then"}, "must all differ"),
    ({"delay_word": ""}, "non-empty"),
    ({"separator": " 42"}, "collides with a number"),
    ({"heldout_number_range": (30, 40)}, "one end"),
    ({"heldout_number_range": (96, 99)}, r"96..99 \(gen\) is too small"),
    ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
    ({"prepend_bos": 1}, "prepend_bos"),
])
def test_bad_configs(kwargs, match):
    with pytest.raises(TaskError, match=match):
        DelayMatchConfig(**kwargs)
