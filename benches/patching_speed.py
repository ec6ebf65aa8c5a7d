"""Exact patching speed: cogcircuits vs TransformerLens's own patching functions, same inputs, same numbers.

The default model (the shipped base cogbase-6l fine-tuned with experiments/configs/default.toml's task and
[finetune] section, seed 0; trained once into ~/.cache/cogcircuits/bench/, or pass --checkpoint) is patched on 32
pairs of the run's corruption (context-flip): head outputs over all positions, head outputs x position, and
resid_pre, attn_out and mlp_out by position. Both implementations run in one process on the same pairs; each sweep
prints the time of both (TransformerLens's includes the clean run's `run_with_cache` its functions need, as
cogcircuits's includes its own two runs; each side is warmed up once on 2 pairs), their ratio and the largest
difference of the raw mean logit differences. `--smollm2` adds the heads sweep on SmolLM2-135M (30 layers,
grouped-query attention; 8 pairs), with TransformerLens's own function on the same model as reference (it takes
about 2.5 minutes there).

    python benches/patching_speed.py [--smollm2] [--pairs 32] [--threads 2] [--checkpoint DIR] [--repeat 1]
    python benches/patching_speed.py --check        # no-regression mode: run before stopping
    python benches/patching_speed.py --profile heads_by_pos,heads   # where cogcircuits's time goes
    python benches/patching_speed.py --stacking heads,resid_pre      # time per number of variants per forward

--check measures every ratio recorded in benches/RESULTS.md (the table of the "Exact patching" section, SmolLM2
included when it is recorded there), measures a ratio that falls more than 15% (--tolerance) below its record once
more (the machine is shared), and exits 1 if one is still below: a bench, not a timed test of the suite.
--profile prints PyTorch's profiler table of cogcircuits's sweep (notes of the last profile: benches/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benches" / "RESULTS.md"
SECTION = "## Exact patching vs TransformerLens"
# sweep -> TransformerLens's function of the same variant
SWEEPS = {"heads": "get_act_patch_attn_head_out_all_pos", "heads_by_pos": "get_act_patch_attn_head_out_by_pos",
          "resid_pre": "get_act_patch_resid_pre", "attn_out": "get_act_patch_attn_out",
          "mlp_out": "get_act_patch_mlp_out"}
GOALS = {"default heads": 5.0, "default heads_by_pos": 10.0, "default resid_pre": 5.0, "smollm2 heads": 3.0}


def best_of(f, repeat: int):  # noqa: ANN001, ANN201
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t0)
    return out, best


def default_model(cache: Path) -> Path:
    """The default fine-tuned model (default.toml's task and [finetune], seed 0), trained once into `cache`."""
    from experiments.run.config import load_run_config
    from experiments.training.train import train

    ck = cache / "default-finetuned-s0"
    if not (ck / "checkpoint.json").exists():
        rc = load_run_config(None, {"run": {"device": "cpu"}})
        cfg = {"task": rc["task"], "model": rc["model"], "train": rc["finetune"]}
        t0 = time.perf_counter()
        m = train(cfg, ck, overwrite=True, progress=False)
        print(f"trained the default model into {ck}: test accuracy {m['test_accuracy']:.3f} in {m['steps']} steps "
              f"({time.perf_counter() - t0:.0f} s)")
    return ck


def pairs_of(model_dir: str | Path, n: int):  # noqa: ANN201
    """The model and n clean / corrupted pairs of the default run's task and corruption (seed 0, test split)."""
    from experiments.run.config import load_run_config
    from interp.models import load_model
    from tasks.registry import make_pairs

    rc = load_run_config(None)
    model, tok, _ = load_model(model_dir)
    clean, bad = make_pairs(rc["task"], n, seed=0, tokenizer=tok, corruption=rc["run"].corruption)
    return model, clean, bad, rc["run"].corruption


class Side:
    """One model and its pairs, both implementations ready to time."""

    def __init__(self, label: str, model, clean, bad) -> None:  # noqa: ANN001
        from transformer_lens import patching as tlp

        tlp.tqdm = lambda it, *a, **k: it  # TransformerLens's functions draw progress bars: not timed
        self.label, self.model, self.clean, self.bad, self.tlp = label, model, clean, bad, tlp
        self.ct, self.bt = torch.tensor(clean.tokens), torch.tensor(bad.tokens)
        self.ans, self.wr = torch.tensor(clean.answer_ids), torch.tensor(clean.wrong_ids)
        self.warm_up()

    def warm_up(self) -> None:
        """One cached run of 2 pairs on each side (one-time costs: first calls into the libraries, the weights
        cogcircuits reads into its layout once per model), so that both are timed in their steady state."""
        from interp.patching import CachedRun, index_setter

        with torch.no_grad():
            self.model.run_with_cache(self.ct[:2])
        r = CachedRun(self.model, self.bt[:2], self.ct[:2], self.ans[:2], self.wr[:2])
        r.run(0, r.first_diff, [index_setter("z", r.act(r.s, "z", 0), head=0)], kind="z")

    def metric(self, logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1]
        return (last.gather(1, self.ans[:, None]) - last.gather(1, self.wr[:, None])).mean()

    def tl(self, what: str) -> np.ndarray:
        with torch.no_grad():
            _, cache = self.model.run_with_cache(self.ct)
        return getattr(self.tlp, SWEEPS[what])(self.model, self.bt, cache, self.metric).numpy()

    def ours(self, what: str):  # noqa: ANN201
        from interp.patching import patch_sweep

        c = self.clean
        return patch_sweep(self.model, c.tokens, self.bad.tokens, c.answer_ids, c.wrong_ids, what)

    def compare(self, what: str, repeat: int) -> tuple[float, float, float, float]:
        ref, t_tl = best_of(lambda: self.tl(what), repeat)
        res, t_ours = best_of(lambda: self.ours(what), repeat)
        diff = float(np.abs(res.raw - ref).max())
        key = f"{self.label} {what}"
        goal = f" (goal >= {GOALS[key]:.0f}x)" if key in GOALS else ""
        print(f"{key:>22}: TransformerLens {t_tl:7.2f} s | cogcircuits {t_ours:6.2f} s | ratio "
              f"{t_tl / t_ours:5.1f}x{goal} | max |difference| {diff:.1e}", flush=True)
        return t_tl, t_ours, t_tl / t_ours, diff


def recorded() -> dict[str, float]:
    """Ratios of the table in RESULTS.md's patching section: rows `| `<model> <sweep>` | ... | <ratio>x | ...`."""
    text = RESULTS.read_text()
    if SECTION not in text:
        return {}
    body = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^\| `([^`]+)` \|[^|]*\|[^|]*\| *([0-9.]+)x *\|", body, re.M)}


def profile(side: Side, sweeps: list[str]) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for what in sweeps:
        side.ours(what)  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            _, t = best_of(lambda: side.ours(what), 1)
        print(f"profile of patch_sweep({what!r}) on the {side.label} model: {t:.2f} s")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def stacking(side: Side, sweeps: list[str]) -> None:
    """cogcircuits's time per sweep with 1, 2, 4, 8, 16 variants per forward (resid_pre / attn_out / mlp_out: 1, 2,
    3, 5, 10 consecutive positions replayed from the first of them), each the best of 2 runs; the defaults of
    `interp.patching.default_variants_per_forward` come from this."""
    from interp.patching import patch_sweep

    c = side.clean
    for what in sweeps:
        sizes = (1, 2, 3, 5, 10) if what in ("resid_pre", "attn_out", "mlp_out") else (1, 2, 4, 8, 16)
        times = {k: best_of(lambda: patch_sweep(side.model, c.tokens, side.bad.tokens, c.answer_ids,  # noqa: B023
                                                c.wrong_ids, what, variants_per_forward=k), 2)[1] for k in sizes}
        print(f"{what:>12}, variants per forward: " + ", ".join(f"{k}: {t:.2f} s" for k, t in times.items()),
              flush=True)


def attribution(side: Side) -> None:
    """Attribution patching (AtP, IG with 8 steps) timed, with its agreement with exact head x position patching."""
    from interp.atp import agreement, attribution_patch

    c, exact = side.clean, side.ours("heads_by_pos")
    for method in ("atp", "ig"):
        est, t = best_of(lambda: attribution_patch(side.model, c.tokens, side.bad.tokens, c.answer_ids,  # noqa: B023
                                                   c.wrong_ids, nodes="heads", method=method, steps=8), 1)
        ag = agreement(est["values"], exact.values, exact.first_diff, pos_axis=1)
        print(f"attribution patching ({method}{', 8 steps' if method == 'ig' else ''}): {t:.2f} s; against exact head "
              f"x position patching over the {ag['n_compared']} entries that can differ: Spearman "
              f"{ag['spearman']:.3f}, top-{ag['k']} recall {ag['top_k_recall']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", help="the model to patch (default: the default fine-tuned model, trained once)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "cogcircuits" / "bench"))
    ap.add_argument("--sweeps", default=",".join(SWEEPS), help="comma-separated, of " + ", ".join(SWEEPS))
    ap.add_argument("--smollm2", action="store_true", help="also the heads sweep on SmolLM2-135M")
    ap.add_argument("--smollm2-pairs", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1, help="time each side this many times, keep the best")
    ap.add_argument("--check", action="store_true",
                    help="no-regression mode: fail when a ratio is more than --tolerance below RESULTS.md's")
    ap.add_argument("--tolerance", type=float, default=0.15)
    ap.add_argument("--profile", metavar="SWEEPS", help="profile cogcircuits's sweeps (comma-separated), no timing")
    ap.add_argument("--attribution", action="store_true", help="also time attribution patching (AtP, IG)")
    ap.add_argument("--stacking", metavar="SWEEPS", help="time cogcircuits's sweeps per number of variants stacked "
                                                         "in one forward (comma-separated), no comparison")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    want = recorded() if a.check else {}
    if a.check and not want:
        sys.exit(f"no ratios recorded in {RESULTS} ({SECTION!r}): nothing to check against")
    sweeps = [s for s in a.sweeps.split(",") if s]
    if a.check:
        sweeps = [s for s in SWEEPS if f"default {s}" in want]
    smollm2 = a.smollm2 or any(k.startswith("smollm2 ") for k in want)
    ck = a.checkpoint or default_model(Path(a.cache))
    model, clean, bad, corruption = pairs_of(ck, a.pairs)
    print(f"torch {torch.__version__}, transformer-lens {version('transformer-lens')}, threads {a.threads}; model "
          f"{Path(ck).name} ({model.cfg.n_layers} layers, {model.cfg.n_heads} heads); {a.pairs} {corruption} pairs, "
          f"{clean.tokens.shape[1]} positions")
    sides = {"default": Side("default", model, clean, bad)}
    if a.profile or a.stacking:
        if a.profile:
            profile(sides["default"], a.profile.split(","))
        if a.stacking:
            stacking(sides["default"], a.stacking.split(","))
        return
    ratios = {f"default {what}": sides["default"].compare(what, a.repeat)[2] for what in sweeps}
    if a.attribution:
        attribution(sides["default"])
    if smollm2:
        sm, sclean, sbad, _ = pairs_of("smollm2-135m", a.smollm2_pairs)
        print(f"SmolLM2-135M ({sm.cfg.n_layers} layers, {sm.cfg.n_heads} query / {sm.cfg.n_key_value_heads} key-value "
              f"heads): {a.smollm2_pairs} pairs, {sclean.tokens.shape[1]} positions")
        sides["smollm2"] = Side("smollm2", sm, sclean, sbad)
        ratios["smollm2 heads"] = sides["smollm2"].compare("heads", a.repeat)[2]
    if not a.check:
        return
    failed = []
    for k, r in ratios.items():
        floor = (1 - a.tolerance) * want[k]
        if r < floor:  # measured once more before it counts
            print(f"{k}: {r:.1f}x is below {floor:.1f}x; measuring it again")
            label, what = k.split(" ", 1)
            r = max(r, sides[label].compare(what, 1)[2])
        ok = r >= floor
        print(f"check {k:>22}: {r:5.1f}x against {want[k]:.1f}x recorded (floor {floor:.1f}x): "
              f"{'ok' if ok else 'REGRESSION'}")
        if not ok:
            failed.append(k)
    if failed:
        print(f"FAILED: {', '.join(failed)} more than {a.tolerance:.0%} below the figure in {RESULTS.name}")
        sys.exit(1)
    print("no regression")


if __name__ == "__main__":
    main()
