"""`cogcircuits run`: the whole fine-tuned vs scratch experiment, as a list of resumable named steps.

runs/<name>/
  run.json                    config, seeds, base (name and weights hash), package versions
  models/<init>-s<seed>/      checkpoints (with curve.csv/json and metrics.json)
  jobs/<id>.json|.status.json|.log   each training / analysis / circuit job: inputs, outputs, where it ran, log
  results/*.json              evaluation, analyses, comparison, circuits, contrasts, claims, jobs: the run's
                              typed record (`experiments.core.run_record`; `RunRecord.load(run)` reads it all),
                              what the report and the contrasts read (per-model analyses and circuits: summaries)
  results/per_model/<model>/  each analysis's typed result as <stem>.json + <stem>.npz (`interp.result_io`;
                              load with e.g. `Patching.from_files(...)`), with the trials it covers; index.json
                              lists them; inputs.npz holds the token ids; circuit.* the full graph and curves
  arrays/accuracy_by_condition.csv   accuracy per condition, split and model
  figures/*.html|png|svg|csv  plotly figures (sharing one plotly.min.js);  attention.html;  report.html
  stages/<step>.json          a step's completion marker: a rerun skips finished steps

Only models that meet the training criterion are analysed; the report says which did not. Every file is
written atomically. A rerun with the same config resumes; a different config needs --overwrite. No output holds
an absolute path of the machine that made it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from experiments.core.run_record import BaseRef, RunMeta, StageMark
from experiments.run.config import RunConfig, load_run_config  # noqa: F401  (re-exported for callers)
from experiments.run.context import RunContext, config_hash, portable_config
from experiments.run.extend import added_models, extension_entry
from experiments.run.steps import STEPS, model_recorded, record_models
from interp.bases import NAMED, describe
from interp.models import base_arch_and_tokenizer, hub_revision, resolve_base
from interp.store import OutputExistsError, file_sha256, prepare_out_dir, versions


class Run:
    """Runs the steps of `experiments.run.steps.STEPS` in order, skipping those already finished under this config."""

    def __init__(self, cfg: dict[str, Any], out: Path, overwrite: bool = False, progress: bool = True,
                 log: Callable[[str], None] | None = None, extend: bool = False) -> None:
        self.ctx = RunContext(cfg, out, progress, log or (lambda s: None))
        out = self.ctx.out
        h = config_hash(cfg)
        existing = out / "run.json"
        if existing.exists() and not overwrite:
            meta = RunMeta.load(existing)
            if meta.config_hash != h:
                added = _extension(meta, cfg, out, extend)
                self.hash = meta.config_hash  # what the finished steps wrote is checked before the run grows
                self.verify([name for name, _ in STEPS])
                replace(meta, config=portable_config(cfg, out), config_hash=h, extensions=(meta.extensions or ())
                        + (extension_entry(meta.config_hash, h, added),)).save(existing)
            prepare_out_dir(out, resume=True)
        else:
            base = base_provenance(cfg["model"].base)  # checks the base before anything is written
            prepare_out_dir(out, overwrite=overwrite)
            RunMeta(config=portable_config(cfg, out), config_hash=h, base=base, versions=versions(),
                    device=self.ctx.device, created=time.strftime("%Y-%m-%d %H:%M:%S")).save(existing)
        self.hash = h

    def done(self, step: str) -> bool:
        p = self.ctx.out / "stages" / f"{step}.json"
        return p.exists() and StageMark.load(p).config_hash == self.hash

    def verify(self, steps: list[str]) -> None:
        """Every record file the finished steps wrote is as the last of them left it (else RunTamperedError, one
        line, nothing written): a resumed run never builds on a results file edited or a model folder swapped."""
        recorded: dict[str, tuple[str, str]] = {}
        for step in steps:
            if self.done(step):
                mark = StageMark.load(self.ctx.out / "stages" / f"{step}.json")
                recorded.update({rel: (h, step) for rel, h in mark.outputs.items()})
        now = record_hashes(self.ctx.out)
        for rel, (h, step) in recorded.items():
            if now.get(rel) != h:
                raise RunTamperedError(f"{self.ctx.out / rel} was {'removed' if rel not in now else 'changed'} after "
                                       f"the run's {step} step wrote it: restore it, or rerun with --overwrite")

    def mark(self, step: str, seconds: float, before: dict[str, str]) -> None:
        """The step's record: config hash, seconds, and the sha256 of every record file it wrote or changed."""
        outputs = {rel: h for rel, h in record_hashes(self.ctx.out).items() if before.get(rel) != h}
        StageMark(config_hash=self.hash, seconds=seconds, outputs=outputs).save(
            self.ctx.out / "stages" / f"{step}.json")

    def run(self) -> Path:
        torch.manual_seed(0)
        self.verify([name for name, _ in STEPS])
        for name, step in STEPS:
            if self.done(name):
                self.ctx.log(f"[{name}] already done: skipped")
                continue
            self.ctx.log(f"[{name}] ...")
            t0, before = time.time(), record_hashes(self.ctx.out)
            step(self.ctx)
            self.mark(name, time.time() - t0, before)
            self.ctx.log(f"[{name}] done in {time.time() - t0:.1f} s")
        return self.ctx.out / "report.html"


    def record_models(self, ids: list[str]) -> dict[str, bool]:
        """Train and record the models `ids` only (`experiments.run.steps.record_models`), so that a study longer
        than one session can record its models one at a time and keep only their records; `run()` then gathers
        them. Returns {model: met the criterion}."""
        torch.manual_seed(0)
        self.verify([name for name, _ in STEPS])
        return record_models(self.ctx, ids)

    def recorded(self) -> list[str]:
        """The models whose per-model jobs are all done (their weights are no longer needed)."""
        return [m for m in self.ctx.model_ids() if model_recorded(self.ctx, m)]


def _extension(meta: RunMeta, cfg: dict[str, Any], out: Path, extend: bool) -> list[str]:
    """The models `cfg` adds to the run recorded in `meta`, when it only appends seeds and `extend` asks for them;
    otherwise refuse, saying why."""
    added = added_models(meta.config, portable_config(cfg, out))
    if not added:  # another config, or the same one recorded under an older hash: nothing to extend
        raise OutputExistsError(f"{out} holds a run with another config: pass --overwrite to replace it, or choose "
                                "another --out")
    if not extend:
        raise OutputExistsError(f"{out} holds a run whose config differs only by the seeds this one adds "
                                f"({', '.join(added)}): pass --extend to add them (the models recorded keep their "
                                "records), or choose another --out")
    return added


class RunTamperedError(RuntimeError):
    """A file a finished step wrote was changed or removed afterwards; the run refuses to build on it."""


RECORDS = ("results/**/*.json", "results/**/*.npz", "results/**/*.csv", "models/*/checkpoint.json")


def record_hashes(out: Path) -> dict[str, str]:
    """sha256 of the run's record files (results, and each model's checkpoint.json, which holds its weights' hash
    that loading checks): a results file edited, or a model folder swapped, after a step wrote it shows here."""
    files = {p for pattern in RECORDS for p in out.glob(pattern) if p.is_file()}
    return {p.relative_to(out).as_posix(): file_sha256(p) for p in sorted(files)}


def base_provenance(base: str) -> BaseRef:
    """The base as outputs record it: its name (a shipped base, a hub name, or a folder's name) and weights hash."""
    base_arch_and_tokenizer(base)  # a clear error now if the base cannot be read
    path = Path(resolve_base(base))
    weights = path / "model.safetensors"
    hub = base not in NAMED and not path.exists()
    return BaseRef(name=base if base in NAMED or hub else path.name,
                   weights_sha256=file_sha256(weights) if weights.exists() else None,
                   source=describe(base) if base in NAMED else None, hub_revision=hub_revision(base) if hub else None)
