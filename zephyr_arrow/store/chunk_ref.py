"""ChunkRef: a reference to one chunk, a Parquet file (or a row range of one)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from zephyr_arrow.errors import ChunkCorruptError, ChunkMissingError, ZephyrError
from zephyr_arrow.fs import atomic_output, exists, is_local, is_store_failure, open_parquet, store_operation

if TYPE_CHECKING:
    import polars as pl

# Intermediate chunks are written once and read once, so speed beats size. Measured on
# 25k web documents (60 MB in Arrow, pyarrow 26): uncompressed they write 4x and read 2x
# as fast as with lz4 (0.037 s vs 0.14 s, 0.013 s vs 0.027 s), which saves only 28% of
# the bytes. Local chunks live in the page cache for the few seconds until they are read,
# so they are not compressed; on object stores, where bytes cost more than CPU, lz4.
REMOTE_CHUNK_COMPRESSION = "lz4"


def chunk_compression(path: str) -> str:
    """How chunks at ``path`` are compressed: not at all locally, lz4 on an object store."""
    return "none" if is_local(path) else REMOTE_CHUNK_COMPRESSION


ROW_GROUP_ROWS = 64 * 1024
# Reading one row group at a time in batches of this many rows bounds a reader's memory
# by the batch, not the file: pyarrow's whole-file batch reader reads row groups ahead
# (a 150 MB chunk peaked at 400 MB of Arrow memory that way, at 80 MB this way).
READ_BATCH_ROWS = 16 * 1024


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of a stage's output: a Parquet file, or rows ``[start, stop)`` of one.

    ``num_rows`` and ``schema`` are known without opening the file.

    >>> ref = ChunkRef.write("/tmp/zephyr-doc/chunk.parquet", [{"a": 1}, {"a": 2}])
    >>> ref.num_rows, ref.read().column("a").to_pylist()
    (2, [1, 2])
    """

    path: str
    num_rows: int
    schema: pa.Schema
    row_range: tuple[int, int] | None = None
    # The user's input files its rows came from, where one task's input says (error messages name them).
    origin: str | None = None
    # Written by zephyr_arrow, with page checksums, which every view checks (``verify.py``); False for
    # a user's own Parquet file (``read_parquet``), which is read as it is.
    checksummed: bool = True

    @property
    def described(self) -> str:
        """The chunk for a message: its input files first, when known, then its path."""
        return f"rows from {self.origin} (chunk {self.path})" if self.origin else self.path

    @classmethod
    def write(cls, path: str, data: Any, *, compression: str | None = None) -> ChunkRef:
        """Write ``data`` (pa.Table, RecordBatch, polars DataFrame or list of rows) atomically.

        A failure at any point leaves neither ``path`` nor a temporary file behind.
        """
        table = as_table(data)
        compression = compression or chunk_compression(path)
        with atomic_output(path) as tmp:
            if tmp.is_local:
                pq.write_table(table, tmp.path, compression=compression, row_group_size=ROW_GROUP_ROWS, write_page_checksum=True)
            else:
                with tmp.open() as sink:
                    pq.write_table(table, sink, compression=compression, row_group_size=ROW_GROUP_ROWS, write_page_checksum=True)
        return cls(path=path, num_rows=table.num_rows, schema=table.schema)

    def slice(self, start: int, stop: int) -> ChunkRef:
        """A reference to rows ``[start, stop)`` of this chunk; nothing is read or written."""
        if not 0 <= start <= stop <= self.num_rows:
            raise ValueError(f"row range [{start}, {stop}) is outside chunk {self.path} of {self.num_rows} rows")
        offset = self.row_range[0] if self.row_range else 0
        if start == 0 and stop == self.num_rows:
            return self
        return replace(self, num_rows=stop - start, row_range=(offset + start, offset + stop))

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The chunk's rows as one table (projected to ``columns`` if given)."""
        batches = list(self.iter_batches(columns=columns))
        schema = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
        return pa.Table.from_batches(batches, schema=schema)

    def iter_batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Stream the chunk one row group at a time."""
        with self.opened() as parquet:
            row_groups, skip = self._row_groups(parquet.metadata)
            remaining = self.num_rows
            for row_group in row_groups:
                for batch in parquet.iter_batches(row_groups=[row_group], columns=columns, batch_size=READ_BATCH_ROWS):
                    if skip:
                        dropped = min(skip, batch.num_rows)
                        batch, skip = batch.slice(dropped), skip - dropped
                    batch = batch.slice(0, min(remaining, batch.num_rows))
                    remaining -= batch.num_rows
                    if batch.num_rows:
                        yield batch
                    if remaining == 0:
                        return

    def scan(self) -> pl.LazyFrame:
        """A Polars LazyFrame over the chunk (projection and predicates push down locally)."""
        import polars as pl

        if not is_local(self.path):
            return pl.from_arrow(self.read()).lazy()
        from zephyr_arrow.store.verify import verify  # which imports this module

        verify([self])  # Polars does not check page checksums
        frame = pl.scan_parquet(self.path)
        if self.row_range is not None:
            frame = frame.slice(self.row_range[0], self.num_rows)
        return frame

    def _row_groups(self, metadata: pq.FileMetaData) -> tuple[list[int], int]:
        """The row groups that hold this ref's rows, and how many leading rows of them to skip."""
        if self.row_range is None:
            return list(range(metadata.num_row_groups)), 0
        start, stop = self.row_range
        groups, first_row = row_groups_covering(metadata, start, stop)
        return groups, start - first_row

    @contextlib.contextmanager
    def opened(self, metadata: pq.FileMetaData | None = None, buffer_size: int = 0) -> Iterator[pq.ParquetFile]:
        """The chunk's file, open (``fs.open_parquet``: pages are checked against their checksums as
        they are read). A missing file is ChunkMissingError; one that fails a check, is truncated or
        is not Parquet, ChunkCorruptError; both name it."""
        with store_operation("reading chunk", self.path):
            try:
                parquet = open_parquet(self.path, metadata=metadata, buffer_size=buffer_size)
            except FileNotFoundError as error:
                raise self._missing() from error
            except (OSError, pa.ArrowException) as error:
                if not self._is_store_failure(error):
                    raise self._corrupt(error) from error
                raise  # store_operation names it
            with parquet:
                try:
                    yield parquet
                except (OSError, pa.ArrowException) as error:  # from reading pages, in the body
                    if isinstance(error, ZephyrError) or self._is_store_failure(error):
                        raise
                    raise self._corrupt(error) from error

    def _is_store_failure(self, error: BaseException) -> bool:
        """A remote store that fails to answer has not corrupted the chunk."""
        return not is_local(self.path) and is_store_failure(error)

    def _corrupt(self, error: BaseException) -> ChunkCorruptError:
        return ChunkCorruptError(
            f"chunk {self.path} cannot be read as it was written ({error}); it was changed or cut "
            "short after it was written: rerun what produced it",
            self.path,
        )

    def _missing(self) -> ChunkMissingError:
        if exists(self.path.rsplit("/", 1)[0]):  # a context deletes a run's or a stage's whole directory
            return ChunkMissingError(
                f"chunk file {self.path} no longer exists, though its directory does: no ZephyrContext "
                "deleted it, something else did (another process, a clean-up job, the disk). Run again "
                "what produced it.",
                self.path,
            )
        return ChunkMissingError(
            f"chunk file {self.path} no longer exists. Chunks of a run are deleted when its "
            "ZephyrContext closes (pass preserve_chunks=True to keep them, or save the output "
            "with ShardRefs.save(dir) before closing).",
            self.path,
        )


def row_groups_covering(metadata: pq.FileMetaData, start: int, stop: int) -> tuple[list[int], int]:
    """The row groups overlapping file rows ``[start, stop)``, and the file row the first one starts at."""
    groups: list[int] = []
    first_row = group_start = 0
    for index in range(metadata.num_row_groups):
        group_stop = group_start + metadata.row_group(index).num_rows
        if group_start < stop and start < group_stop:
            if not groups:
                first_row = group_start
            groups.append(index)
        group_start = group_stop
    return groups, first_row


def as_table(data: Any) -> pa.Table:
    """Coerce a chunk's data (pa.Table, RecordBatch, polars DataFrame, list of rows) to a table."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, list):
        from zephyr_arrow.arrow.rows import rows_to_table

        return rows_to_table(data)
    if type(data).__module__.startswith("polars"):
        return data.to_arrow()
    raise TypeError(f"cannot write a chunk from {type(data).__name__}; give a pa.Table, RecordBatch, polars DataFrame or list of rows")
