"""Cutting one input file into pieces that tasks read apart: Parquet by row groups, text by whole records.

A piece is exact when it is made: a Parquet piece's rows are whole row groups, a text piece's
bytes start and end at a record boundary (found here, on the driver, with a short read per
boundary for JSON lines, one pass counting quotes for CSV, whose quoted fields may hold
newlines). So a reader reads just its piece, and the pieces read in order give the file's
records in order, each once. Compressed text cannot be cut (a decompressor must start at the
beginning), so it is never split.
"""

from __future__ import annotations

from dataclasses import dataclass

from zephyr_arrow.errors import PlanError
from zephyr_arrow.fs import filesystem
from zephyr_arrow.io.formats import format_of, input_errors, split_codec

_PROBE_BYTES = 64 << 10  # read at a JSON-lines boundary to find the next newline
_SCAN_BYTES = 16 << 20  # a CSV pass reads this much at a time


@dataclass(frozen=True, slots=True)
class FilePiece:
    """Part of an input file: rows [start, stop) of a Parquet file (whole row groups), or bytes
    [start, stop) of an uncompressed text file (whole records; a CSV piece after the first
    reads the file's header line too)."""

    path: str
    start: int
    stop: int

    def __repr__(self) -> str:
        return f"{self.path}[{self.start}:{self.stop}]"


def splittable(path: str, file_format: str | None) -> bool:
    """Whether the file can be cut into pieces (Parquet, or uncompressed JSON lines or CSV; not Vortex,
    nor a file of a format no loader knows, which its task reports as Zephyr does: ZephyrWorkerError)."""
    try:
        file_format = file_format or format_of(path)
    except PlanError:
        return False
    return file_format == "parquet" or (file_format in ("jsonl", "csv") and split_codec(path)[1] is None)


def split_file(path: str, file_format: str | None, file_bytes: int, piece_bytes: int) -> list[FilePiece]:
    """``path`` cut into pieces of about ``piece_bytes`` (on disk), in file order; one piece
    (the whole file) when it cannot be cut finer. Each cut is the record or row-group
    boundary nearest a multiple of ``piece_bytes``, so pieces of a file are about equal."""
    file_format = file_format or format_of(path)
    with input_errors(path):
        if file_format == "parquet":
            return _parquet_pieces(path, piece_bytes)
        targets = list(range(piece_bytes, file_bytes - piece_bytes // 2, piece_bytes))
        bounds = _csv_record_starts(path, targets) if file_format == "csv" else _line_starts(path, targets)
    edges = [0, *sorted(set(b for b in bounds if 0 < b < file_bytes)), file_bytes]
    return [FilePiece(path, start, stop) for start, stop in zip(edges, edges[1:])]


def _parquet_pieces(path: str, piece_bytes: int) -> list[FilePiece]:
    """Whole row groups a piece; a piece ends after the row group whose end is nearest the next
    multiple of ``piece_bytes`` (32 groups of 61 MB in pieces of 246 MB: 8 pieces of 4 groups,
    where cutting at the first group past 246 MB made 6 pieces of 5 and one of 2)."""
    from zephyr_arrow.io.parquet import open_input

    with open_input(path) as parquet_file:
        metadata = parquet_file.metadata
    groups = [metadata.row_group(index) for index in range(metadata.num_row_groups)]
    sizes = [sum(group.column(column).total_compressed_size for column in range(group.num_columns)) for group in groups]
    pieces: list[FilePiece] = []
    start = row = done = 0
    target = piece_bytes
    for index, group in enumerate(groups[:-1]):
        row += group.num_rows
        done += sizes[index]
        if done + sizes[index + 1] / 2 >= target:  # ending here is nearer the target than ending after the next group
            pieces.append(FilePiece(path, start, row))
            start = row
            target += piece_bytes
            while target <= done:
                target += piece_bytes
    pieces.append(FilePiece(path, start, metadata.num_rows))
    return pieces


def _line_starts(path: str, targets: list[int]) -> list[int]:
    """For each target offset, the start of the first line that begins at or after it."""
    fs, fs_path = filesystem(path)
    starts = []
    with fs.open(fs_path, "rb") as stream:
        for target in targets:
            # A line begins at ``target`` when the byte before it ends a line.
            stream.seek(target - 1)
            position = target - 1
            while block := stream.read(_PROBE_BYTES):
                newline = block.find(b"\n")
                if newline >= 0:
                    starts.append(position + newline + 1)
                    break
                position += len(block)
    return starts


def _csv_record_starts(path: str, targets: list[int]) -> list[int]:
    """For each target offset, the start of the first CSV record that begins at or after it.

    A newline ends a record only outside quotes, i.e. after an even number of quote characters
    from the start of the file (RFC 4180's doubled quotes keep the parity), so the file is
    read once from the beginning, counting quotes.
    """
    fs, fs_path = filesystem(path)
    starts: list[int] = []
    pending = iter(targets)
    target = next(pending, None)
    quotes = position = 0  # quote characters before ``position``, the offset of ``block``
    with fs.open(fs_path, "rb") as stream:
        while target is not None and (block := stream.read(_SCAN_BYTES)):
            while target is not None and target - 1 < position + len(block):
                start = _record_start(block, max(target - 1 - position, 0), quotes)
                if start is None:
                    break  # the record goes on into the next block: search it from its beginning
                starts.append(position + start)
                target = next((t for t in pending if t > starts[-1]), None)
            quotes += block.count(b'"')
            position += len(block)
    return starts


def _record_start(block: bytes, cursor: int, quotes: int) -> int | None:
    """The offset in ``block`` just past its first newline at or after ``cursor`` that is outside
    quotes (``quotes``: how many quote characters the file has before ``block``); None if none is."""
    parity = quotes + block.count(b'"', 0, cursor)
    while (newline := block.find(b"\n", cursor)) >= 0:
        parity += block.count(b'"', cursor, newline)
        if parity % 2 == 0:
            return newline + 1
        cursor = newline + 1
    return None
