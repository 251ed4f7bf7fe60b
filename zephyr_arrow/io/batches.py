"""What readers and writers share: schema widening and casting, projection and filtering of batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from zephyr_arrow.arrow.rows import ABSENT_COLUMN
from zephyr_arrow.arrow.tables import take
from zephyr_arrow.errors import PlanError, SchemaConflictError

if TYPE_CHECKING:
    # Imported where a filter needs it: a worker that only reads and writes files does without its ~45 MB.
    import polars as pl

BATCH_ROWS = 64 * 1024

_ROW_INDEX = "__zephyr_row_index"


def type_contains(data_type: pa.DataType, predicate: Callable[[pa.DataType], bool]) -> bool:
    """Whether ``data_type`` or any type nested in it satisfies ``predicate``."""
    return predicate(data_type) or any(
        type_contains(data_type.field(i).type, predicate) for i in range(data_type.num_fields)
    )


def is_binary(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
        or pa.types.is_fixed_size_binary(data_type)
        or pa.types.is_binary_view(data_type)
    )


def timestamps_as_strings(data_type: pa.DataType) -> pa.DataType:
    """``data_type`` with every timestamp in it replaced by string (JSON readers' types only)."""
    if pa.types.is_timestamp(data_type):
        return pa.string()
    if pa.types.is_struct(data_type):
        return pa.struct([field.with_type(timestamps_as_strings(field.type)) for field in data_type])
    if pa.types.is_list(data_type):
        value_field = data_type.value_field
        return pa.list_(value_field.with_type(timestamps_as_strings(value_field.type)))
    return data_type


def widen(schemas: list[pa.Schema]) -> pa.Schema:
    return pa.unify_schemas(schemas, promote_options="permissive")


def align(table: pa.Table, names: list[str], where: str) -> pa.Table:
    """``table``'s columns named ``names``, in that order; absent ones as null columns."""
    extra = [name for name in table.column_names if name not in names]
    if extra:
        raise SchemaConflictError(f"{where}: unexpected column(s) {extra}; the schema has {names}")
    present = set(table.column_names)
    return pa.table({name: table[name] if name in present else pa.nulls(table.num_rows) for name in names})


def cast_to_schema(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """``table`` cast to ``schema``: columns reordered, absent ones null; names the column that won't cast."""
    if table.schema.equals(schema):
        return table
    table = align(table, schema.names, where)
    columns = []
    for field in schema:
        try:
            columns.append(table[field.name].cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            raise SchemaConflictError(
                f"{where}: column {field.name!r} of type {table[field.name].type} cannot be cast to "
                f"{field.type}: {error}"
            ) from error
    return pa.Table.from_arrays(columns, schema=schema)


def reject_types(schema: pa.Schema, predicate: Callable[[pa.DataType], bool], path: str, why: str) -> None:
    for field in schema:
        if type_contains(field.type, predicate):
            raise PlanError(f"cannot write column {field.name!r} ({field.type}) to {path}: {why}")


def needed_columns(columns: list[str] | None, filter: pl.Expr | None) -> list[str] | None:
    """The columns to read: the projection plus those the filter uses (None: all)."""
    if columns is None or filter is None:
        return columns
    return list(dict.fromkeys([*columns, *filter.meta.root_names()]))


def filter_and_project(table: pa.Table, columns: list[str] | None, filter: pl.Expr | None) -> pa.Table:
    if filter is not None:
        # Polars picks the rows from only the columns the filter uses; pyarrow takes them, so the
        # batch keeps its Arrow types (a Polars round trip would turn string into large_string).
        import polars as pl

        needed = filter.meta.root_names() or table.column_names
        frame = pl.from_arrow(table.select(needed)).with_row_index(_ROW_INDEX)
        table = take(table, frame.filter(filter)[_ROW_INDEX].to_arrow())
    if columns is None:
        return table
    return table.select([*columns, ABSENT_COLUMN] if ABSENT_COLUMN in table.column_names else columns)


def slices(table: pa.Table) -> Iterator[pa.Table]:
    """``table`` in zero-copy slices of at most BATCH_ROWS rows; nothing for an empty table."""
    for offset in range(0, table.num_rows, BATCH_ROWS):
        # Explicit length: Arrow does not clip a slice of a table without columns.
        yield table.slice(offset, min(BATCH_ROWS, table.num_rows - offset))
