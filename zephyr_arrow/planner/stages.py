"""A plan's stages: what each stage kind does, and the plan's one-line-per-stage ``explain()``."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from zephyr_arrow import ops


class StageKind(enum.Enum):
    MAP = "map"  # fused ops over each input shard
    SCATTER = "scatter"  # fused ops over each input shard, then the rows cut into sorted runs by a shuffle's key
    RESHARD = "reshard"  # re-cut the input's rows into balanced shards; no tasks, no data read
    SHUFFLE = "shuffle"  # merge the sorted runs its SCATTER stage cut, shard by shard, and reduce them
    JOIN = "join"  # join two SCATTER stages' runs shard by shard (sorted_merge_join: two co-sharded inputs)
    PIPELINES = "pipelines"  # runs pipelines of its own over its input's chunks (fuzzy_deduplicate: rounds until labels settle)


@dataclass(frozen=True, eq=False)
class Stage:
    """One step of a plan: tasks of one stage run in parallel, stages run in order."""

    index: int
    kind: StageKind
    ops: tuple[ops.Op, ...] = ()  # a SHUFFLE or JOIN stage's ops run on its output, in its reduce tasks
    inputs: tuple[int, ...] = ()  # upstream stage indices; () means the plan's source
    source: ops.Source | None = None
    boundary: ops.Op | None = None  # the reshard / shuffle / join op of a non-MAP stage (of a SCATTER: its shuffle's)
    side: int = 0  # a SCATTER stage: which input of its shuffle it is (0 left or only, 1 right)
    # A MAP or SCATTER stage reading chunks (an upstream stage's or from_refs'): the only columns
    # its ops use, so its tasks read just those; None: every column.
    input_columns: tuple[str, ...] | None = None
    # Stages whose whole output every task reads: one per broadcast join in ``ops``, in order.
    broadcast: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        if self.kind not in (StageKind.MAP, StageKind.SCATTER):
            return " -> ".join([repr(self.boundary), *(repr(op) for op in self.ops)])
        parts = ([repr(self.source)] if self.source is not None else []) + [repr(op) for op in self.ops]
        if self.kind is StageKind.SCATTER:
            parts.append(f"scatter by {ops.describe_key(self.boundary.key_of(self.side))}")
        return " -> ".join(parts) or "pass"

    def for_worker(self) -> Stage:
        """The stage as workers need it: without the source's items (tasks carry their own) or a join's right side."""
        return replace(self, source=None, boundary=_for_worker(self.boundary), ops=tuple(map(_for_worker, self.ops)))

    @property
    def reads_pieces(self) -> bool:
        """Whether a task may read a piece of one source file instead of the whole file.

        True for a map or scatter stage that loads files and whose other ops (a sink aside)
        see one row or one batch at a time: the pieces' outputs, in order, are then the
        shard's output. ``map_shard``, windows and ``take_per_shard`` see their whole shard.
        """
        if self.kind not in (StageKind.MAP, StageKind.SCATTER) or not isinstance(self.source, ops.FilesSource):
            return False
        if self.source.approx_shard_bytes is not None:  # the user cut the files into shards (Zephyr's way)
            return False
        if not self.ops or not isinstance(self.ops[0], ops.LoadOp) or (self.sink is not None and self.sink.skip_existing):
            return False
        return all(_sees_one_batch(op) for op in self.ops[1 : -1 if self.sink is not None else None])

    @property
    def sink(self) -> ops.WriteOp | None:
        return self.ops[-1] if self.ops and isinstance(self.ops[-1], ops.WriteOp) else None


@dataclass(frozen=True, eq=False)
class Plan:
    """A pipeline cut into stages (what ``plan(dataset)`` returns); ``explain()`` prints them."""

    stages: tuple[Stage, ...]
    output: int = field(default=-1)  # the stage whose output is the result

    def explain(self) -> str:
        """One line per stage: ``[index] kind: what it does  (<- input stages)``."""
        lines = []
        for stage in self.stages:
            upstream = f"  <- {', '.join(str(i) for i in stage.inputs)}" if stage.inputs else ""
            upstream += f"  (broadcast <- {', '.join(str(i) for i in stage.broadcast)})" if stage.broadcast else ""
            reads = f" (reads {', '.join(stage.input_columns)})" if stage.input_columns is not None else ""
            lines.append(f"[{stage.index}] {stage.kind.value}: {stage.name}{reads}{upstream}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.explain()


def _sees_one_batch(op: ops.Op) -> bool:
    if isinstance(op, ops.MapBatchesOp):
        return op.batch_size is None  # batches of a fixed size would be cut short at a piece's end
    return isinstance(op, (ops.MapOp, ops.FlatMapOp, ops.FilterOp, ops.SelectOp, ops.FilterExprOp, ops.WithColumnsOp, ops.BroadcastJoinOp))


def _for_worker(op: ops.Op | None) -> ops.Op | None:
    return op.without_right() if isinstance(op, ops.TwoSided) else op
