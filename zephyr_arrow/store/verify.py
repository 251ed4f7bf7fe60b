"""Check chunk files against their Parquet page checksums before an engine scans them.

DuckDB's, Polars' and pyarrow.dataset's own Parquet scanners do not check page checksums,
so the views (``views.py``) check every chunk first: its footer is read, then each column
chunk's pages are walked (each page header parsed, Thrift compact protocol) and the CRC-32
of each page's stored bytes compared with the one its header holds. Nothing is decoded, so
it costs one read of the file and a CRC; the engine then reads the same bytes from the page
cache. The footer's row count must also be the one the ChunkRef recorded when it was written.

Files are checked concurrently (reads and ``zlib.crc32`` release the GIL). A file that passed
is remembered for the process under its identity (local: size, modification time, inode;
object store: size and ETag), so a second query over the same output does not pay again: a
writer that changes the file changes its identity, and a chunk is never rewritten in place.
What a remembered file is not checked against is bytes changing under the filesystem (a
failing disk) between two queries of one process.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from typing import IO

import pyarrow as pa

from zephyr_arrow.fs import filesystem, is_local, store_operation
from zephyr_arrow.store.chunk_ref import ChunkRef

_BLOCK = 4 << 20  # bytes read at a time
_HEADER_BYTES = 4096  # a page header is read from this many bytes first (more if it holds long statistics)
_THREADS = 8
_checked: dict[str, tuple] = {}  # path -> identity of the file as it was when it passed


def verify(chunks: Iterable[ChunkRef]) -> None:
    """Raise ChunkMissingError or ChunkCorruptError (naming the file) unless every chunk file
    holds what was written; a user's file (``checksummed=False``) is only checked to exist.
    Files are looked up (on an object store, a request each) and checked concurrently."""
    by_path: dict[str, list[ChunkRef]] = {}
    for chunk in chunks:
        by_path.setdefault(chunk.path, []).append(chunk)
    files = list(by_path.values())
    if len(files) == 1:
        _verify_file(files[0])
    elif files:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(_THREADS, len(files))) as pool:
            for future in [pool.submit(_verify_file, refs) for refs in files]:
                future.result()


def _verify_file(refs: list[ChunkRef]) -> None:
    """Check the file of ``refs`` unless it passed before as it is now; remember it once it passes."""
    identity = _identity(refs[0])
    if any(ref.checksummed for ref in refs) and _checked.get(refs[0].path) != identity:
        _check(refs)
        _checked[refs[0].path] = identity


def _check(refs: list[ChunkRef]) -> None:
    """Check the file of ``refs`` (each a ref to it) or raise naming it."""
    chunk = refs[0]
    with store_operation("checking chunk", chunk.path):
        try:
            problem = _problem(chunk.path, refs)
        except FileNotFoundError as error:
            raise chunk._missing() from error
        except (OSError, ValueError, RecursionError, pa.ArrowException) as error:  # RecursionError: structs nested in garbage
            if chunk._is_store_failure(error):
                raise
            problem = f"{type(error).__name__}: {error}"
    if problem is not None:
        raise chunk._corrupt(problem)


def _identity(chunk: ChunkRef) -> tuple:
    """What changes when the file is written again; ChunkMissingError when it is gone."""
    try:
        if is_local(chunk.path):
            stat = os.stat(chunk.path.removeprefix("file://"))
            return stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev
        fs, fs_path = filesystem(chunk.path)
        with store_operation("looking up", chunk.path):
            fs.invalidate_cache(fs_path)  # a listing cached earlier would show the file as it was then
            info = fs.info(fs_path)
    except FileNotFoundError as error:
        raise chunk._missing() from error
    # Without a version (an ETag or the like), a remote file is checked every time.
    version = info.get("ETag") or info.get("etag") or info.get("generation") or info.get("md5Hash") or object()
    return info.get("size"), version


def _problem(path: str, refs: list[ChunkRef]) -> str | None:
    """What is wrong with the file at ``path``, or None."""
    import pyarrow.parquet as pq

    with _open(path) as file:
        metadata = pq.read_metadata(file)
        for ref in refs:
            rows = ref.num_rows if ref.row_range is None else ref.row_range[1]
            if rows != metadata.num_rows if ref.row_range is None else rows > metadata.num_rows:
                return f"its footer says {metadata.num_rows} rows where {rows} were written"
        for group_index in range(metadata.num_row_groups):
            group = metadata.row_group(group_index)
            for column_index in range(group.num_columns):
                column = group.column(column_index)
                start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
                problem = _pages_problem(file, start, start + column.total_compressed_size)
                if problem is not None:
                    return f"column {column.path_in_schema!r} of row group {group_index}: {problem}"
    return None


def _open(path: str) -> IO[bytes]:
    if is_local(path):
        return open(path.removeprefix("file://"), "rb", buffering=0)
    fs, fs_path = filesystem(path)
    return fs.open(fs_path, "rb", block_size=_BLOCK)


def _pages_problem(file: IO[bytes], start: int, end: int) -> str | None:
    """Walk the pages of the column chunk at bytes ``[start, end)``, checking each one's CRC-32."""
    file.seek(start)
    left = end - start  # bytes not read yet
    buffer, at = b"", 0  # read but not consumed: buffer[at:]
    position = start  # of buffer[at] in the file
    while left or at < len(buffer):
        need = _HEADER_BYTES
        while True:
            if len(buffer) - at < need and left:
                more = file.read(min(max(_BLOCK, need), left))
                if not more:
                    return "the file ends inside it"
                buffer, at, left = buffer[at:] + more, 0, left - len(more)
            try:
                size, crc, header_end = _page_header(buffer, at)
                if header_end <= len(buffer):
                    break
            except IndexError:
                pass
            if not left:
                return f"the page header at byte {position} is cut short"
            need = 2 * (len(buffer) - at)
        if crc is None:
            return f"the page at byte {position} has no checksum"
        if size < 0 or size > len(buffer) - header_end + left:
            return f"the page at byte {position} claims {size} bytes, more than its column chunk holds"
        body_end = min(header_end + size, len(buffer))
        value = zlib.crc32(memoryview(buffer)[header_end:body_end])
        remaining = size - (body_end - header_end)
        while remaining:
            block = file.read(min(_BLOCK, remaining))
            if not block:
                return "the file ends inside it"
            value = zlib.crc32(block, value)
            remaining -= len(block)
            left -= len(block)
        if value != crc & 0xFFFFFFFF:
            return f"the page at byte {position} fails its checksum"
        position += header_end - at + size
        at = body_end
    return None


# Thrift compact protocol (what Parquet's page headers are written in), just enough to read a PageHeader.
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)


def _page_header(data: bytes, at: int) -> tuple[int, int | None, int]:
    """A PageHeader at ``data[at]``: (compressed_page_size, crc or None, where the page's bytes start).
    IndexError when ``data`` ends first."""
    size, crc = -1, None
    field_id = 0
    while True:
        byte = data[at]
        at += 1
        kind = byte & 0x0F
        if kind == _STOP:
            return size, crc, at
        delta = byte >> 4
        if delta:
            field_id += delta
        else:
            raw, at = _varint(data, at)
            field_id = _unzigzag(raw)
        if field_id in (3, 4) and kind == _I32:
            raw, at = _varint(data, at)
            if field_id == 3:
                size = _unzigzag(raw)
            else:
                crc = _unzigzag(raw)
        else:
            at = _skip(data, at, kind)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _skip(data: bytes, at: int, kind: int) -> int:
    """Past a value of ``kind`` at ``data[at]`` (booleans of a field live in its header)."""
    if kind in (_TRUE, _FALSE):
        return at
    if kind == _BYTE:
        return at + 1
    if kind in (_I16, _I32, _I64):
        return _varint(data, at)[1]
    if kind == _DOUBLE:
        return at + 8
    if kind == _BINARY:
        length, at = _varint(data, at)
        return at + length
    if kind in (_LIST, _SET):
        header = data[at]
        count, element = header >> 4, header & 0x0F
        at += 1
        if count == 15:
            count, at = _varint(data, at)
        if count > len(data) - at:  # each element takes a byte at least
            raise IndexError(at)
        for _ in range(count):
            at = _skip_element(data, at, element)
        return at
    if kind == _MAP:
        count, at = _varint(data, at)
        if 2 * count > len(data) - at:
            raise IndexError(at)
        if count:
            types = data[at]
            at += 1
            for _ in range(count):
                at = _skip_element(data, _skip_element(data, at, types >> 4), types & 0x0F)
        return at
    if kind == _STRUCT:
        while True:
            byte = data[at]
            at += 1
            if byte & 0x0F == _STOP:
                return at
            if not byte >> 4:
                at = _varint(data, at)[1]
            at = _skip(data, at, byte & 0x0F)
    raise ValueError(f"a page header holds an unknown Thrift type {kind}")


def _skip_element(data: bytes, at: int, kind: int) -> int:
    """Past one element of a list, set or map (a boolean element takes a byte)."""
    return at + 1 if kind in (_TRUE, _FALSE) else _skip(data, at, kind)
