"""InputFileSpec: a file to read, or part of one (Zephyr's read spec), and splitting Parquet files by size.

    Dataset.from_list([InputFileSpec("a.parquet", row_start=0, row_end=1000, columns=["id"])]).load_parquet()
    Dataset.from_files("in/*.parquet").load_parquet(approx_shard_bytes=256 << 20)   # more shards than files
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from zephyr_arrow.errors import PlanError
from zephyr_arrow.fs import open_parquet

if TYPE_CHECKING:
    import polars as pl

_FORMATS = ("auto", "parquet", "jsonl", "csv", "vortex")


@dataclass(frozen=True)
class InputFileSpec:
    """A file to read: its ``path``, ``format`` ("auto": by extension), the ``columns`` to read,
    the rows ``[row_start, row_end)`` of it (Parquet and Vortex; JSON lines are read whole, as
    in Zephyr) and ``filter_expr``, a Polars expression the rows must satisfy."""

    path: str
    format: str = "auto"
    columns: list[str] | None = None
    row_start: int | None = None
    row_end: int | None = None
    filter_expr: pl.Expr | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise PlanError(f"InputFileSpec needs a path string, got {self.path!r}")
        if self.format not in _FORMATS:
            raise PlanError(f"InputFileSpec format must be one of {', '.join(_FORMATS)}, got {self.format!r}")
        for name in ("row_start", "row_end"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise PlanError(f"InputFileSpec {name} must be an int >= 0 or None, got {value!r}")

    @staticmethod
    def of(source: str | InputFileSpec) -> InputFileSpec:
        """``source`` as a spec: a path string reads the whole file."""
        if isinstance(source, InputFileSpec):
            return source
        if isinstance(source, str):
            return InputFileSpec(source)
        raise TypeError(f"a file to read must be a path (str) or an InputFileSpec, got {type(source).__name__}: {source!r:.100}")


def read_spec(
    spec: InputFileSpec,
    columns: list[str] | None = None,
    filter: pl.Expr | None = None,
    file_format: str | None = None,
    keep: Iterable[str] | None = None,
) -> Iterator[pa.Table]:
    """The batches ``spec`` names; its columns and filter apply with (and its columns over) the caller's."""
    from zephyr_arrow.io import format_of, read_file
    from zephyr_arrow.io.parquet import read_parquet

    columns = list(spec.columns) if spec.columns is not None else columns
    if spec.filter_expr is not None:
        filter = spec.filter_expr if filter is None else spec.filter_expr & filter
    file_format = (None if spec.format == "auto" else spec.format) or file_format or format_of(spec.path)
    if file_format in ("parquet", "vortex") and (spec.row_start is not None or spec.row_end is not None):
        row_range = (spec.row_start or 0, sys.maxsize if spec.row_end is None else spec.row_end)
        if file_format == "vortex":
            from zephyr_arrow.io.vortex import read_vortex

            return read_vortex(spec.path, columns, filter, row_range=row_range, keep=None if columns is not None else keep)
        return read_parquet(spec.path, columns, filter, row_range=row_range, keep=None if columns is not None else keep)
    return read_file(spec.path, columns, filter, file_format, keep)


def parquet_splits(path: str, approx_shard_bytes: int) -> list[tuple[int, int]]:
    """Row ranges of ``path`` of about ``approx_shard_bytes`` each (uncompressed, from the footer),
    cut at row-group boundaries: a row group larger than that is a range of its own. As Zephyr cuts them.

    >>> import pyarrow.parquet as pq, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.parquet")
    >>> pq.write_table(pa.table({"x": list(range(1000))}), path, row_group_size=100)
    >>> parquet_splits(path, 1) == [(start, start + 100) for start in range(0, 1000, 100)], parquet_splits(path, 1 << 30)
    (True, [(0, 1000)])
    """
    with open_parquet(path) as parquet:
        metadata = parquet.metadata
    splits: list[tuple[int, int]] = []
    start = rows = split_bytes = 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        if split_bytes and split_bytes + group.total_byte_size > approx_shard_bytes:
            splits.append((start, rows))
            start, split_bytes = rows, 0
        split_bytes += group.total_byte_size
        rows += group.num_rows
    splits.append((start, rows))
    return splits


def split_specs(paths: Iterable[str], approx_shard_bytes: int) -> Iterator[Any]:
    """Each of ``paths`` as one or more row ranges of about ``approx_shard_bytes`` (Parquet files; others whole)."""
    from zephyr_arrow.io.formats import format_of

    for path in paths:
        if format_of(path) != "parquet":
            yield path
            continue
        for row_start, row_end in parquet_splits(path, approx_shard_bytes):
            yield InputFileSpec(path, "parquet", row_start=row_start, row_end=row_end)
