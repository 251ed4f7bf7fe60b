"""sort: a global sort by column(s) or a key function; output shards are key ranges, in order.

Map side: each row's sort key is encoded as bytes that sort as the rows must (``sort_keys``:
per column ``encode_key``, complemented for a descending column, a null after every value
in either direction), and each buffer of ``SORT_BUFFER_BYTES`` is written sorted by (key,
input position) as one run file. With each run goes a sparse index, the key at every
``step``-th row, kept in the run's schema metadata (``SORT_INDEX``) so the coordinator reads
it from the ChunkRef, not the file.

Coordinator: the indexes, each entry weighted by the rows it stands for, are a sample of
every key. The bounds of the output shards are the keys where the running total of that
sample crosses each multiple of (rows / shards), so shards hold about as many rows each:
within one index step per run, unless one key alone is larger (a key's rows stay in one
shard). For each shard, each run's index gives the row range that may hold its keys.

Reduce side: those row ranges merged k-way by (key, position) and cut to the shard's bounds,
so every row lands in exactly one shard, in order, ties in input order.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from zephyr_arrow import ops
from zephyr_arrow.arrow.rows import table_to_rows
from zephyr_arrow.arrow.stream import RowCount, Stream
from zephyr_arrow.arrow.tables import rows_per_slice, take_by_batch
from zephyr_arrow.execution import stats
from zephyr_arrow.execution.shuffle import keys as K
from zephyr_arrow.execution.shuffle.exchange import SORT_BUFFER_BYTES, Exchange, buffered_table, run_schema, spill_path
from zephyr_arrow.execution.shuffle.merge import SortedFile, merged, sorted_indices
from zephyr_arrow.execution.shuffle.runs import TAKE_BYTES
from zephyr_arrow.execution.tasks import RangeInput, ReduceInput, ShardTask, StageResult
from zephyr_arrow.planner import Stage
from zephyr_arrow.store import ChunkRef, ShardRefs

SORT_INDEX = b"zephyr_arrow.sort_index"  # a run's schema metadata: its sparse index (Arrow IPC of key, row)
# Index entries per run: enough that a run's share of a shard's bound is a small part of a
# shard (16 per output shard), few enough that the coordinator holds them all.
_ENTRIES_PER_OUTPUT_SHARD = 16
_MIN_ENTRIES, _MAX_ENTRIES = 64, 4096
_MAX_INDEX_BYTES = 1 << 20
_ORDER = [K.SORT, K.POSITION]
_VALUE, _NULL = b"\x01", b"\x02"  # before each column's key: a null sorts after every value
_COMPLEMENT = bytes(range(255, -1, -1))  # reverses the order of self-delimiting encodings


class SortExchange(Exchange):
    def scatter(self, stage: Stage, task: ShardTask, tables: Iterable[pa.Table]) -> list[StageResult]:
        op = stage.boundary
        keys = _keys(op)
        num_output_shards = task.input.num_output_shards
        runs: list[ChunkRef] = []
        position = task.shard_index << K.POSITION_BITS
        pending: list[pa.Table] = []
        pending_bytes = 0
        schema = pa.schema([(K.SORT, pa.binary()), (K.POSITION, pa.int64())])  # an empty shard's run still has the columns
        for table in tables:
            positions = pa.array(range(position, position + table.num_rows), pa.int64())
            table = table.append_column(K.SORT, sort_keys(op, keys, table)).append_column(K.POSITION, positions)
            position += table.num_rows
            schema = table.schema
            if table.num_rows:
                pending.append(table)
                pending_bytes += table.nbytes
            if pending_bytes >= SORT_BUFFER_BYTES:
                runs.append(_write_run(task.chunk_path(len(runs)), buffered_table(pending), num_output_shards))
                pending_bytes = 0
        if pending or not runs:
            table = buffered_table(pending) if pending else schema.empty_table()
            runs.append(_write_run(task.chunk_path(len(runs)), table, num_output_shards))
        return [StageResult(0, run) for run in runs]

    def reduce_inputs(self, op: ops.SortOp, inputs: list[ShardRefs], num_output_shards: int) -> list[ReduceInput]:
        (runs,) = inputs
        schema = run_schema(op, _keys(op), runs)
        schema = schema.with_metadata({k: v for k, v in (schema.metadata or {}).items() if k != SORT_INDEX} or None)
        indexes = [(run, _index(run)) for run in runs.chunks if run.num_rows]
        bounds = _bounds([index for _, index in indexes], num_output_shards)
        shard_inputs = []
        for lower, upper in bounds:
            ranges = (_rows_between(run, index, lower, upper) for run, index in indexes)
            shard_inputs.append(RangeInput(tuple(r for r in ranges if r is not None), schema, lower, upper))
        empty = RangeInput((), schema, b"", b"")  # no key is >= b"" and < b""
        return shard_inputs + [empty] * (num_output_shards - len(shard_inputs))

    @contextlib.contextmanager
    def reduce(self, stage: Stage, task: ShardTask, rows_in: RowCount) -> Iterator[Stream]:
        spec: RangeInput = task.input
        with merged(list(spec.runs), _ORDER, spec.schema, spill_path(task, 0)) as tables:
            yield Stream(tables=rows_in.tables(_within(tables, spec)))


EXCHANGE = SortExchange()


def _keys(op: ops.SortOp) -> K.ShuffleKeys:
    """The sort's key columns, or its function (``ShuffleKeys.rows`` decodes only what it reads)."""
    columns = op.key if isinstance(op.key, tuple) else None
    return K.ShuffleKeys(columns, None if columns else op.key)


def sort_keys(op: ops.SortOp, keys: K.ShuffleKeys, table: pa.Table) -> pa.Array:
    """Each row's sort key: bytes whose order is the sort's order (a missing key column is null)."""
    if keys.columns is not None:
        names = keys.columns
        values: Iterable[tuple[Any, ...]] = (tuple(row[name] for name in names) for row in table_to_rows(K.key_table(table, names)))
    else:
        values = ((keys.function(row),) for row in keys.rows(table))
    return pa.array([_sort_key(value, op.descending) for value in values], pa.binary())


def _sort_key(values: tuple[Any, ...], descending: tuple[bool, ...]) -> bytes:
    out = bytearray()
    for value, reverse in zip(values, descending):
        if value is None:
            out += _NULL
            continue
        encoded = K.encode_key(value)
        out += _VALUE + (encoded.translate(_COMPLEMENT) if reverse else encoded)
    return bytes(out)


def _write_run(path: str, table: pa.Table, num_output_shards: int) -> ChunkRef:
    """``table`` sorted by (key, position) as one run file, its sparse index in the ChunkRef's schema."""
    order = sorted_indices(table, _ORDER)
    run = SortedFile(path, table.schema)
    try:
        for piece in take_by_batch(table, order, rows_per_slice(table, TAKE_BYTES)) if table.num_rows else ():
            run.write(piece)
        ref = run.close()
    except BaseException:
        run.abort()
        raise
    stats.count(stats.SHUFFLE_FILES)
    if not table.num_rows:
        return ref
    index = _sparse_index(table.column(K.SORT), order, num_output_shards)
    metadata = {**(ref.schema.metadata or {}), SORT_INDEX: _serialized(index)}
    return ChunkRef(ref.path, ref.num_rows, ref.schema.with_metadata(metadata))


def _sparse_index(keys: pa.ChunkedArray, order: pa.Array, num_output_shards: int) -> pa.Table:
    """The key at every ``step``-th row of the sorted run (the first row always)."""
    num_rows = len(order)
    entries = min(num_rows, max(_MIN_ENTRIES, min(_MAX_ENTRIES, _ENTRIES_PER_OUTPUT_SHARD * num_output_shards)))
    step = -(-num_rows // entries)
    rows = pa.array(range(0, num_rows, step), pa.int64())
    sampled = keys.take(order.take(rows))
    while sampled.nbytes > _MAX_INDEX_BYTES and len(rows) > 1:  # long keys: fewer entries
        rows, sampled = rows[::2], sampled[::2]
    return pa.table({"key": sampled, "row": rows})


def _serialized(index: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, index.schema) as writer:
        writer.write_table(index)
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True, slots=True)
class _Index:
    """A run's sparse index: the key at each of ``rows`` (ascending, the first 0) of its ``num_rows``."""

    keys: list[bytes]
    rows: list[int]
    num_rows: int


def _index(run: ChunkRef) -> _Index:
    table = pa.ipc.open_stream(run.schema.metadata[SORT_INDEX]).read_all()
    return _Index(table.column("key").to_pylist(), table.column("row").to_pylist(), run.num_rows)


def _bounds(indexes: list[_Index], num_shards: int) -> list[tuple[bytes | None, bytes | None]]:
    """The key range of each output shard that gets rows (None: unbounded), at most ``num_shards``,
    cut where the running total of the sampled rows crosses each multiple of (rows / shards)."""
    sample = []  # (key, the rows from its entry to the run's next)
    for index in indexes:
        ends = [*index.rows[1:], index.num_rows]
        sample += [(key, end - row) for key, row, end in zip(index.keys, index.rows, ends)]
    sample.sort(key=lambda entry: entry[0])
    total = sum(weight for _, weight in sample)
    cuts: list[bytes] = []
    seen = 0
    for key, weight in sample:
        while len(cuts) < num_shards - 1 and seen >= total * (len(cuts) + 1) / num_shards:
            if cuts and cuts[-1] == key:
                break  # one key's rows stay in one shard
            cuts.append(key)
        seen += weight
    edges = [None, *cuts, None]
    return list(zip(edges, edges[1:])) if sample else []


def _rows_between(run: ChunkRef, index: _Index, lower: bytes | None, upper: bytes | None) -> ChunkRef | None:
    """The row range of ``run`` that holds every row with ``lower <= key < upper`` (and a few more)."""
    run_keys, rows = index.keys, index.rows
    start = 0
    if lower is not None:
        before = bisect.bisect_left(run_keys, lower) - 1  # the last entry below ``lower``: rows before it are too
        start = rows[before] if before >= 0 else 0
    stop = run.num_rows
    if upper is not None:
        after = bisect.bisect_left(run_keys, upper)  # the first entry at or above ``upper``: so are rows after it
        stop = rows[after] if after < len(rows) else run.num_rows
    if start >= stop:
        return None
    return ChunkRef(run.path, stop - start, run.schema, (start, stop), run.origin)


def _within(tables: Iterator[pa.Table], spec: RangeInput) -> Iterator[pa.Table]:
    """The merged rows whose keys are in the shard's range, without the sort's columns."""
    for table in tables:
        keys = table.column(K.SORT)
        masks = []
        if spec.lower is not None:
            masks.append(pc.greater_equal(keys, pa.scalar(spec.lower, pa.binary())))
        if spec.upper is not None:
            masks.append(pc.less(keys, pa.scalar(spec.upper, pa.binary())))
        if masks:
            table = table.filter(masks[0] if len(masks) == 1 else pc.and_(*masks))
        yield K.without_shuffle_columns(table)
    yield K.without_shuffle_columns(spec.schema.empty_table())  # an empty shard still has the columns
