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

    >>> import pyarrow as pa
    >>> write_parquet_file([pa.table({"x": [1, 2]})], "memory://doc/x.parquet")
    2
    >>> [t.num_rows for t in read_file("memory://doc/x.parquet")]
    [2]
"""

from __future__ import annotations

import bz2
import contextlib
import json
import lzma
import posixpath
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
import zstandard
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs
from isal import igzip, isal_zlib

from zephyr_arrow.errors import InputFileError, PlanError, SchemaConflictError
from zephyr_arrow.store.chunk_ref import row_groups_covering
from zephyr_arrow.store.files import atomic_output
from zephyr_arrow.store.tables import take

if TYPE_CHECKING:
    # Imported where a filter or the JSON writer needs it: a worker that only reads and
    # writes files does without its ~45 MB.
    import polars as pl

__all__ = [
    "format_of",
    "read_file",
    "read_jsonl",
    "read_parquet",
    "read_csv",
    "write_parquet_file",
    "write_jsonl_file",
    "write_csv_file",
]

BATCH_ROWS = 64 * 1024
BATCH_BYTES = 4 << 20  # text readers gather pieces into batches of up to this much (see _Batches)
# Large enough to keep Arrow's parser threads busy (4 parse blocks), small enough that the
# pieces in flight (and their copies) stay a few tens of MB. Reading 4 gzip JSONL files of
# 25k web documents (32 MB each), 4 MB took 0.34 s at 181 MB peak RSS; 16 MB 0.45 s at 281 MB;
# 1 MB 0.42 s (pyarrow 26).
PIECE_BYTES = 4 << 20
# Arrow's parse block: records longer than this are parsed on the slow single-block path.
ARROW_BLOCK_BYTES = 1 << 20
ROW_GROUP_ROWS = 128 * 1024
ROW_GROUP_BYTES = 128 << 20
# Measured on 200k web documents (330 MB in Arrow): zstd writes 166 MB in 1.3 s, snappy 306 MB in
# 0.5 s; zstd's smaller chunks read back faster, and chunks are read more often than written.
PARQUET_COMPRESSION = "zstd"
ZSTD_LEVEL = 3

_CODECS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
# Errors a damaged or unreadable input raises while it is opened or decompressed.
_READ_ERRORS = (OSError, EOFError, isal_zlib.error, lzma.LZMAError, zstandard.ZstdError)

_ROW_INDEX = "__zephyr_row_index"

T = TypeVar("T")


# --- formats and compression -----------------------------------------------------------------


def _split_codec(path: str) -> tuple[str, str | None]:
    """``path`` without its compression extension, and the codec that extension names."""
    stem, extension = posixpath.splitext(path)
    codec = _CODECS.get(extension.lower())
    return (stem, codec) if codec else (path, None)


def format_of(path: str) -> str:
    """The format a path's extension names: ``"jsonl"``, ``"parquet"`` or ``"csv"``.

    >>> format_of("s3://bucket/docs-00001.jsonl.zst")
    'jsonl'
    """
    stem, codec = _split_codec(path)
    file_format = _FORMATS.get(posixpath.splitext(stem)[1].lower())
    if file_format is None or (file_format == "parquet" and codec):
        supported = ", ".join(sorted(_FORMATS))
        codecs = ", ".join(sorted(_CODECS))
        raise PlanError(
            f"cannot tell the format of {path!r}: supported extensions are {supported} "
            f"(JSON and CSV optionally followed by {codecs}; Parquet compresses internally)"
        )
    return file_format


def _zstd_stream(raw: BinaryIO, mode: str) -> BinaryIO:
    if mode == "rb":
        # Files made by concatenating .zst files hold several frames: read them all.
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(raw, closefd=False)


_CODEC_STREAMS: dict[str, Callable[[BinaryIO, str], BinaryIO]] = {
    # ISA-L's gzip: reads twice and writes ~8x as fast as zlib (at level 6), and files stay as small.
    "gzip": lambda raw, mode: igzip.IGzipFile(fileobj=raw, mode=mode),
    "bz2": lambda raw, mode: bz2.BZ2File(raw, mode),
    "xz": lambda raw, mode: lzma.LZMAFile(raw, mode),
    "zstd": _zstd_stream,
}


@contextlib.contextmanager
def _open_stream(fs: AbstractFileSystem, fs_path: str, mode: str, codec: str | None) -> Iterator[BinaryIO]:
    """Open a binary stream on ``fs_path``, (de)compressing with ``codec``; closes both layers."""
    with fs.open(fs_path, mode) as raw:
        if codec is None:
            yield raw
            return
        with _CODEC_STREAMS[codec](raw, mode) as stream:
            yield stream


@contextlib.contextmanager
def _input_errors(path: str) -> Iterator[None]:
    """Turn a missing or undecodable input into an InputFileError naming ``path``."""
    try:
        yield
    except FileNotFoundError as error:
        raise InputFileError(f"input file not found: {path}") from error
    except _READ_ERRORS as error:
        raise InputFileError(f"cannot read {path}: {error}") from error


# --- schemas -----------------------------------------------------------------------------------


def _type_contains(data_type: pa.DataType, predicate: Callable[[pa.DataType], bool]) -> bool:
    """Whether ``data_type`` or any type nested in it satisfies ``predicate``."""
    return predicate(data_type) or any(
        _type_contains(data_type.field(i).type, predicate) for i in range(data_type.num_fields)
    )


def _is_binary(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
        or pa.types.is_fixed_size_binary(data_type)
        or pa.types.is_binary_view(data_type)
    )


def _timestamps_as_strings(data_type: pa.DataType) -> pa.DataType:
    """``data_type`` with every timestamp in it replaced by string (JSON readers' types only)."""
    if pa.types.is_timestamp(data_type):
        return pa.string()
    if pa.types.is_struct(data_type):
        return pa.struct([field.with_type(_timestamps_as_strings(field.type)) for field in data_type])
    if pa.types.is_list(data_type):
        value_field = data_type.value_field
        return pa.list_(value_field.with_type(_timestamps_as_strings(value_field.type)))
    return data_type


def _unify(schemas: list[pa.Schema]) -> pa.Schema:
    return pa.unify_schemas(schemas, promote_options="permissive")


def _align(table: pa.Table, names: list[str], where: str) -> pa.Table:
    """``table``'s columns named ``names``, in that order; absent ones as null columns."""
    extra = [name for name in table.column_names if name not in names]
    if extra:
        raise SchemaConflictError(f"{where}: unexpected column(s) {extra}; the schema has {names}")
    present = set(table.column_names)
    return pa.table({name: table[name] if name in present else pa.nulls(table.num_rows) for name in names})


def _conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """``table`` cast to ``schema``: columns reordered, absent ones null; names the column that won't cast."""
    if table.schema.equals(schema):
        return table
    table = _align(table, schema.names, where)
    columns = []
    for field in schema:
        try:
            columns.append(table[field.name].cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            raise SchemaConflictError(
                f"{where}: column {field.name!r} of type {table[field.name].type} cannot be cast to "
                f"{field.type}: {error}"
            ) from error
    return pa.Table.from_arrays(columns, schema=schema)


def _reject_types(schema: pa.Schema, predicate: Callable[[pa.DataType], bool], path: str, why: str) -> None:
    for field in schema:
        if _type_contains(field.type, predicate):
            raise PlanError(f"cannot write column {field.name!r} ({field.type}) to {path}: {why}")


# --- batches: projection and filtering ---------------------------------------------------------


def _needed_columns(columns: list[str] | None, filter: pl.Expr | None) -> list[str] | None:
    """The columns to read: the projection plus those the filter uses (None: all)."""
    if columns is None or filter is None:
        return columns
    return list(dict.fromkeys([*columns, *filter.meta.root_names()]))


def _filter_and_project(table: pa.Table, columns: list[str] | None, filter: pl.Expr | None) -> pa.Table:
    if filter is not None:
        # Polars picks the rows from only the columns the filter uses; pyarrow takes them, so the
        # batch keeps its Arrow types (a Polars round trip would turn string into large_string).
        import polars as pl

        needed = filter.meta.root_names() or table.column_names
        frame = pl.from_arrow(table.select(needed)).with_row_index(_ROW_INDEX)
        table = take(table, frame.filter(filter)[_ROW_INDEX].to_arrow())
    return table if columns is None else table.select(columns)


def _slices(table: pa.Table) -> Iterator[pa.Table]:
    """``table`` in zero-copy slices of at most BATCH_ROWS rows; nothing for an empty table."""
    for offset in range(0, table.num_rows, BATCH_ROWS):
        # Explicit length: Arrow does not clip a slice of a table without columns.
        yield table.slice(offset, min(BATCH_ROWS, table.num_rows - offset))


# --- text formats: pieces of whole records, parsed by Arrow -----------------------------------


class _Batches:
    """Pieces' tables gathered into batches of up to BATCH_ROWS rows or about BATCH_BYTES.

    A piece of projected columns is a few thousand rows of a few columns: passed on one by one,
    every op downstream (a Polars query, a hash) paid its per-call cost per few kB. Tables of
    another schema (a type widened) start a new batch.
    """

    def __init__(self) -> None:
        self._tables: list[pa.Table] = []
        self._rows = self._bytes = 0

    def add(self, table: pa.Table) -> Iterator[pa.Table]:
        if self._tables and table.schema != self._tables[0].schema:
            yield from self.flush()
        self._tables.append(table)
        self._rows += table.num_rows
        self._bytes += table.nbytes
        if self._rows >= BATCH_ROWS or self._bytes >= BATCH_BYTES:
            yield from self.flush()

    def flush(self) -> Iterator[pa.Table]:
        tables, self._tables, self._rows, self._bytes = self._tables, [], 0, 0
        if len(tables) > 1 and tables[0].num_columns:  # a concat of tables of no columns has no rows
            tables = [pa.concat_tables(tables)]
        for table in tables:
            yield from _slices(table)


def _read_ahead(items: Iterator[T]) -> Iterator[T]:
    """``items``, each produced in a background thread while the caller works on the previous one.

    Decompression (ISA-L, zlib and friends release the GIL) then overlaps with Arrow's parsing.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="zephyr-read-ahead") as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def _pieces(stream: BinaryIO, record_end: Callable[[bytes], int]) -> Iterator[bytes]:
    """The stream's bytes in pieces of about PIECE_BYTES that each end at a record boundary."""
    tail = b""
    while block := stream.read(PIECE_BYTES):
        buffer = tail + block
        end = record_end(buffer)  # 0 when one record is longer than a piece: read on
        tail = buffer[end:]
        if end:
            yield buffer[:end]
    if tail:
        yield tail


def _line_end(buffer: bytes) -> int:
    return buffer.rfind(b"\n") + 1


def _csv_record_end(buffer: bytes) -> int:
    """Offset just past the last newline outside quotes (0 if none).

    A newline ends a record only after an even number of quote characters; RFC 4180's doubled
    quotes keep the parity. Every piece starts at a record boundary, so counting from 0 is right.
    """
    quotes_after = 0
    total = buffer.count(b'"')
    end = len(buffer)
    while (newline := buffer.rfind(b"\n", 0, end)) >= 0:
        quotes_after += buffer.count(b'"', newline, end)
        if (total - quotes_after) % 2 == 0:
            return newline + 1
        end = newline
    return 0


def _hint(schema: pa.Schema | None) -> pa.Schema | None:
    """The types seen so far, to parse the next piece with; null-typed columns are left to inference."""
    if schema is None:
        return None
    fields = [field for field in schema if not _type_contains(field.type, pa.types.is_null)]
    return pa.schema(fields) if fields else None


def _parse_json(text: bytes, schema: pa.Schema | None, block_bytes: int, others: str = "infer") -> pa.Table:
    return pjson.read_json(
        pa.BufferReader(text),
        read_options=pjson.ReadOptions(block_size=block_bytes),
        parse_options=pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior=others),
    )


def _parse_csv(text: bytes, schema: pa.Schema | None, block_bytes: int) -> pa.Table:
    return pcsv.read_csv(
        pa.BufferReader(text),
        read_options=pcsv.ReadOptions(block_size=block_bytes),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types=schema),
    )


def _parse_piece(parse: Callable[..., pa.Table], text: bytes, hint: pa.Schema | None) -> pa.Table:
    try:
        return parse(text, hint, ARROW_BLOCK_BYTES)
    except pa.ArrowInvalid:
        # Either the types so far are too narrow for this piece (int then 1.5) or a record is
        # longer than Arrow's block: infer afresh over the piece as one block, which handles both.
        return parse(text, None, len(text) + 1)


def _parse_jsonl_piece(text: bytes, hint: pa.Schema | None, keep: frozenset[str] | None) -> pa.Table:
    kept = _kept_hint(hint, keep)
    if kept is not None:
        try:
            # Only the kept fields are converted; the rest of each object is skipped (a third
            # less parsing for two of six fields of web documents).
            return _parse_json(text, kept, ARROW_BLOCK_BYTES, others="ignore")
        except pa.ArrowInvalid:
            pass  # a kept field widened (int then 1.5), or a long record: infer below
    table = _parse_piece(_parse_json, text, hint)
    if any(_type_contains(field.type, pa.types.is_timestamp) for field in table.schema):
        # Arrow inferred timestamps from ISO-looking strings: read them as the strings they are.
        strings = pa.schema([field.with_type(_timestamps_as_strings(field.type)) for field in table.schema])
        table = _parse_json(text, strings, len(text) + 1)
    return table


def _kept_hint(hint: pa.Schema | None, keep: frozenset[str] | None) -> pa.Schema | None:
    """The hint's kept fields, when they are every kept column and flat: fields outside the hint
    may then be skipped. None (parse everything) while a kept column has not been seen with a
    type yet, which a skipping parse would drop, or when one is nested (skipping would drop
    struct fields that appear late)."""
    if hint is None or keep is None or not keep <= set(hint.names):
        return None
    fields = [field for field in hint if field.name in keep]
    if any(_type_contains(field.type, pa.types.is_struct) for field in fields):
        return None
    return pa.schema(fields)


def _parse_csv_piece(text: bytes, hint: pa.Schema | None, keep: frozenset[str] | None) -> pa.Table:
    return _parse_piece(_parse_csv, text, hint)


def _find_bad_json_line(piece: bytes) -> tuple[int, str] | None:
    """The 0-based index of the first line in ``piece`` that is not a JSON object, and why."""
    for index, line in enumerate(piece.split(b"\n")):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as error:
            return index, f"malformed JSON ({error})"
        if not isinstance(value, dict):
            return index, f"expected a JSON object, found {type(value).__name__}"
    return None


@dataclass(frozen=True, slots=True)
class _TextFormat:
    record_end: Callable[[bytes], int]
    parse: Callable[[bytes, pa.Schema | None, frozenset[str] | None], pa.Table]
    find_bad_line: Callable[[bytes], tuple[int, str] | None]
    has_header: bool


_JSONL = _TextFormat(_line_end, _parse_jsonl_piece, _find_bad_json_line, has_header=False)
_CSV = _TextFormat(_csv_record_end, _parse_csv_piece, lambda piece: None, has_header=True)


def _parse_error(path: str, text_format: _TextFormat, piece: bytes, line: int, error: Exception) -> InputFileError:
    bad_line = text_format.find_bad_line(piece)
    if bad_line is not None:
        index, why = bad_line
        return InputFileError(f"{path}: line {line + index}: {why}")
    last_line = line + piece.count(b"\n", 0, len(piece) - 1)
    return InputFileError(f"{path}: lines {line}-{last_line}: {error}")


def _read_text(
    path: str, text_format: _TextFormat, columns: list[str] | None, keep: frozenset[str] | None = None
) -> Iterator[pa.Table]:
    """``columns``: exactly these (absent ones null); ``keep``: these where present, the rest dropped."""
    if keep is None and columns is not None:
        keep = frozenset(columns)  # parse only what the projection shows
    fs, fs_path = url_to_fs(path)
    schema: pa.Schema | None = None  # every column seen so far, at its widest type
    header = b""
    line = 1  # number of the piece's first line in the file
    batches = _Batches()
    with _input_errors(path), _open_stream(fs, fs_path, "rb", _split_codec(path)[1]) as stream:
        # Counting a piece's lines (for error messages) is done by the read-ahead thread too.
        counted = ((piece, piece.count(b"\n")) for piece in _pieces(stream, text_format.record_end))
        for piece, num_lines in _read_ahead(counted):
            try:
                table = text_format.parse(header + piece, _hint(schema), keep)
            except pa.ArrowInvalid as error:
                raise _parse_error(path, text_format, piece, line, error) from error
            if keep is not None:
                table = table.select([name for name in table.column_names if name in keep])
            try:
                schema = _unify([schema, table.schema]) if schema else table.schema
            except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
                raise InputFileError(
                    f"{path}: lines from {line} on hold values of another type than earlier lines: {error}"
                ) from error
            if text_format.has_header and not header:
                header = piece[: piece.find(b"\n") + 1]
            line += num_lines
            table = _conform(table, schema, path)
            if columns is not None:
                table = _align(table.select([c for c in columns if c in schema.names]), columns, path)
            yield from batches.add(table)
        yield from batches.flush()


def read_jsonl(path: str, columns: list[str] | None = None, keep: Iterable[str] | None = None) -> Iterator[pa.Table]:
    """Batches of a JSON-lines file (one object per line); objects become structs, arrays lists.

    ``columns`` reads exactly those columns (one the file lacks is null); ``keep`` reads only
    those of its columns the file has (the rest are skipped, not parsed where possible).
    A malformed line raises InputFileError naming the file and the line's 1-based number.
    """
    return _read_text(path, _JSONL, columns, None if keep is None else frozenset(keep))


def read_csv(path: str, columns: list[str] | None = None, keep: Iterable[str] | None = None) -> Iterator[pa.Table]:
    """Batches of a CSV file with a header line; quoted fields may hold newlines. Arguments as ``read_jsonl``'s."""
    return _read_text(path, _CSV, columns, None if keep is None else frozenset(keep))


# --- Parquet -----------------------------------------------------------------------------------


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
def _open_parquet(fs: AbstractFileSystem, fs_path: str, path: str) -> Iterator[pq.ParquetFile]:
    try:
        parquet_file = pq.ParquetFile(fs_path, filesystem=fs)
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
    fs, fs_path = url_to_fs(path)
    with _input_errors(path), _open_parquet(fs, fs_path, path) as parquet_file:
        if columns is None and keep is not None:
            columns = [name for name in parquet_file.schema_arrow.names if name in keep]
        needed = _needed_columns(columns, filter)
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
            table = _filter_and_project(table, columns, filter)
            if table.num_rows:
                yield table


def read_file(
    path: str,
    columns: list[str] | None = None,
    filter: pl.Expr | None = None,
    file_format: str | None = None,
    keep: Iterable[str] | None = None,
) -> Iterator[pa.Table]:
    """Batches of a JSONL, Parquet or CSV file: ``file_format``, or picked by extension (see ``format_of``).

    ``columns`` projects (see the readers); ``keep`` (without ``columns``) names the columns the
    caller uses, so the others may be skipped; the filter's columns are read for it either way.
    """
    file_format = file_format or format_of(path)
    if file_format == "parquet":
        return read_parquet(path, columns, filter, keep=keep)
    reader = read_jsonl if file_format == "jsonl" else read_csv
    if columns is None and keep is not None:
        keep = frozenset(keep)
        tables = reader(path, keep=keep.union(filter.meta.root_names()) if filter is not None else keep)
        if filter is None:
            return tables
        return (t.select([c for c in t.column_names if c in keep]) for t in _filtered(tables, None, filter))
    return _filtered(reader(path, _needed_columns(columns, filter)), columns, filter)


def _filtered(tables: Iterator[pa.Table], columns: list[str] | None, filter: pl.Expr | None) -> Iterator[pa.Table]:
    if filter is None:
        return tables
    return (t for t in (_filter_and_project(t, columns, filter) for t in tables) if t.num_rows)


# --- writers -----------------------------------------------------------------------------------


def _row_groups(batches: Iterable[pa.Table]) -> Iterator[list[pa.Table]]:
    """The batches in runs of about ROW_GROUP_ROWS rows or ROW_GROUP_BYTES bytes."""
    group: list[pa.Table] = []
    num_rows = num_bytes = 0
    for table in batches:
        group.append(table)
        num_rows += table.num_rows
        num_bytes += table.nbytes
        if num_rows >= ROW_GROUP_ROWS or num_bytes >= ROW_GROUP_BYTES:
            yield group
            group, num_rows, num_bytes = [], 0, 0
    if group:
        yield group


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
        group = pa.concat_tables([_conform(t, schema, self._where) for t in tables])
        if self._writer is None:
            self._open(schema)
        elif not schema.equals(self._schema):
            self._rewrite(schema)
        if group.num_rows:
            self._writer.write_table(group, row_group_size=group.num_rows)
            self.num_rows += group.num_rows

    def _widened(self, schemas: list[pa.Schema]) -> pa.Schema:
        try:
            return _unify([self._schema, *schemas] if self._schema else schemas)
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
                    self._writer.write_table(_conform(narrow.read_row_group(index), schema, self._where))
        finally:
            self._fs.rm(narrow_path)

    def __enter__(self) -> _ParquetSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._writer is None and exc_type is None:
            self._open(self._contract or pa.schema([]))
        if self._writer is not None:
            self._writer.close()


def write_parquet_file(batches: Iterable[pa.Table], path: str, schema: pa.Schema | None = None) -> int:
    """Write the batches to one Parquet file (zstd, row groups of ~128k rows); return the row count.

    With ``schema``, every batch is cast to it (SchemaConflictError names a column that won't cast
    or is not in it); without, the file's schema is the permissive union of the batches' schemas.
    """
    with atomic_output(path) as temp, _ParquetSink(temp.fs, temp.path, schema, where=path) as sink:
        for group in _row_groups(batches):
            sink.write(group)
    return sink.num_rows


def _write_text(batches: Iterable[pa.Table], path: str, write: Callable[[pa.Table, BinaryIO], None]) -> int:
    """Stream batches through ``write(table, stream)`` into ``path``, atomically."""
    num_rows = 0
    with atomic_output(path) as temp, _open_stream(temp.fs, temp.path, "wb", _split_codec(path)[1]) as stream:
        for table in batches:
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
        _reject_types(table.schema, _is_binary, path, "JSON has no binary type; decode or drop it first")
        pl.from_arrow(table).write_ndjson(stream)

    return _write_text(batches, path, write)


def write_csv_file(batches: Iterable[pa.Table], path: str) -> int:
    """Write the batches as CSV with one header line (compressed by extension); return the row count.

    The first batch fixes the columns; later batches may lack some (written empty) but not add
    any. Nested columns raise PlanError.
    """
    header: list[str] | None = None

    def write(table: pa.Table, stream: BinaryIO) -> None:
        nonlocal header
        _reject_types(table.schema, pa.types.is_nested, path, "CSV holds flat values only")
        if header is not None:
            table = _align(table, header, path)
        pcsv.write_csv(table, stream, pcsv.WriteOptions(include_header=header is None))
        header = table.column_names

    return _write_text(batches, path, write)
