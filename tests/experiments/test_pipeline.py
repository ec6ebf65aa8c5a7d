"""`cogcircuits run` end to end on a tiny config: every promised file exists and is valid, a run killed mid-way
resumes to the same numbers, the pages render offline in headless Chromium, and data-derived text is inert."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration  # `cogcircuits run` end to end

EVIL = "<script>window.__pwned=1</script>"


def tiny_config(tmp: Path, base: Path) -> Path:
    p = tmp / "tiny.toml"
    # a criterion tiny models can meet in 16 steps: the test is about the plumbing, not the science
    train = ("steps = 16\neval_every = 8\neval_size = 32\nbatch_size = 16\nwarmup = 2\ntarget_accuracy = 0.3\n"
             "target_incongruent = 0.01\n")
    p.write_text(f'[run]\nname = "tiny {EVIL}"\nseeds = [0, 1]\nn_eval = 48\nn_compare = 48\nn_reliance = 32\n'
                 f'n_pairs = 6\nattention_heads = 2\ncircuit_random = 3\nformats = ["html", "csv"]\n'
                 'balanced_trials = true\nmultiplicity = "holm"\n'
                 f'[model]\nbase = "{base}"\n[finetune]\n{train}[scratch]\n{train}'
                 '[task]\nheldout_number_range = [70, 99]\n')
    return p


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "experiments.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_base):
    tmp = tmp_path_factory.mktemp("run")
    p = cli("run", str(tiny_config(tmp, tiny_base)), "--out", str(tmp / "run"), "--quiet")
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert "[report] done" in out
    return tmp / "run"


def test_every_promised_file(run_dir, tiny_base):
    for f in ("run.json", "report.html", "attention.html", "results/evaluate.json", "results/analyses.json",
              "results/compare.json", "results/circuits.json", "results/contrasts.json", "results/claims.json",
              "figures/index.json", "figures/plotly.min.js", "arrays/accuracy_by_condition.csv"):
        assert (run_dir / f).is_file(), f
    for mid in ("finetuned-s0", "finetuned-s1", "scratch-s0", "scratch-s1"):
        assert (run_dir / "models" / mid / "checkpoint.json").is_file()
        for stem in ("circuit", "patch_heads", "attribution", "ablation", "neurons"):
            assert (run_dir / "results" / "per_model" / mid / f"{stem}.json").is_file(), (mid, stem)
    idx = json.loads((run_dir / "figures" / "index.json").read_text())
    for name in ("learning_curves", "psychometric_relevant", "psychometric_irrelevant", "accuracy_by_condition",
                 "accuracy_by_split", "steps_to_criterion", "patch_heads_finetuned-s0", "patch_resid_pre_scratch-s0",
                 "dla_heads_finetuned-s0", "ablation_heads_logit_diff_finetuned-s0", "atp_heads_by_pos_finetuned-s0",
                 "neuron_r2_scratch-s0", "cka_base", "cmap", "reversion",
                 "cka_between", "pair_contrasts", "faithfulness_node", "faithfulness_edge", "circuit_finetuned-s0"):
        assert name in idx["figures"], name
        page = (run_dir / "figures" / f"{name}.html").read_text()
        assert 'src="plotly.min.js"' in page and len(page) < 200_000  # one shared bundle, not one each
        assert (run_dir / "figures" / f"{name}.csv").stat().st_size > 0
    from interp.results import Patching

    d = run_dir / "results" / "per_model" / "finetuned-s0"
    assert Patching.from_files(d / "patch_heads").values.shape == (2, 4)
    with np.load(d / "inputs.npz") as z:
        assert z["clean_tokens"].shape == z["corrupt_tokens"].shape == (6, 12)
    # the comparison is stored once (compare.json); the figures draw the numbers the contrasts read from it (the
    # raw file read here by hand), scratch also to its init
    from experiments.core.run_record import RunComparison

    assert not (run_dir / "results" / "comparison.json").exists()
    cmp = RunComparison.load(run_dir / "results" / "compare.json").to_result("base")
    co = json.loads((run_dir / "results" / "compare.json").read_text())["per_model"]
    assert sorted(cmp.reversion_init) == ["scratch-s0", "scratch-s1"] and sorted(cmp.cmap) == sorted(co)
    for m, p in co.items():
        np.testing.assert_array_equal(cmp.cmap[m], [x["accuracy_retained"] for x in p["reliance_base"]["cmap_resid"]])
        np.testing.assert_array_equal(cmp.reversion[m], [x["accuracy_retained"] for x in
                                                         p["reliance_base"]["reversion_layer"]])
        np.testing.assert_array_equal(cmp.cka[m], p["cka_base"]["debiased"]["resid"]["answer"])
        if m.startswith("scratch"):
            np.testing.assert_array_equal(cmp.reversion_init[m], [x["accuracy_retained"] for x in
                                                                  p["reliance_init"]["reversion_layer"]])
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["versions"]["torch"] and meta["config"]["run"]["seeds"] == [0, 1]
    assert meta["base"]["name"] == tiny_base.name and len(meta["base"]["weights_sha256"]) == 64
    ev = json.loads((run_dir / "results" / "evaluate.json").read_text())
    assert set(ev["models"]) == {"finetuned-s0", "finetuned-s1", "scratch-s0", "scratch-s1", "base"}
    assert all("gen" in r for r in ev["models"].values())
    assert ev["eligible"] == ["finetuned-s0", "finetuned-s1", "scratch-s0", "scratch-s1"]


def test_balanced_trials_measured_chance_and_the_referee_rule_reach_the_records(run_dir):
    """The run's config asks for balanced trials and Holm: the reliance records hold a chance of exactly 0.5 with
    equal answer sides, the patching provenance says its pairs were balanced, the pair contrasts use the scratch
    null, and the printed rule names Holm. Catches an option parsed but never passed to the jobs."""
    co = json.loads((run_dir / "results" / "compare.json").read_text())
    for mid, m in co["per_model"].items():
        rel = m["reliance_base"]
        assert rel["chance"] == 0.5 and len(set(rel["n_by_answer"])) == 1, mid
        # how far each model moved from what it was trained from: a fine-tune's start is the base itself
        same = m["weight_change_start"] == pytest.approx(m["weight_change"])
        assert same if mid.startswith("finetuned") else not same, mid
    prov = json.loads((run_dir / "results" / "per_model" / "finetuned-s0" / "patch_heads.json").read_text())
    assert "balanced" in json.dumps(prov)
    con = json.loads((run_dir / "results" / "contrasts.json").read_text())
    assert con["cka_between_models"]["result"]["reference"] == "within_b"
    assert "Holm" in json.loads((run_dir / "results" / "claims.json").read_text())["rule"]


def test_every_record_file_reads_back_as_written(run_dir):
    """Each results file, run.json, the step marks and jobs.json, read into its record type and written again,
    are the same bytes of JSON: catches a field the record drops or renames, a None written where the step left
    the key out, and a reordering (a resumed run would otherwise see its records change)."""
    from experiments.core.run_record import RESULTS, RunMeta, StageMark
    from experiments.jobs.spec import JobsRecord

    files = [(run_dir / "results" / f"{n}.json", cls) for n, cls in RESULTS.items()]
    files += [(run_dir / "run.json", RunMeta), (run_dir / "results" / "jobs.json", JobsRecord)]
    files += [(p, StageMark) for p in sorted((run_dir / "stages").glob("*.json"))]
    assert len(files) > 15
    for path, cls in files:
        raw = json.loads(path.read_text())
        assert json.dumps(cls.load(path).to_dict()) == json.dumps(raw), path.name


def test_circuits_and_contrasts_carry_their_baselines(run_dir):
    ci = json.loads((run_dir / "results" / "circuits.json").read_text())
    for mid, r in ci["models"].items():
        for level in ("node", "edge"):
            c = r[f"{level}_curve"]
            assert len(c["random_faithfulness"]) == len(c["grid"]) and all(len(x) == 3 for x in c["random_faithfulness"])
            assert len(c["random_cpr"]) == 3 and "cmd" in c and "m_empty" in c and "m_full" in c
            if c["defined"]:
                assert (c["f_empty"], c["f_full"]) == (0.0, 1.0)
                assert c["faithfulness"][-1] == pytest.approx(1.0, abs=1e-4)
                assert c["sizes"][0] == 0 and c["faithfulness"][0] == pytest.approx(0.0, abs=1e-4)
            else:
                assert all(np.isnan(c["faithfulness"]))
    con = json.loads((run_dir / "results" / "contrasts.json").read_text())
    for key in ("circuit_overlap", "patching_map_similarity", "ablation_map_similarity", "cka_between_models"):
        assert con[key]["kind"] == "pair" and len(con[key]["pairs"]) == 6
        if con[key]["result"] is not None:
            r = con[key]["result"]
            assert len(r["within_a"]) == len(r["within_b"]) == 1 and len(r["between"]) == 4
    assert con["circuit_overlap"]["chance"] > 0
    for key in ("cka_base_mean", "cmap_mean", "gen_accuracy", "steps_to_criterion"):
        assert con[key]["kind"] == "group" and set(con[key]["per_model"]) == {"finetuned-s0", "finetuned-s1",
                                                                             "scratch-s0", "scratch-s1"}


def test_verdicts_are_the_rule_applied_to_the_stored_results(run_dir, tmp_path):
    from experiments.core.run_record import Contrasts, RunEvaluation
    from experiments.run.claims import judge, load_validation
    from experiments.run.pipeline import RunContext, load_run_config
    from experiments.run.steps import claims as claims_step
    from experiments.report.report import write_report

    ev = json.loads((run_dir / "results" / "evaluate.json").read_text())
    con = json.loads((run_dir / "results" / "contrasts.json").read_text())
    stored = json.loads((run_dir / "results" / "claims.json").read_text())
    typed = judge(RunEvaluation.from_dict(ev), Contrasts.from_dict(con), load_validation(),
                  multiplicity="holm")  # as tiny_config asks
    assert json.loads(json.dumps([c.to_dict() for c in typed])) == stored["claims"]
    html = (run_dir / "report.html").read_text()
    assert html.index("Verdicts") < html.index("Models, training criterion")  # the answer comes first
    for c in stored["claims"]:
        assert c["verdict"] in html
    assert "SUPPORTED when every part is in favour" in html
    # a model that missed the criterion leaves every contrast and the report says so
    alt = tmp_path / "alt"
    shutil.copytree(run_dir, alt)
    ev["eligible"].remove("scratch-s1")
    ev["excluded"]["scratch-s1"] = "missed the criterion (edited for this test)"
    (alt / "results" / "evaluate.json").write_text(json.dumps(ev))
    ctx = RunContext(load_run_config(None), alt, progress=False, log=lambda s: None)
    claims_step(ctx)
    write_report(alt)
    con2 = json.loads((alt / "results" / "contrasts.json").read_text())
    assert "scratch-s1" not in con2["cka_base_mean"]["per_model"] and con2["circuit_overlap"]["result"] is None
    assert "edited for this test" in (alt / "report.html").read_text()


def test_no_output_holds_an_absolute_path_of_this_machine(run_dir, tiny_base):
    leaks = []
    for f in run_dir.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".csv", ".html", ".txt", ".toml"):
            text = f.read_text(errors="ignore")
            for needle in (str(run_dir.parent), str(REPO), str(tiny_base)):
                if needle in text:
                    leaks.append((str(f.relative_to(run_dir)), needle))
    assert not leaks, leaks[:5]


def test_rerun_skips_finished_stages(run_dir, tiny_base):
    cfg = tiny_config(run_dir.parent, tiny_base)
    p = cli("run", str(cfg), "--out", str(run_dir), "--quiet")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert out.count("already done: skipped") == 9


def test_killed_run_resumes_to_the_same_numbers(run_dir, tiny_base, tmp_path):
    cfg = tiny_config(tmp_path, tiny_base)
    out = tmp_path / "killed"
    p = cli("run", str(cfg), "--out", str(out), "--quiet")
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "stages" / "analyses.json").exists():  # killed after a step
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "report.html").exists()
    r = cli("run", str(cfg), "--out", str(out), "--quiet")
    stdout, err = r.communicate(timeout=600)
    assert r.returncode == 0, err
    assert "[train] already done" in stdout
    for name in ("evaluate", "analyses", "compare", "circuits", "contrasts", "claims"):
        a = json.loads((run_dir / "results" / f"{name}.json").read_text())
        b = json.loads((out / "results" / f"{name}.json").read_text())
        assert a == b, name


def test_a_different_config_needs_overwrite(run_dir, tmp_path, tiny_base):
    cfg = tiny_config(tmp_path, tiny_base)
    cfg.write_text(cfg.read_text().replace("n_eval = 48", "n_eval = 40"))
    p = cli("run", str(cfg), "--out", str(run_dir))
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "another config" in err and "Traceback" not in err


@pytest.mark.parametrize("page, model", [("attention.html", "finetuned-s0"), ("attention-scratch-s0.html",
                                                                              "scratch-s0")])
def test_the_runs_attention_pages_are_the_attention_commands_pages(run_dir, tmp_path, page, model):
    """`run` writes, for the first fine-tuned and the first scratch model, exactly the page `cogcircuits attention`
    makes for that checkpoint with the run's settings (top 2 heads by denoising patching on the analyses' 6 pairs,
    seed 2000, trial 0). Catches a run that keeps its own older page, or one scored on other pairs or heads."""
    out = tmp_path / "a.html"
    p = cli("attention", str(run_dir / "models" / model), "--trial", "0", "--top", "2", "--by", "patching",
            "--n", "6", "--seed", "2000", "--corruption", "context-flip", "--device", "cpu", "--out", str(out))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert (run_dir / page).read_text() == out.read_text()
    pages = json.loads((run_dir / "results" / "attention.json").read_text())["pages"]
    assert pages[page]["model"] == model and len(pages[page]["heads"]) == 2


def test_labels_are_escaped(run_dir):
    from interp.viz import attention_views_page, figure_div, heatmap

    html = (run_dir / "report.html").read_text()
    assert EVIL not in html and "&lt;script&gt;window.__pwned" in html
    fig = heatmap(np.zeros((1, 1)), [EVIL], ["</script><img src=x onerror=alert(1)>"], EVIL)
    div = figure_div(fig)
    assert "<script>window" not in div and "<img" not in div
    page = attention_views_page([{"title": EVIL, "text": EVIL, "tokens": ["</script><script>window.__pwned=1</script>"],
                                  "attention": np.ones((1, 1, 1))}], [EVIL], EVIL, [EVIL], {"x": EVIL})
    assert "</script><script>window.__pwned" not in page and "<script>window.__pwned" not in page


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium installed (install the Debian package `chromium`)")
    pw = pytest.importorskip("playwright.sync_api")
    return pw, chromium


def test_pages_render_offline_in_chromium(run_dir, tmp_path):
    pw, chromium = _browser()
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        page = b.new_page(viewport={"width": 1200, "height": 900})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((run_dir / "report.html").as_uri())
        try:  # plots may draw asynchronously: wait for all of them (the assertion below reports a shortfall)
            page.wait_for_function("document.querySelectorAll('.plot-container').length >= 20", timeout=30_000)
        except pw.TimeoutError:
            pass
        fig_page = b.new_page()
        fig_page.on("request", lambda r: requests.append(r.url))
        fig_page.goto((run_dir / "figures" / "cka_base.html").as_uri())
        fig_page.wait_for_function("document.querySelectorAll('.main-svg').length > 0", timeout=30_000)
        n_plots = page.locator(".plot-container").count()
        pwned = page.evaluate("window.__pwned")
        shot = page.screenshot()
        page.goto((run_dir / "attention.html").as_uri())
        page.wait_for_function("document.querySelectorAll('.cv-panel *').length > 20", timeout=30_000)
        att_shot = page.screenshot()
        att_pwned = page.evaluate("window.__pwned")
        b.close()
    assert n_plots >= 20
    assert pwned is None and att_pwned is None
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), [u for u in requests][:5]
    from PIL import Image
    import io

    for png in (shot, att_shot):
        img = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
        assert img.std() > 5  # not a blank page


def test_a_llama_run_with_one_scratch_twin(tmp_path, tiny_llama_base):
    """The whole run on a tiny Llama (rotary, RMSNorm, gated MLP, grouped-query attention, three-token numbers)
    with one scratch model: contrasts that need two models per group are undefined, and the claims say so."""
    train = ("steps = 12\neval_every = 6\neval_size = 32\nbatch_size = 16\nwarmup = 2\ntarget_accuracy = 0.3\n"
             "target_incongruent = 0.01\n")
    cfg = tmp_path / "llama.toml"
    cfg.write_text(f'[run]\nname = "llama"\nseeds = [0, 1]\nscratch_seeds = [0]\nn_eval = 32\nn_compare = 32\n'
                   f'n_reliance = 32\nn_pairs = 4\ncircuit_random = 2\nattention_heads = 1\ndetailed_maps = false\n'
                   f'formats = ["html"]\n[model]\nbase = "{tiny_llama_base}"\n[finetune]\n{train}[scratch]\n{train}'
                   '[task]\nheldout_number_range = [70, 99]\n')
    p = cli("run", str(cfg), "--out", str(tmp_path / "run"), "--quiet")
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    ev = json.loads((tmp_path / "run" / "results" / "evaluate.json").read_text())
    assert set(ev["models"]) == {"finetuned-s0", "finetuned-s1", "scratch-s0", "base"}
    con = json.loads((tmp_path / "run" / "results" / "contrasts.json").read_text())
    assert con["cka_base_mean"]["result"] is None and "undefined" in con["cka_base_mean"]["note"]
    claims = json.loads((tmp_path / "run" / "results" / "claims.json").read_text())["claims"]
    assert all(c["verdict"] in ("inconclusive", "not supported") for c in claims)
    assert any(p["outcome"] == "undefined" for c in claims for p in c["parts"])
    html = (tmp_path / "run" / "report.html").read_text()
    assert "patch_heads_finetuned-s0" in html and "patch_heads_by_pos_finetuned-s0" not in html


@pytest.mark.slow
def test_a_gpt2_small_shaped_run(tmp_path, tokenizer):
    """The paper-scale path on CPU, so it cannot rot between GPU sessions: the whole run with a GPT-2-small-shaped
    base (12 layers, d_model 768, 12 heads, vocabulary 50257; random weights, the shipped tokenizer) for a handful
    of steps. The criterion is set low so that every stage runs: this checks shapes and plumbing, not science."""
    from interp.models import Arch, build_hf_gpt2, save_hf_dir

    arch = Arch(n_layers=12, d_model=768, n_heads=12, d_mlp=3072, d_vocab=50257, n_ctx=64)
    base = tmp_path / "gpt2-small-shaped"
    save_hf_dir(build_hf_gpt2(arch, tokenizer, 0), tokenizer, base)
    train = ("steps = 3\neval_every = 3\neval_size = 16\nbatch_size = 8\nwarmup = 1\ntarget_accuracy = 0.01\n"
             "target_incongruent = 0.01\n")
    cfg = tmp_path / "big.toml"
    cfg.write_text(f'[run]\nname = "gpt2-small-shaped"\nseeds = [0]\nscratch_seeds = [0]\nn_eval = 16\n'
                   f'n_compare = 16\nn_reliance = 16\nn_pairs = 4\ncircuit_random = 1\nattention_heads = 1\n'
                   f'detailed_maps = false\nformats = ["html"]\n[model]\nbase = "{base}"\n[finetune]\n{train}'
                   f'[scratch]\n{train}[task]\nheldout_number_range = [70, 99]\n')
    p = cli("run", str(cfg), "--out", str(tmp_path / "run"), "--quiet")
    out, err = p.communicate(timeout=1800)
    assert p.returncode == 0, err
    ev = json.loads((tmp_path / "run" / "results" / "evaluate.json").read_text())
    assert ev["base"]["n_layers"] == 12 and ev["base"]["d_model"] == 768
    assert set(ev["eligible"]) == {"finetuned-s0", "scratch-s0"}
    ci = json.loads((tmp_path / "run" / "results" / "circuits.json").read_text())
    assert ci["n_nodes"] == 12 * 12 + 12  # every head and every MLP is a node
    co = json.loads((tmp_path / "run" / "results" / "compare.json").read_text())
    assert len(co["per_model"]["finetuned-s0"]["reliance_base"]["reversion_layer"]) == 12
    assert (tmp_path / "run" / "report.html").is_file()


def test_the_runs_results_are_the_apis_on_the_recorded_trials(run_dir):
    """A model's saved results in the run folder equal the API's on the trials its provenance records (the run's
    seeds: pairs and test trials of the analyses seed, ablation reference seed + 1, neurons seed + 2), and name
    the checkpoint's weights. Catches a seed, trial count, corruption or reference that the run changed."""
    from experiments import api as cc
    from experiments.run.steps import SEEDS
    from interp.result_io import load_provenance
    from interp.results import Ablation, Attribution, Neurons, Patching

    d = run_dir / "results" / "per_model" / "scratch-s1"
    m = cc.load(run_dir / "models" / "scratch-s1", device="cpu")
    seed = SEEDS["analyses"]
    prov = load_provenance(d / "ablation")
    meta = json.loads((run_dir / "models" / "scratch-s1" / "checkpoint.json").read_text())
    assert prov["weights_sha256"] == meta["weights_sha256"] and prov["trials"]["seed"] == seed
    assert prov["trials"]["reference"]["seed"] == seed + 1
    bal = prov["trials"].get("balanced", False)  # tiny_config balances its trials: the provenance must say so
    assert bal and prov["trials"]["reference"]["balanced"]
    pairs, test = cc.pairs(m, 6, seed=seed, balanced=bal), cc.trials(m, 6, seed, balanced=bal)
    ref = cc.trials(m, 6, seed + 1, balanced=bal)
    with np.load(d / "inputs.npz") as z:
        np.testing.assert_array_equal(z["clean_tokens"], pairs.clean.tokens)
        np.testing.assert_array_equal(z["reference_tokens"], ref.tokens)
    np.testing.assert_allclose(Patching.from_files(d / "patch_heads").result.raw, cc.patch(m, pairs).result.raw,
                               atol=1e-5)
    np.testing.assert_allclose(Attribution.from_files(d / "attribution").heads, cc.attribute(m, test).heads, atol=1e-5)
    np.testing.assert_allclose(Ablation.from_files(d / "ablation").logit_diff,
                               cc.ablate(m, test, "mean", reference=ref).logit_diff, atol=1e-5)
    neurons = Neurons.from_files(d / "neurons")
    np.testing.assert_allclose(neurons.coef, cc.neurons(m, cc.trials(m, 128, seed + 2)).coef, atol=1e-4)


def test_a_new_analysis_needs_no_new_branches(run_dir, tmp_path, tiny_base, capsys):
    """A result type defined here, unknown to the project, saved into a finished run's per-model folder and listed
    in its index: the analyses step gathers its summary, `cogcircuits export` and the report draw its figure, the
    coverage table lists its trials, and the CLI's writer saves it like any command's result. Catches any place
    that enumerates the known analyses instead of the saved results."""
    import argparse
    from dataclasses import dataclass

    import pandas as pd
    import plotly.graph_objects as go

    import experiments.cli.analyses as cli_analyses
    from experiments.cli.main import main
    from interp.result_base import Result

    @dataclass(frozen=True, eq=False)
    class PlantedProfile(Result):
        per_layer: np.ndarray
        label: str

        def to_frame(self) -> pd.DataFrame:
            return pd.DataFrame({"layer": range(len(self.per_layer)), "value": self.per_layer})

        def figures(self) -> dict:
            return {"planted_profile": go.Figure(go.Bar(y=self.per_layer.tolist(), name=self.label))}

        def summary(self) -> dict:
            return {"label": self.label, "peak_layer": int(np.argmax(self.per_layer))}

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    d = run / "results" / "per_model" / "finetuned-s0"
    PlantedProfile(np.array([0.25, 0.75]), "planted").to_files(
        d / "planted", {"model": "finetuned-s0", "trials": {"split": "test", "n": 3, "seed": 987654}})
    index = json.loads((d / "index.json").read_text())
    (d / "index.json").write_text(json.dumps({**index, "results": index["results"] + ["planted"]}))
    for step in ("analyses", "figures", "report"):  # the analyses step re-gathers: its jobs are done, so skipped
        (run / "stages" / f"{step}.json").unlink()
    from experiments.run.pipeline import Run, load_run_config

    # in this process, where the new type is defined (a new analysis's module is imported by whatever computes it)
    Run(load_run_config(str(tiny_config(tmp_path, tiny_base))), run, progress=False).run()
    an = json.loads((run / "results" / "analyses.json").read_text())["models"]["finetuned-s0"]
    assert an["results"]["planted"] == {"label": "planted", "peak_layer": 1}
    report = (run / "report.html").read_text()
    assert "planted_profile_finetuned-s0" in report and "987654" in report  # its figure and its trials
    shutil.rmtree(run / "figures")
    assert main(["export", str(run), "--format", "html"]) == 0
    page = (run / "figures" / "planted_profile_finetuned-s0.html").read_text()
    assert '"y":[0.25,0.75]' in page.replace(" ", "")
    args = argparse.Namespace(figures=["html"])
    out = tmp_path / "cli"
    out.mkdir()
    cli_analyses._save(args, out, "planted", PlantedProfile(np.array([1.0, 0.5]), "cli"), {"seed": 1})
    assert PlantedProfile.from_files(out / "planted").label == "cli"
    assert pd.read_csv(out / "planted.csv")["value"].tolist() == [1.0, 0.5]
    assert (out / "figures" / "planted_profile.html").is_file()


@pytest.mark.parametrize("tamper", ["edit-results", "swap-model", "remove-results"])
def test_a_tampered_run_folder_is_refused_with_one_line(run_dir, tiny_base, tmp_path, tamper, capsys):
    """A finished run whose results file was edited, whose model folders were swapped (each folder consistent with
    its own weights hash), or whose results file was removed is not resumed on top of: one `error:` line naming the
    file, exit 2, and nothing in the folder changes. Catches a resume that trusts whatever files it finds."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    if tamper == "edit-results":
        f = run / "results" / "compare.json"
        f.write_text(f.read_text().replace("0.", "0.9", 1))
        named = "results/compare.json"
    elif tamper == "swap-model":
        a, b = run / "models" / "finetuned-s0", run / "models" / "finetuned-s1"
        a.rename(tmp_path / "x")
        b.rename(a)
        (tmp_path / "x").rename(b)
        named = "checkpoint.json"
    else:
        (run / "results" / "contrasts.json").unlink()
        named = "results/contrasts.json"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    p = cli("run", str(tiny_config(tmp_path, tiny_base)), "--out", str(run), "--quiet")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2 and err.count("\n") == 1 and err.startswith("error: ") and named in err, err
    assert "after the run's" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # adding seeds (`--extend`) checks the finished steps' files first too: run.json is not rewritten
    from experiments.cli.main import main

    ext = tmp_path / "ext.toml"
    ext.write_text(tiny_config(tmp_path, tiny_base).read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    capsys.readouterr()
    assert main(["run", str(ext), "--out", str(run), "--quiet", "--extend", "--models", "scratch-s2"]) == 2
    assert named in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_run_recorded_model_by_model_without_weights_equals_the_whole_run(tiny_base, tmp_path, capsys):
    """A study longer than one session records its models one at a time (`run --models`), keeping only their
    records: each model's weights are deleted once it is recorded, and the final `run` gathers the records with no
    trained weights on disk. Its results equal the run made in one go (same config, same process): catches
    `--models` giving a model's jobs other inputs than the run's steps give them (which model gets the detailed
    maps and the attention page, the seeds), a step that still loads a trained model, and a gather that drops or
    reorders a model.

    The study starts with seed 0 only and is extended with seed 1 (`--extend`), so this also checks that seeds
    added to a recorded run leave the recorded models' records standing and end where the whole run ends: refused
    without `--extend` (run.json untouched), and a config that changes anything else is refused even with it."""
    from experiments.cli.main import main

    whole, out, cfg = tmp_path / "whole", tmp_path / "study", str(tiny_config(tmp_path, tiny_base))
    first = tmp_path / "first.toml"
    first.write_text(Path(cfg).read_text().replace("seeds = [0, 1]", "seeds = [0]"))
    other = tmp_path / "other.toml"
    other.write_text(Path(cfg).read_text().replace("n_pairs = 6", "n_pairs = 5"))
    assert main(["run", cfg, "--out", str(whole), "--quiet"]) == 0
    refused = tmp_path / "refused"
    assert main(["run", cfg, "--out", str(refused), "--quiet", "--models", "finetuned-s1"]) == 2  # s0 first
    assert main(["run", cfg, "--out", str(refused), "--quiet", "--models", "scratch-s9"]) == 2  # not a model of it
    assert not (refused / "models").exists() or not any((refused / "models").iterdir())
    for mid, conf in (("scratch-s0", first), ("finetuned-s0", first), ("scratch-s1", cfg), ("finetuned-s1", cfg)):
        if mid == "scratch-s1":
            meta = (out / "run.json").read_bytes()
            capsys.readouterr()
            assert main(["run", cfg, "--out", str(out), "--quiet", "--models", mid]) == 2  # no --extend
            assert "pass --extend" in capsys.readouterr().err
            assert main(["run", str(other), "--out", str(out), "--quiet", "--extend", "--models", mid]) == 2
            assert "another config" in capsys.readouterr().err
            assert (out / "run.json").read_bytes() == meta
        extend = ["--extend"] if mid == "scratch-s1" else []
        assert main(["run", str(conf), "--out", str(out), "--quiet", "--models", mid, *extend]) == 0
        weights = out / "models" / mid / "model.safetensors"
        assert weights.is_file()
        weights.unlink()
    ext = json.loads((out / "run.json").read_text())["extensions"]
    assert [e["added"] for e in ext] == [["finetuned-s1", "scratch-s1"]]
    assert main(["run", cfg, "--out", str(out), "--quiet"]) == 0
    assert not list((out / "models").rglob("*.safetensors"))
    for name in ("evaluate", "analyses", "compare", "circuits", "contrasts", "claims", "attention"):
        a = (whole / "results" / f"{name}.json").read_text()
        assert a == (out / "results" / f"{name}.json").read_text(), name
    assert (out / "attention.html").read_text().count("circuitsvis") > 0 and (out / "report.html").is_file()
