"""The ``_SUCCESS`` marker of a write stage's output directories, as Hadoop's FileOutputCommitter leaves.

When every task of a write stage (``write_parquet``, ``write_jsonl``, ``write_csv``,
``write_vortex``) has succeeded, an empty ``_SUCCESS`` file is written into each directory
the stage wrote files into, so a consumer can tell a finished output from a failed or running
one's. Before the stage writes anything, a ``_SUCCESS`` left there by an earlier run is
removed: a run that fails, or is killed, part way through rewriting an output leaves none.

It is empty because Polars' ``scan_parquet(directory)`` refuses a directory holding a
non-empty file of another extension (an empty ``_SUCCESS`` it skips, as pyarrow's datasets
skip ``_``-prefixed files and DuckDB's ``dir/*.parquet`` never sees it). The files written
are the rows of the refs the run returns (one path per shard).
"""

from __future__ import annotations

import contextlib
import os

from zephyr_arrow import ops
from zephyr_arrow.fs import filesystem, is_local, store_operation

SUCCESS_NAME = "_SUCCESS"


def output_directories(sink: ops.WriteOp, num_shards: int) -> list[str]:
    """The directories the shards' files go to (the pattern, or its function, names them)."""
    return sorted({sink.output_path(index, num_shards).rpartition("/")[0] or "." for index in range(num_shards)})


def remove_markers(directories: list[str]) -> None:
    """Delete the ``_SUCCESS`` of each directory, where one is."""
    for directory in directories:
        path = f"{directory}/{SUCCESS_NAME}"
        with store_operation("removing the stale marker", path), contextlib.suppress(FileNotFoundError):
            if is_local(path):
                os.remove(path.removeprefix("file://"))
            else:
                fs, fs_path = filesystem(path)
                fs.rm_file(fs_path)


def write_markers(directories: list[str]) -> None:
    """Write an empty ``_SUCCESS`` into each directory."""
    for directory in directories:
        path = f"{directory}/{SUCCESS_NAME}"
        with store_operation("writing the marker", path):
            if is_local(path):
                open(path.removeprefix("file://"), "wb").close()
            else:
                fs, fs_path = filesystem(path)
                fs.pipe_file(fs_path, b"")
