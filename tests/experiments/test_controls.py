"""The planted-reuse controls (`cogcircuits controls`): the metrics as they score a model against a base, on a planted
case where the reused layers are known; the planted component and its ablation against brute force; the shuffled
base; the validation rule on planted values; and the command end to end (resume, refusal of another config)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.controls.arms import shuffle_weights
from experiments.controls.config import load_controls_config
from experiments.controls.metrics import ablation_excess, layer_matched, planted_heads, references, score, top_share
from experiments.controls.records import ScoredModel
from experiments.controls.validate import check
from experiments.core.config import ConfigError
from interp.ablation import Ablator
from interp.models import copy_model, load_checkpoint, load_model
from tasks.registry import generate
from tests.conftest import REPO, make_tiny_base

REUSED = 2  # the planted model keeps the base's first REUSED of its 4 layers


def tiny_controls_config(tmp: Path, base: Path, seeds: str = "[0, 1]") -> Path:
    s = (REPO / "experiments" / "configs" / "controls.toml").read_text()
    s = s.replace("seeds = [0, 1, 2]", f"seeds = {seeds}").replace('base = "cogbase-6l"', f'base = "{base}"')
    for k in ("n_compare", "n_reliance", "n_ablate"):
        s = re.sub(rf"{k} = \d+", f"{k} = 16", s)
    s = s.replace("n_pairs = 16", "n_pairs = 4").replace("n_random_sets = 20", "n_random_sets = 3")
    s = s.replace("planted_heads = 4", "planted_heads = 2")
    s = re.sub(r"steps = \d+", "steps = 12", s)
    s = re.sub(r"warmup = \d+", "warmup = 2", s)
    s = re.sub(r"eval_every = \d+", "eval_every = 6", s)
    s = re.sub(r"eval_size = \d+", "eval_size = 32", s)
    s = re.sub(r"checkpoint_every = \d+", "checkpoint_every = 6", s)
    s = re.sub(r"target_accuracy = [0-9.]+", "target_accuracy = 0.01", s)  # plumbing, not science
    s = re.sub(r"target_incongruent = [0-9.]+", "target_incongruent = 0.01", s)
    p = tmp / "controls.toml"
    p.write_text(s)
    return p


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tokenizer):
    """A 4-layer base A, a model B that is A with layers >= REUSED replaced by another random model's (B reuses
    exactly A's first REUSED layers), and C, that other model (reuses nothing of A)."""
    tmp = tmp_path_factory.mktemp("planted")
    a = load_model(make_tiny_base(tmp / "a", tokenizer, n_layers=4, seed=0))[0]
    c = load_model(make_tiny_base(tmp / "c", tokenizer, n_layers=4, seed=7))[0]
    b = copy_model(c)
    with torch.no_grad():
        for name, p in b.named_parameters():
            if name.startswith("blocks.") and int(name.split(".")[1]) < REUSED:
                p.copy_(dict(a.named_parameters())[name])
            elif not name.startswith("blocks."):
                p.copy_(dict(a.named_parameters())[name])
    cfg = load_controls_config(tiny_controls_config(tmp, tmp / "a"))
    return a, b, c, cfg


def test_the_metrics_see_the_layers_a_planted_model_reuses(planted):
    """B reuses A's embedding and first two layers. CKA with A is 1 at the residual points those layers produce
    (0..2) and below 1 after; reverting one of those layers changes nothing (its logit difference stays the
    model's own) while reverting a later one does; A's residual patched in at points 0..2 changes nothing. The
    mean CKA of B exceeds C's, and B's later-minus-early CKA is negative (reuse sits early). Catches a metric
    computed backwards: the wrong layer pairing (reversed or shifted by one), reversion of the wrong layer, the
    residual patched at the wrong point (in `compare_with_base`, which `score` calls), or a CKA summary in `score`
    that reads the profile in the wrong order (reversing it fails this test). The chance-corrected profiles of
    random models are undefined (accuracy near 0.5), so reversion and patching are checked on logit differences."""
    a, b, c, cfg = planted
    heads = [(0, 0)]
    refs = references(a, cfg)
    mb, pb, _ = score(b, a, refs, heads, cfg)
    mc, _, _ = score(c, a, refs, heads, cfg)
    from experiments.analysis import stages
    _, reps = stages.representations_of({"b": b, "a": a}, cfg["task"], 16, 3000)
    rel = generate(cfg["task"], 16, seed=3001, tokenizer=a.tokenizer, split="test")
    cmp = stages.compare_with_base(b, a, reps["b"], reps["a"], rel)
    cka = cmp.cka_answer()
    np.testing.assert_allclose(cka[1:REUSED + 1], 1.0, atol=1e-5)  # point 0 (the embedding) may be constant
    assert (cka[REUSED + 1:] < 0.99).all(), cka
    full = cmp.reliance_base.full.logit_diff
    rev = [r.logit_diff for r in cmp.reliance_base.reversion_layer]
    np.testing.assert_allclose(rev[:REUSED], full, atol=1e-5)
    assert all(abs(x - full) > 1e-4 for x in rev[REUSED:]), (rev, full)
    cm = [r.logit_diff for r in cmp.reliance_base.cmap_resid]
    np.testing.assert_allclose(cm[:REUSED + 1], full, atol=1e-5)
    assert all(abs(x - full) > 1e-4 for x in cm[REUSED + 1:]), (cm, full)
    np.testing.assert_allclose(pb["cka_base"], cka)  # score() reports the same profile
    assert mb["cka_base_mean"] > mc["cka_base_mean"] + 0.2, (mb, mc)
    assert mb["cka_base_late_minus_early"] < 0


def test_top_share_against_brute_force():
    """Catches a share over the union, over the wrong k (rounding), or of the wrong ends of the rankings."""
    m = [f"n{i}" for i in range(10)]
    r = ["n1", "n0", "n9", "n3", "n2", "n5", "n6", "n7", "n8", "n4"]
    assert top_share(m, r, 0.2) == 1.0  # top 2: {n0, n1} both
    assert top_share(m, r, 0.3) == pytest.approx(2 / 3)  # top 3: {n0, n1, n2} vs {n1, n0, n9}
    assert top_share(m, list(reversed(m)), 0.2) == 0.0


def test_the_planted_heads_and_their_ablation_equal_brute_force(planted):
    """The planted component is the heads whose lone ablation lowers the base's logit difference on the skill most
    (each computed here with a full forward per head), and the ablation's relative drop is recomputed by hand.
    Catches a sign error (the least important heads), a ranking over accuracy ties, a drop relative to the wrong
    baseline, and random sets not matched by layer or not divided by the unablated logit difference."""
    a, _, _, cfg = planted
    got = planted_heads(a, cfg["skill"], 32, 3, seed=5000)
    test = generate(cfg["skill"], 32, seed=5000, tokenizer=a.tokenizer, split="test")
    ref = generate(cfg["skill"], 32, seed=5001, tokenizer=a.tokenizer, split="test")
    ab = Ablator(a, test.tokens, test.answer_ids, test.wrong_ids, method="mean", reference_tokens=ref.tokens)
    drops = {(l, h): ab.baseline["logit_diff"] - ab.heads([(l, h)])["logit_diff"]
             for l in range(a.cfg.n_layers) for h in range(a.cfg.n_heads)}
    want = sorted(drops, key=lambda k: -drops[k])[:3]
    assert got == want
    out = ablation_excess(a, cfg["skill"], got, 32, 4, seed=5000)
    full = ab.baseline["logit_diff"]
    assert out["planted_drop"] == pytest.approx((full - ab.heads(got)["logit_diff"]) / abs(full), abs=1e-5)
    rng = np.random.default_rng(5000)  # the random sets, drawn as the function draws them, layer by layer
    rand = [(full - ab.heads(layer_matched(got, a.cfg.n_heads, rng))["logit_diff"]) / abs(full) for _ in range(4)]
    assert out["random_drop"] == pytest.approx(float(np.mean(rand)), abs=1e-5)
    assert out["excess"] == pytest.approx(out["planted_drop"] - out["random_drop"])


def test_the_shuffled_base_keeps_each_matrixs_values_and_loses_their_arrangement(planted, tmp_path):
    """Catches a shuffle across matrices (the statistics per matrix change), no shuffle at all, or a copy whose
    recorded hash does not match its weights (loading checks it)."""
    from experiments.training.train import train
    from tests.conftest import tiny_train_config

    a_path = tmp_path / "src"
    cfg = tiny_train_config(planted[3]["model"].base, "scratch", steps=4, warmup=1)
    train(cfg, a_path, progress=False)
    shuffle_weights(a_path, tmp_path / "shuf", seed=1)
    src, _, _ = load_checkpoint(a_path)
    shuf, _, meta = load_checkpoint(tmp_path / "shuf")
    moved = 0
    for (k, x), (_, y) in zip(src.state_dict().items(), shuf.state_dict().items(), strict=True):
        if x.numel() > 1 and x.dtype.is_floating_point and "IGNORE" not in k and "mask" not in k:
            assert torch.equal(x.flatten().sort().values, y.flatten().sort().values), k
            moved += int(not torch.equal(x, y) and x.unique().numel() > 1)
    assert moved > 10 and meta["shuffled_from"] == "src"


def _scored(arm, seed, v, met=True):
    return ScoredModel(arm=arm, seed=seed, reference="", steps=1, met_criterion=met, test_accuracy=1.0,
                       metrics={"cmap_mean": v})


def test_the_rule_validates_a_metric_only_when_the_positive_control_is_above_both_negatives():
    """Catches a rule that takes the wrong direction (a metric computed backwards would pass), accepts overlap or
    ties, checks one negative control only, or counts a model that missed the criterion."""
    def models(pos, shuf, scr, missed=()):
        return ([_scored("planted", i, v) for i, v in enumerate(pos)] + [_scored("shuffled", i, v) for i, v in
                enumerate(shuf)] + [_scored("scratch", i, v) for i, v in enumerate(scr)]
                + [_scored(arm, 9, v, met=False) for arm, v in missed])
    assert check(models([0.8, 0.9, 0.7], [0.1, 0.2, 0.3], [0.0, 0.1, 0.2]), "cmap_mean").validated
    c = check(models([0.1, 0.2, 0.3], [0.8, 0.9, 0.7], [0.5, 0.6, 0.7]), "cmap_mean")  # backwards
    assert not c.validated and not any(c.separated.values())
    assert not check(models([0.8, 0.9, 0.3], [0.1, 0.2, 0.3], [0.0, 0.1, 0.2]), "cmap_mean").validated  # a tie
    assert not check(models([0.8, 0.9, 0.7], [0.1, 0.2, 0.3], [0.0, 0.1, 0.75]), "cmap_mean").validated  # one
    c = check(models([0.8, 0.9, 0.7], [0.1, 0.2, 0.3], [0.0, 0.1, 0.2], missed=[("scratch", 5.0)]), "cmap_mean")
    assert c.validated and c.negatives["scratch"] == (0.0, 0.1, 0.2)
    c = check(models([0.8, 0.9, 0.7], [0.1], [0.0, 0.1, 0.2]), "cmap_mean")  # one model: undefined
    assert not c.validated and c.p_greater["shuffled"] is None
    c = check(models([0.8, 0.9, 0.7], [0.1, float("nan")], [0.0, 0.1, 0.2]), "cmap_mean")  # one defined value
    assert not c.validated and c.p_greater["shuffled"] is None
    assert check(models([0.8, 0.9, 0.7], [0.1, 0.2, 0.3], [0.0, 0.1, 0.2]), "cmap_mean").p_greater[
        "scratch"] == pytest.approx(0.05)


def test_a_config_with_the_same_task_twice_is_refused(tmp_path, tiny_base):
    p = tiny_controls_config(tmp_path, tiny_base)
    p.write_text(p.read_text().replace('name = "DelayMatchSample"', 'name = "MultiSensoryIntegration"'))
    with pytest.raises(ConfigError, match="three different tasks"):
        load_controls_config(p)


@pytest.mark.integration
def test_the_command_end_to_end_resumes_and_refuses_another_config(tmp_path, tiny_base, capsys):
    """Every promised output; a second run trains nothing again (each model's checkpoint untouched) and gives the
    same record; another config is refused with one line, exit 2, nothing changed. Catches a resume that
    retrains, a nondeterministic score, and a rerun that overwrites controls made under another config."""
    from experiments.cli.main import main

    cfg, out = tiny_controls_config(tmp_path, tiny_base), tmp_path / "out"
    assert main(["controls", str(cfg), "--out", str(out), "--quiet"]) == 0
    rec = json.loads((out / "results" / "controls.json").read_text())
    assert len(rec["models"]) == 6 and len(rec["checks"]) == 8
    rows = (out / "validation.csv").read_text().splitlines()
    assert len(rows) == 1 + 8 * 2 and "VALIDATED" in (out / "validation.md").read_text()
    assert (out / "figures" / "metrics.html").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}
    assert len(stamps) == 10  # four bases (planted and shuffled per seed), six models
    assert main(["controls", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")} == stamps
    again = json.loads((out / "results" / "controls.json").read_text())
    assert [m["metrics"] for m in again["models"]] == [m["metrics"] for m in rec["models"]]
    other = tmp_path / "other.toml"
    other.write_text(cfg.read_text().replace("base_seed = 100", "base_seed = 101"))
    before = {p: p.read_bytes() for p in out.rglob("*.json")}
    capsys.readouterr()
    assert main(["controls", str(other), "--out", str(out), "--quiet"]) == 2
    assert "another config" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*.json")} == before
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["controls", str(cfg), "--out", str(busy), "--quiet"]) == 2
    assert "holds no controls" in capsys.readouterr().err and (busy / "notes.txt").read_text() == "mine"


def test_the_ablation_baseline_draws_as_many_heads_from_each_layer_as_the_planted_set():
    """Catches random sets drawn from every layer (early heads matter more in any model: the first controls run
    gave the shuffled-base arm as large an excess as the planted one) and repeated heads within a layer."""
    from experiments.controls.metrics import layer_matched

    rng = np.random.default_rng(0)
    heads = [(1, 7), (0, 2), (0, 3), (4, 5)]
    for _ in range(50):
        got = layer_matched(heads, 8, rng)
        assert sorted(l for l, _ in got) == [0, 0, 1, 4] and len(set(got)) == 4
    assert len({tuple(layer_matched(heads, 8, rng)) for _ in range(20)}) > 1


def test_the_packaged_validation_is_the_committed_controls_run_rederived():
    """The verdicts of `cogcircuits run` read experiments/configs/metric-validation.json: it must be what the
    committed controls run (docs/controls/run) gives when the rule is applied again to its stored per-model
    numbers. Catches a hand-edited validation, a stale copy after the controls were rerun, and a rule whose stored
    outcome differs from what it computes."""
    from experiments.controls.metrics import METRICS
    from experiments.controls.records import ControlsRecord
    from experiments.core.run_record import Validation
    from experiments.run.claims import load_validation

    run = REPO / "docs" / "controls" / "run"
    rec = ControlsRecord.load(run / "results" / "controls.json")
    again = {c.metric: c for c in (check(list(rec.models), k) for k in METRICS)}
    assert {c.metric: c.validated for c in rec.checks} == {k: c.validated for k, c in again.items()}
    want = {c.validates: c.validated for c in again.values() if c.validates}
    assert Validation.load(run / "metric-validation.json").validated == want
    assert load_validation().validated == want
    assert len(rec.config["controls"]["seeds"]) >= 3
