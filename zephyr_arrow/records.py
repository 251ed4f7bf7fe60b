"""Record-level file helpers for use inside user functions, with Zephyr's names and results.

    ds = Dataset.from_files("in/*.jsonl.gz").flat_map(load_jsonl)   # rows of every file
    write_jsonl_file(rows, "out/part.jsonl.gz")                      # {"path": ..., "count": n}

They read and write through the same Arrow readers and atomic writers as the pipeline
(``zephyr_arrow.io``), one batch in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


def _tables(records: Iterable[Any]) -> Iterator[Any]:
    """Records encoded to Arrow a batch at a time, as a pipeline stage does."""
    from zephyr_arrow.arrow.stream import Stream

    return Stream(rows=iter(records)).as_tables()


def _rows(tables: Iterable[Any]) -> Iterator[Any]:
    from zephyr_arrow.arrow.rows import table_to_rows

    for table in tables:
        yield from table_to_rows(table)


def load_jsonl(path: str) -> Iterator[dict]:
    """The records of a JSONL file (.gz/.zst/.xz by extension)."""
    from zephyr_arrow import io

    return _rows(io.read_jsonl(path))


def load_parquet(path: str, columns: list[str] | None = None) -> Iterator[dict]:
    """The records of a Parquet file, read row group by row group."""
    from zephyr_arrow import io

    return _rows(io.read_parquet(path, columns=columns))


def load_file(path: str, columns: list[str] | None = None) -> Iterator[dict]:
    """The records of a JSONL, Parquet or CSV file, by extension."""
    from zephyr_arrow import io

    return _rows(io.read_file(path, columns=columns))


def write_jsonl_file(records: Iterable[Any], path: str) -> dict[str, Any]:
    """Write records as JSON lines, atomically; return ``{"path", "count"}`` as Zephyr does."""
    from zephyr_arrow import io

    return {"path": path, "count": io.write_jsonl_file(_tables(records), path)}


def write_parquet_file(records: Iterable[Any], path: str, schema: Any = None) -> dict[str, Any]:
    """Write records to one Parquet file, atomically; return ``{"path", "count"}``."""
    from zephyr_arrow import io

    return {"path": path, "count": io.write_parquet_file(_tables(records), path, schema=schema)}
