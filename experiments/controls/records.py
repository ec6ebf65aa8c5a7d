"""The typed record `cogcircuits controls` writes (results/controls.json)."""

from __future__ import annotations

from typing import Any

from experiments.core.record import Record
from experiments.core.run_record import record


@record
class ScoredModel(Record):
    """One model of an arm: its training, and (when it met the criterion) every metric against its reference."""
    arm: str
    seed: int
    reference: str  # the base folder its metrics are measured against
    steps: int
    met_criterion: bool
    test_accuracy: float
    metrics: dict[str, float] | None = None
    profiles: dict[str, tuple[float, ...]] | None = None
    ablation: dict[str, float] | None = None
    weights_sha256: str = ""


@record
class MetricCheck(Record):
    """One metric on the controls: the positive control's values, each negative control's, and whether the
    positive is separated above each by the seeds' spread (every positive seed above every negative seed; the
    exact permutation p-value beside it)."""
    metric: str
    description: str
    validates: str  # the run's contrast key this metric is (or "")
    positive: tuple[float, ...]
    negatives: dict[str, tuple[float, ...]]
    separated: dict[str, bool]
    p_greater: dict[str, float | None]
    min_p: float | None
    validated: bool


@record
class ControlsRecord(Record):
    config: dict[str, Any]
    planted_bases: dict[str, dict[str, Any]]  # each seed's planted base: its training metrics on the sub-skill
    planted_heads: dict[str, tuple[tuple[int, int], ...]]  # each planted base's component (its top heads)
    chance_share: float  # the expected share of a random circuit of the same size (k / nodes)
    models: tuple[ScoredModel, ...]
    checks: tuple[MetricCheck, ...]
    rule: str
    versions: dict[str, Any]
    seconds: dict[str, float]
