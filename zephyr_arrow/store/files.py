"""Filesystem access through fsspec, with a fast path for local files.

fsspec is imported only when a function needs it, so reading a local output
(``read_parquet(...).sql(...)`` in a fresh process) does not pay for its import.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from zephyr_arrow.store.layout import temp_path

if TYPE_CHECKING:
    import fsspec


def filesystem(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem holding ``path``, and the path as that filesystem names it."""
    import fsspec

    return fsspec.core.url_to_fs(path)


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


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


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[TempFile]:
    """Yield a temporary file to write; move it onto ``path`` only if the block succeeds.

    On any exception the temporary file is removed and nothing appears at ``path``.
    Locally the move is an atomic rename; on object stores it is copy-then-delete,
    so readers may miss the file for a moment but never see half of it.
    """
    fs, fs_path = filesystem(path)
    tmp = TempFile(fs, temp_path(fs_path))
    fs.makedirs(fs._parent(fs_path), exist_ok=True)
    try:
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
    return fs.size(fs_path)


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(path.removeprefix("file://"))
    fs, fs_path = filesystem(path)
    return fs.exists(fs_path)


def remove_tree(path: str) -> None:
    """Delete a file or directory tree if it exists (no error if it is already gone)."""
    fs, fs_path = filesystem(path)
    with contextlib.suppress(FileNotFoundError):
        if fs.exists(fs_path):
            fs.rm(fs_path, recursive=True)
