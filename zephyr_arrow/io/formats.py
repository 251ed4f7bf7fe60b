"""File formats and compression: which reader a path needs, and its (de)compressed byte stream."""

from __future__ import annotations

import bz2
import contextlib
import lzma
import posixpath
from collections.abc import Callable, Iterator
from typing import BinaryIO

import zstandard
from fsspec import AbstractFileSystem
from isal import igzip, isal_zlib

from zephyr_arrow.errors import InputFileError, PlanError

ZSTD_LEVEL = 3

_CODECS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet", ".vortex": "vortex"}
# Errors a damaged or unreadable input raises while it is opened or decompressed.
_READ_ERRORS = (OSError, EOFError, isal_zlib.error, lzma.LZMAError, zstandard.ZstdError)


def split_codec(path: str) -> tuple[str, str | None]:
    """``path`` without its compression extension, and the codec that extension names."""
    stem, extension = posixpath.splitext(path)
    codec = _CODECS.get(extension.lower())
    return (stem, codec) if codec else (path, None)


def format_of(path: str) -> str:
    """The format a path's extension names: ``"jsonl"``, ``"parquet"``, ``"csv"`` or ``"vortex"``.

    >>> format_of("s3://bucket/docs-00001.jsonl.zst")
    'jsonl'
    """
    stem, codec = split_codec(path)
    file_format = _FORMATS.get(posixpath.splitext(stem)[1].lower())
    if file_format is None or (file_format in ("parquet", "vortex") and codec):
        supported = ", ".join(sorted(_FORMATS))
        codecs = ", ".join(sorted(_CODECS))
        raise PlanError(
            f"Unsupported extension: cannot tell the format of {path!r}; supported extensions are {supported} "
            f"(JSON and CSV optionally followed by {codecs}; Parquet and Vortex compress internally)"
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
def open_stream(fs: AbstractFileSystem, fs_path: str, mode: str, codec: str | None) -> Iterator[BinaryIO]:
    """Open a binary stream on ``fs_path``, (de)compressing with ``codec``; closes both layers."""
    with fs.open(fs_path, mode) as raw:
        if codec is None:
            yield raw
            return
        with _CODEC_STREAMS[codec](raw, mode) as stream:
            yield stream


@contextlib.contextmanager
def input_errors(path: str) -> Iterator[None]:
    """Turn a missing or undecodable input into an InputFileError naming ``path``."""
    try:
        yield
    except FileNotFoundError as error:
        raise InputFileError(f"input file not found: {path}") from error
    except _READ_ERRORS as error:
        raise InputFileError(f"cannot read {path}: {error}") from error
