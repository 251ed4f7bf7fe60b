"""aggregate: Polars aggregations per group of the ``by`` columns.

Map side: runs are sorted by (hash, input position); an aggregation that splits into
partials (``partial_aggregate.py``) is folded per key in each run before it is written.
Reduce side: a Polars group_by over each merge round's complete hashes; rows of the
round's last hash wait for the next round. Memory holds the largest group (exact
aggregations such as median need all its rows).
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from zephyr_arrow import ops
from zephyr_arrow.arrow.schema import from_polars
from zephyr_arrow.arrow.stream import Stream
from zephyr_arrow.execution import stats as engine
from zephyr_arrow.execution.shuffle import keys as K
from zephyr_arrow.execution.shuffle import partial_aggregate
from zephyr_arrow.execution.shuffle.exchange import MergeExchange
from zephyr_arrow.execution.shuffle.merge import sorted_indices


class AggregateExchange(MergeExchange):
    def keys(self, op: ops.AggregateOp, side: int = 0) -> K.ShuffleKeys:
        return K.ShuffleKeys(op.by, None)

    def sorted_run(self, op: ops.AggregateOp, keys: K.ShuffleKeys, table: pa.Table) -> tuple[pa.Table, pa.Array | None]:
        seen = engine.columns_seen(op.columns_used())
        if seen is not None:
            seen.update(table.column_names)
        parts = partial_aggregate.split(op.exprs)
        if parts is not None:
            table = partial_aggregate.partials(op.by, parts, table)
        return table, sorted_indices(table, [K.TARGET, *keys.order])

    def reduce_merged(self, op: ops.AggregateOp, tables: Iterator[pa.Table], schema: pa.Schema) -> Stream:
        return Stream(tables=_aggregate(op, tables, schema))


EXCHANGE = AggregateExchange()


def _aggregate(op: ops.AggregateOp, tables: Iterator[pa.Table], schema: pa.Schema) -> Iterator[pa.Table]:
    parts = partial_aggregate.split(op.exprs)
    pending: pa.Table | None = None  # rows of the last hash seen: the group may go on
    for table in tables:
        if pending is not None:
            table = pa.concat_tables([pending, table])
        hashes = table.column(K.HASH)
        complete = pc.index(hashes, hashes[-1]).as_py()
        if complete:
            yield _aggregated(op, parts, table.slice(0, complete))
        pending = table.slice(complete)
    yield _aggregated(op, parts, pending if pending is not None else schema.empty_table())


def _aggregated(op: ops.AggregateOp, parts: tuple[partial_aggregate.Part, ...] | None, table: pa.Table) -> pa.Table:
    """The aggregation of ``table``'s rows: over partials when the runs were folded."""
    frame = pl.from_arrow(K.without_shuffle_columns(table))
    exprs = op.exprs
    if parts is not None and partial_aggregate.is_folded(frame.schema):
        exprs = partial_aggregate.final_exprs(parts, frame.schema)
    result = frame.group_by(list(op.by), maintain_order=True).agg(*exprs)
    return from_polars(result, {name: table.schema.field(name) for name in op.by})
