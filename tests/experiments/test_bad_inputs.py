"""The catalogue of bad inputs: each gives one clear `error:` line naming the problem, exit status 2, no
traceback, and nothing written or overwritten."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from experiments.cli.main import main
from interp.models import load_model, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
T = "[train]\nsteps = 2\neval_every = 1\neval_size = 16\nbatch_size = 8\nwarmup = 1\n"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_base):
    model, tok, _ = load_model(tiny_base)
    d = tmp_path_factory.mktemp("ck") / "ck"
    save_checkpoint(model, d, {}, tok)
    return d


def snapshot(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def run_bad(capsys, argv, match, out: Path | None = None):
    before = snapshot(out) if out is not None else None
    existed = out.exists() if out is not None else None
    with pytest.raises(SystemExit) if argv and argv[0] == "!argparse" else _nullctx() as exc:
        code = main(argv[1:] if argv[0] == "!argparse" else argv)
    if argv[0] == "!argparse":
        code = exc.value.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("error:") or "error:" in last, err
    assert match.lower() in err.lower(), err
    assert sum("error:" in line for line in err.splitlines()) == 1, err
    if out is not None:
        assert out.exists() == existed and snapshot(out) == before


class _nullctx:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def cfg(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def train_args(tmp_path, tiny_base, config_text, out="out"):
    return ["train", "--config", cfg(tmp_path, config_text), "--base", str(tiny_base), "--out", str(tmp_path / out),
            "--quiet"]


CONFIG_CASES = [
    ("unknown key", T + "stepz = 3\n", "unknown key(s) stepz"),
    ("unknown section", "[trian]\nsteps = 2\n", "unknown section(s) trian"),
    ("wrong type", "[train]\nsteps = \"ten\"\n", "expected an integer"),
    ("bool for int", "[train]\nsteps = true\n", "expected an integer"),
    ("negative lr", "[train]\nlr = -1.0\n", "train.lr must be > 0"),
    ("target accuracy", "[train]\ntarget_accuracy = 1.5\n", "target_accuracy"),
    ("incongruent target", "[train]\ntarget_incongruent = 0\n", "target_incongruent"),
    ("warmup beyond steps", "[train]\nsteps = 5\nwarmup = 50\n", "warmup"),
    ("coherence over 100", T + "[task]\ncoherences = [5, 150]\n", "outside 1..100"),
    ("coherence zero", T + "[task]\ncoherences = [0]\n", "outside 1..100"),
    ("empty modality list", T + "[task]\nmodality_words = []\n", "modality_words"),
    ("range too small", T + "[task]\nnumber_range = [10, 20]\n", "too small"),
    ("all coherences held out", T + "[task]\nheldout_coherences = [5, 15, 50]\n", "nothing is left"),
    ("samples without noise", T + "[task]\nn_samples = 3\n", "noise_sd"),
    ("cue position", T + "[task]\ncue_position = \"middle\"\n", "cue_position"),
    ("invalid TOML", "[train\nsteps = 2\n", "not valid TOML"),
    ("bad init", T + "[model]\ninit = \"random\"\n", "model.init"),
    ("answer not a single token", T + "[task]\nanswer_words = [\" left\", \" qqzzxxyy\"]\n", "not a single token"),
    ("misaligned modality words", T + "[task]\nmodality_words = [\" motion\", \" qqzzxxyy\"]\n", "same number of tokens"),
]


@pytest.mark.parametrize("name,text,match", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_training_configs(capsys, tmp_path, tiny_base, name, text, match):
    run_bad(capsys, train_args(tmp_path, tiny_base, text), match, out=tmp_path / "out")


def test_missing_config_file(capsys, tmp_path, tiny_base):
    run_bad(capsys, ["train", "--config", str(tmp_path / "nope.toml"), "--base", str(tiny_base), "--out",
                     str(tmp_path / "o")], "does not exist", out=tmp_path / "o")


def test_missing_base_directory(capsys, tmp_path):
    run_bad(capsys, ["train", "--base", str(tmp_path / "no_base"), "--out", str(tmp_path / "o")], "does not exist",
            out=tmp_path / "o")


def test_existing_output_not_overwritten(capsys, tmp_path, tiny_base):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    run_bad(capsys, train_args(tmp_path, tiny_base, T), "--overwrite", out=out)


def test_cuda_without_cuda(capsys, tmp_path, tiny_base):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run_bad(capsys, train_args(tmp_path, tiny_base, T) + ["--device", "cuda"], "CUDA is not available",
            out=tmp_path / "out")


def test_gen_split_that_cannot_be_filled(capsys, tiny_base):
    run_bad(capsys, ["task", "show", "--base", str(tiny_base), "--split", "gen"], "generalisation split is empty")


@pytest.mark.parametrize("damage,match", [
    ("missing_weights", "model.safetensors missing"),
    ("truncated", "truncated or modified"),
    ("arch", "do not match the config"),
    ("tokenizer", "tokenizer does not match"),
    ("json", "not valid JSON"),
])
def test_bad_checkpoints(capsys, tmp_path, ckpt, damage, match):
    d = tmp_path / "ck"
    shutil.copytree(ckpt, d)
    meta = json.loads((d / "checkpoint.json").read_text())
    if damage == "missing_weights":
        (d / "model.safetensors").unlink()
    elif damage == "truncated":
        (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000])
    elif damage == "arch":
        meta["arch"]["n_heads"] = 2
        (d / "checkpoint.json").write_text(json.dumps(meta))
    elif damage == "tokenizer":
        meta["arch"]["d_vocab"] = 50
        (d / "checkpoint.json").write_text(json.dumps(meta))
    else:
        (d / "checkpoint.json").write_text("{")
    run_bad(capsys, ["eval", str(d), "--n", "16"], match)


def test_not_a_model_directory(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    run_bad(capsys, ["eval", str(tmp_path / "empty")], "config.json missing")


def test_missing_checkpoint_path(capsys, tmp_path):
    run_bad(capsys, ["eval", str(tmp_path / "nowhere")], "does not exist")


def test_pickled_weights_refused(capsys, tmp_path, tiny_base):
    d = tmp_path / "pk"
    shutil.copytree(tiny_base, d)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    run_bad(capsys, ["eval", str(d)], "pickled")


def test_position_out_of_range(capsys, tmp_path, ckpt):
    run_bad(capsys, ["neurons", str(ckpt), "--position", "nowhere", "--n", "32", "--out", str(tmp_path / "n")],
            "unknown position", out=tmp_path / "n")


def test_layer_out_of_range(capsys, tmp_path, ckpt):
    run_bad(capsys, ["neurons", str(ckpt), "--layers", "7", "--n", "32", "--out", str(tmp_path / "n")],
            "out of range", out=tmp_path / "n")


def test_head_out_of_range(capsys, tmp_path, ckpt):
    run_bad(capsys, ["ablate", str(ckpt), "--heads", "9.0", "--n", "8", "--out", str(tmp_path / "a")],
            "out of range", out=tmp_path / "a")


def test_cross_model_shapes_differ(capsys, tmp_path, ckpt, tokenizer):
    from tests.conftest import make_tiny_base

    wide = make_tiny_base(tmp_path / "wide", tokenizer, d_model=32, n_heads=2)
    run_bad(capsys, ["compare", "--finetuned", str(ckpt), "--base", str(wide), "--n", "16", "--out",
                     str(tmp_path / "c")], "same shape", out=tmp_path / "c")


def test_export_of_a_non_run(capsys, tmp_path):
    run_bad(capsys, ["export", str(tmp_path)], "not a finished run")


def test_run_config_contradiction(capsys, tmp_path):
    run_bad(capsys, ["run", cfg(tmp_path, "[run]\ncorruption = \"irrelevant-flip\"\n"), "--out", str(tmp_path / "r")],
            "leaves the answer unchanged", out=tmp_path / "r")


def test_run_duplicate_seeds(capsys, tmp_path):
    run_bad(capsys, ["run", cfg(tmp_path, "[run]\nseeds = [1, 1]\n"), "--out", str(tmp_path / "r")], "duplicates",
            out=tmp_path / "r")


RUN_CASES = [
    ("circuit level", "[run]\ncircuit_level = 1.2\n", "circuit_level"),
    ("no random circuits", "[run]\ncircuit_random = 0\n", "circuit_random"),
    ("too few reliance trials", "[run]\nn_reliance = 2\n", "n_reliance"),
    ("unknown base name", "[model]\nbase = \"./no/such/base\"\n", "does not exist"),
]


@pytest.mark.parametrize("name,text,match", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_bad_run_configs(capsys, tmp_path, name, text, match):
    run_bad(capsys, ["run", cfg(tmp_path, text), "--out", str(tmp_path / "r")], match, out=tmp_path / "r")


def test_debug_after_the_subcommand(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        main(["eval", str(tmp_path / "nowhere"), "--debug"])


def test_unknown_option(capsys, tmp_path):
    run_bad(capsys, ["!argparse", "train", "--bogus", "--out", str(tmp_path / "o")], "unrecognized arguments")


def test_unknown_patch_target(capsys, tmp_path, ckpt):
    run_bad(capsys, ["!argparse", "patch", str(ckpt), "--what", "everything", "--out", str(tmp_path / "p")],
            "invalid choice")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        main(["--debug", "eval", str(tmp_path / "nowhere")])


def test_paper_config_offline_fails_fast_with_one_line(tmp_path):
    """`run paper-gpt2.toml` with the hub offline and no cached GPT-2: one line that names --base DIR and
    HF_HUB_OFFLINE, within seconds (no retries), and nothing written. Catches a base check after run.json, or
    transformers' own retry loop reaching the user."""
    import subprocess
    import sys
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "paper"
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "experiments.cli", "run", str(REPO / "experiments/configs/paper-gpt2.toml"),
                        "--device", "cpu", "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
    took = time.time() - t0
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(err) == 1 and err[0].startswith("error:"), p.stderr
    assert "--base DIR" in err[0] and "HF_HUB_OFFLINE" in err[0]
    assert not out.exists()
    assert took < 30, f"took {took:.0f} s"


def test_bare_name_that_is_also_a_folder_is_refused(tmp_path, monkeypatch):
    """A folder named like a hub model never silently wins: './gpt2' is the folder, 'gpt2' is ambiguous."""
    from interp.models import ModelLoadError, resolve_base

    (tmp_path / "gpt2").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=r"write \./gpt2"):
        resolve_base("gpt2")
    assert str(resolve_base("./gpt2")) == "./gpt2"
