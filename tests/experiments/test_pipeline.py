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

EVIL = "<script>window.__pwned=1</script>"


def tiny_config(tmp: Path, base: Path) -> Path:
    p = tmp / "tiny.toml"
    train = "steps = 16\neval_every = 8\neval_size = 32\nbatch_size = 16\nwarmup = 2\n"
    p.write_text(f'[run]\nname = "tiny {EVIL}"\nseeds = [0, 1]\nn_eval = 48\nn_compare = 48\nn_pairs = 6\nattention_heads = 2\n'
                 f'formats = ["html", "csv"]\n[model]\nbase = "{base}"\n[finetune]\n{train}[scratch]\n{train}'
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


def test_every_promised_file(run_dir):
    for f in ("run.json", "report.html", "attention.html", "results/evaluate.json", "results/analyses.json",
              "results/compare.json", "results/circuits.json", "figures/index.json",
              "arrays/accuracy_by_condition.csv"):
        assert (run_dir / f).is_file(), f
    for mid in ("finetuned-s0", "finetuned-s1", "scratch-s0", "scratch-s1"):
        assert (run_dir / "models" / mid / "checkpoint.json").is_file()
        assert (run_dir / "circuits" / f"{mid}.json").is_file()
    idx = json.loads((run_dir / "figures" / "index.json").read_text())
    for name in ("learning_curves", "psychometric_relevant", "psychometric_irrelevant", "accuracy_by_condition",
                 "accuracy_by_split", "patch_heads_finetuned-s0", "patch_resid_pre_scratch-s0", "dla_heads_base",
                 "ablation_heads_finetuned-s0", "cka_resid_answer", "reversion_layer", "cmap_resid", "faithfulness",
                 "circuit_finetuned-s0"):
        assert name in idx["figures"], name
        assert (run_dir / "figures" / f"{name}.html").stat().st_size > 100_000  # plotly inlined
        assert (run_dir / "figures" / f"{name}.csv").stat().st_size > 0
    with np.load(run_dir / "arrays" / "patch_heads_finetuned-s0.npz") as z:
        assert z["values"].shape == (2, 4) and z["clean_tokens"].shape == (6, 12)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["versions"]["torch"] and meta["config"]["run"]["seeds"] == [0, 1]
    ev = json.loads((run_dir / "results" / "evaluate.json").read_text())
    assert set(ev["models"]) == {"finetuned-s0", "finetuned-s1", "scratch-s0", "scratch-s1", "base"}
    assert all("gen" in r for r in ev["models"].values())


def test_report_sentences_come_from_the_numbers(run_dir):
    from experiments.report import findings

    ev = json.loads((run_dir / "results" / "evaluate.json").read_text())
    text = " ".join(findings(run_dir))
    acc = np.mean([ev["models"][m]["test"]["accuracy"] for m in ("finetuned-s0", "finetuned-s1")])
    assert f"{acc:.1%}" in text
    # the same report from altered numbers reads differently
    alt = run_dir.parent / "alt"
    shutil.copytree(run_dir, alt)
    ev["models"]["finetuned-s0"]["test"]["accuracy"] = 0.123
    (alt / "results" / "evaluate.json").write_text(json.dumps(ev))
    assert " ".join(findings(alt)) != text


def test_rerun_skips_finished_stages(run_dir, tiny_base):
    cfg = tiny_config(run_dir.parent, tiny_base)
    p = cli("run", str(cfg), "--out", str(run_dir), "--quiet")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert out.count("already done: skipped") == 8


def test_killed_run_resumes_to_the_same_numbers(run_dir, tiny_base, tmp_path):
    cfg = tiny_config(tmp_path, tiny_base)
    out = tmp_path / "killed"
    p = cli("run", str(cfg), "--out", str(out), "--quiet")
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "stages" / "analyses.json").exists():
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "report.html").exists()
    r = cli("run", str(cfg), "--out", str(out), "--quiet")
    stdout, err = r.communicate(timeout=600)
    assert r.returncode == 0, err
    assert "[train] already done" in stdout
    for name in ("evaluate", "analyses", "compare", "circuits"):
        a = json.loads((run_dir / "results" / f"{name}.json").read_text())
        b = json.loads((out / "results" / f"{name}.json").read_text())
        assert a == b, name


def test_a_different_config_needs_overwrite(run_dir, tmp_path, tiny_base):
    cfg = tiny_config(tmp_path, tiny_base)
    cfg.write_text(cfg.read_text().replace("n_eval = 48", "n_eval = 40"))
    p = cli("run", str(cfg), "--out", str(run_dir))
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "another config" in err and "Traceback" not in err


def test_labels_are_escaped(run_dir):
    from interp.viz import attention_page, figure_div, heatmap

    html = (run_dir / "report.html").read_text()
    assert EVIL not in html and "&lt;script&gt;window.__pwned" in html
    fig = heatmap(np.zeros((1, 1)), [EVIL], ["</script><img src=x onerror=alert(1)>"], EVIL)
    div = figure_div(fig)
    assert "<script>window" not in div and "<img" not in div
    page = attention_page([{"title": EVIL, "tokens": ["</script><script>window.__pwned=1</script>"],
                            "attention": np.ones((1, 1, 1)), "head_names": [EVIL]}], EVIL)
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
        page.wait_for_function("document.querySelectorAll('.main-svg').length > 10", timeout=30_000)
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
