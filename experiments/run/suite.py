"""`cogcircuits suite`: the fine-tuned vs scratch experiment on several tasks, and one page comparing them.

Each config is an ordinary `run` config (its [task] names the task); its run lives in `<out>/<run name>/` and
resumes like any run. The suite page puts each task's verdicts side by side. It pools nothing across tasks: every
verdict is the one its own run derived by its own printed rule, and the cross-task line only counts them.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.core.run_record import OUTCOMES, ClaimsRecord, RunEvaluation
from experiments.run.pipeline import Run, load_run_config
from interp.model_id import group_of
from interp.store import atomic_write_json, atomic_write_text, versions

CLAIMS = ("A", "B", "C")
VERDICTS = ("supported", "not supported", "inconclusive")


@dataclass(frozen=True)
class TaskRow:
    """One task's run, as the suite page shows it (accuracies are means over the models that met the criterion;
    None when no model of that init did)."""

    task: str
    run: str  # folder, relative to the suite folder
    corruption: str
    models: dict[str, str]  # init -> "met / trained"
    test_accuracy: dict[str, float | None]  # finetuned, scratch, base
    gen_accuracy: dict[str, float | None]
    verdicts: dict[str, str]  # claim -> verdict
    parts: dict[str, str]  # claim -> "2 in favour, 1 inconclusive"
    statements: dict[str, str]
    rule: str


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarise(run_dir: Path) -> TaskRow:
    """The suite's row of one finished run (a folder of the suite), read from its stored results."""
    ev = RunEvaluation.load(run_dir / "results" / "evaluate.json")
    cl = ClaimsRecord.load(run_dir / "results" / "claims.json")
    ids = [m for m in ev.models if m != "base"]
    models, test, gen = {}, {}, {}
    for init in ("finetuned", "scratch"):
        mine = [m for m in ids if group_of(m) == init]
        ok = [ev.models[m] for m in mine if m in ev.eligible]
        models[init] = f"{len(ok)} / {len(mine)}"
        test[init] = _mean([r.test.accuracy for r in ok])
        gen[init] = _mean([r.gen.accuracy for r in ok if r.gen is not None])
    base = ev.models["base"]
    test["base"] = base.test.accuracy
    gen["base"] = base.gen.accuracy if base.gen is not None else None
    return TaskRow(
        task=ev.task.name, run=run_dir.name, corruption=ev.task.corruption, models=models, test_accuracy=test,
        gen_accuracy=gen, verdicts={c.key: c.verdict for c in cl.claims},
        parts={c.key: c.tally(OUTCOMES) for c in cl.claims}, statements={c.key: c.statement for c in cl.claims},
        rule=cl.rule)


def plan(configs: list[str | Path], overrides: dict[str, dict[str, Any]] | None = None
         ) -> list[tuple[Path, dict[str, Any]]]:
    """Every config loaded and checked before anything runs; run names (their folders) must differ."""
    if not configs:
        raise ValueError("suite needs at least one run config")
    loaded = [(Path(c), load_run_config(c, overrides)) for c in configs]
    names = [cfg["run"].name for _, cfg in loaded]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"run names must differ within a suite (each is a folder): {', '.join(dup)} repeats")
    return loaded


def run_suite(configs: list[str | Path], out: Path, overwrite: bool = False, progress: bool = True,
              log: Callable[[str], None] | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Path:
    """Run (or resume) every config into `out/<run name>`, then write `out/suite.json` and `out/suite.html`."""
    log = log or (lambda s: None)
    out = Path(out)
    rows = []
    for path, cfg in plan(configs, overrides):
        name = cfg["run"].name
        log(f"== {name} ({path.name}) ==")
        Run(cfg, out / name, overwrite=overwrite, progress=progress, log=log).run()
        rows.append(summarise(out / name))
    return write_suite(out, rows)


def tally(rows: list[TaskRow]) -> dict[str, dict[str, int]]:
    """Per claim, how many tasks gave each verdict."""
    return {k: {v: sum(r.verdicts.get(k) == v for r in rows) for v in VERDICTS} for k in CLAIMS}


def write_suite(out: Path, rows: list[TaskRow]) -> Path:
    atomic_write_json(out / "suite.json", {"tasks": [asdict(r) for r in rows], "tally": tally(rows),
                                           "versions": versions()})
    page = out / "suite.html"
    atomic_write_text(page, render(rows))
    return page


def _acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def render(rows: list[TaskRow]) -> str:
    esc = html.escape
    head = "".join(f"<th>claim {k}</th>" for k in CLAIMS)
    body = []
    for r in rows:
        cells = "".join(f"<td><span class='v {esc(r.verdicts.get(k, '-').replace(' ', '-'))}'>"
                        f"{esc(r.verdicts.get(k, '-'))}</span><br><small>{esc(r.parts.get(k, ''))}</small></td>"
                        for k in CLAIMS)
        acc = " / ".join(_acc(r.test_accuracy[i]) for i in ("finetuned", "scratch", "base"))
        gen = " / ".join(_acc(r.gen_accuracy[i]) for i in ("finetuned", "scratch", "base"))
        body.append(f"<tr><td><a href='{esc(r.run)}/report.html'>{esc(r.task)}</a><br><small>corruption "
                    f"{esc(r.corruption)}</small></td><td>{esc(r.models['finetuned'])}</td>"
                    f"<td>{esc(r.models['scratch'])}</td><td>{acc}</td><td>{gen}</td>{cells}</tr>")
    counts = tally(rows)
    lines = "".join(f"<li>Claim {k}: " + ", ".join(f"{v} on {n} of {len(rows)} tasks" for v, n in counts[k].items())
                    + "</li>" for k in CLAIMS)
    statements = rows[0].statements if rows else {}
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>cogcircuits suite</title><style>"
            "body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}.v{font-weight:bold}"
            ".supported{color:#176d2c}.not-supported{color:#a11}.inconclusive{color:#8a6d00}</style></head><body>"
            "<h1>Fine-tuned vs scratch across tasks</h1>"
            "<p>Each row is one task's own run; its verdicts are derived there by the rule below, from models that "
            "met the training criterion only. Accuracies: mean test (and held-out-number) accuracy of those models, "
            "fine-tuned / scratch / base; chance is 0.5.</p>"
            "<ul>" + "".join(f"<li>Claim {esc(k)}: {esc(s)}</li>" for k, s in statements.items()) + "</ul>"
            f"<table><thead><tr><th>task</th><th>fine-tuned met criterion</th><th>scratch met criterion</th>"
            f"<th>test accuracy</th><th>held-out accuracy</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<h2>Across tasks (counts only, nothing pooled)</h2><ul>{lines}</ul>"
            f"<p><b>Rule.</b> {esc(rows[0].rule if rows else '')}</p></body></html>")
