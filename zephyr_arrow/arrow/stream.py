"""A shard's data as it flows through a task: Python rows or Arrow tables, converted lazily.

Row ops take rows, columnar ops take tables; a ``Stream`` converts between the two only
where the kind of op changes, so a run of row ops pays the rows <-> Arrow codec once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from zephyr_arrow.arrow.rows import rows_to_table, table_to_rows

# Rows are encoded to Arrow this many at a time. Per-batch costs are already gone at 1024
# (800k two-field rows: 0.118 s in batches of 1024, 0.113 s of 8192), and a batch of web
# documents then holds ~3 MB of Python objects, not ~25: a row filter+map task's peak RSS
# fell from ~195 to ~165 MB at the same speed (medium corpus, W1).
ENCODE_BATCH_ROWS = 1024


@dataclass(frozen=True, slots=True)
class Stream:
    """A shard's data in one of two forms; exactly one of ``rows`` / ``tables`` is set."""

    rows: Iterator[Any] | None = None
    tables: Iterator[pa.Table] | None = None

    def as_rows(self) -> Iterator[Any]:
        if self.rows is not None:
            return self.rows
        return itertools.chain.from_iterable(table_to_rows(t) for t in self.tables)

    def as_tables(self) -> Iterator[pa.Table]:
        if self.tables is not None:
            return self.tables
        return (rows_to_table(batch) for batch in batched(self.rows, ENCODE_BATCH_ROWS))


def batched(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(iterable)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


class RowCount:
    """Counts the rows (and the Arrow bytes of tables) that pass through the iterators it wraps (a task's rows in)."""

    def __init__(self) -> None:
        self.count = 0
        self.nbytes = 0

    def rows(self, rows: Iterator[Any]) -> Iterator[Any]:
        for row in rows:
            self.count += 1
            yield row

    def tables(self, tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
        for table in tables:
            self.count += table.num_rows
            self.nbytes += table.nbytes
            yield table
