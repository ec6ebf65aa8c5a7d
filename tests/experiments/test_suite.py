"""Every registered task through the whole `run` pipeline (tiny budgets: plumbing, not science), as one `suite`,
and the task commands of the CLI with their bad inputs."""

from __future__ import annotations

import html
import json
from dataclasses import replace
from pathlib import Path

import pytest

from experiments.cli.main import main
from experiments.core.run_record import Claim, ClaimsRecord, Part
from tests.helpers import records as R
from tasks.registry import TASKS

pytestmark = pytest.mark.integration  # whole `run` pipelines through `suite`

TRAIN = ("steps = 8\neval_every = 8\neval_size = 32\nbatch_size = 16\nwarmup = 2\ntarget_accuracy = 0.01\n"
         "target_incongruent = 0.01\n")
NEW_TASKS = [t for t in TASKS if t != "ContextDecisionMaking"]


def tiny(tmp: Path, base: Path, task: str, extra_run: str = "") -> Path:
    p = tmp / f"{task}.toml"
    p.write_text(f'[run]\nname = "tiny-{task}"\nseeds = [0, 1]\nscratch_seeds = [0]\nn_eval = 32\nn_compare = 32\n'
                 f'n_reliance = 32\nn_pairs = 4\nattention_heads = 1\ncircuit_random = 1\ndetailed_maps = false\n'
                 f'formats = ["html"]\n{extra_run}[model]\nbase = "{base}"\n[finetune]\n{TRAIN}[scratch]\n{TRAIN}'
                 f'[task]\nname = "{task}"\nheldout_number_range = [70, 99]\n')
    return p


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory, tiny_base):
    tmp = tmp_path_factory.mktemp("suite")
    configs = [str(tiny(tmp, tiny_base, t)) for t in NEW_TASKS]
    assert main(["suite", *configs, "--out", str(tmp / "suite"), "--quiet"]) == 0
    return tmp / "suite"


def test_every_new_task_runs_the_whole_pipeline(suite_dir):
    for task in NEW_TASKS:
        run = suite_dir / f"tiny-{task}"
        ev = json.loads((run / "results" / "evaluate.json").read_text())
        assert ev["task"]["name"] == task and ev["task"]["corruption"] == TASKS[task].default_corruption
        assert {"finetuned-s0", "finetuned-s1", "scratch-s0", "base"} == set(ev["models"])
        assert all("gen" in r for r in ev["models"].values())  # the held-out numbers were evaluated
        an = json.loads((run / "results" / "analyses.json").read_text())
        assert an["models"], task  # per-model analyses ran on the task's pairs
        claims = json.loads((run / "results" / "claims.json").read_text())
        assert [c["key"] for c in claims["claims"]] == ["A", "B", "C"]
        report = (run / "report.html").read_text()
        assert f"Fine-tuned vs scratch on {task}" in report and html.escape(TASKS[task].shortcut) in report


def test_the_suite_page_shows_each_tasks_own_verdicts(suite_dir):
    s = json.loads((suite_dir / "suite.json").read_text())
    assert [r["task"] for r in s["tasks"]] == NEW_TASKS
    page = (suite_dir / "suite.html").read_text()
    for r in s["tasks"]:
        claims = json.loads((suite_dir / r["run"] / "results" / "claims.json").read_text())
        assert r["verdicts"] == {c["key"]: c["verdict"] for c in claims["claims"]}  # copied, not recomputed
        assert f"href='{r['run']}/report.html'" in page
        assert r["models"]["finetuned"].endswith("/ 2") and r["models"]["scratch"].endswith("/ 1")
    for k in ("A", "B", "C"):  # the tally counts each verdict of the rows
        assert s["tally"][k] == {v: sum(r["verdicts"][k] == v for r in s["tasks"])
                                 for v in ("supported", "not supported", "inconclusive")}


def test_suite_refuses_two_configs_with_one_run_name(tmp_path, tiny_base, capsys):
    a = tiny(tmp_path, tiny_base, "DelayComparison")
    assert main(["suite", str(a), str(a), "--out", str(tmp_path / "s")]) == 2
    assert "must differ" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_task_list_and_show(capsys):
    assert main(["task", "list"]) == 0
    out = capsys.readouterr().out
    assert all(t in out for t in TASKS) and len(out.strip().splitlines()) >= 4
    assert main(["task", "show", "DelayMatchSample", "--n", "3"]) == 0
    out = capsys.readouterr().out
    assert "shortcut" in out and "test-change" in out and out.count("-> ' ") == 3


@pytest.mark.parametrize("body,message", [
    ('[task]\nname = "Nope"\n', "unknown task 'Nope'"),
    ('[task]\nname = "DelayComparison"\ncoherences = [5]\n', "unknown key(s) coherences"),
    ('[run]\ncorruption = "context-flip"\n[task]\nname = "DelayComparison"\n', "not a corruption of task"),
    ('[run]\ncorruption = "distractor-change"\n[task]\nname = "DelayComparison"\n', "leaves the answer unchanged"),
])
def test_bad_task_input_in_a_run_config_writes_nothing(tmp_path, capsys, body, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_analysis_with_a_corruption_of_another_task_is_refused(tmp_path, capsys):
    assert main(["patch", "cogbase-6l", "--task", "MultiSensoryIntegration", "--corruption", "context-flip",
                 "--out", str(tmp_path / "p"), "--device", "cpu"]) == 2
    assert "no corruption 'context-flip'" in capsys.readouterr().err and not (tmp_path / "p").exists()


def _fake_run(root: Path, name: str, verdicts: dict[str, str]) -> Path:
    """A finished run's results, written by hand: one fine-tuned model missed the criterion."""
    run = root / name
    (run / "results").mkdir(parents=True)
    acc = {"finetuned-s0": (0.9, 0.7), "finetuned-s1": (0.8, 0.6), "scratch-s0": (0.95, 0.5),
           "scratch-s1": (0.85, 0.4), "base": (0.5, 0.52)}
    ev = R.evaluation({m: R.model_eval(t, g, None if m == "base" else 100) for m, (t, g) in acc.items()},
                      ["finetuned-s0", "scratch-s0", "scratch-s1"])
    ev = replace(ev, task=replace(ev.task, name=name.upper(), corruption="swap"))
    parts = {"A": ["in favour", "in favour"], "B": ["against", "inconclusive"], "C": ["undefined"]}
    cl = ClaimsRecord(rule="the rule", claims=tuple(
        Claim(key=k, statement=f"claim {k}", verdict=verdicts[k], figures=(), null="", caveats=(),
              parts=tuple(Part(contrast="", says="", expected="", outcome=o, detail="") for o in parts[k]))
        for k in "ABC"))
    ev.save(run / "results" / "evaluate.json")
    cl.save(run / "results" / "claims.json")
    return run


def test_suite_rows_tally_and_page_from_hand_written_runs(tmp_path):
    """Catches averaging models that missed the criterion, miscounting who met it, verdicts read from the wrong
    claim, a tally that counts the wrong verdict, and a page that does not show what the rows hold."""
    from experiments.run.suite import render, summarise, tally

    rows = [summarise(_fake_run(tmp_path, "one", {"A": "supported", "B": "not supported", "C": "inconclusive"})),
            summarise(_fake_run(tmp_path, "two", {"A": "supported", "B": "inconclusive", "C": "inconclusive"}))]
    r = rows[0]
    assert r.task == "ONE" and r.run == "one" and r.corruption == "swap"
    assert r.models == {"finetuned": "1 / 2", "scratch": "2 / 2"}
    assert r.test_accuracy == pytest.approx({"finetuned": 0.9, "scratch": 0.9, "base": 0.5})
    assert r.gen_accuracy == pytest.approx({"finetuned": 0.7, "scratch": 0.45, "base": 0.52})
    assert r.verdicts == {"A": "supported", "B": "not supported", "C": "inconclusive"}
    assert r.parts == {"A": "2 in favour", "B": "1 against, 1 inconclusive", "C": "1 undefined"}
    t = tally(rows)
    assert t["A"] == {"supported": 2, "not supported": 0, "inconclusive": 0}
    assert t["B"] == {"supported": 0, "not supported": 1, "inconclusive": 1}
    assert t["C"] == {"supported": 0, "not supported": 0, "inconclusive": 2}
    page = render(rows)
    assert "<td>1 / 2</td><td>2 / 2</td><td>0.900 / 0.900 / 0.500</td><td>0.700 / 0.450 / 0.520</td>" in page
    assert "Claim B: supported on 0 of 2 tasks, not supported on 1 of 2 tasks, inconclusive on 1 of 2 tasks" in page
    assert "href='one/report.html'" in page and "href='two/report.html'" in page
