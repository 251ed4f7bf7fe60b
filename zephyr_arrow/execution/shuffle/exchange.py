"""What each shuffle op's module provides (``Exchange``), and the hash shuffle most of them share.

    SCATTER task:  the stage's ops, then ``scatter(stage, task, tables)``: sorted runs on disk
    coordinator:   ``reduce_inputs(op, runs, num_output_shards)``: one task input per output shard,
                   from the runs' ChunkRefs alone (row counts, row ranges, schemas): no data read
    reduce task:   ``reduce(stage, task, rows_in)``: the output shard's rows, which the ops fused
                   after the shuffle then transform

A hash shuffle (``HashExchange``: group_by, deduplicate, aggregate, join) adds the shuffle
columns to each batch (``keys.py``: the key's stable hash or encoded key, and the row's input
position), buffers up to ``SORT_BUFFER_BYTES`` and writes each full buffer as one *run*,
sorted by (output shard, order): one file per task, one row-group-aligned segment per output
shard, each a ranged ``ChunkRef`` (``runs.py``). So M map tasks write M files, not M x N. Only
the columns the reduce side reads are moved (``Op.carried_columns``, where known). Each op
says how its keys are made (``keys``) and may reduce a buffer before it is written
(``sorted_run``: a combiner, dedup within the run, partial aggregates). Output shard i merges
its segments k-way (``merge.py``) and the op reduces the merged stream (``MergeExchange.reduce_merged``;
a join merges both sides, ``join.py``).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa

from zephyr_arrow import ops
from zephyr_arrow.arrow.rows import is_item_schema
from zephyr_arrow.arrow.schema import concat_unified, unify, with_absent_column
from zephyr_arrow.arrow.stream import RowCount, Stream
from zephyr_arrow.errors import PlanError, ZephyrError
from zephyr_arrow.execution import stats
from zephyr_arrow.execution.shuffle import keys as K
from zephyr_arrow.execution.shuffle.merge import merged, sorted_indices
from zephyr_arrow.execution.shuffle.runs import RunFiles
from zephyr_arrow.execution.tasks import MergeInput, ReduceInput, ShardTask, StageResult
from zephyr_arrow.planner import Stage
from zephyr_arrow.store import ShardRefs, layout

SORT_BUFFER_BYTES = 32 * 1024 * 1024  # rows a map task sorts at once (Arrow bytes); one run each
_SHUFFLE_FIELDS = {K.HASH: pa.uint64(), K.KEY: pa.binary(), K.POSITION: pa.int64()}


class Exchange(abc.ABC):
    """How one shuffle or join op moves rows between shards: its map, coordinator and reduce sides."""

    def scatter(self, stage: Stage, task: ShardTask, tables: Iterable[pa.Table]) -> list[StageResult]:
        """Cut ``tables`` (the task's shard, after the stage's ops) into runs for the reduce side."""
        raise TypeError(f"{stage.boundary!r} has no map side")

    @abc.abstractmethod
    def reduce_inputs(self, op: ops.Op, inputs: list[ShardRefs], num_output_shards: int) -> list[ReduceInput]:
        """One input per output shard, from the runs (or shards) of each side; reads no data."""

    @abc.abstractmethod
    def reduce(self, stage: Stage, task: ShardTask, rows_in: RowCount) -> contextlib.AbstractContextManager[Stream]:
        """The rows of output shard ``task.shard_index``, counting what it reads in ``rows_in``."""


class HashExchange(Exchange):
    """A shuffle that cuts runs by the stable hash of the key (see the module docstring)."""

    sorts_rounds = True  # whether the merge sorts each round (deduplicate orders only a round's order columns)

    @abc.abstractmethod
    def keys(self, op: ops.Op, side: int = 0) -> K.ShuffleKeys:
        """How input ``side`` (0 left or only, 1 right) is keyed, and the order its runs are sorted in."""

    def sorted_run(self, op: ops.Op, keys: K.ShuffleKeys, table: pa.Table) -> tuple[pa.Table, pa.Array | None]:
        """One run from a buffer of rows: its rows and the order to write them in (None: as they are).

        The run is taken in that order from the batches as they are (``take_by_batch``) and
        written a row group at a time, so a scatter holds its buffer once and a few MB more.
        """
        return table, sorted_indices(table, [K.TARGET, *keys.order])

    def scatter(self, stage: Stage, task: ShardTask, tables: Iterable[pa.Table]) -> list[StageResult]:
        op = stage.boundary
        keys = self.keys(op, stage.side)
        columns = op.carried_columns()
        num_output_shards = task.input.num_output_shards
        files = RunFiles(task.chunk_path)
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
                    files.write(*self.sorted_run(op, keys, buffered_table(pending)))
                    pending_bytes = 0
            if pending:
                files.write(*self.sorted_run(op, keys, buffered_table(pending)))
            if schema is None:  # no batch at all: the shuffle columns alone
                schema = K.add_shuffle_columns(pa.table({}), keys, num_output_shards, position)[0].schema
            outputs = files.close(schema)
        except BaseException:
            files.abort()
            raise
        stats.count(stats.SHUFFLE_FILES, len({output.chunk.path for output in outputs}))
        return outputs


class MergeExchange(HashExchange):
    """A hash shuffle of one input: output shard i merges its runs from every scatter task and reduces them."""

    @abc.abstractmethod
    def reduce_merged(self, op: ops.Op, tables: Iterator[pa.Table], schema: pa.Schema) -> Stream:
        """The reduced rows of one output shard's merged runs (``tables``, in ``keys.order``)."""

    def reduce_inputs(self, op: ops.Op, inputs: list[ShardRefs], num_output_shards: int) -> list[ReduceInput]:
        (runs,) = inputs
        check_hashed_alike(op, inputs)
        schema = run_schema(op, self.keys(op), runs)
        return [MergeInput(tuple(shard_runs), schema) for shard_runs in runs.shards]

    @contextlib.contextmanager
    def reduce(self, stage: Stage, task: ShardTask, rows_in: RowCount) -> Iterator[Stream]:
        op, spec = stage.boundary, task.input
        keys = self.keys(op)
        with merged(list(spec.runs), keys.order, spec.schema, spill_path(task, 0), self.sorts_rounds) as tables:
            yield self.reduce_merged(op, rows_in.tables(tables), spec.schema)


def buffered_table(tables: list[pa.Table]) -> pa.Table:
    """The buffered batches (emptied: the run holds them) as one table of their chunks; batches
    whose types differ (a file's types widen as it is read) are unified."""
    table = concat_unified(tables, [f"batch {index} of the run" for index in range(len(tables))])
    tables.clear()
    return table


def spill_path(task: ShardTask, side: int) -> Callable[[int], str]:
    """Where a reduce task writes the merge-pass files of input ``side`` (the executor deletes them with the stage)."""
    return lambda index: task.chunk_path(index, stage_dir=layout.spill_dir_name(task.stage_dir, side))


def check_hashed_alike(op: ops.Op, inputs: list[ShardRefs]) -> None:
    """Every run with rows was cut by the same hash; else equal keys may sit in different shards."""
    hashed_by = {(chunk.schema.metadata or {}).get(K.HASHED_BY) for runs in inputs for chunk in runs.chunks if chunk.num_rows}
    if len(hashed_by) > 1:
        found = ", ".join(sorted(repr(value.decode()) if value else "unrecorded" for value in hashed_by))
        raise ZephyrError(
            f"{op!r}: workers hashed keys differently ({found}), so equal keys may have gone to different "
            "shards; install the same Polars version on every worker"
        )


def run_schema(op: ops.Op, keys: K.ShuffleKeys, runs: ShardRefs, side: str | None = None) -> pa.Schema:
    """The schema every run of one input is read as: unified over the runs, with the key
    columns checked (when there are rows) and present (as nulls, when there are none)."""
    chunks = runs.chunks
    schema = unify([c.schema for c in chunks], [c.described for c in chunks])
    schema = with_absent_column(schema, [c.schema for c in chunks if c.num_rows])
    if keys.columns is not None:
        if runs.num_rows:
            check_key_columns(op, keys.columns, schema, side)
        schema = with_fields(schema, {name: pa.null() for name in keys.columns})
    return schema if chunks else with_fields(schema, _SHUFFLE_FIELDS)  # no runs: no scatter task ran


def with_fields(schema: pa.Schema, fields: dict[str, pa.DataType]) -> pa.Schema:
    """``schema`` with the named fields appended where it lacks them."""
    missing = [pa.field(name, type_) for name, type_ in fields.items() if name not in schema.names]
    return pa.schema([*schema, *missing], metadata=schema.metadata) if missing else schema


def check_key_columns(op: ops.Op, names: tuple[str, ...], schema: pa.Schema, side: str | None) -> None:
    where = f" on the {side} side" if side else ""
    if is_item_schema(schema):
        raise PlanError(f"{op!r}: key columns {list(names)} need dict rows, but the rows{where} are plain values; use a key function")
    missing = [name for name in names if name not in schema.names]
    if missing:
        columns = [name for name in schema.names if name not in K.INTERNAL]
        raise PlanError(f"{op!r}: no column {', '.join(map(repr, missing))}{where}; the rows have columns {columns}")
