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


def _read(source: Any, columns: list[str] | None, file_format: str | None) -> Iterator[Any]:
    from zephyr_arrow.io.spec import InputFileSpec, read_spec

    return _rows(read_spec(InputFileSpec.of(source), columns, file_format=file_format))


def load_jsonl(source: Any) -> Iterator[dict]:
    """The records of a JSONL file (.gz/.zst/.xz by extension): a path or an ``InputFileSpec``."""
    return _read(source, None, "jsonl")


def load_parquet(source: Any, columns: list[str] | None = None) -> Iterator[dict]:
    """The records of a Parquet file (a path or an ``InputFileSpec``), read row group by row group."""
    return _read(source, columns, "parquet")


def load_file(source: Any, columns: list[str] | None = None) -> Iterator[dict]:
    """The records of a JSONL, Parquet, CSV or Vortex file (a path or an ``InputFileSpec``), by extension."""
    return _read(source, columns, None)


def load_vortex(source: Any, columns: list[str] | None = None) -> Iterator[dict]:
    """The records of a Vortex file (a path or an ``InputFileSpec``; needs the vortex-data package)."""
    return _read(source, columns, "vortex")


def write_jsonl_file(records: Iterable[Any], path: str) -> dict[str, Any]:
    """Write records as JSON lines, atomically; return ``{"path", "count"}`` as Zephyr does."""
    from zephyr_arrow import io

    return {"path": path, "count": io.write_jsonl_file(_tables(records), path)}


def write_vortex_file(records: Iterable[Any], path: str, schema: Any = None) -> dict[str, Any]:
    """Write records to one Vortex file, atomically; return ``{"path", "count"}`` (needs the vortex-data package)."""
    from zephyr_arrow.io.vortex import write_vortex_file as write

    return {"path": path, "count": write(_tables(records), path, schema=schema)}


def write_parquet_file(records: Iterable[Any], path: str, schema: Any = None) -> dict[str, Any]:
    """Write records to one Parquet file, atomically; return ``{"path", "count"}``."""
    from zephyr_arrow import io

    return {"path": path, "count": io.write_parquet_file(_tables(records), path, schema=schema)}


def infer_arrow_schema(records: list[Any]) -> Any:
    """The Arrow schema ``write_parquet_file`` would write ``records`` with (Zephyr's helper).

    A column whose values no Arrow type holds (an int and a str, a set) raises OutputTypeError,
    an ``ArrowInvalid`` as in Zephyr.

    >>> infer_arrow_schema([{"id": 1, "score": None}, {"id": 2, "score": 0.5}]).types
    [DataType(int64), DataType(double)]
    """
    from zephyr_arrow.arrow.rows import rows_to_table, without_absent
    from zephyr_arrow.io.writers import plain_tables

    (table,) = plain_tables([rows_to_table(list(records))], "the records")
    return without_absent(table).schema
