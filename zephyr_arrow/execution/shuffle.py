"""Shuffle and join stages on the coordinator: two passes of tasks, only references in between.

    input shards --scatter tasks--> one file each: sorted runs, a row range per output shard
                 --reduce tasks-->  output shard i merges the runs for i (k-way, streaming)

Scatter and reduce tasks go through the same scheduler loop as map stages
(``Runner.run_map``); their inputs are ``ScatterInput``, then ``MergeInput`` /
``JoinInput`` (``execution/tasks.py``), and ``shuffle_worker.run_task`` runs them. The
coordinator holds one ``ChunkRef`` per (map task, output shard) that has rows, and
the schemas, never data. A join scatters both sides in one pass. ``sorted_merge_join``
has no scatter: shard i of the left meets shard i of the right.

Design notes (hash, file layout, merge): ``keys.py``, ``shuffle_worker.py``, ``merge.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from zephyr_arrow import ops
from zephyr_arrow.errors import PlanError
from zephyr_arrow.execution import keys as K
from zephyr_arrow.execution.shuffle_reduce import spill_dir
from zephyr_arrow.execution.stats import add_counters
from zephyr_arrow.execution.tasks import JoinInput, MergeInput, ScatterInput, TaskResult
from zephyr_arrow.plan import Stage
from zephyr_arrow.rows import is_item_schema
from zephyr_arrow.store import ShardRefs, layout
from zephyr_arrow.store.files import remove_tree
from zephyr_arrow.store.schema import unify

if TYPE_CHECKING:
    from zephyr_arrow.execution.runner import Runner


def run(runner: Runner, stage: Stage, inputs: list[ShardRefs]) -> tuple[ShardRefs, dict[str, int | float]]:
    """Run a SHUFFLE or JOIN stage over its inputs' outputs; return its output and counters."""
    from zephyr_arrow.execution.runner import regroup

    op = stage.boundary
    # The right side's Dataset (maybe a long list of items) stays here; workers get the op without it.
    worker_stage = Stage(stage.index, stage.kind, boundary=op.without_right() if hasattr(op, "without_right") else op)
    if isinstance(op, ops.SortedMergeJoinOp):
        left, right = inputs
        tasks = [JoinInput(tuple(l), tuple(r)) for l, r in zip(left.shards, right.shards, strict=True)]
        results = runner.run_map(worker_stage, tasks)
        return regroup(results, len(tasks)), _counters(results)

    num_output_shards = op.num_output_shards or inputs[0].num_shards
    key_types = _key_types(op, inputs)
    scatter_inputs = [
        ScatterInput(tuple(shard), num_output_shards, key_types[side], side)
        for side, refs in enumerate(inputs)
        for shard in refs.shards
    ]
    scattered = runner.run_map(worker_stage, scatter_inputs, suffix="-scatter")
    runs, schemas, start = [], [], 0
    for side, refs in enumerate(inputs):
        side_runs = regroup(scattered[start : start + refs.num_shards], num_output_shards)
        start += refs.num_shards
        runs.append(side_runs)
        schemas.append(_run_schema(side_runs, refs.schema, key_types[side]))
    if isinstance(op, ops.JoinOp):
        reduce_inputs = [
            JoinInput(tuple(left), tuple(right), schemas[0], schemas[1])
            for left, right in zip(runs[0].shards, runs[1].shards, strict=True)
        ]
    else:
        reduce_inputs = [MergeInput(tuple(shard_runs), schemas[0]) for shard_runs in runs[0].shards]
    try:
        reduced = runner.run_map(worker_stage, reduce_inputs)
    finally:
        stage_dir = runner.stage_dir(worker_stage)
        for name in (runner.stage_dir(worker_stage, "-scatter"), *(spill_dir(stage_dir, side) for side in range(len(inputs)))):
            remove_tree(layout.stage_dir(runner.run.chunk_prefix, runner.run.execution_id, name))
    return regroup(reduced, num_output_shards), add_counters(_counters(scattered), _counters(reduced))


def _counters(results: list[TaskResult]) -> dict[str, int | float]:
    total: dict[str, int | float] = {}
    for result in results:
        total = add_counters(total, result.counters)
    return total


def _run_schema(runs: ShardRefs, input_schema: pa.Schema, key_types: pa.Schema | None) -> pa.Schema:
    """The schema every run of one input is read as (with no runs: the input's columns and the shuffle's)."""
    chunks = runs.chunks
    if chunks:
        return unify([c.schema for c in chunks], [c.path for c in chunks])
    types = {field.name: field for field in key_types or []}
    fields = [types.pop(field.name, field) for field in input_schema] + list(types.values())
    shuffle_fields = [pa.field(K.HASH, pa.uint64()), pa.field(K.KEY, pa.binary()), pa.field(K.POSITION, pa.int64())]
    return pa.schema(fields + shuffle_fields, metadata=input_schema.metadata)


def _key_columns(op: ops.Op) -> list[tuple[str, ...] | None]:
    """Per input, the key columns (None for a key function)."""
    if isinstance(op, ops.JoinOp):
        return [op.left_on, op.right_on]
    if isinstance(op, ops.AggregateOp):
        return [op.by]
    return [op.key if isinstance(op.key, tuple) else None]


def _key_types(op: ops.Op, inputs: list[ShardRefs]) -> list[pa.Schema | None]:
    """Key column types unified over every chunk (and both sides of a join), so equal keys hash alike."""
    columns = _key_columns(op)
    schemas = [refs.schema if refs.num_rows else None for refs in inputs]
    for side, names in enumerate(columns):
        if names is not None:
            _check_columns(op, names, schemas[side], ("left", "right")[side] if len(inputs) > 1 else None)
    if columns[0] is None or isinstance(op, ops.GroupByOp):
        return [None] * len(inputs)  # keys are encoded from Python values, where 1 and 1.0 are one key
    types = []
    for position in range(len(columns[0])):
        fields = [schema.field(names[position]) for schema, names in zip(schemas, columns, strict=True) if schema is not None]
        try:
            unified = pa.unify_schemas([pa.schema([f.with_name("key")]) for f in fields], promote_options="permissive") if fields else None
        except (pa.ArrowTypeError, pa.ArrowInvalid) as error:
            sides = " and ".join(f"{f.name!r} is {f.type}" for f in fields)
            raise PlanError(f"{op!r}: key columns of incompatible types ({sides}); cast one side first") from error
        types.append(unified.field("key").type if unified is not None else pa.null())
    return [pa.schema([pa.field(name, t) for name, t in zip(names, types, strict=True)]) for names in columns]


def _check_columns(op: ops.Op, names: tuple[str, ...], schema: pa.Schema | None, side: str | None) -> None:
    if schema is None:
        return  # no rows: nothing to key
    where = f" on the {side} side" if side else ""
    if is_item_schema(schema):
        raise PlanError(f"{op!r}: key columns {list(names)} need dict rows, but the rows{where} are plain values; use a key function")
    missing = [name for name in names if name not in schema.names]
    if missing:
        raise PlanError(f"{op!r}: no column {', '.join(map(repr, missing))}{where}; the rows have columns {schema.names}")
