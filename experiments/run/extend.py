"""Adding seeds to a recorded run: a run folder accepts a config that differs from the one it was recorded under only
by seeds appended to `run.seeds` / `run.scratch_seeds`, when asked to (`cogcircuits run --extend`).

Every per-model job's inputs (task, training section, analysis parameters) are the same for the models already
recorded, so their records stand; the run-level steps (evaluation gathered over all models, contrasts, report) are
marked under the config's hash and run again. run.json keeps the history: each extension's old and new hash and the
models it added."""

from __future__ import annotations

import json
import time
from typing import Any

from experiments.core.config import hashed_form
from experiments.core.run_record import Extension
from interp.model_id import model_ids

SEED_LISTS = ("seeds", "scratch_seeds")


def _seed_lists(cfg: dict[str, Any]) -> tuple[list[int], list[int]]:
    run = cfg["run"]
    seeds = list(run.get("seeds") or [])
    scratch = run.get("scratch_seeds")
    return seeds, list(seeds if scratch is None else scratch)


def _without_seeds(cfg: dict[str, Any]) -> str:
    d = {k: v for k, v in hashed_form(json.loads(json.dumps(cfg))).items() if k != "executor"}
    d["run"] = {k: v for k, v in d["run"].items() if k not in SEED_LISTS}
    return json.dumps(d, sort_keys=True)


def added_models(old: dict[str, Any], new: dict[str, Any]) -> list[str] | None:
    """The models `new` adds to `old` (both portable config dicts, as run.json records them) when its only change is
    seeds appended to the seed lists; None when anything else differs or a recorded seed is dropped or moved."""
    if _without_seeds(old) != _without_seeds(new):
        return None
    (fo, so), (fn, sn) = _seed_lists(old), _seed_lists(new)
    if fn[:len(fo)] != fo or sn[:len(so)] != so:
        return None
    before = {str(m) for m in model_ids(fo, so)}
    return [str(m) for m in model_ids(fn, sn) if str(m) not in before]


def extension_entry(old_hash: str, new_hash: str, added: list[str]) -> Extension:
    """What run.json records of one extension."""
    return Extension(from_config_hash=old_hash, to_config_hash=new_hash, added=tuple(added),
                     at=time.strftime("%Y-%m-%d %H:%M:%S"))
