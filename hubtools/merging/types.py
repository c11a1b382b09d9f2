"""Shared types of `hubtools.merging` (the contract between the core pipeline and the zoo builders).

They live in their own dependency-free module so zoo builders and the mixture code can import them without
pulling in mergekit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["Evaluator", "Zoo", "fitness"]


@runtime_checkable
class Evaluator(Protocol):
    """Scores a model on named tasks; fitness = unweighted mean of the values (each in [0, 1])."""

    tasks: Sequence[str]

    def __call__(self, model: PreTrainedModel | str | os.PathLike) -> dict[str, float]: ...

    def prompts(self, task: str, n: int = 8, seed: int = 0) -> list[str]:
        """n input texts of `task` from THIS evaluator's split, for mixture gates."""
        ...


def fitness(scores: Mapping[str, float]) -> float:
    """Unweighted mean of per-task scores (spec 2.4); NaN for no tasks, so an empty score is never 'good'."""
    values = [float(v) for v in scores.values()]
    return sum(values) / len(values) if values else math.nan


@dataclass
class Zoo:
    """A model zoo with its two disjoint evaluation splits (search for selection, report for the final numbers)."""

    name: str
    models: dict[str, Path]
    search: Evaluator
    report: Evaluator
    base: Path | None = None
    truth_families: list[list[str]] | None = None
