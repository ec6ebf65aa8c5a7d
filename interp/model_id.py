"""The name of one model of a study: its group (how it was initialised) and its seed, printed as "finetuned-s0",
"scratch-s2", or "base" for the pretrained base itself. Parsed and printed here only.

    ModelId.parse("scratch-s2")        # ModelId(group="scratch", seed=2)
    str(ModelId("finetuned", 0))       # "finetuned-s0"
    group_of("scratch-s2")             # "scratch"; a name that is no model id is its own group
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUPS = ("finetuned", "scratch")  # the two arms of a study, in the order runs list them
BASE = "base"
_PATTERN = re.compile(r"^([a-z][a-z0-9_]*)-s(\d+)$")


@dataclass(frozen=True, order=True)
class ModelId:
    group: str  # "finetuned" (the base fine-tuned), "scratch" (its architecture from a fresh init), or "base"
    seed: int | None = None  # None only for the base

    def __post_init__(self) -> None:
        if (self.seed is None) != (self.group == BASE):
            raise ValueError(f"a model id has a seed unless it is the base, got {self.group!r} seed {self.seed!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"a model id's seed is an integer >= 0, got {self.seed!r}")

    def __str__(self) -> str:
        return self.group if self.seed is None else f"{self.group}-s{self.seed}"

    @classmethod
    def parse(cls, name: str) -> ModelId:
        """"finetuned-s0" -> ModelId("finetuned", 0); "base" -> ModelId("base"); anything else: ValueError."""
        if name == BASE:
            return cls(BASE)
        m = _PATTERN.match(name)
        if m is None:
            raise ValueError(f"{name!r} is not a model id (GROUP-sSEED, e.g. finetuned-s0, or {BASE!r})")
        return cls(m.group(1), int(m.group(2)))

    @property
    def is_finetuned(self) -> bool:
        return self.group == "finetuned"

    @property
    def is_scratch(self) -> bool:
        return self.group == "scratch"


def group_of(name: str) -> str:
    """The group of a model id ("finetuned-s0" -> "finetuned"); a name that is not a model id (a model a user named
    in a notebook) is a group of its own."""
    try:
        return ModelId.parse(name).group
    except ValueError:
        return name


def model_ids(seeds: list[int], scratch_seeds: list[int]) -> list[ModelId]:
    """A study's models: the fine-tuned seeds, then the scratch seeds."""
    return [ModelId("finetuned", s) for s in seeds] + [ModelId("scratch", s) for s in scratch_seeds]
