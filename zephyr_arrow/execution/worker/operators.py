"""How each fused op transforms a shard's stream (``arrow/stream.py``), on the worker.

Everything is a lazy generator: ``take_per_shard`` stops reading input early.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from zephyr_arrow import ops
from zephyr_arrow.arrow.rows import ABSENT_COLUMN, carry_markers, without_absent
from zephyr_arrow.arrow.schema import normalize
from zephyr_arrow.arrow.stream import Stream, batched
from zephyr_arrow.execution import stats as engine


def apply(op: ops.Op, stream: Stream, shard: ops.ShardInfo) -> Stream:
    """The stream after ``op``."""
    handler = _HANDLERS.get(type(op))
    if handler is None:
        raise TypeError(f"no worker implementation for {op!r}")
    return handler(op, stream, shard)


def _map(op: ops.MapOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    return Stream(rows=map(op.fn, stream.as_rows()))


def _flat_map(op: ops.FlatMapOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    return Stream(rows=itertools.chain.from_iterable(map(op.fn, stream.as_rows())))


def _filter(op: ops.FilterOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    return Stream(rows=filter(op.predicate, stream.as_rows()))


def _map_shard(op: ops.MapShardOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    return Stream(rows=iter(op.fn(stream.as_rows(), shard)))


def _window(op: ops.WindowOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    return Stream(rows=batched(stream.as_rows(), op.size))


def _window_by(op: ops.WindowByOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    def windows() -> Iterator[list[Any]]:
        window: list[Any] = []
        state = op.initial_state
        for row in stream.as_rows():
            keep_going, new_state = op.folder_fn(state, row)
            if not keep_going and window:
                yield window
                window = []
                # The row that closed the window opens the next one, folded from the start.
                keep_going, new_state = op.folder_fn(op.initial_state, row)
            window.append(row)
            state = new_state
        if window:
            yield window

    return Stream(rows=windows())


def _take(op: ops.TakePerShardOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    if stream.tables is not None:
        return Stream(tables=_take_tables(stream.tables, op.num_rows))
    return Stream(rows=itertools.islice(stream.rows, op.num_rows))


def _take_tables(tables: Iterator[pa.Table], limit: int) -> Iterator[pa.Table]:
    remaining = limit
    for table in tables:
        if remaining <= 0:
            return
        table = table.slice(0, remaining)
        remaining -= table.num_rows
        yield table


def _select(op: ops.SelectOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    """A column a row lacks is left out; the columns the rows had are noted for the
    coordinator, which fails the run when no row of the stage had a selected column."""
    seen = engine.columns_seen(op.columns_used())
    if seen is None:
        seen = set()
    if stream.rows is not None:
        columns = op.columns

        def rows() -> Iterator[dict]:
            for row in _dict_rows(stream.rows, "select"):
                seen.update(row)
                yield {k: row[k] for k in columns if k in row}

        return Stream(rows=rows())

    keep = (*op.columns, ABSENT_COLUMN)  # the keys a row lacks stay lacking

    def tables() -> Iterator[pa.Table]:
        for table in stream.tables:
            seen.update(table.column_names)
            yield table.select([c for c in keep if c in table.column_names])

    return Stream(tables=tables())


def _dict_rows(rows: Iterator[Any], method: str) -> Iterator[dict]:
    for row in rows:
        if not isinstance(row, dict):
            raise TypeError(f"{method}() needs dict rows, got {type(row).__name__}: {row!r:.100}")
        yield row


def _polars(fn: Callable[[Any], Any]) -> Callable[[pa.Table], pa.Table]:
    import polars as pl

    def run(table: pa.Table) -> pa.Table:
        return carry_markers(table.schema, normalize(fn(pl.from_arrow(table)).to_arrow()))

    return run


def _filter_expr(op: ops.FilterExprOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    run = _polars(lambda frame: frame.filter(op.expr))
    return Stream(tables=(run(t) for t in stream.as_tables()))


def _with_columns(op: ops.WithColumnsOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    import polars as pl

    outputs = [expr.meta.output_name(raise_if_undetermined=False) for expr in op.exprs]

    def with_columns(frame: pl.DataFrame) -> pl.DataFrame:
        frame = frame.with_columns(*op.exprs)
        if ABSENT_COLUMN not in frame.columns:
            return frame
        # A column the expressions set is in every row now; one set by pattern or type, in every row it names.
        made = [name for name in outputs if name is not None] if None not in outputs else frame.columns
        return frame.with_columns(pl.col(ABSENT_COLUMN).list.set_difference(pl.lit(made, dtype=pl.List(pl.String))))

    run = _polars(with_columns)
    return Stream(tables=(run(t) for t in stream.as_tables()))


def _map_batches(op: ops.MapBatchesOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    tables = stream.as_tables()
    if op.batch_size is not None:
        tables = _rebatch(tables, op.batch_size)

    def run(table: pa.Table) -> pa.Table:
        table = without_absent(table)  # the function sees nulls, as every columnar view does
        if op.batch_format == "polars":
            import polars as pl

            return carry_markers(table.schema, _as_table(op.fn(pl.from_arrow(table)), op))
        return carry_markers(table.schema, _as_table(op.fn(table), op))

    return Stream(tables=(run(t) for t in tables))


def _as_table(value: Any, op: ops.MapBatchesOp) -> pa.Table:
    if isinstance(value, pa.Table):
        return normalize(value)
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    if isinstance(value, dict):
        return pa.table(value)
    if type(value).__module__.startswith("polars"):
        return normalize(value.to_arrow())
    raise TypeError(f"{op!r} must return a pyarrow Table/RecordBatch, polars DataFrame or dict of columns, got {type(value).__name__}")


def _rebatch(tables: Iterator[pa.Table], size: int) -> Iterator[pa.Table]:
    pending: list[pa.Table] = []
    pending_rows = 0
    for table in tables:
        pending.append(table)
        pending_rows += table.num_rows
        while pending_rows >= size:
            combined = pa.concat_tables(pending, promote_options="permissive")
            yield combined.slice(0, size)
            rest = combined.slice(size)
            pending, pending_rows = [rest], rest.num_rows
    if pending_rows:
        yield pa.concat_tables(pending, promote_options="permissive")


def _band_keys(op: ops.BandKeysOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    from zephyr_arrow.execution import near_duplicates  # imports numpy and Polars, which other stages do without

    return near_duplicates.band_keys(op, stream, shard)


def _mark_clusters(op: ops.MarkClustersOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    from zephyr_arrow.execution import near_duplicates

    return near_duplicates.mark_clusters(op, stream, shard)


def _load(op: ops.LoadOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    from zephyr_arrow import io
    from zephyr_arrow.io.pieces import FilePiece
    from zephyr_arrow.io.spec import InputFileSpec, read_spec

    columns = list(op.columns) if op.columns is not None else None
    file_format = None if op.format == "auto" else op.format

    def tables() -> Iterator[pa.Table]:
        for source in stream.as_rows():
            span = None
            if isinstance(source, FilePiece):  # a task of a stage that reads_pieces
                source, span = source.path, (source.start, source.stop)
            try:
                spec = InputFileSpec.of(source)
            except TypeError as error:
                raise TypeError(f"{op!r} needs file paths (str) or InputFileSpecs as rows: {error}") from None
            if span is None:
                read = read_spec(spec, columns, op.filter, file_format, op.keep)
            else:
                read = io.read_file(spec.path, columns, op.filter, file_format, op.keep, span)
            for table in read:
                if op.include_file_paths:
                    table = table.append_column(op.file_path_column, pa.array([spec.path] * table.num_rows, pa.string()))
                yield table

    if op.batch_mode:  # each batch is a row, as Zephyr's load_parquet(batch_mode=True) gives them
        return Stream(rows=(batch for table in tables() for batch in without_absent(table).to_batches()))
    return Stream(tables=tables())


_HANDLERS: dict[type, Callable[[Any, Stream, ops.ShardInfo], Stream]] = {
    ops.MapOp: _map,
    ops.FlatMapOp: _flat_map,
    ops.FilterOp: _filter,
    ops.MapShardOp: _map_shard,
    ops.WindowOp: _window,
    ops.WindowByOp: _window_by,
    ops.TakePerShardOp: _take,
    ops.SelectOp: _select,
    ops.FilterExprOp: _filter_expr,
    ops.WithColumnsOp: _with_columns,
    ops.MapBatchesOp: _map_batches,
    ops.LoadOp: _load,
    ops.BandKeysOp: _band_keys,
    ops.MarkClustersOp: _mark_clusters,
}
