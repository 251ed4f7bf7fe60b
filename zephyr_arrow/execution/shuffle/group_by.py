"""group_by: ``reducer(key, rows)`` once per key, the key's rows streamed in ``sort_by`` order.

Map side: each row's key is encoded (``keys.encode_key``: canonical and order-preserving)
and runs are sorted by (encoded key, sort key, input position), so output shards give
their groups in key order. A ``combiner`` folds each key's rows of a run before it is
written. Reduce side: rows are decoded ``ROWS_PER_DECODE`` at a time and grouped by
encoded key; the reducer gets an iterator that pulls its group's rows from the merge, so
a group larger than memory streams through.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import Any

import pyarrow as pa

from zephyr_arrow import ops
from zephyr_arrow.arrow.rows import rows_to_table, table_to_rows
from zephyr_arrow.arrow.stream import Stream
from zephyr_arrow.execution.shuffle import keys as K
from zephyr_arrow.execution.shuffle.exchange import MergeExchange
from zephyr_arrow.execution.shuffle.merge import sort_table

ROWS_PER_DECODE = 4096  # rows turned into Python objects at a time


class GroupByExchange(MergeExchange):
    def keys(self, op: ops.GroupByOp, side: int = 0) -> K.ShuffleKeys:
        columns = op.key if isinstance(op.key, tuple) else None
        return K.ShuffleKeys(columns, None if columns else op.key, op.sort_by, by_encoded_key=True)

    def sorted_run(self, op: ops.GroupByOp, keys: K.ShuffleKeys, table: pa.Table) -> tuple[pa.Table, pa.Array | None]:
        if op.combiner is None:
            return super().sorted_run(op, keys, table)
        return _combine(op, keys, sort_table(table, [K.TARGET, *keys.order])), None

    def reduce_merged(self, op: ops.GroupByOp, tables: Iterator[pa.Table], schema: pa.Schema) -> Stream:
        return Stream(rows=_group_by(op, tables))


EXCHANGE = GroupByExchange()


def _group_by(op: ops.GroupByOp, tables: Iterator[pa.Table]) -> Iterator[Any]:
    key_of = K.key_function(op.key)
    for _, group in itertools.groupby(keyed_rows(tables, [K.KEY]), key=itemgetter(0)):
        rows = map(itemgetter(1), group)
        first = next(rows)
        # Flattened before the next group is read: the group's iterator is only valid until then.
        yield from flatten(op.reducer(key_of(first), itertools.chain([first], rows)))


def _combine(op: ops.GroupByOp, keys: K.ShuffleKeys, table: pa.Table) -> pa.Table:
    """Fold each key's rows of a sorted run with the combiner (map-side pre-aggregation)."""
    key_of = K.key_function(op.key)
    sort_of = K.key_function(op.sort_by) if op.sort_by is not None else None
    rows: list[Any] = []
    shuffle_columns: dict[str, list[Any]] = {K.KEY: [], K.POSITION: [], K.TARGET: []}
    for (encoded, target), group in itertools.groupby(
        keyed_rows([table], [K.KEY, K.TARGET, K.POSITION]), key=lambda entry: entry[:2]
    ):
        group = iter(group)
        _, _, position, first = next(group)
        combined = flatten(op.combiner(key_of(first), itertools.chain([first], (entry[3] for entry in group))))
        for offset, row in enumerate(combined):
            rows.append(row)
            shuffle_columns[K.KEY].append(encoded)
            shuffle_columns[K.POSITION].append(position + offset)
            shuffle_columns[K.TARGET].append(target)
    combined_table = rows_to_table(rows) if rows else K.without_shuffle_columns(table).schema.empty_table()
    types = {K.KEY: pa.binary(), K.POSITION: pa.int64(), K.TARGET: pa.uint32()}
    if sort_of is not None:
        shuffle_columns[K.SORT] = [K.encode_key(sort_of(row)) for row in rows]
        types[K.SORT] = pa.binary()
    for name in [K.KEY, K.SORT, K.POSITION, K.TARGET]:
        if name in shuffle_columns:
            combined_table = combined_table.append_column(name, pa.array(shuffle_columns[name], types[name]))
    return sort_table(combined_table, [K.TARGET, *keys.order])


def flatten(result: Any) -> Iterator[Any]:
    """A reducer's or combiner's result as rows: an iterator is flattened, anything else is one row."""
    if isinstance(result, Iterator):
        return result
    return iter((result,))


def keyed_rows(tables: Iterable[pa.Table], columns: list[str]) -> Iterator[tuple]:
    """``(*values of columns, row)`` for every row, decoding ``ROWS_PER_DECODE`` rows at a time."""
    for table in tables:
        for start in range(0, table.num_rows, ROWS_PER_DECODE):
            piece = table.slice(start, ROWS_PER_DECODE)
            values = [piece.column(name).to_pylist() for name in columns]
            yield from zip(*values, table_to_rows(K.without_shuffle_columns(piece)))
