"""Filesystem access through fsspec, with a fast path for local files.

fsspec is imported only when a function needs it, so reading a local output
(``read_parquet(...).sql(...)`` in a fresh process) does not pay for its import.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import logging
import os
import re
import shutil
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from zephyr_arrow.errors import InputFileError, ObjectStoreError, ZephyrError

if TYPE_CHECKING:
    import fsspec
    import pyarrow.parquet as pq


def filesystem(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem holding ``path``, and the path as that filesystem names it."""
    import fsspec

    return fsspec.core.url_to_fs(path)


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def pre_buffer(path: str) -> bool:
    """Whether a ``pq.ParquetFile`` on ``path`` should pre-buffer (pyarrow's default: yes).

    Pre-buffering coalesces a row group's column reads into few requests, which pays on an
    object store; on a local disk it only costs: the file keeps its last row group's bytes
    until it is closed (a merge of 32 runs held 32 MB more that way) and reading 256 row
    groups of 1 MB took 56-85 ms instead of 42-48 ms.
    """
    return not is_local(path)


def open_parquet(path: str, *, metadata: pq.FileMetaData | None = None, buffer_size: int = 0) -> pq.ParquetFile:
    """The one way the package opens a Parquet file: a local path directly, any other URL
    through its fsspec filesystem, pre-buffered where that pays (``pre_buffer``). Pages written
    with checksums (every chunk's are) are checked against them as they are read.
    ``metadata``: the file's footer, already read; ``buffer_size``: 0 reads each column chunk whole."""
    import pyarrow.parquet as pq

    options = {"metadata": metadata, "buffer_size": buffer_size, "page_checksum_verification": True}
    if is_local(path):
        return pq.ParquetFile(path.removeprefix("file://"), pre_buffer=False, **options)
    fs, fs_path = filesystem(path)
    return pq.ParquetFile(fs_path, filesystem=fs, pre_buffer=True, **options)


_BRACES = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``a/{x,y}/*.jsonl`` -> ``["a/x/*.jsonl", "a/y/*.jsonl"]`` (nested braces expand too)."""
    match = _BRACES.search(pattern)
    if match is None or "," not in match.group(1):
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return list(itertools.chain.from_iterable(expand_braces(head + option + tail) for option in match.group(1).split(",")))


def glob_files(pattern: str, empty_glob_ok: bool = False) -> list[str]:
    """Files matching ``pattern``, sorted; InputFileError when none match (unless ``empty_glob_ok``)."""
    paths: set[str] = set()
    for expanded in expand_braces(pattern):
        if is_local(expanded):
            local = expanded.removeprefix("file://")
            paths.update(p for p in glob.glob(local, recursive=True) if os.path.isfile(p))
            continue
        fs, fs_pattern = filesystem(expanded)
        matches = fs.glob(fs_pattern, detail=True) if any(c in fs_pattern for c in "*?[") else _single(fs, fs_pattern)
        paths.update(fs.unstrip_protocol(path) for path, info in matches.items() if info.get("type") != "directory")
    if not paths and not empty_glob_ok:
        raise InputFileError(f"no files match {pattern!r} (pass empty_glob_ok=True to allow an empty input)")
    return sorted(paths)


def _single(fs, path: str) -> dict:
    return {path: fs.info(path)} if fs.exists(path) else {}


@dataclass(frozen=True, slots=True)
class TempFile:
    """A temporary file being written by ``atomic_output``."""

    fs: fsspec.AbstractFileSystem
    path: str

    @property
    def is_local(self) -> bool:
        from fsspec.implementations.local import LocalFileSystem

        return isinstance(self.fs, LocalFileSystem)

    def open(self) -> IO[bytes]:
        return self.fs.open(self.path, "wb")


_STORE_CLIENTS = ("fsspec", "s3fs", "gcsfs", "adlfs", "botocore", "aiobotocore", "aiohttp")


def is_store_failure(error: BaseException) -> bool:
    """Whether ``error`` is an object store failing (a server error, throttling, a lost
    connection) rather than a missing key, bad data or the user's code, which runs inside a
    write as its rows stream in: it must be raised by the store's client (s3fs turns the
    server's errors into plain OSErrors, so the type alone cannot tell)."""
    if isinstance(error, (FileNotFoundError, ZephyrError)) or type(error).__module__.startswith("pyarrow"):
        return False
    if type(error).__module__.split(".")[0] in _STORE_CLIENTS:
        return True
    frames = traceback.extract_tb(error.__traceback__)
    return isinstance(error, OSError) and bool(frames) and any(f"/{name}/" in frames[-1].filename for name in _STORE_CLIENTS)


@contextlib.contextmanager
def store_operation(operation: str, path: str) -> Iterator[None]:
    """Name the operation and the key when an object store still fails after its client's retries."""
    try:
        yield
    except Exception as error:
        if is_local(path) or not is_store_failure(error):
            raise
        raise ObjectStoreError(f"{operation} {path} failed, after the object store client's retries: {type(error).__name__}: {error}") from error


@contextlib.contextmanager
def atomic_output(path: str, replace_stale: bool = False) -> Iterator[TempFile]:
    """Yield a temporary file to write; move it onto ``path`` only if the block succeeds.

    On any exception the temporary file is removed and nothing appears at ``path``.
    Locally the move is an atomic rename; on object stores it is copy-then-delete,
    so readers may miss the file for a moment but never see half of it. The temporary
    file is hidden (a leading dot, which pyarrow's datasets skip, and not ``path``'s
    extension, which globs such as ``*.parquet`` skip); ``replace_stale`` first deletes
    what earlier writers of ``path`` left when their process was killed mid-write.
    """
    fs, fs_path = filesystem(path)
    tmp = TempFile(fs, temp_path(fs_path))
    with store_operation("creating the directory of", path):
        fs.makedirs(fs._parent(fs_path), exist_ok=True)
        if replace_stale:
            for stale in fs.glob(temp_path(fs_path, "*")):
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(stale)
    try:
        with store_operation("writing", path):
            yield tmp
            if tmp.is_local:
                os.replace(tmp.path, fs_path)
            else:
                fs.mv(tmp.path, fs_path)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.exists(tmp.path):
                fs.rm(tmp.path)
        raise


def size(path: str) -> int:
    """The size of a file in bytes."""
    if is_local(path):
        return os.path.getsize(path.removeprefix("file://"))
    fs, fs_path = filesystem(path)
    with store_operation("reading the size of", path):
        return fs.size(fs_path)


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(path.removeprefix("file://"))
    fs, fs_path = filesystem(path)
    with store_operation("looking up", path):
        return fs.exists(fs_path)


def remove_quietly(path: str) -> None:
    """``remove_tree`` for clean-up, which must never hide the error being handled nor fail a run
    that succeeded (the object store may be the thing that failed): a failure is logged."""
    try:
        remove_tree(path)
    except Exception as error:  # noqa: BLE001 - logged, by design
        logging.getLogger("zephyr_arrow").warning("could not delete %s: %s: %s", path, type(error).__name__, error)


def remove_tree(path: str) -> None:
    """Delete a file or directory tree if it exists (no error if it is already gone)."""
    if is_local(path):  # without fsspec, which a run on local disk may never have imported (nor can at exit)
        local = path.removeprefix("file://")
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(local) and not os.path.islink(local):
                shutil.rmtree(local)
            else:
                os.remove(local)
        return
    fs, fs_path = filesystem(path)
    with contextlib.suppress(FileNotFoundError):
        if fs.exists(fs_path):
            fs.rm(fs_path, recursive=True)


def temp_path(path: str, tag: str | None = None) -> str:
    """A hidden sibling name for an atomic write: written first, then moved onto ``path``."""
    directory, _, name = path.rpartition("/")
    return f"{directory}{'/' if directory else ''}.{name}.tmp-{tag or uuid.uuid4().hex[:8]}"
