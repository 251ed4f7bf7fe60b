"""Vortex files (the ``vortex-data`` package, ``pip install 'zephyr_arrow[vortex]'``), read and written as Arrow.

A Vortex file is read batch by batch through its Arrow reader; one is written from a stream of
tables, all cast to the first one's schema, atomically like every writer here. Paths that are
not local are copied through a local temporary file (Vortex opens local files only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from zephyr_arrow.arrow.rows import without_absent
from zephyr_arrow.arrow.schema import normalize
from zephyr_arrow.errors import InputFileError, PlanError
from zephyr_arrow.fs import atomic_output, filesystem, is_local
from zephyr_arrow.io.batches import BATCH_ROWS, cast_to_schema, filter_and_project, needed_columns, slices

if TYPE_CHECKING:
    import polars as pl


def _vortex() -> Any:
    try:
        import vortex
    except ImportError as error:
        raise PlanError(
            "reading or writing Vortex files needs the vortex-data package: pip install 'zephyr_arrow[vortex]'"
        ) from error
    return vortex


@contextlib.contextmanager
def _local_copy(path: str) -> Iterator[str]:
    if is_local(path):
        yield path.removeprefix("file://")
        return
    fs, fs_path = filesystem(path)
    with tempfile.TemporaryDirectory(prefix="zephyr-vortex-") as directory:
        local = os.path.join(directory, "input.vortex")
        with fs.open(fs_path, "rb") as source, open(local, "wb") as target:
            shutil.copyfileobj(source, target, 8 << 20)
        yield local


def read_vortex(
    path: str,
    columns: list[str] | None = None,
    filter: pl.Expr | None = None,
    row_range: tuple[int, int] | None = None,
    keep: Iterable[str] | None = None,
) -> Iterator[pa.Table]:
    """Batches of a Vortex file, as ``read_parquet`` gives a Parquet file's (same arguments)."""
    vortex = _vortex()
    with _local_copy(path) as local:
        try:
            reader = vortex.open(local).to_arrow()
        except FileNotFoundError as error:
            raise InputFileError(f"input file not found: {path}") from error
        except Exception as error:  # Vortex raises its own errors for files it cannot read
            raise InputFileError(f"{path} is not a readable Vortex file: {error}") from error
        position = 0
        start, stop = row_range or (0, None)
        keep = None if keep is None else frozenset(keep)
        for batch in reader:
            table = normalize(pa.Table.from_batches([batch]))
            first, position = position, position + table.num_rows
            if stop is not None and first >= stop:
                break
            table = table.slice(max(start - first, 0), None if stop is None else stop - max(start, first))
            if columns is None and keep is not None:
                table = table.select([name for name in table.column_names if name in keep] or table.column_names)
            missing = [name for name in needed_columns(columns, filter) or [] if name not in table.column_names]
            if missing:
                raise InputFileError(f"{path} has no column(s) {missing}; it has {table.column_names}")
            table = filter_and_project(table, columns, filter)
            if table.num_rows:
                yield from slices(table) if table.num_rows > BATCH_ROWS else [table]


def write_vortex_file(batches: Iterable[pa.Table], path: str, schema: pa.Schema | None = None) -> int:
    """Write the batches to one Vortex file, atomically; return the row count. Batches are cast to
    ``schema``, or to the first batch's (SchemaConflictError names a column that won't cast)."""
    from zephyr_arrow.io.writers import plain_tables

    vortex = _vortex()
    tables = (without_absent(table) for table in plain_tables(batches, path))
    first = next((table for table in tables if table.num_rows), None)
    target = schema or (first.schema if first is not None else pa.schema([]))
    count = 0

    def arrays() -> Iterator[Any]:
        nonlocal count
        for table in ([first] if first is not None else []):
            count += table.num_rows
            yield vortex.Array.from_arrow(cast_to_schema(table, target, path))
        for table in tables:
            if table.num_rows:
                count += table.num_rows
                yield vortex.Array.from_arrow(cast_to_schema(table, target, path))

    with atomic_output(path, replace_stale=True) as temp, tempfile.TemporaryDirectory(prefix="zephyr-vortex-") as directory:
        local = temp.path if temp.is_local else os.path.join(directory, "output.vortex")
        if first is None:
            vortex.io.write(target.empty_table(), local)
        else:
            vortex.io.write(vortex.ArrayIterator.from_iter(vortex.DType.from_arrow(target, non_nullable=True), arrays()), local)
        if not temp.is_local:
            temp.fs.put_file(local, temp.path)
    return count
