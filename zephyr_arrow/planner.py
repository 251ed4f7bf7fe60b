"""Planning: cut a Dataset's ops into stages. One pure function, no I/O.

Row, columnar and load ops fuse into one stage; a stage ends at a sink (the sink is
its last op) and at a boundary (reshard, shuffles, joins), which becomes a stage of
its own. A shuffle (group_by, deduplicate, aggregate, join) has a map side: the ops
before it fuse into a SCATTER stage per input, whose tasks run them and cut the rows
into sorted runs by key. The row and columnar ops after a shuffle or join (up to a
sink or the next boundary) run in its reduce tasks. So nothing is written between a
shuffle and the ops next to it. A broadcast join is no boundary: it fuses into its left
side's stage, and its right side is built first as stages of their own, whose whole
output every task of that stage reads (``Stage.broadcast``). Rewrites run first, as named
passes:

- ``fold_reshard_into_items``: ``from_list(...).reshard(k)`` re-cuts the items instead;
- ``push_down_into_load``: a Polars filter and a select directly after a load are
  handed to the file reader (fewer bytes read, no rows built only to be dropped);
- ``push_used_columns_into_load``: the columns the rest of a stage uses (when they are
  known: selects, Polars filters and with_columns, row functions whose code shows the fields
  they read, a shuffle's scatter) are handed to the reader, which skips the others. A stage
  that reads chunks gets the same set as ``Stage.input_columns``: its tasks read only those
  columns of the chunk files.
- ``narrow_deduplicate_runs`` (after the stages are cut): a deduplicate moves only its key
  and the columns the ops of its reduce stage read, and its scatter stage reads only those.
  A group_by needs no pass: what it moves is what its key and reducer read.
- ``narrow_broadcast_sides`` (after the stages are cut): the right side of a broadcast join
  reads only its keys and the columns used after the join.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from zephyr_arrow import ops, shuffle_ops
from zephyr_arrow.errors import PlanError

if TYPE_CHECKING:
    from zephyr_arrow.dataset import Dataset


class StageKind(enum.Enum):
    MAP = "map"  # fused ops over each input shard
    SCATTER = "scatter"  # fused ops over each input shard, then the rows cut into sorted runs by a shuffle's key
    RESHARD = "reshard"  # re-cut the input's rows into balanced shards; no tasks, no data read
    SHUFFLE = "shuffle"  # merge the sorted runs its SCATTER stage cut, shard by shard, and reduce them
    JOIN = "join"  # join two SCATTER stages' runs shard by shard (sorted_merge_join: two co-sharded inputs)


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
            parts.append(f"scatter by {shuffle_ops.describe_key(self.boundary.key_of(self.side))}")
        return " -> ".join(parts) or "pass"

    def for_worker(self) -> Stage:
        """The stage as workers need it: without the source's items (tasks carry their own) or a join's right side."""
        without_right = getattr(self.boundary, "without_right", None)
        stage_ops = tuple(op.without_right() if isinstance(op, shuffle_ops.BroadcastJoinOp) else op for op in self.ops)
        return replace(self, source=None, boundary=without_right() if without_right else self.boundary, ops=stage_ops)

    @property
    def sink(self) -> ops.WriteOp | None:
        return self.ops[-1] if self.ops and isinstance(self.ops[-1], ops.WriteOp) else None


@dataclass(frozen=True, eq=False)
class Plan:
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


class _Builder:
    def __init__(self) -> None:
        self.stages: list[Stage] = []

    def add(self, kind: StageKind, **fields: Any) -> int:
        self.stages.append(Stage(index=len(self.stages), kind=kind, **fields))
        return len(self.stages) - 1

    def build(self, dataset: Dataset, scatter_for: ops.Op | None = None, side: int = 0) -> int:
        """Add the stages computing ``dataset``; return the index of its last stage.

        With ``scatter_for`` (a shuffle op), the last stage is the map side of that
        shuffle's input ``side``: a SCATTER stage holding the ops not yet in a stage.
        """
        source, operations = fold_reshard_into_items(dataset.source, dataset.operations)
        fused: list[ops.Op] = []
        broadcast: list[int] = []  # the stages computing the right sides of the broadcast joins in ``fused``
        upstream: tuple[int, ...] = ()
        pending_source: ops.Source | None = source

        def close(kind: StageKind = StageKind.MAP, **fields: Any) -> int:
            nonlocal upstream, pending_source
            end = needed_by(fields.get("boundary"))
            stage_ops = push_used_columns_into_load(push_down_into_load(tuple(fused)), end)
            fused.clear()
            # A shuffle's reduce tasks read no broadcast side: a broadcast join stays in a stage of its own.
            if kind is StageKind.MAP and not broadcast and self._takes_ops_after(upstream, pending_source, stage_ops):
                index = upstream[0]
                self.stages[index] = replace(self.stages[index], ops=stage_ops)
            else:
                reads_chunks = pending_source is None or isinstance(pending_source, ops.RefsSource)
                columns = used_columns(stage_ops, end) if reads_chunks else None
                index = self.add(
                    kind, ops=stage_ops, inputs=upstream, source=pending_source, input_columns=columns, broadcast=tuple(broadcast), **fields
                )
            broadcast.clear()
            upstream, pending_source = (index,), None
            return index

        for op in operations:
            if op.kind is ops.Kind.BOUNDARY and _has_scatter(op):
                sides = [close(StageKind.SCATTER, boundary=op)]
                if isinstance(op, shuffle_ops.JoinOp):
                    sides.append(self.build(op.right, scatter_for=op, side=1))
                upstream = (self.add(_boundary_kind(op), inputs=tuple(sides), boundary=op),)
            elif op.kind is ops.Kind.BOUNDARY:
                if fused or pending_source is not None:
                    close()
                upstream = (self.add(_boundary_kind(op), inputs=upstream + self._side_inputs(op), boundary=op),)
            elif op.kind is ops.Kind.SINK:
                fused.append(op)
                close()
            else:
                if isinstance(op, shuffle_ops.BroadcastJoinOp):
                    broadcast.append(self.build(op.right))
                fused.append(op)
        if scatter_for is not None:
            return close(StageKind.SCATTER, boundary=scatter_for, side=side)
        if fused or pending_source is not None:
            close()
        return upstream[0]

    def _takes_ops_after(self, upstream: tuple[int, ...], source: ops.Source | None, stage_ops: tuple[ops.Op, ...]) -> bool:
        """Whether ``stage_ops`` can run in the reduce tasks of the shuffle or join just before them
        (so its output is not written and read back); a sink stays in a map stage of its own."""
        if source is not None or len(upstream) != 1 or any(op.kind is ops.Kind.SINK for op in stage_ops):
            return False
        stage = self.stages[upstream[0]]
        return stage.kind in (StageKind.SHUFFLE, StageKind.JOIN) and not stage.ops

    def _side_inputs(self, op: ops.Op) -> tuple[int, ...]:
        right = getattr(op, "right", None)
        return (self.build(right),) if right is not None else ()


def _has_scatter(op: ops.Op) -> bool:
    """Shuffles partition their inputs by key first; a reshard and a sorted_merge_join do not."""
    return isinstance(op, (shuffle_ops.GroupByOp, shuffle_ops.DeduplicateOp, shuffle_ops.AggregateOp, shuffle_ops.JoinOp))


def _boundary_kind(op: ops.Op) -> StageKind:
    if isinstance(op, ops.ReshardOp):
        return StageKind.RESHARD
    if getattr(op, "right", None) is not None:
        return StageKind.JOIN
    return StageKind.SHUFFLE


def plan(dataset: Dataset) -> Plan:
    """Cut ``dataset`` into stages (pure: reads no files, runs no user code)."""
    from zephyr_arrow.dataset import Dataset

    if not isinstance(dataset, Dataset):
        raise PlanError(f"plan() needs a Dataset, got {type(dataset).__name__}")
    builder = _Builder()
    output = builder.build(dataset)
    narrow_deduplicate_runs(builder.stages)
    narrow_broadcast_sides(builder.stages)
    return Plan(tuple(builder.stages), output)


def fold_reshard_into_items(source: ops.Source, operations: tuple[ops.Op, ...]) -> tuple[ops.Source, tuple[ops.Op, ...]]:
    """``from_list(items).reshard(k)`` is ``from_list(items, num_shards=k)``: no stage needed."""
    while isinstance(source, ops.ItemsSource) and operations and isinstance(operations[0], ops.ReshardOp):
        source = replace(source, num_shards=operations[0].num_shards)
        operations = operations[1:]
    return source, operations


def push_down_into_load(stage_ops: tuple[ops.Op, ...]) -> tuple[ops.Op, ...]:
    """Fold a Polars filter and a select that directly follow a load into the load."""
    result: list[ops.Op] = []
    for op in stage_ops:
        load = result[-1] if result and isinstance(result[-1], ops.LoadOp) else None
        if load is not None and isinstance(op, ops.FilterExprOp) and load.filter is None and _filter_can_push(op, load):
            result[-1] = replace(load, filter=op.expr)
        elif load is not None and isinstance(op, ops.SelectOp) and load.columns is None and not load.include_file_paths:
            result[-1] = replace(load, columns=op.columns)
        else:
            result.append(op)
    return tuple(result)


def narrow_deduplicate_runs(stages: list[Stage]) -> None:
    """Let a deduplicate carry through its shuffle only its key and the columns the ops of its
    reduce stage read (``DeduplicateOp.carries``), when they are known. Its scatter stage then
    reads, parses and moves just those and what its key reads (``deduplicate("text").count()``
    and ``deduplicate(lambda d: d["text"]).count()``: the text), and its reduce gathers only
    those the ops after it read (``read_after``; ``count()``: none)."""
    for stage in stages:
        op = stage.boundary
        if stage.kind is not StageKind.SHUFFLE or not isinstance(op, shuffle_ops.DeduplicateOp):
            continue
        used = _used_by(stage.ops, None)
        if used is None:
            continue
        key_columns = op.key if isinstance(op.key, tuple) else ()
        narrowed = replace(op, carries=tuple(dict.fromkeys([*key_columns, *used])), read_after=used)
        stages[stage.index] = replace(stage, boundary=narrowed)
        (scatter,) = (stages[index] for index in stage.inputs)
        stages[scatter.index] = _reading_only(replace(scatter, boundary=narrowed), needed_by(narrowed))


def narrow_broadcast_sides(stages: list[Stage]) -> None:
    """Let the right side of a broadcast join read only its keys and the columns the ops after
    the join use, when they are known: every task of the left side holds all of it.

    A right column whose name clashes with a left column is named with the join's suffix, so a
    used ``name_right`` keeps ``name`` on both sides (dropping a left column would rename it).
    """
    for stage in stages:
        if not stage.broadcast:
            continue
        joins = iter(reversed(stage.broadcast))  # the right side of each broadcast join, last first
        used = needed_by(stage.boundary)
        for op in reversed(stage.ops):
            if isinstance(op, shuffle_ops.BroadcastJoinOp):
                right = stages[next(joins)]
                if used is not None and right.kind is StageKind.MAP and right.sink is None:
                    stages[right.index] = _reading_only(right, shuffle_ops.union(op.right_on, used, _unsuffixed(used, op.suffix)))
            used = _used_before(op, used)


def _unsuffixed(names: tuple[str, ...], suffix: str) -> tuple[str, ...]:
    return tuple(name[: -len(suffix)] for name in names if suffix and name.endswith(suffix))


def _reading_only(stage: Stage, end: tuple[str, ...] | None) -> Stage:
    """``stage`` with its load, or its chunk reads, narrowed to what its ops use for ``end`` to be right after them."""
    stage_ops = push_used_columns_into_load(stage.ops, end)
    reads_chunks = stage.source is None or isinstance(stage.source, ops.RefsSource)
    return replace(stage, ops=stage_ops, input_columns=used_columns(stage_ops, end) if reads_chunks else None)


def push_used_columns_into_load(stage_ops: tuple[ops.Op, ...], end: tuple[str, ...] | None) -> tuple[ops.Op, ...]:
    """Tell the stage's load which columns the ops after it use for ``end`` (the columns needed
    after the stage, None: every column) to be right (``used_columns``), so its reader skips the rest."""
    loads = [index for index, op in enumerate(stage_ops) if isinstance(op, ops.LoadOp)]
    if not loads or stage_ops[loads[-1]].columns is not None:
        return stage_ops
    index = loads[-1]
    used = used_columns(stage_ops[index + 1 :], end)
    if used is None:
        return stage_ops
    load = stage_ops[index]
    keep = tuple(name for name in used if not (load.include_file_paths and name == load.file_path_column))
    return (*stage_ops[:index], replace(load, keep=keep), *stage_ops[index + 1 :])


def needed_by(boundary: ops.Op | None) -> tuple[str, ...] | None:
    """What a stage's end needs of its rows: a scatter for an aggregate, a deduplicate or a
    group_by, the columns its key reads and the shuffle moves; anything else, every column (None)."""
    return boundary.input_columns() if isinstance(boundary, shuffle_ops.KNOWS_ITS_COLUMNS) else None


def used_columns(stage_ops: tuple[ops.Op, ...], end: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The input columns ``stage_ops`` use for the columns ``end`` (None: every column) to be
    right after them, or None for every column (or none known to be unused).

    Walks the ops backwards from ``end`` (``needed_by`` a stage's boundary). A select narrows
    the set, a filter or with_columns adds the columns its expressions read, ``count()`` reads
    none. A row function reads the fields its code shows (``fields_read``): a map's or
    flat_map's input needs only those, a filter adds them. A broadcast join adds its left keys.
    Any other row function, a load, map_batches or an expression that picks columns by pattern,
    type or position makes it every column again. An empty set is None too: a batch of no
    columns would lose its row count.
    """
    return _used_by(stage_ops, end) or None


def _used_by(stage_ops: tuple[ops.Op, ...], used: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The columns the input of ``stage_ops`` must have for ``used`` to be right after them (None: every column)."""
    for op in reversed(stage_ops):
        used = _used_before(op, used)
    return used


def _used_before(op: ops.Op, used: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The columns ``op``'s input must have for ``used`` (None: every column) to be right after it."""
    if isinstance(op, ops.SelectOp):
        return op.columns if used is None else tuple(name for name in op.columns if name in used)
    if isinstance(op, ops.TakePerShardOp):
        return used
    if isinstance(op, ops.MapBatchesOp) and op.reads is not None:
        return op.reads
    if isinstance(op, (ops.MapOp, ops.FlatMapOp)):
        return shuffle_ops.key_reads(op.fn)  # its output rows are made from what it reads
    if isinstance(op, ops.FilterOp):  # its rows pass on
        return shuffle_ops.union(used, shuffle_ops.key_reads(op.predicate))
    if isinstance(op, shuffle_ops.BroadcastJoinOp):  # the left side's part (see narrow_broadcast_sides)
        return None if used is None else shuffle_ops.union(op.left_on, used, _unsuffixed(used, op.suffix))
    if used is None or not isinstance(op, (ops.FilterExprOp, ops.WithColumnsOp)):
        return None
    exprs = (op.expr,) if isinstance(op, ops.FilterExprOp) else op.exprs
    reads = [ops.expr_columns(expr) for expr in exprs]
    if any(names is None for names in reads):
        return None
    if isinstance(op, ops.WithColumnsOp):
        outputs = [expr.meta.output_name(raise_if_undetermined=False) for expr in exprs]
        if None in outputs:
            return None
        used = tuple(name for name in used if name not in outputs)
    return tuple(dict.fromkeys([*used, *(name for names in reads for name in names)]))


def _filter_can_push(op: ops.FilterExprOp, load: ops.LoadOp) -> bool:
    referenced = set(op.expr.meta.root_names())
    if load.include_file_paths and load.file_path_column in referenced:
        return False  # the path column is added after reading
    return load.columns is None or referenced <= set(load.columns)
