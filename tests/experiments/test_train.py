from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from experiments.training.train import NonFiniteLossError, train
from interp.models import load_model
from interp.store import OutputExistsError
from tests.conftest import REPO, tiny_train_config


def test_same_seed_same_curve(tiny_base, tmp_path):
    a = train(tiny_train_config(tiny_base, "scratch", steps=30, seed=5), tmp_path / "a", progress=False)
    b = train(tiny_train_config(tiny_base, "scratch", steps=30, seed=5), tmp_path / "b", progress=False)
    ca = json.loads((tmp_path / "a" / "curve.json").read_text())
    cb = json.loads((tmp_path / "b" / "curve.json").read_text())
    assert ca == cb and len(ca) >= 2
    assert a["test_accuracy"] == b["test_accuracy"]
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_both_inits_through_one_path(tiny_base, tmp_path):
    from interp.models import load_checkpoint, load_model

    train(tiny_train_config(tiny_base, "pretrained", steps=10), tmp_path / "ft", progress=False)
    ft, _, meta = load_checkpoint(tmp_path / "ft")
    base, _, _ = load_model(tiny_base)
    assert meta["init"] == "pretrained" and meta["base"]["kind"] == "hf"
    # fine-tuning starts from the base: weights moved a little, not re-initialised
    rel = float((ft.W_pos - base.W_pos).detach().norm() / base.W_pos.detach().norm())
    assert 0 < rel < 0.5


def test_existing_output_is_not_overwritten(tiny_base, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        train(tiny_train_config(tiny_base, "scratch", steps=5), out, progress=False)
    assert (out / "keep.txt").read_text() == "precious"


def test_non_finite_loss_stops_and_keeps_the_last_good_state(tiny_base, tmp_path):
    cfg = tiny_train_config(tiny_base, "scratch", steps=50, lr=1e35, checkpoint_every=1, grad_clip=1e38)
    with pytest.raises(NonFiniteLossError, match="last good state"):
        train(cfg, tmp_path / "nan", progress=False)
    assert (tmp_path / "nan" / "state" / "latest").exists()
    latest = (tmp_path / "nan" / "state" / (tmp_path / "nan" / "state" / "latest").read_text())
    w = load_file(str(latest / "model.safetensors"))
    assert all(np.isfinite(v).all() for k, v in w.items() if not k.endswith("IGNORE"))


def _cli(args, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "experiments.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _toml(tmp_path: Path, base: Path) -> Path:
    p = tmp_path / "cfg.toml"
    p.write_text(f'[model]\ninit = "scratch"\nbase = "{base}"\n[train]\nsteps = 40\nbatch_size = 16\n'
                 'eval_every = 10\neval_size = 32\ncheckpoint_every = 5\nstate_time_share = 1.0\nwarmup = 5\nseed = 3\n')
    return p


@pytest.mark.slow  # ~20 s: outside the 5-minute suite, run by .ci/run on its own
def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_base, tmp_path):
    """Killed at a saved state, the second process provably resumes: it says it continued from the step of the
    state on disk (>= 15, so not a restart), and ends with the uninterrupted run's weights and curve. Catches a
    --resume that silently restarts from step 0 (same seed, same weights: the equality alone would pass)."""
    cfg = _toml(tmp_path, tiny_base)
    ref = _cli(["train", "--config", str(cfg), "--out", str(tmp_path / "ref"), "--quiet"])
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()
    out = tmp_path / "killed"
    p = _cli(["train", "--config", str(cfg), "--out", str(out), "--quiet"])
    deadline = time.time() + 240
    while time.time() < deadline:
        latest = out / "state" / "latest"
        if latest.exists() and int(latest.read_text().strip().split("-")[1]) >= 15:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "checkpoint.json").exists()  # killed before the end
    saved = int((out / "state" / "latest").read_text().strip().split("-")[1])
    r = _cli(["train", "--config", str(cfg), "--out", str(out), "--resume", "--quiet"])
    assert r.wait(timeout=300) == 0, r.stderr.read().decode()
    said = r.stdout.read().decode()
    assert saved >= 15 and f"resumed from the state saved at step {saved}: trained steps {saved + 1}..40" in said
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == saved
    assert json.loads((tmp_path / "ref" / "metrics.json").read_text())["resumed_from_step"] is None
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (tmp_path / "ref" / "curve.json").read_text() == (out / "curve.json").read_text()


def _stopped_run(tiny_base, tmp_path, **kw):
    cfg = tiny_train_config(tiny_base, "scratch", steps=20, checkpoint_every=5, state_time_share=1.0, **kw)
    out = tmp_path / "run"
    assert train(cfg, out, progress=False, stop_after=10)["step"] == 10
    return cfg, out, out / "state" / (out / "state" / "latest").read_text().strip()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_under_another_config_is_refused_and_nothing_changes(tiny_base, tmp_path):
    """A state written under lr 1e-3 is not resumed under lr 2e-3: one StateError line, the run folder untouched.
    Catches a resume that loads any state it finds (the old behaviour: a silently mixed trajectory)."""
    from experiments.core.state import StateError

    _, out, _ = _stopped_run(tiny_base, tmp_path, lr=1e-3)
    before = _files(out)
    other = tiny_train_config(tiny_base, "scratch", steps=20, checkpoint_every=5, state_time_share=1.0, lr=2e-3)
    with pytest.raises(StateError, match="another config") as e:
        train(other, out, resume=True, progress=False)
    assert "\n" not in str(e.value) and _files(out) == before


@pytest.mark.parametrize("damage", ["truncate-optimizer", "garbage-state-json"])
def test_damaged_state_is_refused_with_one_line(tiny_base, tmp_path, damage):
    """A truncated optimizer file or a garbled state.json gives one StateError naming the state; nothing is
    overwritten. Catches a resume that crashes with a raw safetensors / JSON traceback or restarts over it."""
    from experiments.core.state import StateError

    cfg, out, st = _stopped_run(tiny_base, tmp_path)
    if damage == "truncate-optimizer":
        f = st / "optimizer.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    else:
        (st / "state.json").write_text("{not json")
    before = _files(out)
    with pytest.raises(StateError, match="unreadable") as e:
        train(cfg, out, resume=True, progress=False)
    assert "\n" not in str(e.value) and str(st.name) in str(e.value) and _files(out) == before


@pytest.mark.slow
def test_scratch_reaches_95_percent(tmp_path, tokenizer):
    """The foundation's acceptance check: a small scratch model learns the default task on CPU."""
    from tests.conftest import make_tiny_base

    base = make_tiny_base(tmp_path / "b", tokenizer, n_layers=2, d_model=128, n_heads=4)
    m = train(tiny_train_config(base, "scratch", steps=1500, eval_every=100, eval_size=512, batch_size=64,
                                lr=1e-3, warmup=50, target_accuracy=0.97), tmp_path / "s", progress=False)
    assert m["test_accuracy"] >= 0.95


def test_bf16_runs_the_blocks_but_never_the_unembedding(tiny_trained):
    """Under bf16 the answer logits are the float32 unembedding of the (bf16-computed) final residual. Catches the
    unembedding inside autocast, which rounds logits to bf16 (a step of 0.25-0.5 at GPT-2's logit sizes)."""
    from experiments.training.train import answer_logits
    from interp.metrics import unembed_last
    from tasks.cdm import CDMConfig, generate

    model = load_model(tiny_trained)[0]
    toks = torch.tensor(generate(CDMConfig(), 16, seed=0, tokenizer=model.tokenizer).tokens)
    with torch.no_grad():
        got = answer_logits(model, toks, bf16=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            resid = model(toks, stop_at_layer=model.cfg.n_layers)
            inside = unembed_last(model, resid)
        want = unembed_last(model, resid[:, -1:].float())
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert inside.dtype == torch.bfloat16 and not torch.equal(inside.float(), want)  # the check can tell them apart


def test_state_cadence_keeps_states_under_their_time_share(monkeypatch):
    """A state that took 1 s to write is followed by the next only after 19 s of training at share 0.05, and
    only at a multiple of `every`. Catches an inverted ratio (share / (1 - share)) or a cadence by steps only."""
    import experiments.training.train as tr

    now = [100.0]
    monkeypatch.setattr(tr.time, "perf_counter", lambda: now[0])
    c = tr.StateCadence(every=10, share=0.05)
    assert c.due(10) and not c.due(15)
    c.wrote(1.0)
    now[0] += 18.0
    assert not c.due(20)
    now[0] += 1.5
    assert c.due(20) and not c.due(21)
    assert tr.StateCadence(every=5, share=1.0).due(5)  # share 1: every multiple of `every`


@pytest.mark.parametrize("resid_init", ["depth", "zero"])
def test_scratch_recipe_rescales_only_the_residual_writers(tiny_base, resid_init):
    """depth: W_O and W_out are the base draw / sqrt(2 n_layers); zero: they are 0; every other weight equals the
    plain scratch draw of the same seed. Catches scaling the wrong matrices (W_in, W_V), a factor of 1/sqrt(n_layers),
    and a recipe that changes the seed's draw."""
    from interp.models import base_arch_and_tokenizer, build_scratch

    arch, tok = base_arch_and_tokenizer(str(tiny_base))
    plain = build_scratch(arch, tok, 3).state_dict()
    got = build_scratch(arch, tok, 3, resid_init=resid_init).state_dict()
    factor = {"depth": (2 * arch.n_layers) ** -0.5, "zero": 0.0}[resid_init]
    writers = [k for k in plain if k.endswith(("attn.W_O", "mlp.W_out"))]
    assert len(writers) == 2 * arch.n_layers
    for k, v in plain.items():
        torch.testing.assert_close(got[k], v * factor if k in writers else v, rtol=0, atol=0)


def test_curriculum_batches_hold_the_asked_share_of_incongruent_trials(tiny_base):
    """During the curriculum a batch of 32 holds round(0.75 * 32) = 24 incongruent trials, mixed in order; after it
    the task's own mix returns (the batch of that step is the plain draw). Catches a share computed on the pool, a
    curriculum that never ends, and congruence read backwards."""
    from experiments.training.train import TrainConfig, batch_seed, training_batch
    from interp.models import load_tokenizer
    from tasks.cdm import CDMConfig, generate

    tok = load_tokenizer(tiny_base)
    t = TrainConfig(steps=100, batch_size=32, curriculum_steps=5, curriculum_incongruent=0.75, seed=2)
    for step in range(5):
        b = training_batch(CDMConfig(), t, step, tok)
        assert len(b) == 32 and int((~b.meta["congruent"]).sum()) == 24
        assert 0 < int(np.argmax(b.meta["congruent"])) < 24 or b.meta["congruent"][0]  # not sorted by congruence
    after = training_batch(CDMConfig(), t, 5, tok)
    plain = generate(CDMConfig(), 32, seed=batch_seed(2, 5), tokenizer=tok, split="train")
    assert np.array_equal(after.tokens, plain.tokens)


def test_constant_schedule_holds_then_decays_linearly():
    """Warmup 10 of 100 steps, held at the peak, then the last 20% decay linearly to 0.1. Catches a decay that
    starts at the warmup's end (cosine) or ends above min_lr_frac."""
    from experiments.core.state import lr_lambda

    f = lr_lambda(10, 100, 0.1, "constant", 0.2)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == f(50) == f(80) == 1.0
    assert f(90) == pytest.approx(0.55) and f(100) == pytest.approx(0.1)


def test_a_scratch_recipe_for_a_fine_tune_is_refused(tiny_base, tmp_path):
    with pytest.raises(ValueError, match="scratch' only"):
        train(tiny_train_config(tiny_base, "pretrained", steps=5, resid_init="depth"), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_hold_steps_train_on_at_the_last_rate_with_the_schedule_unchanged(tiny_base, tmp_path):
    """hold_steps extends the budget past the schedule at its last rate: the first `steps` steps are those of the
    run without a hold (a cap that stretched the schedule would change them), the held steps run at min_lr_frac x
    lr, and the budget is steps + hold_steps when the criterion is not met (unreachable here: 1.0 on a scratch
    model of 16 steps)."""
    kw = {"eval_every": 2, "schedule": "constant", "decay_frac": 0.5, "target_accuracy": 1.0,
          "target_incongruent": 1.0, "lr": 1e-3, "min_lr_frac": 0.1, "warmup": 2}
    plain = train(tiny_train_config(tiny_base, "scratch", steps=10, **kw), tmp_path / "plain", progress=False)
    held = train(tiny_train_config(tiny_base, "scratch", steps=10, hold_steps=6, **kw), tmp_path / "held",
                 progress=False)
    assert plain["steps"] == 10 and held["steps"] == 16 and not held["met_criterion"]
    cp = json.loads((tmp_path / "plain" / "curve.json").read_text())
    ch = json.loads((tmp_path / "held" / "curve.json").read_text())
    assert ch[:len(cp)] == cp
    assert [p["step"] for p in ch[len(cp):]] == [12, 14, 16]
    assert all(p["lr"] == pytest.approx(1e-4) for p in ch[len(cp) - 1:])
