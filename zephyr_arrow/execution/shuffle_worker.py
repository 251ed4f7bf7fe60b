"""Shuffle tasks on the worker: scatter an input shard into sorted runs, or reduce one output shard.

Scatter (the map side, a SCATTER stage's task) streams its shard through the stage's
ops, adds the shuffle columns (``keys.py``: the key's stable hash or encoded key, and
the row's input position), and buffers up to ``SORT_BUFFER_BYTES``; each full buffer is
sorted by (output shard, order) and written as one *run*: one Parquet file per task, one
row-group-aligned segment per output shard, each returned as a ranged ``ChunkRef``. So
M map tasks write M files (more only when a combiner changes the schema), not M x N.
Only the columns the reduce side reads are moved (``carried_columns``, where they are
known): an aggregate's expressions', a group_by's key's and reducer's, a deduplicate's key and
those the ops after it read. Deduplicate drops repeated keys within a run before writing; a
group_by combiner folds each key's rows of a run, and so does an aggregate whose expressions
split into partials (``partial_aggregate.py``).

The reduce side, and helpers the map side shares with it, are in ``shuffle_reduce.py``.
Like ``worker.run_task``, nothing here knows about backends.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from zephyr_arrow import counters, ops, shuffle_ops
from zephyr_arrow.execution import keys as K
from zephyr_arrow.execution import partial_aggregate, shuffle_reduce
from zephyr_arrow.execution.merge import FILES_COUNTER, SortedFile, sort_table, sorted_indices
from zephyr_arrow.execution.shuffle_reduce import first_of_each_key, flatten, keyed_rows, task_path, without_shuffle_columns
from zephyr_arrow.execution.stats import StageStats
from zephyr_arrow.execution.tasks import ShardTask, StageResult, TaskResult
from zephyr_arrow.planner import Stage
from zephyr_arrow.rows import rows_to_table
from zephyr_arrow.store import ChunkRef
from zephyr_arrow.store.files import size
from zephyr_arrow.store.schema import concat_unified
from zephyr_arrow.store.tables import rows_per_slice, take_by_batch

SORT_BUFFER_BYTES = 32 * 1024 * 1024  # rows a map task sorts at once (Arrow bytes); one run each
_TAKE_BYTES = 4 * 1024 * 1024  # a run is taken in order this much at a time (written a row group at a time)


def run_task(stage: Stage, task: ShardTask) -> TaskResult:
    """Run one reduce task of a shuffle stage: merge its runs, apply the op (and the ops fused after it), write the output shard."""
    started = time.perf_counter()
    with counters.collecting(task.run) as collected:
        rows_in, chunks = shuffle_reduce.reduce(stage, task)
        outputs = [StageResult(task.shard_index, chunk) for chunk in chunks]
        paths = {output.chunk.path for output in outputs}
        counters.increment(FILES_COUNTER, len(paths))
    stats = StageStats(
        rows_in=rows_in,
        rows_out=sum(output.chunk.num_rows for output in outputs),
        chunks_out=len(paths),
        bytes_out=sum(size(path) for path in paths),
        seconds=time.perf_counter() - started,
    )
    return TaskResult(task.stage_index, task.shard_index, task.attempt, tuple(outputs), stats, collected.totals)


def scatter(stage: Stage, task: ShardTask, tables: Iterable[pa.Table]) -> list[StageResult]:
    """Cut ``tables`` (the task's shard, after the stage's ops) into sorted runs, one segment per output shard."""
    op = stage.boundary
    keys = K.shuffle_keys(op, stage.side)
    columns = op.carried_columns() if isinstance(op, shuffle_ops.KNOWS_ITS_COLUMNS) else None
    num_output_shards = task.input.num_output_shards
    files = _RunFiles(lambda index: task_path(task, index))
    position = task.shard_index << K.POSITION_BITS
    pending: list[pa.Table] = []
    pending_bytes = 0
    schema: pa.Schema | None = None  # of the last batch: an empty shard's run still has the columns
    try:
        for table in tables:
            table, targets = K.add_shuffle_columns(table, keys, num_output_shards, position)
            if columns is not None:
                table = K.carried(table, columns)
            schema = table.schema
            position += table.num_rows
            if table.num_rows:
                pending.append(table.append_column(K.TARGET, targets))
                pending_bytes += table.nbytes
            if pending_bytes >= SORT_BUFFER_BYTES:
                files.write(*_sorted_run(op, keys, pending))
                pending_bytes = 0
        if pending:
            files.write(*_sorted_run(op, keys, pending))
        if schema is None:  # no batch at all: the shuffle columns alone
            schema = K.add_shuffle_columns(pa.table({}), keys, num_output_shards, position)[0].schema
        outputs = files.close(schema)
    except BaseException:
        files.abort()
        raise
    counters.increment(FILES_COUNTER, len({output.chunk.path for output in outputs}))
    return outputs


def _sorted_run(op: ops.Op, keys: K.ShuffleKeys, tables: list[pa.Table]) -> tuple[pa.Table, pa.Array | None]:
    """One run from the buffered ``tables`` (emptied: the run holds them): its rows and the
    order to write them in (None: as they are).

    The run is taken in that order from the batches as they are (``take_by_batch``) and
    written a row group at a time, so a scatter holds its buffer once and a few MB more.
    """
    table = _unified(tables)
    tables.clear()
    order = [K.TARGET, *keys.order]
    if isinstance(op, shuffle_ops.DeduplicateOp):  # sorted and deduplicated in one order
        return table, first_of_each_key(table, order, keys.identity)[0]
    if isinstance(op, shuffle_ops.GroupByOp) and op.combiner is not None:
        return _combine(op, keys, sort_table(table, order)), None
    parts = partial_aggregate.split(op.exprs) if isinstance(op, shuffle_ops.AggregateOp) else None
    if parts is not None:
        table = partial_aggregate.partials(op.by, parts, table)
    return table, sorted_indices(table, order)


def _unified(tables: list[pa.Table]) -> pa.Table:
    """The batches as one table (of their chunks); batches whose types differ (a file's types widen as it is read) are unified."""
    return concat_unified(tables, [f"batch {index} of the run" for index in range(len(tables))])


def _combine(op: shuffle_ops.GroupByOp, keys: K.ShuffleKeys, table: pa.Table) -> pa.Table:
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
    combined_table = rows_to_table(rows) if rows else without_shuffle_columns(table).schema.empty_table()
    types = {K.KEY: pa.binary(), K.POSITION: pa.int64(), K.TARGET: pa.uint32()}
    if sort_of is not None:
        shuffle_columns[K.SORT] = [K.encode_key(sort_of(row)) for row in rows]
        types[K.SORT] = pa.binary()
    for name in [K.KEY, K.SORT, K.POSITION, K.TARGET]:
        if name in shuffle_columns:
            combined_table = combined_table.append_column(name, pa.array(shuffle_columns[name], types[name]))
    return sort_table(combined_table, [K.TARGET, *keys.order])


class _RunFiles:
    """The files of one scatter task: each run adds one row-group-aligned segment per output shard."""

    def __init__(self, path_for: Callable[[int], str]) -> None:
        self._path_for = path_for
        self._closed: list[ChunkRef] = []
        self._file: SortedFile | None = None
        self._segments: list[tuple[int, int, int, int]] = []  # (output shard, file index, start, stop)

    def write(self, table: pa.Table, order: pa.Array | None) -> None:
        """Add the rows of ``table`` (at the indices ``order``, in that order, when given), sorted by output shard."""
        target_column = table.column(K.TARGET) if order is None else table.column(K.TARGET).take(order)
        targets = pc.value_counts(target_column)  # in first-seen order, i.e. ascending
        data = table.drop_columns([K.TARGET])
        if self._file is not None and not _fits(data.schema, self._file.schema):
            self._closed.append(self._file.close())
            self._file = None
        if self._file is None:
            schema = data.schema.with_metadata({**(data.schema.metadata or {}), K.HASHED_BY: K.hashed_by()})
            self._file = SortedFile(self._path_for(len(self._closed)), schema)
        pieces = iter([data]) if order is None else take_by_batch(data, order, rows_per_slice(data, _TAKE_BYTES))
        counts = zip(targets.field("values").to_pylist(), targets.field("counts").to_pylist())
        for target, parts in itertools.groupby(_cut(pieces, counts), key=lambda part: part[0]):
            offset = self._file.num_rows
            for _, part in parts:
                self._file.write(part)
            self._segments.append((target, len(self._closed), offset, self._file.num_rows))

    def close(self, schema: pa.Schema) -> list[StageResult]:
        """The segments written; with none, one empty run of ``schema`` (the columns reach the reduce side)."""
        if not self._segments and self._file is None:
            self._file = SortedFile(self._path_for(len(self._closed)), schema)
        if self._file is not None:
            self._closed.append(self._file.close())
            self._file = None
        if not self._segments:
            (empty,) = self._closed
            return [StageResult(0, empty)]
        return [
            StageResult(target, ChunkRef(self._closed[index].path, stop - start, self._closed[index].schema, (start, stop)))
            for target, index, start, stop in self._segments
        ]

    def abort(self) -> None:
        if self._file is not None:
            self._file.abort()
            self._file = None


def _cut(pieces: Iterator[pa.Table], counts: Iterable[tuple[int, int]]) -> Iterator[tuple[int, pa.Table]]:
    """The rows of ``pieces`` in turn, cut into (target, rows) parts of ``counts`` rows per target."""
    piece, used = None, 0
    for target, count in counts:
        while count:
            if piece is None or used == piece.num_rows:
                piece, used = next(pieces), 0
            size = min(count, piece.num_rows - used)
            yield target, piece.slice(used, size)
            used += size
            count -= size


def _fits(schema: pa.Schema, target: pa.Schema) -> bool:
    """Whether tables of ``schema`` cast to ``target`` without loss (one file can hold both)."""
    if schema == target:
        return True
    try:
        unified = pa.unify_schemas([target, schema], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return False
    return unified.remove_metadata() == target.remove_metadata()
