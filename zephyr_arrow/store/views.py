"""Lazy views over a list of chunks: pyarrow dataset, Polars LazyFrame, DuckDB relation.

Whole-file chunks are handed to each engine's own Parquet scanner (so projection and
predicate pushdown work, and DuckDB reads them as fast as it reads any file). Those scanners
do not check page checksums, so each view first checks every chunk file (``verify.py``): a
damaged chunk is a ChunkCorruptError naming it when the view is made, never wrong values. A
chunk that is a row range of a file is read as that range only. Every view shows the unified
schema: missing columns are null, promoted types are cast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from zephyr_arrow.fs import filesystem, is_local
from zephyr_arrow.store.chunk_ref import ChunkRef
from zephyr_arrow.store.verify import verify

if TYPE_CHECKING:
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds


def _with_data(chunks: list[ChunkRef]) -> list[ChunkRef]:
    """Chunks that hold rows; empty chunks add nothing but may carry no columns at all."""
    return [c for c in chunks if c.num_rows > 0]


def arrow_dataset(chunks: list[ChunkRef], schema: pa.Schema) -> ds.Dataset:
    import pyarrow.dataset as ds

    chunks = _with_data(chunks)
    verify(chunks)
    whole = [c for c in chunks if c.row_range is None]
    parts: list[ds.Dataset] = []
    if whole:
        fs, _ = filesystem(whole[0].path)
        paths = [filesystem(c.path)[1] for c in whole]
        parts.append(ds.dataset(paths, schema=schema, format="parquet", filesystem=fs))
    # A row range cannot be expressed as a pyarrow fragment, so ranged chunks are read
    # here, one chunk's range each.
    parts.extend(ds.dataset(_conformed(c, schema)) for c in chunks if c.row_range is not None)
    if not parts:
        return ds.dataset(schema.empty_table())
    return parts[0] if len(parts) == 1 else ds.dataset(parts)


def _conformed(chunk: ChunkRef, schema: pa.Schema) -> pa.Table:
    from zephyr_arrow.arrow.schema import conform

    return conform(chunk.read(), schema)


def polars_frame(chunks: list[ChunkRef], schema: pa.Schema) -> pl.LazyFrame:
    import polars as pl

    chunks = _with_data(chunks)
    if not chunks:
        return pl.from_arrow(schema.empty_table()).lazy()
    same_schema = all(c.schema == schema for c in chunks)
    if not (same_schema and all(is_local(c.path) for c in chunks)):
        return pl.scan_pyarrow_dataset(arrow_dataset(chunks, schema))
    verify(chunks)
    frames = []
    whole = [c.path.removeprefix("file://") for c in chunks if c.row_range is None]
    if whole:
        frames.append(pl.scan_parquet(whole))
    frames.extend(c.scan() for c in chunks if c.row_range is not None)
    return frames[0] if len(frames) == 1 else pl.concat(frames)


def duckdb_relation(
    chunks: list[ChunkRef], schema: pa.Schema, query: str, connection: duckdb.DuckDBPyConnection | None
) -> duckdb.DuckDBPyRelation:
    import duckdb

    con = connection if connection is not None else duckdb.connect()
    chunks = _with_data(chunks)
    verify(chunks)
    if not chunks:
        # DuckDB has no zero-column tables; an output that never saw a row has no columns.
        empty = schema.empty_table() if schema.names else pa.table({"item": pa.array([], pa.null())})
        con.register("data", empty)
        return con.sql(query)
    for protocol in {filesystem(c.path)[0] for c in chunks if not is_local(c.path)}:
        con.register_filesystem(protocol)
    con.execute(f"create or replace temp view data as {_select_sql(chunks, schema, con)}")
    return con.sql(query)


def _select_sql(chunks: list[ChunkRef], schema: pa.Schema, con: duckdb.DuckDBPyConnection) -> str:
    if all(c.row_range is None and c.schema == schema for c in chunks):
        # Files that agree on the schema need no casts: DuckDB reads them as written.
        return f"select * from read_parquet([{_paths_sql(chunks)}], hive_partitioning=false)"
    types = _duckdb_types(schema, con)

    def projection(group: list[ChunkRef]) -> str:
        present = {name for c in group for name in c.schema.names}
        return ", ".join(
            f"cast({_quote(name) if name in present else 'null'} as {types[name]}) as {_quote(name)}"
            for name in schema.names
        )

    whole = [c for c in chunks if c.row_range is None]
    selects = []
    if whole:
        selects.append(f"select {projection(whole)} from read_parquet([{_paths_sql(whole)}], union_by_name=true)")
    for c in chunks:
        if c.row_range is not None:
            start, stop = c.row_range
            selects.append(
                f"select {projection([c])} from read_parquet({_quote_str(c.path.removeprefix('file://'))}, "
                f"file_row_number=true) where file_row_number >= {start} and file_row_number < {stop}"
            )
    return " union all ".join(selects)


def _paths_sql(chunks: list[ChunkRef]) -> str:
    return ", ".join(_quote_str(c.path.removeprefix("file://")) for c in chunks)


def _duckdb_types(schema: pa.Schema, con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """DuckDB's name for each unified column type, found by asking DuckDB about an empty table."""
    empty = pa.schema([f.remove_metadata() for f in schema]).empty_table()
    relation = con.from_arrow(empty)
    return dict(zip(relation.columns, (str(t) for t in relation.types), strict=True))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
