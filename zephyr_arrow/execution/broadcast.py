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

from zephyr_arrow import shuffle_ops
from zephyr_arrow.execution.shuffle import check_key_columns, common_key_types, with_fields
from zephyr_arrow.execution.shuffle_reduce import joined
from zephyr_arrow.store import ChunkRef
from zephyr_arrow.store.schema import concat_unified, conform
from zephyr_arrow.store.tables import contiguous, grouped_by_bytes

# Left rows joined at once. Each join goes over the whole right side again (600k rows: 10-20 ms);
# 16 MB of documents is a few joins per shard, and as much as a chunk's row group holds.
LEFT_BATCH_BYTES = 16 << 20

_last_side: tuple[tuple, pa.Table] | None = None  # (the chunks, their rows) of the last right side read


def broadcast_join(op: shuffle_ops.BroadcastJoinOp, tables: Iterator[pa.Table], right_chunks: tuple[ChunkRef, ...]) -> Iterator[pa.Table]:
    """The rows of ``tables`` (the left side) joined with the rows of ``right_chunks``.

    Key columns are checked and cast as the shuffle join's are (``shuffle.py``): a missing
    one is an error naming it, an int and a float key compare as floats.
    """
    right = _right_side(right_chunks)
    if right.num_rows:
        check_key_columns(op, op.right_on, right.schema, "right")
    for group in grouped_by_bytes(tables, LEFT_BATCH_BYTES):
        yield _join(op, concat_unified(group, [f"batch {index}" for index in range(len(group))]), right)


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


def _join(op: shuffle_ops.BroadcastJoinOp, left: pa.Table, right: pa.Table) -> pa.Table:
    if left.num_rows:
        check_key_columns(op, op.left_on, left.schema, "left")
    # A side with no rows may lack its key columns (from_list([])): conform adds them as nulls.
    left_schema = with_fields(left.schema, dict.fromkeys(op.left_on, pa.null()))
    right_schema = with_fields(right.schema, dict.fromkeys(op.right_on, pa.null()))
    left_schema, right_schema = common_key_types(op, [left_schema, right_schema])
    return joined(op, conform(left, left_schema), conform(right, right_schema), keep_left_order=True)
