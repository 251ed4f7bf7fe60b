"""Sorted runs on disk, and their k-way merge in memory bounded by (runs x row group).

A run is a ``ChunkRef`` (usually a row range of a map task's file) whose rows are sorted
by the shuffle's order columns (see ``keys.py``). Run files are written with small row
groups (``RUN_ROW_GROUP_BYTES``), and a merge reads each run one row group at a time:
Parquet readers decode a whole row group whatever the batch size, so the row group is
the unit of memory. ``merge_runs`` streams runs into one sorted stream of tables,
vectorised: each round picks a bound, the smallest among every run's row about
``ROUND_BYTES`` / runs past what it has given (or its row group's last row, if nearer),
takes from every run's current row group the rows up to that bound (each is already in
memory, because each run is sorted) and sorts them with Arrow. A consumer that orders
only the few columns it needs (deduplicate) asks for the rounds unsorted: every row of a
table still comes after every row of the tables before it. A round holds at most one row
group per run and about ``ROUND_BYTES``, and takes at least one row, so memory is bounded
by (runs x row group + a few ``ROUND_BYTES``), never by the shard or a
group. ``merged`` merges more than ``MERGE_FAN_IN`` runs in passes through temporary
files first.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zephyr_arrow.arrow.schema import conform
from zephyr_arrow.arrow.tables import contiguous, grouped_by_bytes, rows_per_slice, take, take_in_slices
from zephyr_arrow.execution import stats
from zephyr_arrow.fs import remove_quietly, remove_tree
from zephyr_arrow.store import ChunkRef
from zephyr_arrow.store.chunk_writer import ChunkFile

MERGE_FAN_IN = 32  # runs merged at once (more are merged in passes first)
RUN_ROW_GROUP_BYTES = 1024 * 1024  # what a merge holds per run: a merge holds about MERGE_FAN_IN x this
# About what a merge round takes from all runs together. Exact dedup of the medium corpus
# (PSS over 3 processes, runs of 3) peaked at 391-398 MB with 8 MB rounds, 374-391 with 4 MB
# and 360-364 with 2 MB, at 2-6% more time than 4 MB (4.9 s instead of 4.6-4.8).
ROUND_BYTES = 2 * 1024 * 1024
_READ_BUFFER_BYTES = 64 * 1024  # a small read buffer keeps what each open run holds small


class SortedFile(ChunkFile):
    """A Parquet file written from sorted tables, moved into place on ``close``.

    Each ``write`` starts a new row group, so a row range that begins at a write
    boundary is read from its own row groups.
    """

    def __init__(self, path: str, schema: pa.Schema) -> None:
        # Runs are read once, by the merge, never filtered: no statistics.
        super().__init__(path, schema, write_statistics=False)

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        super().write(conform(table, self.schema), row_group_size=rows_per_slice(table, RUN_ROW_GROUP_BYTES))


def read_run(run: ChunkRef, schema: pa.Schema, footers: dict[str, pq.FileMetaData] | None = None) -> Iterator[pa.Table]:
    """The run's rows conformed to ``schema``, one row group at a time.

    ``footers`` caches files' metadata by path: a scatter task's file holds a run per sort
    buffer for each output shard, so one merge opens it several times.
    """
    footers = {} if footers is None else footers
    with run.opened(footers.get(run.path), _READ_BUFFER_BYTES) as parquet:
        metadata = footers.setdefault(run.path, parquet.metadata)
        start, stop = run.row_range or (0, metadata.num_rows)
        group_start = 0
        for group in range(metadata.num_row_groups):
            group_rows = metadata.row_group(group).num_rows
            lo, hi = max(start - group_start, 0), min(stop - group_start, group_rows)
            group_start += group_rows
            if lo < hi:
                table = parquet.read_row_group(group)
                yield conform(table.slice(lo, hi - lo), schema)
            if group_start >= stop:
                return


def merge_runs(runs: list[ChunkRef], order: list[str], schema: pa.Schema, sort: bool = True) -> Iterator[pa.Table]:
    """The rows of ``runs`` (each sorted by ``order``) as tables in ascending ``order``; with
    ``sort=False`` the rows within each table are left unsorted (each run's part in order).

    Consecutive rounds are yielded together up to ``ROUND_BYTES``, so what a consumer does per
    table (a Polars query, a write) is paid per few MB, not per row group.
    """
    for group in grouped_by_bytes(_rounds(runs, order, schema, sort), ROUND_BYTES):
        yield pa.concat_tables(group) if len(group) > 1 else group[0]


def _rounds(runs: list[ChunkRef], order: list[str], schema: pa.Schema, sort: bool) -> Iterator[pa.Table]:
    footers: dict[str, pq.FileMetaData] = {}
    readers = [read_run(run, schema, footers) for run in runs]
    heads = [_Head.of(next(reader, None), order) for reader in readers]
    while True:
        live = [index for index, head in enumerate(heads) if head is not None]
        if len(live) <= 1:
            for index in live:
                yield heads[index].rest()
                yield from readers[index]
            return
        # At most about ROUND_BYTES per round, from every run alike: a round up to each run's
        # row group end would hold (runs x row group), twice over while it is sorted or taken.
        share = ROUND_BYTES // len(live)
        bound = min(heads[index].bound(share) for index in live)
        parts = []
        for index in live:
            head = heads[index]
            part = head.take_not_above(bound)
            if part is not None:
                parts.append(part)
            if head.done:
                heads[index] = _Head.of(next(readers[index], None), order)
        if len(parts) == 1:
            yield parts[0]
        elif sort:
            yield from sorted_slices(pa.concat_tables(parts), order)
        else:
            yield pa.concat_tables(parts)


class _Head:
    """A run's current row group and how far the merge has taken it.

    Rounds are cut with ``bisect`` on the first order column's values, read into Python once;
    the other order columns are read only when a round's bound ties with rows on the first
    (always in a group_by, whose first column is the key; rarely where it is a hash). Reading
    every order column of every row as tuples took a third of an aggregate's reduce.
    """

    __slots__ = ("table", "order", "first", "others", "last", "start", "row_bytes")

    def __init__(self, table: pa.Table, order: list[str]) -> None:
        self.table = table
        self.order = order
        self.first = table.column(order[0]).to_pylist()
        self.others: list | None = None  # the other order columns' values (tuples if several), once a tie needs them
        self.last = self._key(table.num_rows - 1)
        self.start = 0
        self.row_bytes = max(table.nbytes // table.num_rows, 1)

    def _key(self, row: int) -> tuple:
        return tuple(self.table.column(name)[row].as_py() for name in self.order)

    def bound(self, num_bytes: int) -> tuple:
        """The key of the row where this head's next ``num_bytes`` end (its last row, if fewer are left)."""
        row = self.start + num_bytes // self.row_bytes
        return self.last if row >= len(self.first) - 1 else self._key(row)

    @classmethod
    def of(cls, table: pa.Table | None, order: list[str]) -> _Head | None:
        return None if table is None else cls(table, order)

    @property
    def done(self) -> bool:
        return self.start == len(self.first)

    def take_not_above(self, bound: tuple) -> pa.Table | None:
        """The rows left whose keys are <= ``bound`` (None if there are none)."""
        if self.last <= bound:
            stop = len(self.first)
        else:
            stop = bisect.bisect_right(self.first, bound[0], lo=self.start)
            ties = bisect.bisect_left(self.first, bound[0], lo=self.start, hi=stop)
            if ties < stop and len(self.order) > 1:  # rows equal to the bound on the first column
                if self.others is None:
                    columns = [self.table.column(name).to_pylist() for name in self.order[1:]]
                    self.others = columns[0] if len(columns) == 1 else list(zip(*columns))
                rest = bound[1] if len(self.order) == 2 else bound[1:]
                stop = bisect.bisect_right(self.others, rest, lo=ties, hi=stop)
        if stop == self.start:
            return None
        part = self.table.slice(self.start, stop - self.start)
        self.start = stop
        return part

    def rest(self) -> pa.Table:
        return self.table.slice(self.start)


def sort_table(table: pa.Table, order: list[str]) -> pa.Table:
    return take(table, sorted_indices(table, order))


def sorted_slices(table: pa.Table, order: list[str]) -> Iterator[pa.Table]:
    """``table`` sorted by ``order``, in tables of about a run's row group."""
    table = contiguous(table)
    return take_in_slices(table, sorted_indices(table, order), rows_per_slice(table, RUN_ROW_GROUP_BYTES))


def sorted_indices(table: pa.Table, order: list[str]) -> pa.Array:
    """The indices of ``table``'s rows sorted by the ``order`` columns, ascending."""
    return pc.sort_indices(table.select(order), sort_keys=[(name, "ascending") for name in order])


@contextlib.contextmanager
def merged(
    runs: list[ChunkRef], order: list[str], schema: pa.Schema, spill_path: Callable[[int], str], sort: bool = True
) -> Iterator[Iterator[pa.Table]]:
    """``merge_runs`` over any number of runs: past ``MERGE_FAN_IN``, merge in passes through
    files named ``spill_path(n)`` first (deleted on exit)."""
    spilled: list[str] = []
    try:
        while len(runs) > MERGE_FAN_IN:
            next_runs = []
            for start in range(0, len(runs), MERGE_FAN_IN):
                group = runs[start : start + MERGE_FAN_IN]
                if len(group) == 1:
                    next_runs.append(group[0])
                    continue
                out = SortedFile(spill_path(len(spilled)), schema)
                spilled.append(out.path)
                stats.count(stats.SHUFFLE_FILES)
                try:
                    for table in merge_runs(group, order, schema):
                        out.write(table)
                except BaseException:
                    out.abort()
                    raise
                next_runs.append(out.close())
            # An earlier pass's files merged in this one are done with (one carried over is not).
            for path in ({r.path for r in runs} - {r.path for r in next_runs}) & set(spilled):
                remove_tree(path)
            runs = next_runs
        yield merge_runs(runs, order, schema, sort)
    finally:
        for path in spilled:
            remove_quietly(path)
