"""Row selection on Arrow tables, shared by the readers and the shuffles."""

from __future__ import annotations

import pyarrow as pa


def take(table: pa.Table, indices: pa.Array) -> pa.Table:
    """``table.take(indices)``, on contiguous columns.

    Arrow's take on a column of many chunks resolves the chunk of every index: sorting a
    32 MB buffer of web documents read in 41 chunks took 0.129 s that way and 0.007 s after
    combining the chunks (a 2 ms copy). A column too large for one chunk (string offsets
    past 2 GB) is taken as it is.

    >>> t = pa.concat_tables([pa.table({"x": [1, 2]}), pa.table({"x": [3]})])
    >>> take(t, pa.array([2, 0])).column("x").to_pylist()
    [3, 1]
    """
    if all(column.num_chunks <= 1 for column in table.columns):
        return table.take(indices)
    try:
        combined = table.combine_chunks()
    except pa.ArrowInvalid:  # offset overflow
        combined = table
    return combined.take(indices)
