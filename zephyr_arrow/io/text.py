"""JSON lines and CSV: pieces of whole records, parsed by Arrow.

A file is cut into pieces of about ``PIECE_BYTES`` that end at a record boundary, each parsed
by Arrow's multithreaded parsers while a background thread reads and decompresses the next.
Types are inferred per piece and only ever widen within a file (see ``zephyr_arrow.io``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from zephyr_arrow.arrow.rows import ABSENT_COLUMN, ABSENT_TYPE, mark_absent, without_absent
from zephyr_arrow.arrow.tables import kept
from zephyr_arrow.errors import InputFileError
from zephyr_arrow.io.batches import BATCH_ROWS, align, cast_to_schema, slices, timestamps_as_strings, type_contains, widen
from zephyr_arrow.io.formats import input_errors, open_stream, split_codec

BATCH_BYTES = 4 << 20  # pieces are gathered into batches of up to this much (see _Batches)
# Large enough to keep Arrow's parser threads busy (4 parse blocks), small enough that the
# pieces in flight (and their copies) stay a few tens of MB. Reading 4 gzip JSONL files of
# 25k web documents (32 MB each), 4 MB took 0.34 s at 181 MB peak RSS; 16 MB 0.45 s at 281 MB;
# 1 MB 0.42 s (pyarrow 26).
PIECE_BYTES = 4 << 20
# Arrow's parse block: records longer than this are parsed on the slow single-block path.
ARROW_BLOCK_BYTES = 1 << 20

T = TypeVar("T")


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
            yield from slices(table)


def _read_ahead(items: Iterator[T]) -> Iterator[T]:
    """``items``, each produced in a background thread while the caller works on the previous one.

    Decompression (ISA-L, zlib and friends release the GIL) then overlaps with Arrow's parsing.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="zephyr-read-ahead") as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def _line_pieces(stream: BinaryIO) -> Iterator[bytes | memoryview]:
    """JSON lines in pieces of about PIECE_BYTES that end at a newline (JSON strings hold none).

    Each block read is passed on as a view, not copied: the line it begins with completes the
    previous block's last line, as a small piece of its own. Joining each block to the previous
    one's partial line and slicing pieces out copied every byte twice more: reading a 64 MB
    gzip file took 0.115 s that way, 0.089 s so, as much as decompressing it alone.
    """
    tail = b""
    while block := stream.read(PIECE_BYTES):
        last = block.rfind(b"\n") + 1
        if not last:  # one line longer than a block: read on
            tail += block
            continue
        start = 0
        if tail:
            start = block.find(b"\n") + 1
            yield tail + block[:start]
        if start < last:
            yield memoryview(block)[start:last]
        tail = block[last:]
    if tail:
        yield tail


def _csv_pieces(stream: BinaryIO) -> Iterator[bytes]:
    """CSV in pieces of about PIECE_BYTES that each end at a record boundary (quoted fields may hold newlines)."""
    tail = b""
    while block := stream.read(PIECE_BYTES):
        buffer = tail + block
        end = _csv_record_end(buffer)  # 0 when one record is longer than a piece: read on
        tail = buffer[end:]
        if end:
            yield buffer[:end]
    if tail:
        yield tail


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
    fields = [field for field in schema if not type_contains(field.type, pa.types.is_null)]
    return pa.schema(fields) if fields else None


def _parse_json(text: bytes | memoryview, schema: pa.Schema | None, block_bytes: int, others: str = "infer") -> pa.Table:
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


def _parse_piece(parse: Callable[..., pa.Table], text: bytes | memoryview, hint: pa.Schema | None) -> pa.Table:
    try:
        return parse(text, hint, ARROW_BLOCK_BYTES)
    except pa.ArrowInvalid:
        # Either the types so far are too narrow for this piece (int then 1.5) or a record is
        # longer than Arrow's block: infer afresh over the piece as one block, which handles both.
        return parse(text, None, len(text) + 1)


def _parse_jsonl_piece(text: bytes | memoryview, hint: pa.Schema | None, keep: frozenset[str] | None) -> pa.Table:
    table = _parse_jsonl_columns(text, hint, keep)
    # A parse that skipped fields (``keep``) cannot tell a nested key of the same name from a top-level one.
    return _with_absent_keys(table, text, projected=keep is not None)


def _parse_jsonl_columns(text: bytes | memoryview, hint: pa.Schema | None, keep: frozenset[str] | None) -> pa.Table:
    kept = _kept_hint(hint, keep)
    if kept is not None:
        try:
            # Only the kept fields are converted; the rest of each object is skipped (a third
            # less parsing for two of six fields of web documents).
            return _parse_json(text, kept, ARROW_BLOCK_BYTES, others="ignore")
        except pa.ArrowInvalid:
            pass  # a kept field widened (int then 1.5), or a long record: infer below
    table = _parse_piece(_parse_json, text, hint)
    if any(type_contains(field.type, pa.types.is_timestamp) for field in table.schema):
        # Arrow inferred timestamps from ISO-looking strings: read them as the strings they are.
        strings = pa.schema([field.with_type(timestamps_as_strings(field.type)) for field in table.schema])
        table = _parse_json(text, strings, len(text) + 1)
    return table


def _with_absent_keys(table: pa.Table, text: bytes | memoryview, projected: bool) -> pa.Table:
    """``table`` with the keys its lines lack recorded (``arrow/rows.py``): Arrow's parser gives a
    null both for ``"k": null`` and for a line without ``k``.

    Counting ``"k":`` in the piece settles the usual cases at once: as many as rows (every line
    has the key) or as non-null values (every null is a line without it). The text ``"k"`` in a
    JSON string is escaped, and a string value is never followed by a colon, so each count is one
    line's key unless a nested object may hold a ``k`` too (a struct field of that name, or a parse
    that skipped fields). Otherwise the lines with a null are looked at, and ``json.loads`` decides
    where the text cannot.
    """
    nullable = [name for name, column in zip(table.column_names, table.columns) if column.null_count]
    if not nullable:
        return table
    data = bytes(text)
    nested_names = set() if projected else _nested_field_names(table.schema)
    lines: pa.Array | None = None
    lacking: dict[str, pa.Array] = {}  # name -> a mask of the rows that lack it
    for name in nullable:
        quoted = json.dumps(name).encode()
        column = table.column(name)
        keyed = data.count(quoted + b":")
        exact = not projected and name not in nested_names and keyed == data.count(quoted)
        if exact and keyed == table.num_rows:
            continue  # every line has the key (its nulls are "k": null)
        if exact and keyed == table.num_rows - column.null_count:
            lacking[name] = column.is_null()  # every line with a null lacks the key
            continue
        lines = lines if lines is not None else _lines(text, table.num_rows)
        if lines is None:  # not one record per line: leave the nulls as they are
            return table
        lacking[name] = _lacking(name, column, lines, exact)
    lacking = {name: mask for name, mask in lacking.items() if pc.any(mask).as_py()}
    if not lacking:
        return table
    return table.append_column(pa.field(ABSENT_COLUMN, ABSENT_TYPE), _absent_lists(lacking, table.num_rows))


def _lacking(name: str, column: pa.ChunkedArray, lines: pa.Array, exact: bool) -> pa.Array:
    """A mask of the rows whose line lacks key ``name``, looking at the lines where ``column`` is null."""
    quoted = json.dumps(name)
    rows = pc.indices_nonzero(column.is_null())
    candidates = lines.take(rows)
    if exact:
        lacks = pc.invert(pc.match_substring_regex(candidates, re.escape(quoted) + r"\s*:")).to_pylist()
    else:
        lacks = pc.invert(pc.match_substring(candidates, quoted)).to_pylist()
        for index, lacked in enumerate(lacks):
            if not lacked:
                lacks[index] = name not in json.loads(candidates[index].as_py())
    flags = [False] * len(column)
    for row, lacked in zip(rows.to_pylist(), lacks):
        flags[row] = lacked
    return pa.array(flags, pa.bool_())


def _absent_lists(lacking: dict[str, pa.Array], num_rows: int) -> pa.Array:
    """The absent-keys column of rows that lack the keys of ``lacking`` (name -> mask of rows)."""
    if len(lacking) == 1:  # the usual case, without a Python loop over rows: [name] where the mask is set, else null
        ((name, mask),) = lacking.items()
        mask = mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask
        offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(mask.cast(pa.int32()))])
        values = pa.array([name], pa.string()).take(pa.array([0] * pc.sum(mask.cast(pa.int64())).as_py(), pa.int32()))
        return pa.ListArray.from_arrays(offsets, values, type=ABSENT_TYPE, mask=pc.invert(mask))
    absent: list[list[str] | None] = [None] * num_rows
    for name, mask in lacking.items():
        for index in pc.indices_nonzero(mask).to_pylist():
            absent[index] = [name] if absent[index] is None else [*absent[index], name]
    return pa.array(absent, ABSENT_TYPE)


def _lines(text: bytes | memoryview, num_records: int) -> pa.Array | None:
    """The lines of ``text`` that hold the ``num_records`` records Arrow's parser read, as an
    Arrow string array (blank lines left out); None when they are not one per line."""
    offsets = pa.array([0, len(text)], pa.int64()).buffers()[1]
    whole = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(text)])
    lines = pc.split_pattern(whole, "\n").flatten()
    if len(lines) != num_records:
        lines = lines.filter(pc.not_equal(pc.utf8_trim_whitespace(lines), ""))
    return lines if len(lines) == num_records else None


def _nested_field_names(schema: pa.Schema) -> set[str]:
    """The names of every struct field nested anywhere in ``schema``'s columns."""
    names: set[str] = set()

    def visit(type_: pa.DataType) -> None:
        if pa.types.is_struct(type_):
            for index in range(type_.num_fields):
                names.add(type_.field(index).name)
                visit(type_.field(index).type)
        elif pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
            visit(type_.value_type)
        elif pa.types.is_map(type_):
            visit(type_.item_type)

    for field in schema:
        visit(field.type)
    return names


def _kept_hint(hint: pa.Schema | None, keep: frozenset[str] | None) -> pa.Schema | None:
    """The hint's kept fields, when they are every kept column and flat: fields outside the hint
    may then be skipped. None (parse everything) while a kept column has not been seen with a
    type yet, which a skipping parse would drop, or when one is nested (skipping would drop
    struct fields that appear late)."""
    if hint is None or keep is None or not keep <= set(hint.names):
        return None
    fields = [field for field in hint if field.name in keep]
    if any(type_contains(field.type, pa.types.is_struct) for field in fields):
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


def _first_non_utf8_line(piece: bytes) -> int:
    """The 0-based index of the first line of ``piece`` that is not valid UTF-8 (0 if none is)."""
    for index, line in enumerate(piece.split(b"\n")):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return index
    return 0


@dataclass(frozen=True, slots=True)
class _TextFormat:
    pieces: Callable[[BinaryIO], Iterator[bytes | memoryview]]
    parse: Callable[[bytes | memoryview, pa.Schema | None, frozenset[str] | None], pa.Table]
    find_bad_line: Callable[[bytes], tuple[int, str] | None]
    has_header: bool


_JSONL = _TextFormat(_line_pieces, _parse_jsonl_piece, _find_bad_json_line, has_header=False)
_CSV = _TextFormat(_csv_pieces, _parse_csv_piece, lambda piece: None, has_header=True)


def _parse_error(path: str, text_format: _TextFormat, piece: bytes | memoryview, line: int, error: Exception) -> InputFileError:
    piece = bytes(piece)
    bad_line = text_format.find_bad_line(piece)
    if bad_line is not None:
        index, why = bad_line
        return InputFileError(f"{path}: line {line + index}: {why}")
    row = _ROW_IN_PIECE.search(str(error))
    if row is not None and (index := _nth_record_line(piece, int(row.group(1)))) is not None:
        return InputFileError(f"{path}: line {line + index}: {_ROW_IN_PIECE.sub('', str(error))}")
    last_line = line + piece.count(b"\n", 0, len(piece) - 1)
    return InputFileError(f"{path}: lines {line}-{last_line}: {error}")


_ROW_IN_PIECE = re.compile(r" in row (\d+)$")  # Arrow's 0-based record of the parsed piece


def _nth_record_line(piece: bytes, row: int) -> int | None:
    """The 0-based line of ``piece`` holding its ``row``-th record (blank lines hold none)."""
    for index, text in enumerate(piece.split(b"\n")):
        if text.strip():
            if row == 0:
                return index
            row -= 1
    return None


def _line_number(fs: AbstractFileSystem, fs_path: str, codec: str | None, offset: int) -> int:
    """The 1-based number of the line that starts at byte ``offset`` of the decompressed file.

    Only an error message needs it, so the file is read again up to there: counting every
    piece's newlines as it went by cost 1 ms per 4 MB, about 5% of reading a JSONL file.
    """
    line = 1
    with open_stream(fs, fs_path, "rb", codec) as stream:
        while offset and (block := stream.read(min(offset, PIECE_BYTES))):
            line += block.count(b"\n")
            offset -= len(block)
    return line


class _Range:
    """Bytes [start, stop) of a seekable binary stream, read as a stream of their own."""

    def __init__(self, stream: BinaryIO, start: int, stop: int) -> None:
        stream.seek(start)
        self._stream = stream
        self._left = stop - start

    def read(self, size: int) -> bytes:
        block = self._stream.read(min(size, self._left)) if self._left > 0 else b""
        self._left -= len(block)
        return block


def _first_line(stream: BinaryIO) -> bytes:
    """The stream's first line (with its newline), read from its beginning."""
    stream.seek(0)
    line = b""
    while (block := stream.read(ARROW_BLOCK_BYTES)) and b"\n" not in block:
        line += block
    return line + block[: block.find(b"\n") + 1]


def _read_text(
    path: str,
    text_format: _TextFormat,
    columns: list[str] | None,
    keep: frozenset[str] | None = None,
    byte_range: tuple[int, int] | None = None,
) -> Iterator[pa.Table]:
    """``columns``: exactly these (absent ones null); ``keep``: these where present, the rest dropped;
    ``byte_range``: only the records in these bytes of an uncompressed file (see ``io.pieces``)."""
    if keep is None and columns is not None:
        keep = frozenset(columns)  # parse only what the projection shows
    fs, fs_path = url_to_fs(path)
    codec = split_codec(path)[1]
    schema: pa.Schema | None = None  # every column seen so far, at its widest type
    header = b""
    offset = 0  # of the piece in the (decompressed) file
    batches = _Batches()
    with input_errors(path), open_stream(fs, fs_path, "rb", codec) as stream:
        if byte_range is not None:
            offset = byte_range[0]
            if text_format.has_header and offset:
                header = _first_line(stream)
            stream = _Range(stream, *byte_range)
        for piece in _read_ahead(text_format.pieces(stream)):
            try:
                table = text_format.parse(header + piece if header else piece, _hint(schema), keep)
            except pa.ArrowInvalid as error:
                line = _line_number(fs, fs_path, codec, offset)
                raise _parse_error(path, text_format, piece, line, error) from error
            try:
                table.validate(full=True)  # Arrow's JSON parser passes invalid UTF-8 into strings no reader accepts
            except pa.ArrowInvalid as error:
                line = _line_number(fs, fs_path, codec, offset) + _first_non_utf8_line(bytes(piece))
                raise InputFileError(f"{path}: line {line}: not valid UTF-8 ({error}); fix or drop the line") from error
            if keep is not None:
                table = table.select(kept(table.column_names, keep))
            absent = table.column(ABSENT_COLUMN) if ABSENT_COLUMN in table.column_names else None
            table = without_absent(table)
            names = set(table.column_names)
            try:
                schema = widen([schema, table.schema]) if schema else table.schema
            except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
                line = _line_number(fs, fs_path, codec, offset)
                raise InputFileError(
                    f"{path}: lines from {line} on hold values of another type than earlier lines: {error}"
                ) from error
            if text_format.has_header and not header:
                header = piece[: piece.find(b"\n") + 1]
            offset += len(piece)
            table = cast_to_schema(table, schema, path)
            if columns is not None:
                table = align(table.select([c for c in columns if c in schema.names]), columns, path)
            if not text_format.has_header:  # JSON: the columns (of earlier lines, or asked for) these lines lack
                if absent is not None:
                    table = table.append_column(pa.field(ABSENT_COLUMN, ABSENT_TYPE), absent)
                table = mark_absent(table, [name for name in table.column_names if name not in names and name != ABSENT_COLUMN])
            yield from batches.add(table)
        yield from batches.flush()


def read_jsonl(
    path: str, columns: list[str] | None = None, keep: Iterable[str] | None = None, byte_range: tuple[int, int] | None = None
) -> Iterator[pa.Table]:
    """Batches of a JSON-lines file (one object per line); objects become structs, arrays lists.

    ``columns`` reads exactly those columns (one the file lacks is null); ``keep`` reads only
    those of its columns the file has (the rest are skipped, not parsed where possible).
    ``byte_range``: the lines in those bytes of an uncompressed file, which start and end at line
    boundaries (``io.pieces``). A malformed line raises InputFileError naming the file and the
    line's 1-based number.
    """
    return _read_text(path, _JSONL, columns, None if keep is None else frozenset(keep), byte_range)


def read_csv(
    path: str, columns: list[str] | None = None, keep: Iterable[str] | None = None, byte_range: tuple[int, int] | None = None
) -> Iterator[pa.Table]:
    """Batches of a CSV file with a header line; quoted fields may hold newlines. Arguments as ``read_jsonl``'s."""
    return _read_text(path, _CSV, columns, None if keep is None else frozenset(keep), byte_range)
