"""Writers of the files a pipeline ends in, each atomic: written beside the target, then moved.

Users' files hold plain columns only: pickled columns are for chunks between stages. Rows that
are dataclasses are written as their fields (as Zephyr does); a value no output format holds
(a tuple, a set, an int in a column of strings) is an ``OutputTypeError`` naming the column,
the types and the row.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from zephyr_arrow.arrow.rows import (
    ABSENT_COLUMN,
    is_item_schema,
    pickled_columns,
    plain_arrow_type,
    rows_to_table,
    table_to_rows,
    without_absent,
)
from zephyr_arrow.arrow.tables import grouped_by_bytes
from zephyr_arrow.errors import OutputTypeError, SchemaConflictError
from zephyr_arrow.fs import atomic_output
from zephyr_arrow.io.batches import align, cast_to_schema, is_binary, reject_types, widen
from zephyr_arrow.io.formats import open_stream, split_codec

ROW_GROUP_ROWS = 128 * 1024
ROW_GROUP_BYTES = 128 << 20
# Measured on 200k web documents (330 MB in Arrow): zstd writes 166 MB in 1.3 s, snappy 306 MB in
# 0.5 s; zstd's smaller chunks read back faster, and chunks are read more often than written.
PARQUET_COMPRESSION = "zstd"


class _ParquetSink:
    """Writes row groups to one Parquet file, widening its schema when later batches need it.

    A ParquetWriter's schema is fixed, so when batches bring a new column or a wider type than
    was written (a null column turning into strings after the first row group), the file written
    so far is rewritten under the widened schema, one row group at a time. That costs one extra
    copy per widening, which in practice happens at most a few times per file. An explicit schema
    never widens: batches are cast to it. Closing (leaving the ``with``) writes the footer, and
    an empty file if nothing was written.
    """

    def __init__(self, fs: AbstractFileSystem, fs_path: str, schema: pa.Schema | None, where: str) -> None:
        self._fs = fs
        self._path = fs_path
        self._contract = schema
        self._where = where
        self._schema: pa.Schema | None = None  # what the open writer writes
        self._writer: pq.ParquetWriter | None = None
        self.num_rows = 0

    def write(self, tables: list[pa.Table]) -> None:
        schema = self._contract or self._widened([t.schema for t in tables])
        group = pa.concat_tables([cast_to_schema(t, schema, self._where) for t in tables])
        if self._writer is None:
            self._open(schema)
        elif not schema.equals(self._schema):
            self._rewrite(schema)
        if group.num_rows:
            self._writer.write_table(group, row_group_size=group.num_rows)
            self.num_rows += group.num_rows

    def _widened(self, schemas: list[pa.Schema]) -> pa.Schema:
        try:
            return widen([self._schema, *schemas] if self._schema else schemas)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise SchemaConflictError(f"{self._where}: batches disagree on a column's type: {error}") from error

    def _open(self, schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(self._path, schema, filesystem=self._fs, compression=PARQUET_COMPRESSION)
        self._schema = schema

    def _rewrite(self, schema: pa.Schema) -> None:
        self._writer.close()
        narrow_path = f"{self._path}.narrow"
        self._fs.mv(self._path, narrow_path)
        try:
            self._open(schema)
            with pq.ParquetFile(narrow_path, filesystem=self._fs) as narrow:
                for index in range(narrow.num_row_groups):
                    self._writer.write_table(cast_to_schema(narrow.read_row_group(index), schema, self._where))
        finally:
            self._fs.rm(narrow_path)

    def __enter__(self) -> _ParquetSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._writer is None and exc_type is None:
            self._open(self._contract or pa.schema([]))
        if self._writer is not None:
            self._writer.close()


def plain_tables(batches: Iterable[pa.Table], path: str) -> Iterator[pa.Table]:
    """``batches`` as a user's file holds them: dataclasses as their fields and tuples as lists
    (as Zephyr writes them), no pickled column (an ``OutputTypeError`` naming column, types and
    row instead). The absent-keys column stays, for the JSON writer; the others drop it."""
    first_row = 0
    for table in batches:
        if pickled_columns(table.schema):
            table = rows_to_table([_plain(row) for row in table_to_rows(table)])
            for name in pickled_columns(table.schema):
                raise _unwritable(table, name, path, first_row)
        first_row += table.num_rows
        yield table


def _plain(value: Any) -> Any:
    """``value`` with dataclasses turned into dicts of their fields and tuples into lists, at any depth."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if type(value) is dict:
        return {k: _plain(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return [_plain(v) for v in value]
    return value


def _unwritable(table: pa.Table, name: str, path: str, first_row: int) -> OutputTypeError:
    values = [row.get(name) if type(row) is dict else row for row in table_to_rows(table)]
    kinds = list(dict.fromkeys(type(v) for v in values if v is not None))
    # The row that shows it: the first of another type than the first value's, or the first value.
    index = next(i for i, v in enumerate(values) if v is not None and (len(kinds) == 1 or type(v) is not kinds[0]))
    named = " and ".join(f"{kind.__name__} ({plain_arrow_type(kind) or 'no Arrow type'})" for kind in kinds)
    column = "the rows" if is_item_schema(table.schema) else f"column {name!r}"
    return OutputTypeError(
        f"cannot write {column} to {path}: it holds {named} values (row {first_row + index}: {values[index]!r:.100}), "
        "and no column of an output file holds them; give it one plain type (str, int, float, bool, bytes, dates, "
        "lists, dicts) in a map first"
    )


def write_parquet_file(batches: Iterable[pa.Table], path: str, schema: pa.Schema | None = None) -> int:
    """Write the batches to one Parquet file (zstd, row groups of ~128k rows); return the row count.

    With ``schema``, every batch is cast to it (SchemaConflictError names a column that won't cast
    or is not in it); without, the file's schema is the permissive union of the batches' schemas.
    """
    batches = map(without_absent, plain_tables(batches, path))
    with atomic_output(path, replace_stale=True) as temp, _ParquetSink(temp.fs, temp.path, schema, where=path) as sink:
        for group in grouped_by_bytes(batches, ROW_GROUP_BYTES, ROW_GROUP_ROWS):
            sink.write(group)
    return sink.num_rows


def _write_text(batches: Iterable[pa.Table], path: str, write: Callable[[pa.Table, BinaryIO], None]) -> int:
    """Stream batches through ``write(table, stream)`` into ``path``, atomically."""
    num_rows = 0
    with atomic_output(path, replace_stale=True) as temp, open_stream(temp.fs, temp.path, "wb", split_codec(path)[1]) as stream:
        for table in plain_tables(batches, path):
            write(table, stream)
            num_rows += table.num_rows
    return num_rows


def write_jsonl_file(batches: Iterable[pa.Table], path: str) -> int:
    """Write the batches as JSON lines (compressed by extension); return the row count.

    Datetimes become ISO 8601 strings (``2024-01-02 03:04:05``), NaN and infinities null;
    binary columns raise PlanError.
    """

    import polars as pl

    def write(table: pa.Table, stream: BinaryIO) -> None:
        reject_types(table.schema, is_binary, path, "JSON has no binary type; decode or drop it first")
        if ABSENT_COLUMN not in table.column_names:
            pl.from_arrow(table).write_ndjson(stream)
            return
        # A row that lacked a key is written without it, as json.dumps of the row would.
        lines = pl.from_arrow(without_absent(table)).write_ndjson().splitlines()
        for line, lacks in zip(lines, table.column(ABSENT_COLUMN).to_pylist()):
            if lacks:
                record = json.loads(line)
                line = json.dumps({k: v for k, v in record.items() if k not in lacks}, ensure_ascii=False, separators=(",", ":"))
            stream.write(line.encode() + b"\n")

    return _write_text(batches, path, write)


def write_csv_file(batches: Iterable[pa.Table], path: str) -> int:
    """Write the batches as CSV with one header line (compressed by extension); return the row count.

    The first batch fixes the columns; later batches may lack some (written empty) but not add
    any. Nested columns raise PlanError.
    """
    header: list[str] | None = None

    def write(table: pa.Table, stream: BinaryIO) -> None:
        nonlocal header
        table = without_absent(table)
        reject_types(table.schema, pa.types.is_nested, path, "CSV holds flat values only")
        if header is not None:
            table = align(table, header, path)
        pcsv.write_csv(table, stream, pcsv.WriteOptions(include_header=header is None))
        header = table.column_names

    return _write_text(batches, path, write)
