"""Exact patching speed: cogcircuits vs TransformerLens's own patching functions, same inputs, same numbers.

A 4-layer GPT-2 (d_model 256, 8 heads) is trained from scratch on the default task (or pass --checkpoint), then
64 context-flip pairs are patched: head outputs over all positions, and head x position. Both implementations
run in the same process; their results are compared (max abs difference). Attribution patching (AtP and IG) is
timed too, with its rank correlation to exact head x position patching.

    python benches/patching_speed.py [--pairs 64] [--threads 2] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(f):  # noqa: ANN001, ANN201
    t0 = time.perf_counter()
    r = f()
    return r, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint")
    ap.add_argument("--corruption", default="context-flip")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformer_lens import patching as tlp

    from experiments.train import load_config, train
    from interp.atp import agreement, attribution_patch
    from interp.models import Arch, build_hf_gpt2, load_model, load_tokenizer, save_hf_dir
    from interp.patching import patch_sweep
    from tasks.cdm import CDMConfig, make_pairs

    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as d:
        ck = a.checkpoint
        if ck is None:
            tok = load_tokenizer(repo / "checkpoints" / "cogbase-6l")
            save_hf_dir(build_hf_gpt2(Arch(4, 256, 8, 1024, len(tok), 64), tok, 0), tok, Path(d) / "base")
            cfg = load_config(None, {"model": {"init": "scratch", "base": str(Path(d) / "base")},
                                     "train": {"steps": 300, "eval_every": 100, "target_accuracy": 0.97,
                                                               "target_incongruent": 0.9}})
            m = train(cfg, Path(d) / "ck", progress=False)
            ck = str(Path(d) / "ck")
            print(f"trained a 4-layer checkpoint: test accuracy {m['test_accuracy']:.3f} in {m['steps']} steps")
        model, tok, _ = load_model(ck)
    clean, bad = make_pairs(CDMConfig(), a.pairs, seed=0, tokenizer=tok, corruption=a.corruption)
    ct, bt = torch.tensor(clean.tokens), torch.tensor(bad.tokens)
    ans, wr = torch.tensor(clean.answer_ids), torch.tensor(clean.wrong_ids)

    def metric(logits):  # noqa: ANN001, ANN202
        last = logits[:, -1]
        return (last.gather(1, ans[:, None]) - last.gather(1, wr[:, None])).mean()

    print(f"{a.pairs} {a.corruption} pairs, {clean.tokens.shape[1]} positions, threads {a.threads}")
    rows = []
    for what, tl_fn in (("heads", tlp.get_act_patch_attn_head_out_all_pos),
                        ("heads_by_pos", tlp.get_act_patch_attn_head_out_by_pos)):
        with torch.no_grad():
            _, cache = model.run_with_cache(ct)
            ref, t_tl = timed(lambda: tl_fn(model, bt, cache, metric).numpy())
        res, t_ours = timed(lambda: patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, what))
        diff = float(np.abs(res.raw - ref).max())
        rows.append((what, t_tl, t_ours, diff))
        print(f"{what:>13}: TransformerLens {t_tl:7.2f} s | cogcircuits {t_ours:6.2f} s | speed-up "
              f"{t_tl / t_ours:5.1f}x | max |difference| {diff:.2e}")
    exact = patch_sweep(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids, "heads_by_pos")
    for method in ("atp", "ig"):
        est, t = timed(lambda: attribution_patch(model, clean.tokens, bad.tokens, clean.answer_ids, clean.wrong_ids,
                                                 nodes="heads", method=method, steps=8))
        ag = agreement(est["values"], exact.values, exact.first_diff, pos_axis=1)
        print(f"attribution patching ({method}{', 8 steps' if method == 'ig' else ''}): {t:.2f} s; against exact head "
              f"x position patching over the {ag['n_compared']} entries that can differ: Spearman "
              f"{ag['spearman']:.3f}, top-{ag['k']} recall {ag['top_k_recall']:.2f}")


if __name__ == "__main__":
    main()
