"""`cogcircuits controls`: train the controls (resumable: each finished model is kept), score every reuse metric on
them and write the validation.

out/
  config.json                the config (portable), its hash: a rerun with another config is refused
  bases/planted-s<seed>/ bases/shuffled-s<seed>/   each seed's planted base and its shuffled copy (checkpoints)
  models/<arm>-s<seed>/      the arms' models (checkpoints)
  results/controls.json      the record (`experiments.controls.records.ControlsRecord`)
  validation.md|.csv         the table: metric x negative control, values, null, separated, p, validated
  metric-validation.json     the run contrasts' metrics, validated or not (what `cogcircuits run`'s verdicts read
                             from experiments/configs/metric-validation.json, a copy of a committed controls run's)
  figures/metrics.html|png   every metric per model, by arm
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from experiments.controls.arms import ArmModel, ControlsError, base_of, train_all
from experiments.controls.metrics import METRICS, SEEDS, planted_heads, references, score
from experiments.controls.records import ControlsRecord, ScoredModel
from experiments.controls.validate import RULE, check, figure, table_markdown, table_rows
from experiments.core.run_record import Validation
from experiments.run.context import portable_config
from interp.models import load_model, read_checkpoint_meta
from interp.store import OutputExistsError, atomic_write_csv, atomic_write_json, atomic_write_text, versions
from interp.viz import export_figure


def _claim_folder(cfg: dict[str, Any], out: Path, overwrite: bool) -> None:
    """out/config.json names the config the folder holds; another one is refused unless `overwrite` (which
    empties the folder)."""
    d = portable_config(cfg, out)
    h = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    p = out / "config.json"
    if not p.exists() and out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} is not empty and holds no controls: choose another --out (or pass "
                                "--overwrite to empty it)")
    if p.exists() and json.loads(p.read_text())["config_hash"] != h:
        if not overwrite:
            raise OutputExistsError(f"{out} holds controls made with another config: pass --overwrite to replace "
                                    "them, or choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, {"config": d, "config_hash": h})


def run_controls(cfg: dict[str, Any], out: Path, overwrite: bool = False, progress: bool = True,
                 log: Callable[[str], None] = lambda s: None) -> ControlsRecord:
    """Train what is not trained yet, score every model that met its criterion, validate each metric, write the
    outputs; returns the record."""
    out = Path(out)
    _claim_folder(cfg, out, overwrite)
    t0 = time.time()
    base_metrics, arms = train_all(cfg, out, progress, log)
    t_train = time.time() - t0
    torch.manual_seed(0)
    heads, scored, n_nodes = _score_all(cfg, out, arms, log)
    c = cfg["controls"]
    rec = ControlsRecord(config=portable_config(cfg, out),
                         planted_bases={f"planted-s{s}": m for s, m in base_metrics.items()},
                         planted_heads={f"planted-s{s}": tuple(h) for s, h in heads.items()},
                         chance_share=max(1, round(c.overlap_fraction * n_nodes)) / n_nodes, models=tuple(scored),
                         checks=tuple(check(scored, k) for k in METRICS), rule=RULE, versions=versions(),
                         seconds={"train": round(t_train, 1), "score": round(time.time() - t0 - t_train, 1)})
    write_outputs(rec, out)
    return rec


def _score_all(cfg: dict[str, Any], out: Path, arms: list[ArmModel], log: Callable[[str], None]
               ) -> tuple[dict[int, list[tuple[int, int]]], list[ScoredModel], int]:
    """Each planted base's component, then every model against its reference base (each base loaded once and its
    circuits ranked once). Returns the components by seed, the scored models in the arms' order, the node count."""
    c = cfg["controls"]
    heads = {seed: planted_heads(load_model(out / "bases" / f"planted-s{seed}", c.device)[0], cfg["skill"],
                                 c.n_ablate, c.planted_heads, SEEDS["ablate"]) for seed in c.seeds}
    scored: dict[tuple[str, int], ScoredModel] = {}
    n_nodes = 0
    for name in sorted({base_of(m.arm, m.seed) for m in arms}):
        base = load_model(out / "bases" / name, c.device)[0]
        refs = references(base, cfg)
        n_nodes = len(refs.ranking_task)
        for m in (m for m in arms if base_of(m.arm, m.seed) == name):
            entry = ScoredModel(arm=m.arm, seed=m.seed, reference=name, steps=m.steps, met_criterion=m.met,
                                test_accuracy=m.test_accuracy, weights_sha256=read_checkpoint_meta(m.path)[
                                    "weights_sha256"])
            if m.met:
                log(f"scoring {m.arm}-s{m.seed} against {name}")
                metrics, profiles, ab = score(load_model(m.path, c.device)[0], base, refs, heads[m.seed], cfg)
                entry = replace(entry, metrics=metrics, profiles=profiles, ablation=ab)
            scored[(m.arm, m.seed)] = entry
    return heads, [scored[(m.arm, m.seed)] for m in arms], n_nodes


def validation_of(rec: ControlsRecord, out: Path) -> Validation:
    """What the run's verdicts read: for each run contrast a checked metric stands for, whether it was validated."""
    base = rec.config["model"]["base"]
    return Validation(source=f"cogcircuits controls (config '{rec.config['controls']['name']}'; its record: "
                      f"{out.name}/results/controls.json)", architecture=f"the architecture of {Path(base).name}",
                      validated={c.validates: c.validated for c in rec.checks if c.validates})


def write_outputs(rec: ControlsRecord, out: Path, formats: tuple[str, ...] = ("html", "png")) -> None:
    rec.save(out / "results" / "controls.json")
    validation_of(rec, out).save(out / "metric-validation.json")
    rows = table_rows(list(rec.checks))
    atomic_write_csv(out / "validation.csv", rows)
    atomic_write_text(out / "validation.md", "# Reuse metrics on the planted-reuse controls\n\n" + RULE + "\n\n"
                      + table_markdown(rows))
    (out / "figures").mkdir(exist_ok=True)
    try:
        fig = figure(list(rec.models), rec.chance_share, list(rec.checks))
        export_figure(fig, out / "figures" / "metrics", formats)
    except RuntimeError as e:  # PNG without a Chromium: the HTML is written, the record stands
        raise ControlsError(str(e)) from None
