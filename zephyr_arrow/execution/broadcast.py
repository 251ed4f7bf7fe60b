"""Broadcast joins: each task of the left side joins its own rows with the whole right side.

The planner computes the right side first, as a stage of its own; every task of the left
side's stage then reads all of that stage's chunks into one table and joins its rows with
it as they stream, about ``LEFT_BATCH_BYTES`` at a time. No shuffle: the output keeps the
left side's shards and, within each, the order of its rows. A process keeps the last
right side it read until it reads another, exits, or (the sync backend) its context closes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from zephyr_arrow import ops
from zephyr_arrow.execution.shuffle import check_key_columns, common_key_types
from zephyr_arrow.execution.shuffle_reduce import joined
from zephyr_arrow.store import ChunkRef
from zephyr_arrow.store.schema import conform, unify
from zephyr_arrow.store.tables import contiguous, grouped_by_bytes

# Left rows joined at once. Each join goes over the whole right side again (600k rows: 10-20 ms);
# 16 MB of documents is a few joins per shard, and as much as a chunk's row group holds.
LEFT_BATCH_BYTES = 16 << 20

_last_side: tuple[tuple, pa.Table] | None = None  # (the chunks, their rows) of the last right side read


def broadcast_join(op: ops.BroadcastJoinOp, tables: Iterator[pa.Table], right_chunks: tuple[ChunkRef, ...]) -> Iterator[pa.Table]:
    """The rows of ``tables`` (the left side) joined with the rows of ``right_chunks``.

    Key columns are checked and cast as the shuffle join's are (``shuffle.py``): a missing
    one is an error naming it, an int and a float key compare as floats.
    """
    right = _right_side(right_chunks)
    if right.num_rows:
        check_key_columns(op, op.right_on, right.schema, "right")
    for group in grouped_by_bytes(tables, LEFT_BATCH_BYTES):
        yield _join(op, _concat(group), right)


def _right_side(chunks: tuple[ChunkRef, ...]) -> pa.Table:
    """The rows of a right side, read once while the same side comes back: a worker runs a
    stage's tasks one after another, and reading 600k attribute rows took each task 50-90 ms."""
    global _last_side
    key = tuple((chunk.path, chunk.row_range) for chunk in chunks)
    if _last_side is None or _last_side[0] != key:
        _last_side = None  # the previous side is freed before this one is read
        _last_side = (key, _whole(list(chunks)))
    return _last_side[1]


def forget() -> None:
    """Drop the side kept for the next task (a worker process drops it when it exits)."""
    global _last_side
    _last_side = None


def _whole(chunks: list[ChunkRef]) -> pa.Table:
    """Every chunk's rows as one contiguous table, of the schema unified over the chunks."""
    if not chunks:
        return pa.table({})
    schema = unify([chunk.schema for chunk in chunks], [chunk.path for chunk in chunks])
    return contiguous(pa.concat_tables([conform(chunk.read(), schema) for chunk in chunks]))


def _concat(tables: list[pa.Table]) -> pa.Table:
    schema = unify([t.schema for t in tables], [f"batch {index}" for index in range(len(tables))])
    return pa.concat_tables([conform(t, schema) for t in tables])


def _join(op: ops.BroadcastJoinOp, left: pa.Table, right: pa.Table) -> pa.Table:
    if left.num_rows:
        check_key_columns(op, op.left_on, left.schema, "left")
    left, right = _with_keys(left, op.left_on), _with_keys(right, op.right_on)
    left_schema, right_schema = common_key_types(op, [left.schema, right.schema])
    return joined(op, conform(left, left_schema), conform(right, right_schema), keep_left_order=True)


def _with_keys(table: pa.Table, names: tuple[str, ...]) -> pa.Table:
    """``table`` with a null column for each key it lacks (a side with no rows may have no columns)."""
    for name in names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows))
    return table
