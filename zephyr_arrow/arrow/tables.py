"""Row selection on Arrow tables, shared by the readers and the shuffles."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import pyarrow as pa

from zephyr_arrow.arrow.rows import ABSENT_COLUMN


def kept(names: list[str], keep: Iterable[str]) -> list[str]:
    """The columns of ``names`` that are in ``keep``, in their order; all of ``names`` if none
    is: a table of no columns loses its rows (a Polars frame, a concat, a Parquet file of none
    has none), so a reader that has none of the columns its caller uses reads them all.

    >>> kept(["a", "b", "c"], {"c", "a"}), kept(["a", "b"], {"x"})
    (['a', 'c'], ['a', 'b'])
    """
    keep = {*keep, ABSENT_COLUMN}  # the keys rows lack: reading fewer columns keeps them lacking
    return [name for name in names if name in keep] or list(names)


def take(table: pa.Table, indices: pa.Array) -> pa.Table:
    """``table.take(indices)``, on contiguous columns.

    Arrow's take on a column of many chunks resolves the chunk of every index: sorting a
    scatter's 32 MB buffer of web documents (45 chunks) took 0.21 s that way and 0.02-0.06 s
    after combining the chunks, in a process on Arrow's default allocator (the sync backend,
    the driver); in a worker, on jemalloc, 0.076 s and 0.067 s. A column too large for one
    chunk (string offsets past 2 GB) is taken as it is.

    >>> t = pa.concat_tables([pa.table({"x": [1, 2]}), pa.table({"x": [3]})])
    >>> take(t, pa.array([2, 0])).column("x").to_pylist()
    [3, 1]
    """
    return contiguous(table).take(indices)


def contiguous(table: pa.Table) -> pa.Table:
    """``table`` with each column in one chunk, so that taking rows from it is fast; a column
    too large for one chunk (string offsets past 2 GB) stays as it is."""
    if all(column.num_chunks <= 1 for column in table.columns):
        return table
    try:
        return table.combine_chunks()
    except pa.ArrowInvalid:  # offset overflow
        return table


def take_in_slices(table: pa.Table, indices: pa.Array, rows: int) -> Iterator[pa.Table]:
    """``table``'s rows at ``indices``, in that order, ``rows`` at a time: where the rows are
    written or consumed as they come, a copy of all of them is never held at once.

    ``table`` should be ``contiguous``: Arrow combines a string column's chunks on every take
    (1 MB slices of a 35 MB table of 36 chunks: 54 ms, against 7 ms combined once).

    >>> [t.column("x").to_pylist() for t in take_in_slices(pa.table({"x": [1, 2, 3]}), pa.array([2, 0, 1]), 2)]
    [[3, 1], [2]]
    """
    for start in range(0, len(indices), rows):
        yield table.take(indices.slice(start, rows))


def take_by_batch(table: pa.Table, indices: pa.Array, rows: int) -> Iterator[pa.Table]:
    """``take_in_slices`` for a ``table`` of many chunks, without combining them: each slice's
    rows are taken from the record batches that hold them, then put in order.

    A scatter's sort buffer is batches as they came; combining them to take its rows in order
    held the buffer twice (two 32 MB copies in each worker, the peak of a dedup of web
    documents). This copies the rows of one slice at a time, three times over.

    >>> t = pa.concat_tables([pa.table({"x": [1, 2]}), pa.table({"x": [3]})])
    >>> [p.column("x").to_pylist() for p in take_by_batch(t, pa.array([2, 0, 1]), 2)]
    [[3, 1], [2]]
    """
    batches = table.to_batches()
    if len(batches) <= 1:
        yield from take_in_slices(contiguous(table), indices, rows)
        return
    import polars as pl

    sizes = pl.Series([batch.num_rows for batch in batches], dtype=pl.Int64)
    ends = sizes.cum_sum()
    wanted = pl.from_arrow(indices).cast(pl.Int64)
    batch_of = ends.search_sorted(wanted, side="right")
    # The rows of each slice grouped by batch (in slice order within each), and for each row of
    # a slice its place in that grouping: the order to put the taken rows in.
    frame = (
        pl.DataFrame({"batch": batch_of, "local": wanted - (ends - sizes).gather(batch_of)})
        .with_row_index("position")
        .with_columns((pl.col("position") // rows).alias("slice"))
        .sort("slice", "batch", maintain_order=True)
        .with_row_index("grouped")
    )
    groups = frame.group_by("slice", "batch", maintain_order=True).len().iter_rows()
    local = frame.get_column("local").to_arrow()
    reorder = frame.sort("position").select(pl.col("grouped") - pl.col("slice") * rows).to_series().to_arrow()
    offset = 0
    for piece, members in itertools.groupby(groups, key=lambda group: group[0]):
        parts = []
        for _, batch, size in members:
            parts.append(batches[batch].take(local.slice(offset, size)))
            offset += size
        taken = pa.Table.from_batches(parts, schema=table.schema).combine_chunks()
        yield taken.take(reorder.slice(piece * rows, taken.num_rows))


def rows_per_slice(table: pa.Table, num_bytes: int) -> int:
    """About how many of ``table``'s rows take ``num_bytes`` (at least one)."""
    return max(num_bytes // max(table.nbytes // max(table.num_rows, 1), 1), 1)


def grouped_by_bytes(tables: Iterable[pa.Table], num_bytes: int, num_rows: int | None = None) -> Iterator[list[pa.Table]]:
    """Consecutive ``tables`` in lists of at least ``num_bytes`` (or ``num_rows`` rows, if given
    and reached first); the last list may hold less.

    >>> [len(group) for group in grouped_by_bytes([pa.table({"x": [1]})] * 5, 16)]
    [2, 2, 1]
    >>> [len(group) for group in grouped_by_bytes([pa.table({"x": [1]})] * 5, 16, num_rows=1)]
    [1, 1, 1, 1, 1]
    """
    group: list[pa.Table] = []
    group_bytes = group_rows = 0
    for table in tables:
        group.append(table)
        group_bytes += table.nbytes
        group_rows += table.num_rows
        if group_bytes >= num_bytes or (num_rows is not None and group_rows >= num_rows):
            yield group
            group, group_bytes, group_rows = [], 0, 0
    if group:
        yield group
