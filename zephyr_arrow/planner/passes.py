"""The planner's rewrites, in the order ``plan()`` runs them (``PASSES``); each is a pure
function of the stages, tested alone. One more runs on the ops before they are cut into
stages: ``fold_reshard_into_items``.

- ``push_down_into_load``: a Polars filter and a select directly after a load are handed
  to the file reader (fewer bytes read, no rows built only to be dropped);
- ``narrow_reads``: the columns the rest of a stage uses (when they are known: selects,
  Polars filters and with_columns, row functions whose code shows the fields they read, a
  shuffle's scatter) are handed to its load, which skips the others; a stage that reads
  chunks gets the same set as ``Stage.input_columns``: its tasks read only those columns;
- ``narrow_deduplicate_runs``: a deduplicate moves only its key and the columns the ops of
  its reduce stage read, and its scatter stage reads only those (a group_by needs no pass:
  what it moves is what its key and reducer read);
- ``narrow_broadcast_sides``: the right side of a broadcast join reads only its keys and
  the columns used after the join.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from zephyr_arrow import ops
from zephyr_arrow.planner.columns import needed_by, push_used_columns_into_load, reading_only, used_by
from zephyr_arrow.planner.stages import Stage, StageKind

Stages = tuple[Stage, ...]


def fold_reshard_into_items(source: ops.Source, operations: tuple[ops.Op, ...]) -> tuple[ops.Source, tuple[ops.Op, ...]]:
    """``from_list(items).reshard(k)`` is ``from_list(items, num_shards=k)``: no stage needed."""
    while isinstance(source, ops.ItemsSource) and operations and isinstance(operations[0], ops.ReshardOp):
        source = replace(source, num_shards=operations[0].num_shards)
        operations = operations[1:]
    return source, operations


def push_down_into_load(stages: Stages) -> Stages:
    """Fold a Polars filter that directly follows a load into the load. A select is not folded:
    ``narrow_reads`` has the load read only its columns all the same, and the select, left in
    place, keeps its rule (a column a row lacks is left out) and notes the columns it saw,
    so that a column no row has is an error rather than a column of nulls."""
    return tuple(replace(stage, ops=_pushed_down(stage.ops)) for stage in stages)


def _pushed_down(stage_ops: tuple[ops.Op, ...]) -> tuple[ops.Op, ...]:
    result: list[ops.Op] = []
    for op in stage_ops:
        load = result[-1] if result and isinstance(result[-1], ops.LoadOp) else None
        if load is not None and isinstance(op, ops.FilterExprOp) and load.filter is None and _filter_can_push(op, load):
            result[-1] = replace(load, filter=op.expr)
        else:
            result.append(op)
    return tuple(result)


def _filter_can_push(op: ops.FilterExprOp, load: ops.LoadOp) -> bool:
    referenced = set(op.expr.meta.root_names())
    if load.include_file_paths and load.file_path_column in referenced:
        return False  # the path column is added after reading
    return load.columns is None or referenced <= set(load.columns)


def narrow_reads(stages: Stages) -> Stages:
    """Each map or scatter stage reads only the columns its ops use for what its end needs;
    the ops a shuffle's reduce runs hand their load what they use."""
    return tuple(
        reading_only(stage, needed_by(stage.boundary))
        if stage.kind in (StageKind.MAP, StageKind.SCATTER)
        else replace(stage, ops=push_used_columns_into_load(stage.ops, None))
        for stage in stages
    )


def narrow_deduplicate_runs(stages: Stages) -> Stages:
    """Let a deduplicate carry through its shuffle only its key and the columns the ops of its
    reduce stage read (``DeduplicateOp.carries``), when they are known. Its scatter stage then
    reads, parses and moves just those and what its key reads (``deduplicate("text").count()``
    and ``deduplicate(lambda d: d["text"]).count()``: the text), and its reduce gathers only
    those the ops after it read (``read_after``; ``count()``: none)."""
    result = list(stages)
    for stage in stages:
        op = stage.boundary
        if stage.kind is not StageKind.SHUFFLE or not isinstance(op, ops.DeduplicateOp):
            continue
        used = used_by(stage.ops, None)
        if used is None:
            continue
        key_columns = op.key if isinstance(op.key, tuple) else ()
        narrowed = replace(op, carries=tuple(dict.fromkeys([*key_columns, *used])), read_after=used)
        result[stage.index] = replace(stage, boundary=narrowed)
        (scatter,) = (result[index] for index in stage.inputs)
        result[scatter.index] = reading_only(replace(scatter, boundary=narrowed), needed_by(narrowed))
    return tuple(result)


def narrow_broadcast_sides(stages: Stages) -> Stages:
    """Let the right side of a broadcast join read only its keys and the columns the ops after
    the join use, when they are known: every task of the left side holds all of it.

    A right column whose name clashes with a left column is named with the join's suffix, so a
    used ``name_right`` keeps ``name`` on both sides (dropping a left column would rename it).
    """
    result = list(stages)
    for stage in stages:
        if not stage.broadcast:
            continue
        joins = iter(reversed(stage.broadcast))  # the right side of each broadcast join, last first
        used = needed_by(stage.boundary)
        for op in reversed(stage.ops):
            if isinstance(op, ops.BroadcastJoinOp):
                right = result[next(joins)]
                if used is not None and right.kind is StageKind.MAP and right.sink is None:
                    result[right.index] = reading_only(right, ops.union(op.right_on, used, ops.unsuffixed(used, op.suffix)))
            used = op.needs(used)
    return tuple(result)


PASSES: tuple[Callable[[Stages], Stages], ...] = (push_down_into_load, narrow_reads, narrow_deduplicate_runs, narrow_broadcast_sides)
