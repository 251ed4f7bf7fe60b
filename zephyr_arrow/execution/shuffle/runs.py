"""The run files of one scatter task: each sorted run adds one row-group-aligned segment per output shard."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from zephyr_arrow.arrow.schema import keeps_absence
from zephyr_arrow.arrow.tables import rows_per_slice, take_by_batch
from zephyr_arrow.execution.shuffle import keys as K
from zephyr_arrow.execution.shuffle.merge import SortedFile
from zephyr_arrow.execution.tasks import StageResult
from zephyr_arrow.store import ChunkRef

TAKE_BYTES = 4 * 1024 * 1024  # a run is taken in order this much at a time (written a row group at a time)


class RunFiles:
    """The files of one scatter task: each run adds one row-group-aligned segment per output shard."""

    def __init__(self, path_for: Callable[[int], str]) -> None:
        self._path_for = path_for
        self._closed: list[ChunkRef] = []
        self._file: SortedFile | None = None
        self._segments: list[tuple[int, int, int, int]] = []  # (output shard, file index, start, stop)

    def write(self, table: pa.Table, order: pa.Array | None) -> None:
        """Add the rows of ``table`` (at the indices ``order``, in that order, when given), sorted by output shard."""
        target_column = table.column(K.TARGET) if order is None else table.column(K.TARGET).take(order)
        targets = pc.value_counts(target_column)  # in first-seen order, i.e. ascending
        data = table.drop_columns([K.TARGET])
        if self._file is not None and not _fits(data.schema, self._file.schema):
            self._closed.append(self._file.close())
            self._file = None
        if self._file is None:
            schema = data.schema.with_metadata({**(data.schema.metadata or {}), K.HASHED_BY: K.hashed_by()})
            self._file = SortedFile(self._path_for(len(self._closed)), schema)
        pieces = iter([data]) if order is None else take_by_batch(data, order, rows_per_slice(data, TAKE_BYTES))
        counts = zip(targets.field("values").to_pylist(), targets.field("counts").to_pylist())
        for target, parts in itertools.groupby(_cut(pieces, counts), key=lambda part: part[0]):
            offset = self._file.num_rows
            for _, part in parts:
                self._file.write(part)
            self._segments.append((target, len(self._closed), offset, self._file.num_rows))

    def close(self, schema: pa.Schema) -> list[StageResult]:
        """The segments written; with none, one empty run of ``schema`` (the columns reach the reduce side)."""
        if not self._segments and self._file is None:
            self._file = SortedFile(self._path_for(len(self._closed)), schema)
        if self._file is not None:
            self._closed.append(self._file.close())
            self._file = None
        if not self._segments:
            (empty,) = self._closed
            return [StageResult(0, empty)]
        return [
            StageResult(target, ChunkRef(self._closed[index].path, stop - start, self._closed[index].schema, (start, stop)))
            for target, index, start, stop in self._segments
        ]

    def abort(self) -> None:
        if self._file is not None:
            self._file.abort()
            self._file = None


def _cut(pieces: Iterator[pa.Table], counts: Iterable[tuple[int, int]]) -> Iterator[tuple[int, pa.Table]]:
    """The rows of ``pieces`` in turn, cut into (target, rows) parts of ``counts`` rows per target."""
    piece, used = None, 0
    for target, count in counts:
        while count:
            if piece is None or used == piece.num_rows:
                piece, used = next(pieces), 0
            size = min(count, piece.num_rows - used)
            yield target, piece.slice(used, size)
            used += size
            count -= size


def _fits(schema: pa.Schema, target: pa.Schema) -> bool:
    """Whether tables of ``schema`` cast to ``target`` without loss (one file can hold both)."""
    if schema == target:
        return True
    if not keeps_absence(schema, target):  # a new file, read under a schema that records them
        return False
    try:
        unified = pa.unify_schemas([target, schema], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return False
    return unified.remove_metadata() == target.remove_metadata()
