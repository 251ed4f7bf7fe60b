"""Checks of a plan against its inputs' shard counts, before anything runs."""

from __future__ import annotations

from zephyr_arrow import ops
from zephyr_arrow.errors import OutputPatternError, PlanError
from zephyr_arrow.planner.stages import Plan, StageKind


def shard_counts(plan: Plan, source_shards: dict[int, int]) -> dict[int, int]:
    """Every stage's shard count, from its source stages' (``source_shards``), checked: a
    sorted_merge_join needs as many shards on both sides, and a write pattern of more than one
    shard must name the shard."""
    counts: dict[int, int] = {}
    for stage in plan.stages:
        upstream = counts[stage.inputs[0]] if stage.inputs else source_shards[stage.index]
        if stage.kind is StageKind.RESHARD:
            counts[stage.index] = stage.boundary.num_shards
        elif stage.kind in (StageKind.MAP, StageKind.SCATTER):
            counts[stage.index] = upstream  # its tasks (a SCATTER's runs are cut for its shuffle's count)
        else:
            counts[stage.index] = getattr(stage.boundary, "num_output_shards", None) or upstream
            if isinstance(stage.boundary, ops.SortedMergeJoinOp):
                _check_co_sharded(stage.boundary, *(counts[i] for i in stage.inputs))
        sink = stage.sink
        if isinstance(sink, ops.WriteOp) and isinstance(sink.pattern, str) and counts[stage.index] > 1 and not _names_shard(sink.pattern):
            raise OutputPatternError(
                f"Output pattern must contain '{{shard}}' placeholder when writing {counts[stage.index]} shards: "
                f"{sink!r} would write them all to the same file; put {{shard}} in the pattern (e.g. 'out/part-{{shard:05d}}.parquet')",
                stage=stage.name,
            )
    return counts


def _check_co_sharded(op: ops.SortedMergeJoinOp, left: int, right: int) -> None:
    if left != right:
        raise PlanError(
            f"Sorted merge join requires equal shard counts: {op!r} has {left} shards on the left and "
            f"{right} on the right; produce both with group_by(..., num_output_shards=N) on the join key, "
            "or use join(), which shuffles both sides itself"
        )


def _names_shard(pattern: str) -> bool:
    return "{shard" in pattern or "{basename" in pattern
