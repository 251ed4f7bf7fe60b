"""Parquet inputs, read row group by row group."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from zephyr_arrow.arrow.tables import kept
from zephyr_arrow.errors import InputFileError, PlanError
from zephyr_arrow.fs import open_parquet
from zephyr_arrow.io.batches import BATCH_ROWS, filter_and_project, needed_columns
from zephyr_arrow.io.formats import input_errors
from zephyr_arrow.store.chunk_ref import row_groups_covering

if TYPE_CHECKING:
    import polars as pl


def read_parquet(
    path: str,
    columns: list[str] | None = None,
    filter: pl.Expr | None = None,
    row_range: tuple[int, int] | None = None,
    keep: Iterable[str] | None = None,
) -> Iterator[pa.Table]:
    """Batches of a Parquet file, read row group by row group through ``pq.ParquetFile``.

    ``filter`` is a Polars expression applied per batch (the columns it uses are read and then
    dropped unless projected); ``row_range=(start, stop)`` reads file rows [start, stop) only,
    before the filter applies. ``columns`` must all be in the file; ``keep`` reads only those
    of its columns the file has.
    """
    if row_range is not None and not 0 <= row_range[0] <= row_range[1]:
        raise PlanError(f"row_range must be (start, stop) with 0 <= start <= stop, got {row_range!r}")
    return _read_parquet(path, columns, filter, row_range, None if keep is None else frozenset(keep))


@contextlib.contextmanager
def open_input(path: str) -> Iterator[pq.ParquetFile]:
    """The Parquet file at ``path``, open; one that is not Parquet is an InputFileError naming it."""
    try:
        parquet_file = open_parquet(path)
    except pa.ArrowInvalid as error:
        raise InputFileError(f"{path} is not a valid Parquet file: {error}") from error
    with parquet_file:
        yield parquet_file


def _read_parquet(
    path: str,
    columns: list[str] | None,
    filter: pl.Expr | None,
    row_range: tuple[int, int] | None,
    keep: frozenset[str] | None,
) -> Iterator[pa.Table]:
    with input_errors(path), open_input(path) as parquet_file:
        if columns is None and keep is not None:
            columns = kept(parquet_file.schema_arrow.names, keep)
        needed = needed_columns(columns, filter)
        missing = [name for name in needed or [] if name not in parquet_file.schema_arrow.names]
        if missing:
            raise InputFileError(f"{path} has no column(s) {missing}; it has {parquet_file.schema_arrow.names}")
        start, stop = row_range or (0, parquet_file.metadata.num_rows)
        groups, position = row_groups_covering(parquet_file.metadata, start, stop)
        # One row group at a time: a whole-file batch reader reads row groups ahead.
        batches = (
            batch
            for group in groups
            for batch in parquet_file.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=needed)
        )
        for batch in batches:
            # Batches follow each other through the row groups, so file row positions follow from their lengths.
            if position >= stop:
                break
            offset = max(start - position, 0)
            table = pa.Table.from_batches([batch]).slice(offset, stop - position - offset)
            position += batch.num_rows
            table = filter_and_project(table, columns, filter)
            if table.num_rows:
                yield table
