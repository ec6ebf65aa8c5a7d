"""`cogcircuits attention`: the page holds the chosen heads' true patterns (for a prompt and for a task trial,
clean and corrupted), top-K heads are the argmax of the stated score, labels are escaped, the page renders from
disk with no network, and every bad input is one `error:` line, exit 2, nothing written, before any computation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.cli.main import main
from interp.models import load_model, save_checkpoint
from tasks.cdm import CDMConfig, make_pairs


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_base):
    model, tok, _ = load_model(tiny_base)
    d = tmp_path_factory.mktemp("att") / "ck"
    save_checkpoint(model, d, {}, tok)
    return d


@pytest.fixture(scope="module")
def model(ckpt):
    return load_model(ckpt)[0]


def attention(capsys, *argv: str) -> tuple[int, str]:
    code = main(["attention", *map(str, argv)])
    return code, capsys.readouterr().err


def data_of(page: str, block: str = "cv-data") -> dict:
    m = re.search(rf"<script type='application/json' id='{block}'>(.*?)</script>", page, re.S)
    assert m, block
    return json.loads(m.group(1))


def true_patterns(model, tokens: np.ndarray, heads: list[tuple[int, int]]) -> np.ndarray:
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.as_tensor(tokens[None]))
    return np.stack([cache[f"blocks.{l}.attn.hook_pattern"][0, h].numpy() for l, h in heads])


def test_prompt_page_holds_the_chosen_patterns_escaped_and_offline(capsys, tmp_path, ckpt, model):
    from interp.viz import _circuitsvis_bundle

    out = tmp_path / "a.html"
    prompt = "a <b> & c"
    code, err = attention(capsys, ckpt, "--prompt", prompt, "--heads", "L1H2,L0H0", "--out", out)
    assert code == 0, err
    page = out.read_text()
    d = data_of(page)
    tokens = model.to_tokens(prompt)[0].numpy()
    assert d["heads"] == ["L1H2", "L0H0"] and len(d["views"]) == 1
    assert d["views"][0]["tokens"] == [model.tokenizer.decode([int(t)]) for t in tokens]
    np.testing.assert_allclose(d["views"][0]["attention"], true_patterns(model, tokens, [(1, 2), (0, 0)]), atol=1e-4)
    block = re.search(r"id='cv-data'>(.*?)</script>", page, re.S).group(1)
    assert "<" not in block and "\\u003c" in block  # the token " <" cannot open a tag inside the script
    text = re.findall(r"class='cv-text'>(.*?)</div>", page, re.S)
    assert len(text) == 1 and "&lt;b&gt; &amp; c" in text[0] and "<b>" not in text[0]
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*['\"]?(https?:)?//", page, re.I)  # no CDN script
    assert page.count(_circuitsvis_bundle()) == 1
    prov = data_of(page, "provenance")
    assert prov["scores"] is None and prov["prompt"] == prompt and str(tmp_path) not in page


def test_trial_page_shows_that_pair_clean_and_corrupted(capsys, tmp_path, ckpt, model):
    out = tmp_path / "t.html"
    code, err = attention(capsys, ckpt, "--trial", 3, "--n", 6, "--seed", 5, "--corruption", "relevant-flip",
                          "--heads", "L0H1", "--by", "dla", "--out", out)
    assert code == 0, err
    d = data_of(out.read_text())
    prov = data_of(out.read_text(), "provenance")
    assert prov["chosen_by"] is None and prov["scores"]["by"] == "dla" and d["heads"] == ["L0H1"]  # named, scored
    clean, bad = make_pairs(CDMConfig(), 6, seed=5, tokenizer=model.tokenizer, corruption="relevant-flip")
    assert len(d["views"]) == 2
    for view, batch in zip(d["views"], (clean, bad)):
        toks = batch.tokens[3]
        assert view["tokens"] == [model.tokenizer.decode([int(t)]) for t in toks]
        np.testing.assert_allclose(view["attention"], true_patterns(model, toks, [(0, 1)]), atol=1e-4)
    assert d["views"][0]["tokens"] != d["views"][1]["tokens"]


def _independent_scores(model, by: str, n: int, seed: int) -> np.ndarray:
    from interp.ablation import Ablator
    from interp.attribution import direct_logit_attribution
    from interp.patching import patch_sweep

    clean, bad = make_pairs(CDMConfig(), n, seed=seed, tokenizer=model.tokenizer, corruption="context-flip")
    args = (clean.tokens, clean.answer_ids, clean.wrong_ids)
    if by == "patching":  # |raw change| ranks heads as |normalised effect| does (and exists when that is undefined)
        r = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, "heads")
        return r.raw - r.corrupt_logit_diff
    if by == "dla":
        return direct_logit_attribution(model, *args)["heads"].mean(0)
    ab = Ablator(model, *args, method="mean")
    return ab.each_head()["logit_diff"] - ab.baseline["logit_diff"]


@pytest.mark.parametrize("by", ["patching", "dla", "ablation"])
def test_top_k_are_the_argmax_heads_of_the_score(capsys, tmp_path, ckpt, model, by):
    out = tmp_path / f"{by}.html"
    code, err = attention(capsys, ckpt, "--prompt", "one two three", "--top", 3, "--by", by, "--n", 8, "--seed", 1,
                          "--out", out)
    assert code == 0, err
    s = np.abs(_independent_scores(model, by, 8, 1))
    want = [f"L{i // s.shape[1]}H{i % s.shape[1]}" for i in np.argsort(-s.ravel(), kind="stable")[:3]]
    page = out.read_text()
    assert data_of(page)["heads"] == want
    assert data_of(page, "provenance")["chosen_by"] == by
    assert "task pairs of the checkpoint&#x27;s task, not from this prompt" in page


BAD = [
    ("empty prompt", ["--prompt", ""], "--prompt is empty"),
    ("blank prompt", ["--prompt", "   "], "--prompt is empty"),
    ("prompt longer than the context", ["--prompt", "left " * 40], "context of 32 tokens"),
    ("layer out of range", ["--trial", "0", "--heads", "L2H0"], "does not exist"),
    ("head out of range", ["--trial", "0", "--heads", "L0H1,L1H4"], "does not exist"),
    ("malformed head", ["--trial", "0", "--heads", "L0-2"], "not a head"),
    ("negative head", ["--trial", "0", "--heads", "L-1H0"], "not a head"),
    ("trial out of range", ["--trial", "16"], "out of range"),
    ("negative trial", ["--trial", "-1"], "out of range"),
    ("top zero", ["--trial", "0", "--top", "0"], "--top must be >= 1"),
    ("top beyond the heads", ["--trial", "0", "--top", "9"], "more than the model's 8 heads"),
    ("no pairs", ["--trial", "0", "--n", "0"], "--n must be >= 1"),
]


@pytest.mark.parametrize("name,args,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_write_nothing(capsys, tmp_path, ckpt, name, args, match):
    out = tmp_path / "sub" / "a.html"
    code, err = attention(capsys, ckpt, *args, "--out", out)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip().splitlines()[-1]] and err.startswith("error:"), err
    assert match in err, err
    assert not out.exists() and not out.parent.exists()


@pytest.mark.parametrize("args,match", [
    (["--by", "saliency", "--trial", "0"], "invalid choice"),
    (["--trial", "0", "--prompt", "x"], "not allowed with"),
    ([], "one of the arguments --trial --prompt is required"),
    (["--trial", "0", "--heads", "L0H0", "--top", "2"], "not allowed with"),
])
def test_bad_option_combinations_exit_2(capsys, tmp_path, ckpt, args, match):
    out = tmp_path / "a.html"
    with pytest.raises(SystemExit) as e:
        main(["attention", str(ckpt), *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and match in err and sum("error:" in line for line in err.splitlines()) == 1, err
    assert not out.exists()


def test_existing_output_is_refused_before_computing(capsys, tmp_path, ckpt, monkeypatch):
    import experiments.cli.analyses as ca

    monkeypatch.setattr(ca, "load", lambda *a, **k: pytest.fail("the model was loaded before the output check"))
    out = tmp_path / "a.html"
    out.write_text("keep me")
    code, err = attention(capsys, ckpt, "--trial", "0", "--out", out)
    assert code == 2 and "--overwrite" in err and out.read_text() == "keep me"
    code, err = attention(capsys, ckpt, "--trial", "0", "--out", tmp_path)
    assert code == 2 and "is a directory" in err


def test_overwrite_replaces_the_page(capsys, tmp_path, ckpt):
    out = tmp_path / "a.html"
    out.write_text("old")
    code, err = attention(capsys, ckpt, "--prompt", "left right", "--heads", "L0H0", "--out", out, "--overwrite")
    assert code == 0, err
    assert data_of(out.read_text())["heads"] == ["L0H0"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.html"]  # written atomically: no temporary file left


def test_both_pages_render_in_chromium_from_disk_without_network(capsys, tmp_path, ckpt):
    from interp.viz import chromium_available

    if not chromium_available():
        pytest.skip("no Chromium installed (install the Debian package `chromium`)")
    pw = pytest.importorskip("playwright.sync_api")
    import shutil

    pages = {"prompt": tmp_path / "p.html", "trial": tmp_path / "t.html"}
    assert attention(capsys, ckpt, "--prompt", "a <b>", "--top", 2, "--by", "patching", "--n", 4,
                     "--out", pages["prompt"])[0] == 0
    assert attention(capsys, ckpt, "--trial", 1, "--top", 2, "--n", 4, "--out", pages["trial"])[0] == 0
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        for kind, path in pages.items():
            page = b.new_page(viewport={"width": 1200, "height": 900})
            requests: list[str] = []
            errors: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(Path(path).as_uri())
            n_views = 2 if kind == "trial" else 1
            # rendering is asynchronous: wait until every expected panel has drawn (fails by timeout if not)
            try:
                page.wait_for_function(
                    "n => { const p = Array.from(document.querySelectorAll('.cv-panel'));"
                    " return p.length >= n && p.every(e => e.children.length > 0); }",
                    arg=n_views * 3, timeout=60_000)
            except pw.TimeoutError:
                pass  # the assertion below reports what was drawn
            # every panel drew something: the grids and each head's zoom, in every view
            filled = page.evaluate("Array.from(document.querySelectorAll('.cv-panel')).map(e => e.children.length)")
            assert len(filled) == n_views * 3 and all(filled), (kind, filled)
            assert errors == [], (kind, errors)
            assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), (kind, requests[:5])
        b.close()
