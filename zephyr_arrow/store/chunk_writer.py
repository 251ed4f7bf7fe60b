"""Stream Arrow batches of one shard into chunk files.

Batches are buffered into row groups of about ``ROW_GROUP_ROWS`` rows (or
``ROW_GROUP_BYTES``), so a filter that leaves a few rows per batch does not make
thousands of tiny row groups. A file is closed and the next begun when it reaches
``CHUNK_BYTES``, or when a batch's schema does not fit the open file's (a column
changed type beyond what casting to the file's schema can hold); the chunks' schemas
are unified when the output is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from zephyr_arrow.arrow.schema import conform, keeps_absence
from zephyr_arrow.fs import atomic_output
from zephyr_arrow.store.chunk_ref import ROW_GROUP_ROWS, ChunkRef, chunk_compression

# What a task holds before writing a row group. At 64 MB a reduce task held its whole output shard
# (50 MB of documents in a medium exact dedup) next to its merge: 16 MB took 30 MB off that
# run's peak (summed over processes, 821 -> 788 MB) at the same speed.
ROW_GROUP_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 512 * 1024 * 1024


class ChunkWriter:
    """Write a stream of tables as chunk files named by ``path_for(chunk_index)``."""

    def __init__(self, path_for: Callable[[int], str]) -> None:
        self._path_for = path_for
        self.chunks: list[ChunkRef] = []
        self._buffer: list[pa.Table] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        self._file: ChunkFile | None = None
        self._last_schema: pa.Schema | None = None

    def write_all(self, tables: Iterable[pa.Table]) -> list[ChunkRef]:
        try:
            for table in tables:
                self.write(table)
            return self.close()
        except BaseException:
            self.abort()
            raise

    def write(self, table: pa.Table) -> None:
        self._last_schema = table.schema
        if table.num_rows == 0:
            return
        if self._buffer and not _fits(table.schema, self._buffer[0].schema):
            self._flush(end_file=True)
        if self._buffer and table.schema != self._buffer[0].schema:
            table = conform(table, self._buffer[0].schema)
        self._buffer.append(table)
        self._buffered_rows += table.num_rows
        self._buffered_bytes += table.nbytes
        if self._buffered_rows >= ROW_GROUP_ROWS or self._buffered_bytes >= ROW_GROUP_BYTES:
            self._flush(end_file=False)

    def close(self) -> list[ChunkRef]:
        self._flush(end_file=True)
        if not self.chunks and self._last_schema is not None:
            # An empty shard that saw a batch still yields one (empty) chunk carrying its schema;
            # one that saw none has nothing to carry (a file apiece cost 20,000 tasks that do
            # nothing 2 ms each: a directory and a Parquet writer).
            self.chunks.append(ChunkRef.write(self._path_for(0), self._last_schema.empty_table()))
        return self.chunks

    def abort(self) -> None:
        if self._file is not None:
            self._file.abort()
            self._file = None

    def _flush(self, end_file: bool) -> None:
        if self._buffer:
            table = pa.concat_tables(self._buffer)
            self._buffer, self._buffered_rows, self._buffered_bytes = [], 0, 0
            if self._file is not None and not _fits(table.schema, self._file.schema):
                self._finish_file()
            if self._file is None:
                self._file = ChunkFile(self._path_for(len(self.chunks)), table.schema)
            self._file.write(conform(table, self._file.schema))
            if self._file.bytes_in >= CHUNK_BYTES:
                self._finish_file()
        if end_file:
            self._finish_file()

    def _finish_file(self) -> None:
        if self._file is not None:
            self.chunks.append(self._file.close())
            self._file = None


def _fits(schema: pa.Schema, target: pa.Schema) -> bool:
    """Whether batches of ``schema`` can be cast to ``target`` without losing anything."""
    if schema == target:
        return True
    if not keeps_absence(schema, target):  # a new file, read under a schema that records them
        return False
    try:
        return pa.unify_schemas([target, schema], promote_options="permissive").remove_metadata() == target.remove_metadata()
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return False


class ChunkFile:
    """A chunk file being written through a ParquetWriter, moved into place on ``close``.

    ``writer_options`` go to ``pq.ParquetWriter`` (the shuffle's run files turn statistics
    off); each ``write`` is one or more whole row groups. Chunks are written without
    dictionary encoding: Arrow tries a dictionary for every column chunk before it falls back,
    which made writing 400k rows of four numeric columns 20x slower (0.11 s vs 0.006 s, and
    the run files of a 1 MB row group 0.20 s vs 0.016 s for 50k documents) for files that are
    read once or twice.
    """

    def __init__(self, path: str, schema: pa.Schema, **writer_options: object) -> None:
        self.path = path
        self.schema = schema
        self.num_rows = 0
        self.bytes_in = 0
        self._finished = False
        self._output = atomic_output(path)
        tmp = self._output.__enter__()
        self._sink = None if tmp.is_local else tmp.open()
        self._writer = pq.ParquetWriter(
            tmp.path if tmp.is_local else self._sink,
            schema,
            compression=chunk_compression(path),
            **{"use_dictionary": False, "write_page_checksum": True, **writer_options},
        )

    def write(self, table: pa.Table, row_group_size: int | None = None) -> None:
        self._writer.write_table(table, row_group_size=row_group_size or max(table.num_rows, 1))
        self.num_rows += table.num_rows
        self.bytes_in += table.nbytes

    def close(self) -> ChunkRef:
        """Finish the file and move it into place. On an object store the upload happens here:
        its failure removes the temporary file and is raised naming the chunk (``atomic_output``)."""
        self._finished = True
        try:
            self._writer.close()
            if self._sink is not None:
                self._sink.close()
        except BaseException as error:
            self._output.__exit__(type(error), error, error.__traceback__)
            raise
        self._output.__exit__(None, None, None)
        return ChunkRef(self.path, self.num_rows, self.schema)

    def abort(self) -> None:
        if self._finished:  # a close that failed has cleaned up already
            return
        self._finished = True
        try:
            self._writer.close()
            if self._sink is not None:
                self._sink.close()
        finally:
            error = RuntimeError("chunk write aborted")
            self._output.__exit__(RuntimeError, error, None)
