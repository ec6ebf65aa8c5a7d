"""Tokenised cognitive tasks for language models: each task is one module (a frozen config, trial generation,
clean / corrupted pairs, its corruptions), registered in `tasks.registry`. Imports nothing of the project.

    from tasks import CDMConfig, generate, make_pairs
    batch = generate(CDMConfig(), 64, seed=0, tokenizer=tok, split="test")   # a TrialBatch
"""

from tasks.base import Corruption, Task, TaskError, TokenTask, TrialBatch
from tasks.cdm import CDMConfig
from tasks.delay_comparison import DelayComparisonConfig
from tasks.delay_match import DelayMatchConfig
from tasks.multisensory import MultiSensoryConfig
from tasks.registry import (DEFAULT_TASK, TASKS, bayes_optimal_accuracy, corruptions, generate, get_task, make_pairs,
                            seq_len, task_of)

__all__ = ["Task", "TaskError", "TokenTask", "TrialBatch", "Corruption", "TASKS", "DEFAULT_TASK", "get_task", "task_of",
           "generate", "make_pairs", "seq_len", "bayes_optimal_accuracy", "corruptions", "CDMConfig",
           "DelayComparisonConfig", "DelayMatchConfig", "MultiSensoryConfig"]
