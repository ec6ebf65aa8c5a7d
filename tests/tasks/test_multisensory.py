"""MultiSensoryIntegration: every answer is re-derived from the DECODED TEXT by an independent rule (parse the two
modalities' numbers, sum right - left, take the sign). Each test names the wrong implementation it catches."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tasks.base import TaskError, split_of
from tasks.multisensory import CORRUPTION_INFO, TASK, MultiSensoryConfig, generate, make_pairs, required_symbols

VARIANTS = {
    "default": MultiSensoryConfig(),
    "agree-only": MultiSensoryConfig(conflict=False),
    "range-20-60": MultiSensoryConfig(number_range=(20, 60), coherences=(10, 30, 60), prepend_bos=False),
    "light-first": MultiSensoryConfig(modality_words=(" light", " sound"), heldout_number_range=(10, 40)),
}


def parse(config, batch, tokenizer) -> np.ndarray:
    """Numbers [trials, mod, side] read back from the decoded text of every trial, with a regex of the format."""
    m0, m1 = (re.escape(w) for w in config.modality_words)
    bos = tokenizer.decode([tokenizer.bos_token_id]) if config.prepend_bos else ""
    rx = re.compile(rf"{re.escape(bos)}{m0} (\d+) (\d+){m1} (\d+) (\d+)"
                    rf"{re.escape(config.separator)}{re.escape(config.query_word)}")
    rows = [rx.fullmatch(tokenizer.decode([int(t) for t in row])) for row in batch.tokens]
    assert all(rows), "a trial's text does not have the documented format"
    return np.array([[int(g) for g in r.groups()] for r in rows]).reshape(-1, 2, 2)


def rule(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent rule: side of the summed (right - left) evidence; also each modality's own direction."""
    signed = numbers[..., 1] - numbers[..., 0]
    total = signed.sum(axis=1)
    assert (total != 0).all(), "a trial ties: its answer is undefined"
    return (total > 0).astype(int), (signed > 0).astype(int)


def word_ids(tokenizer, config) -> np.ndarray:
    ids = [tokenizer.encode(w, add_special_tokens=False) for w in config.answer_words]
    assert all(len(i) == 1 for i in ids)
    return np.array([i[0] for i in ids])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_answers_rederived_from_text_on_10000_trials(name, tokenizer):
    # catches: answer = the first (or the stronger-coherence) modality's side alone, ignoring the other modality's
    # sign; answer ids swapped or hard-coded; meta numbers that are not the rendered ones; swapped left/right.
    config = VARIANTS[name]
    b = generate(config, 10_000, seed=1, tokenizer=tokenizer)
    numbers = parse(config, b, tokenizer)
    side, direction = rule(numbers)
    assert np.array_equal(side, b.labels)
    ids = word_ids(tokenizer, config)
    assert np.array_equal(b.answer_ids, ids[side]) and np.array_equal(b.wrong_ids, ids[1 - side])
    assert np.array_equal(numbers, b.meta["numbers"]) and np.array_equal(direction, b.meta["choice"])
    m0, m1 = (w.strip() for w in config.modality_words)
    signed = numbers[..., 1] - numbers[..., 0]
    assert np.array_equal(b.meta[f"{m0}_evidence"], signed[:, 0]) and np.array_equal(b.meta[f"{m1}_evidence"],
                                                                                     signed[:, 1])
    assert np.array_equal(b.meta["total_evidence"], signed.sum(1))
    documented = {5: 3, 10: 5, 15: 8, 30: 15, 50: 25, 60: 30}  # round half up of coh * 0.5: not banker's (15 -> 8)
    assert np.array_equal(np.abs(signed), np.vectorize(documented.get)(b.meta["coherence"]))
    assert b.key_position == m1 and b.positions[m1] == int(config.prepend_bos) + 3
    assert b.positions["answer"] == b.tokens.shape[1] - 1 == 7 + int(config.prepend_bos)
    for table in (b.variables, b.evidence, b.conditions):
        assert set(table.values()) <= set(b.meta)


@pytest.mark.parametrize("name", ["default", "agree-only"])
def test_congruent_agree_balance_and_ties_from_text(name, tokenizer):
    # catches: congruent defined as "modalities agree" (or as the second modality's direction); conflicting
    # modalities of equal strength (ties); unbalanced answers or directions; conflict=False still conflicting.
    config = VARIANTS[name]
    b = generate(config, 10_000, seed=2, tokenizer=tokenizer)
    side, direction = rule(parse(config, b, tokenizer))
    agree = direction[:, 0] == direction[:, 1]
    assert np.array_equal(b.meta["congruent"], direction[:, 0] == side)
    assert np.array_equal(b.meta["agree"], agree)
    strength = np.abs(b.meta["signed_evidence"])
    assert (strength[~agree, 0] != strength[~agree, 1]).all()  # no tie on a conflicting trial
    assert 0.47 < b.labels.mean() < 0.53 and (0.47 < direction.mean(0)).all() and (direction.mean(0) < 0.53).all()
    incongruent = 1 - b.meta["congruent"].mean()
    if config.conflict:
        assert 0.47 < agree.mean() < 0.53 and 0.22 < incongruent < 0.28  # conflicting trials, first one weaker
        assert (b.meta["coherence"][~agree, 0] != b.meta["coherence"][~agree, 1]).all()
    else:
        assert agree.all() and incongruent == 0


def test_digit_tokenizer(task_digit_tokenizer):
    # catches: multi-token numbers misaligned between trials or named at their first token; a rule that only
    # holds when every number is one token.
    for config in (VARIANTS["default"], VARIANTS["agree-only"]):
        b = generate(config, 1500, seed=3, tokenizer=task_digit_tokenizer)
        assert np.array_equal(rule(parse(config, b, task_digit_tokenizer))[0], b.labels)
        assert np.array_equal(b.answer_ids, word_ids(task_digit_tokenizer, config)[b.labels])
        assert b.positions["sound.left"] == b.position_labels.index("sound.left (3/3)")
        assert b.positions["light"] == b.position_labels.index("light") == 8
        for corruption in CORRUPTION_INFO:
            clean, bad = make_pairs(config, 200, seed=1, tokenizer=task_digit_tokenizer, corruption=corruption)
            assert clean.tokens.shape == bad.tokens.shape and clean.position_labels == bad.position_labels
            assert np.array_equal(rule(parse(config, bad, task_digit_tokenizer))[0], bad.labels)
            assert ((clean.labels != bad.labels).all() if CORRUPTION_INFO[corruption].flips
                    else (clean.labels == bad.labels).all())


def test_deterministic_under_seed(tokenizer):
    # catches: an unseeded or global random generator.
    a, b, c = (generate(MultiSensoryConfig(), 300, seed=s, tokenizer=tokenizer) for s in (7, 7, 8))
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.tokens, c.tokens)


def test_splits_never_share_a_trial_and_gen_uses_the_heldout_range(tokenizer):
    # catches: splits drawn from one pool without the hash partition; "gen" numbers outside the held-out range or
    # held-out numbers leaking into train/val/test.
    config = MultiSensoryConfig(heldout_number_range=(60, 99))
    batches = {s: generate(config, 3000, seed=0, tokenizer=tokenizer, split=s) for s in ("train", "val", "test", "gen")}
    rows = {s: {bytes(r) for r in b.tokens.astype(np.int64)} for s, b in batches.items()}
    for a in rows:
        for b in rows:
            assert a >= b or not rows[a] & rows[b], (a, b)
    for i, s in enumerate(("train", "val", "test")):
        assert (split_of(config.split_fractions, batches[s].tokens) == i).all()
        assert batches[s].meta["numbers"].min() >= 10 and batches[s].meta["numbers"].max() <= 59
    assert batches["gen"].meta["numbers"].min() >= 60 and batches["gen"].meta["numbers"].max() <= 99


@pytest.mark.parametrize("name", ["default", "agree-only"])
@pytest.mark.parametrize("corruption", list(CORRUPTION_INFO))
def test_pairs_align_and_flip_as_declared(corruption, name, tokenizer):
    # catches: swapping the wrong modality (weaker for stronger), touching non-number positions, a corruption
    # that does not flip (or keep) every answer as CORRUPTION_INFO declares, corrupted trials breaking the rule.
    config = VARIANTS[name]
    clean, bad = make_pairs(config, 500, seed=3, tokenizer=tokenizer, corruption=corruption)
    assert clean.tokens.shape == bad.tokens.shape and clean.position_labels == bad.position_labels
    numbers = parse(config, clean, tokenizer)
    strength = np.abs(numbers[..., 1] - numbers[..., 0])
    for i in range(len(clean)):
        changed = {clean.position_labels[p] for p in np.nonzero(clean.tokens[i] != bad.tokens[i])[0]}
        if corruption == "flip-both":
            mods = {"sound", "light"}
        else:
            assert strength[i, 0] != strength[i, 1]
            stronger = "sound" if strength[i, 0] > strength[i, 1] else "light"
            mods = {stronger} if corruption == "flip-stronger" else {"sound", "light"} - {stronger}
        assert changed == {f"{m}.{s}" for m in mods for s in ("left", "right")}
    assert np.array_equal(rule(parse(config, bad, tokenizer))[0], bad.labels)
    assert np.array_equal(clean.labels != bad.labels, np.full(len(clean), CORRUPTION_INFO[corruption].flips))
    assert (TASK.default_corruption in CORRUPTION_INFO) and CORRUPTION_INFO[TASK.default_corruption].flips


def test_unknown_corruption_and_empty_gen_raise(tokenizer):
    # catches: an unknown corruption silently falling back to one; a "gen" split without a held-out range.
    with pytest.raises(TaskError, match="no corruption 'flip-all'"):
        make_pairs(MultiSensoryConfig(), 4, seed=0, tokenizer=tokenizer, corruption="flip-all")
    with pytest.raises(TaskError, match="generalisation split is empty"):
        generate(MultiSensoryConfig(), 4, seed=0, tokenizer=tokenizer, split="gen")
    with pytest.raises(TaskError, match="answer word ' zyxwvutqq' is not a single token"):
        generate(MultiSensoryConfig(answer_words=(" left", " zyxwvutqq")), 4, seed=0, tokenizer=tokenizer)
    with pytest.raises(TaskError, match="at least two coherences"):  # flip-stronger needs unequal strengths
        make_pairs(MultiSensoryConfig(conflict=False, coherences=(50,)), 4, 0, tokenizer, "flip-stronger")


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "ContextDecisionMaking"}, "name must be"),
    ({"coherences": (0, 15)}, "outside 1..100"),
    ({"coherences": ()}, "must not be empty"),
    ({"coherences": (5, 5)}, "duplicates"),
    ({"coherences": (50,)}, "conflict=True needs at least two"),
    ({"coherences": (5, 6)}, "equal number differences"),
    ({"diff_per_coherence": 0}, "diff_per_coherence"),
    ({"number_range": (10, 30)}, "too small"),
    ({"number_range": (50, 10)}, "number_range"),
    ({"heldout_number_range": (30, 40)}, "one end"),
    ({"heldout_number_range": (90, 99)}, r"90\.\.99 \(gen\) is too small"),
    ({"modality_words": (" sound",)}, "modality_words must be two"),
    ({"modality_words": (" sound", "sound")}, "distinct identifiers"),
    ({"modality_words": (" sound", " answer")}, "distinct identifiers"),
    ({"answer_words": (" left", " left")}, "answer_words must be two"),
    ({"query_word": " left"}, "all differ"),
    ({"separator": ""}, "non-empty"),
    ({"separator": " 42"}, "collides with a number"),
    ({"conflict": 1}, "conflict must be True or False"),
    ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
])
def test_bad_configs(kwargs, match):
    # catches: a config that validates nothing and fails later (or silently) on a bad value.
    with pytest.raises(TaskError, match=match):
        MultiSensoryConfig(**kwargs)


def test_task_record_and_symbols(tokenizer):
    # catches: a symbol list missing the spaceless or the below-range numbers; a TASK wired to the wrong functions.
    config = MultiSensoryConfig()
    symbols = TASK.symbols(config)
    assert symbols is not None and symbols == required_symbols(config)
    assert {" sound", " light", " left", " right", ".", " answer", " 10", " 99", "0", "99", " 0", " 9"} <= set(symbols)
    assert " 100" not in symbols and TASK.config is MultiSensoryConfig and TASK.name == config.name
    assert TASK.generate(config, 2, 0, tokenizer).task == TASK.name
