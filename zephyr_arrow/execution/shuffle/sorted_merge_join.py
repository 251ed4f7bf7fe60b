"""sorted_merge_join: Zephyr's streaming join of shard i with shard i of two co-sharded, key-sorted inputs.

No scatter: the coordinator pairs the sides' shards (the planner checked they have as many),
and each reduce task merges its pair row by row, buffering one key's right rows. A side not
sorted by its key is an error naming the shard and the two keys out of order.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

import pyarrow as pa

from zephyr_arrow import ops
from zephyr_arrow.arrow.stream import RowCount, Stream
from zephyr_arrow.execution.shuffle import keys as K
from zephyr_arrow.execution.shuffle.exchange import Exchange
from zephyr_arrow.execution.tasks import JoinInput, ReduceInput, ShardTask
from zephyr_arrow.planner import Stage
from zephyr_arrow.store import ChunkRef, ShardRefs


class SortedMergeJoinExchange(Exchange):
    def reduce_inputs(self, op: ops.SortedMergeJoinOp, inputs: list[ShardRefs], num_output_shards: int) -> list[ReduceInput]:
        left, right = inputs
        return [JoinInput(tuple(l), tuple(r)) for l, r in zip(left.shards, right.shards, strict=True)]

    @contextlib.contextmanager
    def reduce(self, stage: Stage, task: ShardTask, rows_in: RowCount) -> Iterator[Stream]:
        op, spec = stage.boundary, task.input
        yield Stream(rows=_sorted_merge_join(op, rows_in.rows(_rows(spec.left)), rows_in.rows(_rows(spec.right)), task.shard_index))


EXCHANGE = SortedMergeJoinExchange()


def _rows(chunks: tuple[ChunkRef, ...]) -> Iterator[Any]:
    tables = (pa.Table.from_batches([batch]) for chunk in chunks for batch in chunk.iter_batches())
    return Stream(tables=tables).as_rows()


def _sorted_merge_join(op: ops.SortedMergeJoinOp, left_rows: Iterator[Any], right_rows: Iterator[Any], shard_index: int) -> Iterator[Any]:
    combiner = op.combiner or merge_dicts
    right = _groups(right_rows, op.right_key, "right", shard_index)
    right_group = next(right, None)
    for encoded, left_group in _groups(left_rows, op.left_key, "left", shard_index):
        while right_group is not None and right_group[0] < encoded:
            right_group = next(right, None)
        if right_group is not None and right_group[0] == encoded:
            buffered = list(right_group[1])  # one key's right rows; the left rows stream
            for left_row in left_group:
                for right_row in buffered:
                    yield combiner(left_row, right_row)
            right_group = next(right, None)
        elif op.how == "left":
            for left_row in left_group:
                yield combiner(left_row, None)


def merge_dicts(left: dict, right: dict | None) -> dict:
    """The default combiner: ``{**left, **right}``; an unmatched left row passes through."""
    return dict(left) if right is None else {**left, **right}


def _groups(rows: Iterator[Any], key_fn: Any, side: str, shard_index: int) -> Iterator[tuple[bytes, Iterator[Any]]]:
    def keyed() -> Iterator[tuple[bytes, Any]]:
        previous: tuple[bytes, Any] | None = None
        for row in rows:
            key = key_fn(row)
            encoded = K.encode_key(key)
            if previous is not None and encoded < previous[0]:
                raise ValueError(
                    f"sorted_merge_join: shard {shard_index} of the {side} side is not sorted by its key: "
                    f"{key!r} comes after {previous[1]!r}. Sort and co-shard both sides by the key, e.g. with "
                    "group_by(key, ..., num_output_shards=N) on each, or use join(), which needs neither"
                )
            previous = (encoded, key)
            yield encoded, row

    for encoded, group in itertools.groupby(keyed(), key=itemgetter(0)):
        yield encoded, map(itemgetter(1), group)
