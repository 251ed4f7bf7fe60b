"""Shuffle and join stages on the coordinator: the reduce pass over runs a SCATTER stage wrote.

    input shards --SCATTER stage: ops, then--> one file per task: sorted runs, a row range per output shard
                 --SHUFFLE / JOIN stage-->    output shard i merges the runs for i (k-way, streaming)

The runner runs a SCATTER stage like a map stage (``ScatterInput`` tasks; the planner
fuses the ops before a shuffle into it, so they are not written out first) and regroups
its results by output shard: the runs are that stage's output. Here the reduce tasks
(``MergeInput`` / ``JoinInput``, see ``execution/tasks.py``) go through the same scheduler
loop; ``shuffle_worker.run_task`` runs them. The coordinator holds one ``ChunkRef`` per
(scatter task, output shard) that has rows, and schemas, never data. Scatter tasks hash
each batch on its own (``keys.py``), so key columns keep whatever types the batches had;
here, from the runs' schemas alone, the key columns are checked and, for a join, given
one type on both sides. ``sorted_merge_join`` has no scatter: shard i of the left meets
shard i of the right.

Design notes (hash, file layout, merge): ``keys.py``, ``shuffle_worker.py``, ``merge.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from zephyr_arrow import ops, shuffle_ops
from zephyr_arrow.errors import PlanError, ZephyrError
from zephyr_arrow.execution import keys as K
from zephyr_arrow.execution.stats import sum_counters
from zephyr_arrow.execution.tasks import JoinInput, MergeInput
from zephyr_arrow.planner import Stage
from zephyr_arrow.rows import is_item_schema
from zephyr_arrow.store import ShardRefs, layout
from zephyr_arrow.store.files import remove_tree
from zephyr_arrow.store.schema import unify

if TYPE_CHECKING:
    from zephyr_arrow.execution.runner import Runner

_SHUFFLE_FIELDS = {K.HASH: pa.uint64(), K.KEY: pa.binary(), K.POSITION: pa.int64()}


def run(runner: Runner, stage: Stage, inputs: list[ShardRefs]) -> tuple[ShardRefs, dict[str, int | float]]:
    """Run the reduce pass of a SHUFFLE or JOIN stage over its SCATTER stages' runs; return its output and counters."""
    from zephyr_arrow.execution.runner import regroup

    op = stage.boundary
    # The right side's Dataset (maybe a long list of items) stays here; workers get the op without it.
    worker_stage = stage.for_worker()
    if isinstance(op, shuffle_ops.SortedMergeJoinOp):
        left, right = inputs
        tasks = [JoinInput(tuple(l), tuple(r)) for l, r in zip(left.shards, right.shards, strict=True)]
        results = runner.run_map(worker_stage, tasks)
        return regroup(results, len(tasks)), sum_counters(r.counters for r in results)

    _check_hashed_alike(op, inputs)
    schemas = [run_schema(op, side, runs, len(inputs)) for side, runs in enumerate(inputs)]
    if isinstance(op, shuffle_ops.JoinOp):
        schemas = common_key_types(op, schemas)
        reduce_inputs = [
            JoinInput(tuple(left), tuple(right), schemas[0], schemas[1])
            for left, right in zip(inputs[0].shards, inputs[1].shards, strict=True)
        ]
    else:
        reduce_inputs = [MergeInput(tuple(shard_runs), schemas[0]) for shard_runs in inputs[0].shards]
    try:
        reduced = runner.run_map(worker_stage, reduce_inputs)
    finally:
        stage_dir = runner.stage_dir(worker_stage)
        for side in range(len(inputs)):
            remove_tree(layout.stage_dir(runner.run.chunk_prefix, runner.run.execution_id, layout.spill_dir_name(stage_dir, side)))
    return regroup(reduced, len(reduce_inputs)), sum_counters(r.counters for r in reduced)



def _check_hashed_alike(op: ops.Op, inputs: list[ShardRefs]) -> None:
    """Every run with rows was cut by the same hash; else equal keys may sit in different shards."""
    hashed_by = {(chunk.schema.metadata or {}).get(K.HASHED_BY) for runs in inputs for chunk in runs.chunks if chunk.num_rows}
    if len(hashed_by) > 1:
        found = ", ".join(sorted(repr(value.decode()) if value else "unrecorded" for value in hashed_by))
        raise ZephyrError(
            f"{op!r}: workers hashed keys differently ({found}), so equal keys may have gone to different "
            "shards; install the same Polars version on every worker"
        )


def run_schema(op: ops.Op, side: int, runs: ShardRefs, num_sides: int) -> pa.Schema:
    """The schema every run of one input is read as: unified over the runs, with the key
    columns checked (when there are rows) and present (as nulls, when there are none)."""
    chunks = runs.chunks
    schema = unify([c.schema for c in chunks], [c.path for c in chunks])
    names = op.key_of(side)
    if isinstance(names, tuple):
        if runs.num_rows:
            check_key_columns(op, names, schema, ("left", "right")[side] if num_sides > 1 else None)
        schema = with_fields(schema, {name: pa.null() for name in names})
    return schema if chunks else with_fields(schema, _SHUFFLE_FIELDS)  # no runs: no scatter task ran


def with_fields(schema: pa.Schema, fields: dict[str, pa.DataType]) -> pa.Schema:
    """``schema`` with the named fields appended where it lacks them."""
    missing = [pa.field(name, type_) for name, type_ in fields.items() if name not in schema.names]
    return pa.schema([*schema, *missing], metadata=schema.metadata) if missing else schema


def common_key_types(op: shuffle_ops.JoinOp | shuffle_ops.BroadcastJoinOp, schemas: list[pa.Schema]) -> list[pa.Schema]:
    """Both sides' schemas with each pair of key columns cast to one type, so the join compares like with like."""
    left, right = schemas
    for left_name, right_name in zip(op.left_on, op.right_on, strict=True):
        fields = [left.field(left_name), right.field(right_name)]
        try:
            unified = pa.unify_schemas([pa.schema([f.with_name("key")]) for f in fields], promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid) as error:
            sides = " and ".join(f"{f.name!r} is {f.type}" for f in fields)
            raise PlanError(f"{op!r}: key columns of incompatible types ({sides}); cast one side first") from error
        key_type = unified.field("key").type
        left = left.set(left.get_field_index(left_name), fields[0].with_type(key_type))
        right = right.set(right.get_field_index(right_name), fields[1].with_type(key_type))
    return [left, right]


def check_key_columns(op: ops.Op, names: tuple[str, ...], schema: pa.Schema, side: str | None) -> None:
    where = f" on the {side} side" if side else ""
    if is_item_schema(schema):
        raise PlanError(f"{op!r}: key columns {list(names)} need dict rows, but the rows{where} are plain values; use a key function")
    missing = [name for name in names if name not in schema.names]
    if missing:
        columns = [name for name in schema.names if name not in K.INTERNAL]
        raise PlanError(f"{op!r}: no column {', '.join(map(repr, missing))}{where}; the rows have columns {columns}")
