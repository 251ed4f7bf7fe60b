"""Read and write the files a pipeline starts from and ends in: JSONL, Parquet and CSV.

Readers are generators of ``pa.Table`` batches of at most ``BATCH_ROWS`` rows, so a file of any
size is read in bounded memory. Paths are local paths or fsspec URLs (``memory://``, ``s3://``...);
JSONL and CSV files are decompressed by extension (``.gz``, ``.zst``/``.zstd``, ``.xz``, ``.bz2``).

Text formats (JSONL, CSV) are cut into pieces of whole records of about ``PIECE_BYTES``, each
parsed by Arrow's multithreaded parsers while a background thread reads the next one. Types are
inferred per piece and only ever widen within a file (a column null so far may become a string,
an int a float, a column may appear late): a batch holds every column seen so far, earlier
batches keep their narrower types, and consumers unify with
``pa.unify_schemas(promote_options="permissive")`` as ``write_parquet_file`` does. JSON strings
stay strings (Arrow would otherwise turn ISO-looking ones into timestamps); CSV keeps Arrow's
inference. A requested column a text file lacks reads as nulls; a Parquet file must have it.

Writers are atomic: they write ``{path}.tmp-{uuid}`` beside the target and move it into place,
so a failed write leaves nothing at ``path``. They stream their input and return the row count.

Modules: ``formats`` (paths to formats and codecs, byte streams), ``text`` (JSONL and CSV),
``parquet``, ``writers``, and ``batches`` (the schema and projection helpers they share).

    >>> import pyarrow as pa
    >>> write_parquet_file([pa.table({"x": [1, 2]})], "memory://doc/x.parquet")
    2
    >>> [t.num_rows for t in read_file("memory://doc/x.parquet")]
    [2]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from zephyr_arrow.arrow.tables import kept
from zephyr_arrow.io.batches import BATCH_ROWS, filter_and_project, needed_columns
from zephyr_arrow.io.formats import format_of
from zephyr_arrow.io.parquet import read_parquet
from zephyr_arrow.io.text import read_csv, read_jsonl
from zephyr_arrow.io.writers import write_csv_file, write_jsonl_file, write_parquet_file

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "BATCH_ROWS",
    "format_of",
    "read_file",
    "read_jsonl",
    "read_parquet",
    "read_csv",
    "write_parquet_file",
    "write_jsonl_file",
    "write_csv_file",
]


def read_file(
    path: str,
    columns: list[str] | None = None,
    filter: pl.Expr | None = None,
    file_format: str | None = None,
    keep: Iterable[str] | None = None,
    span: tuple[int, int] | None = None,
) -> Iterator[pa.Table]:
    """Batches of a JSONL, Parquet, CSV or Vortex file: ``file_format``, or picked by extension (see ``format_of``).

    ``columns`` projects (see the readers); ``keep`` (without ``columns``) names the columns the
    caller uses, so the others may be skipped; the filter's columns are read for it either way.
    ``span``: a ``FilePiece``'s (start, stop), rows of a Parquet file or bytes of a text file.
    """
    file_format = file_format or format_of(path)
    if file_format == "parquet":
        return read_parquet(path, columns, filter, row_range=span, keep=keep)
    if file_format == "vortex":
        from zephyr_arrow.io.vortex import read_vortex

        return read_vortex(path, columns, filter, row_range=span, keep=keep)
    reader = read_jsonl if file_format == "jsonl" else read_csv
    if columns is None and keep is not None:
        keep = frozenset(keep)
        tables = reader(path, keep=keep.union(filter.meta.root_names()) if filter is not None else keep, byte_range=span)
        if filter is None:
            return tables
        return (t.select(kept(t.column_names, keep)) for t in _filtered(tables, None, filter))
    return _filtered(reader(path, needed_columns(columns, filter), byte_range=span), columns, filter)


def _filtered(tables: Iterator[pa.Table], columns: list[str] | None, filter: pl.Expr | None) -> Iterator[pa.Table]:
    if filter is None:
        return tables
    return (t for t in (filter_and_project(t, columns, filter) for t in tables) if t.num_rows)
