"""join: a hash join on key columns, shuffling both sides; and the broadcast join, which does not shuffle.

Shuffle join. Map side: each side's runs are cut and sorted by the stable hash of its key
columns (an int key and a float key hash alike). Coordinator: from the runs' schemas, each
pair of key columns is given one type for both sides (``common_key_types``). Reduce side:
both sides merged, cut at a hash both have passed, and joined per round with Polars; a
key's rows of both sides are in memory together.

Broadcast join (``broadcast=True``, inner or left): no shuffle. The planner computes the
right side first, as a stage of its own; every task of the left side's stage then reads
all of that stage's chunks into one table and joins its rows with it as they stream,
about ``LEFT_BATCH_BYTES`` at a time. The output keeps the left side's shards and, within
each, the order of its rows. A process keeps the last right side it read until it reads
another, exits, or (the sync backend) its context closes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from zephyr_arrow import ops
from zephyr_arrow.arrow.rows import without_absent
from zephyr_arrow.arrow.schema import concat_unified, conform, from_polars
from zephyr_arrow.arrow.stream import RowCount, Stream
from zephyr_arrow.arrow.tables import contiguous, grouped_by_bytes
from zephyr_arrow.errors import PlanError
from zephyr_arrow.execution.shuffle import keys as K
from zephyr_arrow.execution.shuffle.exchange import (
    HashExchange,
    check_hashed_alike,
    check_key_columns,
    run_schema,
    spill_path,
    with_fields,
)
from zephyr_arrow.execution.shuffle.merge import merged
from zephyr_arrow.execution.tasks import JoinInput, ReduceInput, ShardTask
from zephyr_arrow.planner import Stage
from zephyr_arrow.store import ChunkRef, ShardRefs

_POLARS_HOW = {"inner": "inner", "left": "left", "right": "right", "outer": "full"}
_ABOVE_EVERY_HASH = 1 << 64


class JoinExchange(HashExchange):
    def keys(self, op: ops.JoinOp, side: int = 0) -> K.ShuffleKeys:
        return K.ShuffleKeys(op.right_on if side else op.left_on, None)

    def reduce_inputs(self, op: ops.JoinOp, inputs: list[ShardRefs], num_output_shards: int) -> list[ReduceInput]:
        check_hashed_alike(op, inputs)
        schemas = [run_schema(op, self.keys(op, side), runs, ("left", "right")[side]) for side, runs in enumerate(inputs)]
        left_schema, right_schema = common_key_types(op, schemas)
        left, right = inputs
        return [JoinInput(tuple(l), tuple(r), left_schema, right_schema) for l, r in zip(left.shards, right.shards, strict=True)]

    @contextlib.contextmanager
    def reduce(self, stage: Stage, task: ShardTask, rows_in: RowCount) -> Iterator[Stream]:
        op, spec = stage.boundary, task.input
        with (
            merged(list(spec.left), self.keys(op, 0).order, spec.left_schema, spill_path(task, 0)) as left,
            merged(list(spec.right), self.keys(op, 1).order, spec.right_schema, spill_path(task, 1)) as right,
        ):
            yield Stream(tables=_joined_rounds(op, rows_in.tables(left), rows_in.tables(right), spec.left_schema, spec.right_schema))


EXCHANGE = JoinExchange()


class _JoinSide:
    """One side's merged tables, buffered from the last complete hash on."""

    def __init__(self, tables: Iterator[pa.Table], schema: pa.Schema) -> None:
        self._tables = tables
        self.buffer = schema.empty_table()
        self.done = False

    def fill(self) -> None:
        while not self.done and not self.buffer.num_rows:
            self.pull()

    def pull(self) -> None:
        table = next(self._tables, None)
        if table is None:
            self.done = True
        else:
            self.buffer = pa.concat_tables([self.buffer, table])

    @property
    def last_hash(self) -> int:
        return _ABOVE_EVERY_HASH if self.done else self.buffer.column(K.HASH)[-1].as_py()

    def take_below(self, bound: int) -> pa.Table:
        if bound == _ABOVE_EVERY_HASH:
            part, self.buffer = self.buffer, self.buffer.slice(0, 0)
            return part
        below = pc.sum(pc.less(self.buffer.column(K.HASH), pa.scalar(bound, pa.uint64()))).as_py() or 0
        part, self.buffer = self.buffer.slice(0, below), self.buffer.slice(below)
        return part


def _joined_rounds(
    op: ops.JoinOp, left_tables: Iterator[pa.Table], right_tables: Iterator[pa.Table], left_schema: pa.Schema, right_schema: pa.Schema
) -> Iterator[pa.Table]:
    sides = [_JoinSide(left_tables, left_schema), _JoinSide(right_tables, right_schema)]
    while True:
        for side in sides:
            side.fill()
        # Every row below the smaller of the two last hashes has arrived on both sides.
        bound = min(side.last_hash for side in sides)
        left, right = (side.take_below(bound) for side in sides)
        if _has_output(op.how, left, right):
            yield joined(op, left, right)
        if bound == _ABOVE_EVERY_HASH:
            break
        for side in sides:
            if not side.done and side.last_hash == bound:
                side.pull()
    yield joined(op, left_schema.empty_table(), right_schema.empty_table())  # the columns, for an empty shard


def _has_output(how: str, left: pa.Table, right: pa.Table) -> bool:
    return {
        "inner": left.num_rows and right.num_rows,
        "left": left.num_rows,
        "right": right.num_rows,
        "outer": left.num_rows or right.num_rows,
    }[how] > 0


def joined(op: ops.JoinOp | ops.BroadcastJoinOp, left: pa.Table, right: pa.Table, keep_left_order: bool = False) -> pa.Table:
    """``left`` joined with ``right`` as ``op`` says (Polars), with the columns named and typed alike
    whatever rows there are; ``keep_left_order``: in the order of ``left``'s rows."""
    # A columnar join's rows have every column: a key a row lacked is null there, as in SQL.
    left, right = without_absent(left), without_absent(right)
    left_frame = pl.from_arrow(K.without_shuffle_columns(left))
    right_frame = pl.from_arrow(K.without_shuffle_columns(right))
    frame = left_frame.join(
        right_frame,
        left_on=list(op.left_on),
        right_on=list(op.right_on),
        how=_POLARS_HOW[op.how],
        coalesce=True,
        suffix=op.suffix,
        maintain_order="left" if keep_left_order else None,
    )
    if op.how == "right":  # Polars names a right join's keys after the right side
        frame = frame.rename({r: l for l, r in zip(op.left_on, op.right_on, strict=True) if l != r})
    fields = {field.name: field for field in left.schema}
    for field in right.schema:
        if field.name not in op.right_on and field.name not in K.INTERNAL:
            name = field.name + op.suffix if field.name in left_frame.columns else field.name
            fields[name] = field.with_name(name)
    names = [name for name in fields if name not in K.INTERNAL]
    return from_polars(frame.select(names), fields)


def common_key_types(op: ops.JoinOp | ops.BroadcastJoinOp, schemas: list[pa.Schema]) -> list[pa.Schema]:
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


# Broadcast join ---------------------------------------------------------------------------

# Left rows joined at once. Each join goes over the whole right side again (600k rows: 10-20 ms);
# 16 MB of documents is a few joins per shard, and as much as a chunk's row group holds.
LEFT_BATCH_BYTES = 16 << 20

_last_side: tuple[tuple, pa.Table] | None = None  # (the chunks, their rows) of the last right side read


def broadcast_join(op: ops.BroadcastJoinOp, tables: Iterator[pa.Table], right_chunks: tuple[ChunkRef, ...]) -> Iterator[pa.Table]:
    """The rows of ``tables`` (the left side) joined with the rows of ``right_chunks``.

    Key columns are checked and cast as the shuffle join's are: a missing
    one is an error naming it, an int and a float key compare as floats.
    """
    right = _right_side(right_chunks)
    if right.num_rows:
        check_key_columns(op, op.right_on, right.schema, "right")
    for group in grouped_by_bytes(tables, LEFT_BATCH_BYTES):
        yield _broadcast_joined(op, concat_unified(group, [f"batch {index}" for index in range(len(group))]), right)


def _right_side(chunks: tuple[ChunkRef, ...]) -> pa.Table:
    """The rows of a right side, read once while the same side comes back: a worker runs a
    stage's tasks one after another, and reading 600k attribute rows took each task 50-90 ms."""
    global _last_side
    key = tuple((chunk.path, chunk.row_range) for chunk in chunks)
    if _last_side is None or _last_side[0] != key:
        _last_side = None  # the previous side is freed before this one is read
        _last_side = (key, _whole(chunks))
    return _last_side[1]


def forget() -> None:
    """Drop the side kept for the next task (a worker process drops it when it exits)."""
    global _last_side
    _last_side = None


def _whole(chunks: tuple[ChunkRef, ...]) -> pa.Table:
    """Every chunk's rows as one contiguous table, of the schema unified over the chunks."""
    if not chunks:
        return pa.table({})
    return contiguous(concat_unified([chunk.read() for chunk in chunks], [chunk.path for chunk in chunks]))


def _broadcast_joined(op: ops.BroadcastJoinOp, left: pa.Table, right: pa.Table) -> pa.Table:
    if left.num_rows:
        check_key_columns(op, op.left_on, left.schema, "left")
    # A side with no rows may lack its key columns (from_list([])): conform adds them as nulls.
    left_schema = with_fields(left.schema, dict.fromkeys(op.left_on, pa.null()))
    right_schema = with_fields(right.schema, dict.fromkeys(op.right_on, pa.null()))
    left_schema, right_schema = common_key_types(op, [left_schema, right_schema])
    return joined(op, conform(left, left_schema), conform(right, right_schema), keep_left_order=True)
