"""ShardRefs: every shard of one output, as references to Parquet chunks."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from zephyr_arrow.arrow.rows import ABSENT_COLUMN
from zephyr_arrow.arrow.schema import conform, unify, with_absent_column
from zephyr_arrow.errors import SchemaConflictError
from zephyr_arrow.fs import atomic_output, filesystem
from zephyr_arrow.store import views
from zephyr_arrow.store.chunk_ref import ChunkRef
from zephyr_arrow.store.layout import MANIFEST_NAME, join, saved_chunk_path

_COPY_BUFFER_BYTES = 8 << 20  # what saving a chunk to another filesystem holds at a time

if TYPE_CHECKING:
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds


@dataclass(frozen=True)
class ShardRefs:
    """All shards of one output. Nothing is read until a view or ``load()`` asks.

    >>> refs = ShardRefs([[ChunkRef.write("/tmp/zephyr-doc/s0.parquet", [{"n": 1}, {"n": 2}])]])
    >>> refs.num_rows, refs.sql("select sum(n) from data").fetchall()
    (2, [(3,)])
    """

    shards: tuple[tuple[ChunkRef, ...], ...]
    # The user's counters (and Zephyr's zephyr/ ones), summed over the run's tasks.
    counters: dict[str, int | float] = field(default_factory=dict, compare=False)
    # The run's statistics: what the engine did for it (shuffle/files_written), apart from the counters.
    stats: dict[str, int | float] = field(default_factory=dict, compare=False)
    # The RunRecord of the run that made it (execution/run_record.py, a layer above the store): per task
    # attempt, per stage, counters over time. None for refs not made by execute (opened, built by hand).
    run: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shards", tuple(tuple(shard) for shard in self.shards))

    @property
    def num_shards(self) -> int:
        """How many shards the output has (a shard may hold no rows)."""
        return len(self.shards)

    @property
    def chunks(self) -> list[ChunkRef]:
        """Every chunk, shard by shard, in order."""
        return [chunk for shard in self.shards for chunk in shard]

    @property
    def num_rows(self) -> int:
        """The rows of every chunk, from the counts the refs carry: no file is read."""
        return sum(chunk.num_rows for chunk in self.chunks)

    @cached_property
    def schema(self) -> pa.Schema:
        """The unified schema over every chunk (see ``arrow/schema.py``), as every view shows it."""
        schema = self._row_schema
        index = schema.get_field_index(ABSENT_COLUMN)
        return schema if index < 0 else schema.remove(index)

    @cached_property
    def _row_schema(self) -> pa.Schema:
        """``schema`` with the absent-keys column where rows lack keys (``arrow/rows.py``): what rows are decoded from."""
        chunks = self.chunks
        schema = unify([c.schema for c in chunks], [c.described for c in chunks])
        _check_ints_fit_floats(chunks, schema)
        return with_absent_column(schema, [c.schema for c in chunks if c.num_rows])

    # Lazy views: none of these loads the whole output into Python.
    def to_arrow_dataset(self) -> ds.Dataset:
        """A ``pyarrow.dataset.Dataset`` over the chunk files, with the unified schema; nothing is read yet."""
        return views.arrow_dataset(self.chunks, self.schema)

    def to_polars(self) -> pl.LazyFrame:
        """A Polars ``LazyFrame`` over the chunk files, with the unified schema; ``.collect()`` reads them."""
        return views.polars_frame(self.chunks, self.schema)

    def sql(self, query: str, connection: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyRelation:
        """Run DuckDB SQL over the output, visible as the table ``data``."""
        return views.duckdb_relation(self.chunks, self.schema, query, connection)

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        """Every row, one batch at a time, in shard order, conformed to the unified schema."""
        return self._batches(self.chunks, self.schema)

    def iter_rows(self) -> Iterator[Any]:
        """Every row as the Python object a row function returned (one batch in memory at a time)."""
        return _rows(self._batches(self.chunks, self._row_schema))

    def iter_shard_rows(self, shard_index: int) -> Iterator[Any]:
        """The rows of one shard, as ``iter_rows`` gives them (one batch in memory at a time)."""
        return _rows(self._batches(self.shards[shard_index], self._row_schema))

    def _batches(self, chunks: list[ChunkRef], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        for chunk in chunks:
            for batch in chunk.iter_batches():
                yield conform(batch, schema)

    # Materialising.
    def load(self) -> pa.Table:
        """The whole output as one Arrow table (unified schema)."""
        schema = self.schema
        return pa.Table.from_batches(list(self.iter_batches()), schema=schema)

    def to_pylist(self) -> list[Any]:
        """The whole output as decoded Python rows, in shard order."""
        return list(self.iter_rows())

    @property
    def results(self) -> list[Any]:
        """Zephyr compatibility: ``ZephyrExecutionResult.results``, the output as a flat list."""
        return self.to_pylist()

    # Persistence.
    def save(self, directory: str) -> ShardRefs:
        """Copy the chunk files under ``directory`` with a manifest; return refs to the copies.

        ``ShardRefs.open(directory)`` reopens them in any process.
        """
        fs, _ = filesystem(directory)
        copied: dict[str, str] = {}
        shards = []
        for shard_index, shard in enumerate(self.shards):
            saved = []
            for chunk in shard:
                if chunk.path not in copied:
                    target = saved_chunk_path(directory, shard_index, len(copied))
                    _copy(chunk, target)
                    copied[chunk.path] = target
                saved.append(replace(chunk, path=copied[chunk.path]))
            shards.append(saved)
        result = ShardRefs(shards, counters=dict(self.counters), stats=dict(self.stats))
        manifest = {
            "version": 1,
            "counters": result.counters,
            "stats": result.stats,
            "shards": [[chunk_entry(c, directory) for c in shard] for shard in result.shards],
        }
        with fs.open(join(filesystem(directory)[1], MANIFEST_NAME), "w") as out:
            json.dump(manifest, out)
        return result

    @classmethod
    def open(cls, directory: str) -> ShardRefs:
        """Reopen refs saved with ``save(directory)``."""
        fs, fs_dir = filesystem(directory)
        with fs.open(join(fs_dir, MANIFEST_NAME)) as source:
            manifest = json.load(source)
        shards = [[chunk_from_entry(entry, directory) for entry in shard] for shard in manifest["shards"]]
        return cls(shards, counters=manifest["counters"], stats=manifest.get("stats", {}))


def _copy(chunk: ChunkRef, target: str) -> None:
    source_fs, source_path = filesystem(chunk.path)
    target_fs, target_path = filesystem(target)
    target_fs.makedirs(target_fs._parent(target_path), exist_ok=True)
    if source_fs is target_fs:
        source_fs.copy(source_path, target_path)
    else:  # streamed: a chunk can be larger than memory
        with atomic_output(target) as tmp, source_fs.open(source_path, "rb") as src, tmp.open() as dst:
            shutil.copyfileobj(src, dst, _COPY_BUFFER_BYTES)


def chunk_entry(chunk: ChunkRef, directory: str) -> dict[str, Any]:
    """``chunk`` as JSON (its path relative to ``directory`` when under it); ``chunk_from_entry`` reads it back."""
    prefix = directory.rstrip("/") + "/"
    return {
        "path": chunk.path[len(prefix) :] if chunk.path.startswith(prefix) else chunk.path,
        "num_rows": chunk.num_rows,
        "row_range": list(chunk.row_range) if chunk.row_range else None,
        "schema": base64.b64encode(chunk.schema.serialize().to_pybytes()).decode(),
        "origin": chunk.origin,
        "checksummed": chunk.checksummed,
    }


def chunk_from_entry(entry: dict[str, Any], directory: str) -> ChunkRef:
    path = entry["path"]
    if "://" not in path and not path.startswith("/"):
        path = join(directory, path)
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(entry["schema"])))
    row_range = tuple(entry["row_range"]) if entry["row_range"] else None
    return ChunkRef(path, entry["num_rows"], schema, row_range, entry.get("origin"), entry.get("checksummed", True))


def _rows(batches: Iterator[pa.RecordBatch]) -> Iterator[Any]:
    from zephyr_arrow.arrow.rows import table_to_rows

    for batch in batches:
        yield from table_to_rows(pa.Table.from_batches([batch]))


def _check_ints_fit_floats(chunks: list[ChunkRef], schema: pa.Schema) -> None:
    """Integers of a column that other chunks hold as floats promote to floats only when each
    fits one exactly: 2**60 + 1 read back as 2**60 would be a wrong answer, and DuckDB would
    give it where pyarrow and Polars refuse the cast. Footer statistics say so without reading
    the data, where a chunk has them."""
    floats = {field.name: field.type for field in schema if pa.types.is_floating(field.type)}
    for chunk in chunks:
        for column in chunk.schema:
            if column.name in floats and pa.types.is_integer(column.type) and chunk.num_rows:
                exact = 2 ** _MANTISSA_BITS[floats[column.name].bit_width]
                low, high = _int_range(chunk, column.name)
                if high > exact or low < -exact:
                    raise SchemaConflictError(
                        f"column {column.name!r} holds {column.type} values in {chunk.path} (such as {high if high > exact else low}) "
                        f"and {floats[column.name]} in other chunks, and {floats[column.name]} cannot hold every such integer "
                        "exactly; give the column one type in every row (cast where that is what the data means)"
                    )


_MANTISSA_BITS = {16: 11, 32: 24, 64: 53}


def _int_range(chunk: ChunkRef, name: str) -> tuple[int, int]:
    """The least and greatest value of integer column ``name`` in ``chunk``: from its row groups'
    statistics when every one has them (a chunk that is a row range is read)."""
    if chunk.row_range is None:
        with chunk.opened() as parquet:
            metadata = parquet.metadata
            groups = [metadata.row_group(g) for g in range(metadata.num_row_groups)]
        columns = [next((c for c in map(g.column, range(g.num_columns)) if c.path_in_schema == name), None) for g in groups]
        stats = [None if column is None else column.statistics for column in columns]
        if all(s is not None and s.has_min_max for s in stats):
            return min(s.min for s in stats), max(s.max for s in stats)
    import pyarrow.compute as pc

    bounds = pc.min_max(chunk.read([name]).column(name))
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return (0, 0) if low is None else (low, high)
