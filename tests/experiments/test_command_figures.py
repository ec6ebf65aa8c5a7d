"""Figures from the analysis commands (`--figures`): labelled heatmaps whose numbers are the command's own, one
shared plotly.min.js per figures folder, PNG/SVG through kaleido, and formats that cannot be written refused
before anything is computed. Also: `--device` defaults to auto and an existing output folder is refused before
the computation."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest

from experiments.cli.main import build_parser, main
from interp.models import load_model, save_checkpoint
from interp.result_io import load_provenance
from interp.results import Ablation, Attribution, Circuit, Comparison, Neurons, Patching
from tasks.cdm import CDMConfig, make_pairs

COMMANDS = ("patch", "attribute", "ablate", "neurons", "discover", "compare")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_base):
    model, tok, _ = load_model(tiny_base)
    d = tmp_path_factory.mktemp("figs") / "ck"
    save_checkpoint(model, d, {}, tok)
    return d


def argv(cmd: str, ckpt, tiny_base, out, *extra: str) -> list[str]:
    small = {"patch": ["--n", "4"], "attribute": ["--n", "8"], "ablate": ["--n", "8"], "neurons": ["--n", "32"],
             "discover": ["--n", "4", "--random", "1"]}
    if cmd == "compare":
        return ["compare", "--finetuned", str(ckpt), "--base", str(tiny_base), "--n", "16", "--out", str(out), *extra]
    return [cmd, str(ckpt), *small[cmd], "--out", str(out), *extra]


def plotly_data(page: str) -> list[dict]:
    m = re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\])\s*,\s*\{", page, re.S)
    assert m, "no Plotly.newPlot call"
    return json.loads(m.group(1))


def numbers(v) -> np.ndarray:
    """A plotly array as the page holds it: a list, or base64 typed-array {"dtype", "bdata", "shape"}."""
    if isinstance(v, dict):
        import base64

        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape([int(n) for n in str(v["shape"]).split(",")]) if "shape" in v else a
    return np.asarray(v, dtype=float)


def test_patch_heads_by_pos_heatmap_is_labelled_with_token_strings(capsys, tmp_path, ckpt):
    from interp.patching import position_token_labels

    out = tmp_path / "p"
    code = main(["patch", str(ckpt), "--what", "heads_by_pos", "--n", "4", "--figures", "html", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    page = (out / "figures" / "patch_heads_by_pos.html").read_text()
    trace = plotly_data(page)[0]
    model = load_model(ckpt)[0]
    clean, _ = make_pairs(CDMConfig(), 4, seed=0, tokenizer=model.tokenizer, corruption="context-flip")
    labels = position_token_labels(model.tokenizer, clean.tokens, clean.position_labels)
    assert any(t in " ".join(labels) for t in (" color", " motion"))  # they are token strings, not indices
    assert [html.unescape(x) for x in trace["x"]] == labels
    r = Patching.from_files(out / "patching").result
    vals = r.values if np.isfinite(r.values).any() else r.raw - r.corrupt_logit_diff  # [layer, pos, head]
    L, P, H = vals.shape
    assert trace["y"] == [f"L{l}H{h}" for l in range(L) for h in range(H)]
    z = numbers(trace["z"])  # row L{l}H{h}, column position
    np.testing.assert_allclose(z, vals.transpose(0, 2, 1).reshape(L * H, P), atol=1e-9)
    # offline and lean: the page loads the folder's one plotly.min.js, it does not embed or fetch it
    assert re.search(r"<script[^>]*src=\"plotly\.min\.js\"", page) and len(page) < 200_000
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*['\"]?(https?:)?//", page, re.I)
    assert (out / "figures" / "plotly.min.js").stat().st_size > 1_000_000
    assert "patch_heads_by_pos" in json.loads((out / "figures" / "index.json").read_text())["figures"]


EXPECTED = {"patch": ["patch_heads"], "attribute": ["dla_heads", "dla_components", "logit_lens"],
            "ablate": ["ablation_heads_logit_diff", "ablation_heads_accuracy"],
            "neurons": ["neuron_top_coef", "neuron_r2"],
            "discover": ["circuit", "faithfulness_node", "faithfulness_edge"],
            "compare": ["cka_base", "cmap", "reversion", "reversion_top_down", "weight_change"]}


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_analysis_command_writes_its_figures(capsys, tmp_path, ckpt, tiny_base, cmd):
    out = tmp_path / cmd
    code = main(argv(cmd, ckpt, tiny_base, out))  # default: --figures html
    assert code == 0, capsys.readouterr().err
    figs = out / "figures"
    assert sorted(p.stem for p in figs.glob("*.html")) == sorted(EXPECTED[cmd])
    for name in EXPECTED[cmd]:
        page = (figs / f"{name}.html").read_text()
        assert 'src="plotly.min.js"' in page and plotly_data(page)
    assert [p.name for p in figs.glob("*.js")] == ["plotly.min.js"]


SAVED = {"patch": ("patching", Patching, ("clean", "corrupt")), "attribute": ("attribution", Attribution, ("trials",)),
         "ablate": ("ablation", Ablation, ("trials", "reference")), "neurons": ("neurons", Neurons, ("trials",)),
         "discover": ("circuit", Circuit, ("clean", "corrupt")), "compare": ("comparison", Comparison, ("trials", "reliance"))}


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_saves_its_typed_result_table_and_inputs(capsys, tmp_path, ckpt, tiny_base, cmd):
    """The same writer for every command: the typed result loads back as its type, the CSV is its table, and the
    provenance holds the token ids of trials that the task regenerates from the recorded seed (catches tokens
    of another batch, or of the clean trials recorded as the corrupted ones)."""
    import pandas as pd

    from tasks.cdm import generate

    out = tmp_path / cmd
    assert main(argv(cmd, ckpt, tiny_base, out)) == 0, capsys.readouterr().err
    stem, cls, batches = SAVED[cmd]
    res = cls.from_files(out / stem)
    table = pd.read_csv(out / f"{stem}.csv")
    assert len(table) == len(res.to_frame()) > 0 and list(table.columns) == list(res.to_frame().columns)
    prov = load_provenance(out / stem)
    assert prov["command"] == cmd and prov["seed"] == 0 and prov["task"]["name"] == "ContextDecisionMaking"
    tok = load_model(ckpt)[1]
    n = {"patch": 4, "attribute": 8, "ablate": 8, "neurons": 32, "discover": 4, "compare": 16}[cmd]
    if "clean" in batches:
        clean, bad = make_pairs(CDMConfig(), n, seed=0, tokenizer=tok, corruption="context-flip")
        expect = {"clean": clean.tokens, "corrupt": bad.tokens}
    else:
        later = generate(CDMConfig(), n, seed=1, tokenizer=tok, split="test").tokens
        expect = {"trials": generate(CDMConfig(), n, seed=0, tokenizer=tok, split="test").tokens,
                  "reference": later, "reliance": later}
    for b in batches:
        np.testing.assert_array_equal(np.asarray(prov[f"{b}_tokens"]), expect[b])
    from interp.store import file_sha256

    src = tiny_base if cmd == "compare" else ckpt  # compare's provenance is the base's
    assert prov["weights_sha256"] == file_sha256(src / "model.safetensors") and prov["versions"]["torch"]
    assert prov["trials"]
    assert not any(str(tmp_path) in p.read_text() for p in out.rglob("*.json"))


def test_ablate_and_compare_use_their_other_trials(capsys, tmp_path, ckpt, tiny_base):
    """`ablate` takes its mean / resample activations from other trials of the split (seed + 1) and `compare`
    reverts layers on other trials than CKA's: the saved numbers equal the API's given those trials and differ
    from the same trials reused (catches the reference or the reliance batch dropped)."""
    from experiments import api as cc

    m, base = cc.load(ckpt, device="cpu"), cc.load(tiny_base, device="cpu")
    t0, t1 = cc.trials(m, 16, seed=0), cc.trials(m, 16, seed=1)
    assert main(["ablate", str(ckpt), "--n", "16", "--out", str(tmp_path / "a")]) == 0
    saved = Ablation.from_files(tmp_path / "a" / "ablation")
    np.testing.assert_allclose(saved.logit_diff, cc.ablate(m, t0, "mean", reference=t1).logit_diff, atol=1e-6)
    assert not np.allclose(saved.logit_diff, cc.ablate(m, t0, "mean").logit_diff, atol=1e-6)
    assert main(["compare", "--finetuned", str(ckpt), "--base", str(tiny_base), "--n", "16",
                 "--out", str(tmp_path / "c")]) == 0
    c = Comparison.from_files(tmp_path / "c" / "comparison")
    want = cc.compare({"finetuned-s0": m}, base, t0, reliance_trials=t1)
    np.testing.assert_allclose(c.cka["finetuned-s0"], want.cka["finetuned-s0"], atol=1e-6)
    assert c.full["finetuned-s0"] == pytest.approx(want.full["finetuned-s0"])
    same = cc.compare({"finetuned-s0": m}, base, t0)
    assert c.full["finetuned-s0"] != pytest.approx(same.full["finetuned-s0"])


def test_heads_heatmap_holds_the_commands_numbers(capsys, tmp_path, ckpt):
    out = tmp_path / "a"
    assert main(["ablate", str(ckpt), "--n", "8", "--method", "zero", "--out", str(out)]) == 0
    trace = plotly_data((out / "figures" / "ablation_heads_logit_diff.html").read_text())[0]
    a = Ablation.from_files(out / "ablation")
    np.testing.assert_allclose(numbers(trace["z"]), a.logit_diff - a.baseline_logit_diff, atol=1e-9)
    assert trace["y"] == ["L0", "L1"] and trace["x"] == ["H0", "H1", "H2", "H3"]


def test_png_and_svg(capsys, tmp_path, ckpt):
    from interp.viz import chromium_available

    if not chromium_available():
        pytest.skip("no Chromium installed (install the Debian package `chromium`)")
    out = tmp_path / "p"
    assert main(["patch", str(ckpt), "--n", "4", "--figures", "png", "svg", "--out", str(out)]) == 0
    assert (out / "figures" / "patch_heads.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "figures" / "patch_heads.svg").read_bytes()[:2000]
    assert not (out / "figures" / "patch_heads.html").exists()


def test_unknown_format_exits_2_with_nothing_written(capsys, tmp_path, ckpt):
    out = tmp_path / "p"
    with pytest.raises(SystemExit) as e:
        main(["patch", str(ckpt), "--figures", "html", "gif", "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice: 'gif'" in err and not out.exists()


@pytest.fixture
def no_computation(monkeypatch):
    """Any model load fails the test: what is refused must be refused before the computation starts."""
    import experiments.cli.analyses as ca

    monkeypatch.setattr(ca, "load", lambda *a, **k: pytest.fail("the model was loaded before the refusal"))


@pytest.mark.parametrize("cmd", COMMANDS)
def test_images_without_chromium_are_refused_before_computing(capsys, tmp_path, ckpt, tiny_base, monkeypatch,
                                                               no_computation, cmd):
    import interp.viz

    monkeypatch.setattr(interp.viz, "chromium_available", lambda: False)
    out = tmp_path / "o"
    assert main(argv(cmd, ckpt, tiny_base, out, "--figures", "html", "png")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write png figures") and "Chromium" in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("cmd", COMMANDS)
def test_existing_output_is_refused_before_computing(capsys, tmp_path, ckpt, tiny_base, no_computation, cmd):
    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(argv(cmd, ckpt, tiny_base, out)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["precious.txt"] and (out / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_device_defaults_to_auto(tmp_path, cmd):
    args = build_parser().parse_args(argv(cmd, "ck", "base", tmp_path / "o"))
    assert args.device == "auto" and args.figures == ["html"]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_bad_input_found_during_the_computation_leaves_no_folder(capsys, tmp_path, ckpt, tiny_base, cmd):
    out = tmp_path / "o"
    assert main(argv(cmd, ckpt, tiny_base, out, "--n", "0")) == 2  # found once the model is loaded
    assert "must be >= 1" in capsys.readouterr().err and not out.exists()
