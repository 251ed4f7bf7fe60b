"""Planning: a Dataset's ops cut into stages (``cut.py``), then rewritten by named passes
(``passes.py``); one pure function, no I/O. ``stages.py`` says what a stage is,
``columns.py`` which columns a stage's ops need, ``validate.py`` checks shard counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zephyr_arrow.errors import PlanError
from zephyr_arrow.planner.cut import Builder
from zephyr_arrow.planner.passes import PASSES
from zephyr_arrow.planner.stages import Plan, Stage, StageKind

if TYPE_CHECKING:
    from zephyr_arrow.dataset import Dataset


def plan(dataset: Dataset) -> Plan:
    """Cut ``dataset`` into stages and run the passes over them (pure: reads no files, runs no user code)."""
    from zephyr_arrow.dataset import Dataset

    if not isinstance(dataset, Dataset):
        raise PlanError(f"plan() needs a Dataset, got {type(dataset).__name__}")
    builder = Builder()
    output = builder.build(dataset)
    stages = tuple(builder.stages)
    for rewrite in PASSES:
        stages = rewrite(stages)
    return Plan(stages, output)


__all__ = ["Plan", "Stage", "StageKind", "plan"]
