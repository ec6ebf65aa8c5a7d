"""The registered tasks, by name, and the calls that dispatch on a task config.

Adding a task: write its module (a frozen config dataclass with a fixed `name` field, `generate`, `make_pairs`,
its symbols and corruptions, and a `TASK = Task(...)` record; see `tasks.base`), add it to `_MODULES` below, and
give it a config in `experiments/configs/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tasks.cdm as cdm
import tasks.delay_comparison as delay_comparison
import tasks.delay_match as delay_match
import tasks.multisensory as multisensory
from tasks.base import Task, TaskError, TrialBatch

_MODULES = (cdm, delay_comparison, multisensory, delay_match)
TASKS: dict[str, Task] = {m.TASK.name: m.TASK for m in _MODULES}
DEFAULT_TASK = cdm.NAME


def get_task(name: str) -> Task:
    """The task registered under `name`, or one error listing the registered names."""
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r} (registered: {', '.join(TASKS)})")
    return TASKS[name]


def task_of(config: Any) -> Task:
    """The task a config belongs to (every task config has a fixed `name` field)."""
    return get_task(getattr(config, "name", DEFAULT_TASK))


def config_class(raw: Mapping[str, Any] | None) -> type:
    """The config class for a raw [task] table (no `name` = the default task, as in configs written before
    there were several tasks)."""
    name = (raw or {}).get("name", DEFAULT_TASK)
    if not isinstance(name, str):
        raise TaskError(f"task name must be a string, got {name!r}")
    return get_task(name).config


def generate(config: Any, n: int, seed: int, tokenizer: Any, split: str = "train", balanced: bool = False
             ) -> TrialBatch:
    return task_of(config).generate(config, n, seed, tokenizer, split, balanced)


def make_pairs(config: Any, n: int, seed: int, tokenizer: Any, corruption: str,
               split: str = "test", balanced: bool = False) -> tuple[TrialBatch, TrialBatch]:
    return task_of(config).make_pairs(config, n, seed, tokenizer, corruption, split, balanced)


def seq_len(config: Any, tokenizer: Any) -> int:
    """Tokens per trial of this config under this tokenizer (checks alignment and single-token answers)."""
    return int(generate(config, 1, 0, tokenizer, "test").tokens.shape[1])


def bayes_optimal_accuracy(config: Any) -> float:
    return float(task_of(config).bayes_optimal_accuracy(config))


def corruptions(config: Any) -> dict[str, Any]:
    return dict(task_of(config).corruptions)
