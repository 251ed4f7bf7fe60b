"""Schema unification over the chunks of one output, and conforming a chunk to it.

Chunks written by different tasks may disagree: a column missing from some, null-only
in one and typed in another, int64 here and double there, a struct that gained a field.
These promote to one unified schema (Arrow's permissive promotion), which every reader
sees. Types that do not promote (string vs struct) raise ``SchemaConflictError`` naming
the column, both types and a chunk file of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from zephyr_arrow.arrow.rows import ABSENT_COLUMN, ABSENT_TYPE, is_item_schema, is_pickled, mark_absent, pickled_column
from zephyr_arrow.errors import SchemaConflictError

if TYPE_CHECKING:
    import polars as pl


def unify(schemas: Sequence[pa.Schema], sources: Sequence[str]) -> pa.Schema:
    """Promote ``schemas`` to one; ``sources[i]`` names where ``schemas[i]`` came from."""
    distinct: dict[pa.Schema, str] = {}
    for schema, source in zip(schemas, sources, strict=True):
        distinct.setdefault(schema, source)
    if not distinct:
        return pa.schema([])
    if len(distinct) == 1:
        return next(iter(distinct))
    pickled = {field.name: field for schema in distinct for field in schema if is_pickled(field)}
    try:
        # A column pickled in any chunk is pickled in all: its values were Python objects of
        # mixed types there, and ``conform`` pickles the other chunks' values to match.
        unified = pa.unify_schemas(
            [pa.schema([pickled.get(f.name, f) for f in schema], metadata=schema.metadata) for schema in distinct],
            promote_options="permissive",
        )
    except (pa.ArrowTypeError, pa.ArrowInvalid) as error:
        raise _conflict(distinct) from error
    return _with_merged_metadata(unified, list(distinct))


def _conflict(distinct: dict[pa.Schema, str]) -> SchemaConflictError:
    seen: dict[str, tuple[pa.DataType, str]] = {}
    for schema, source in distinct.items():
        for field in schema:
            if field.name not in seen:
                seen[field.name] = (field.type, source)
                continue
            first_type, first_source = seen[field.name]
            try:
                merged = pa.unify_schemas(
                    [pa.schema([pa.field(field.name, first_type)]), pa.schema([field])],
                    promote_options="permissive",
                )
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                return SchemaConflictError(
                    f"column {field.name!r} has incompatible types across chunks: "
                    f"{_describe(first_type, schema_of(distinct, first_source), field.name)} in {first_source} "
                    f"but {_describe(field.type, schema, field.name)} in {source}. "
                    "Make every row give this column values of one type (or one that promotes, like int and float)."
                )
            seen[field.name] = (merged.field(field.name).type, first_source)
    return SchemaConflictError("chunks have schemas that do not unify: " + "; ".join(distinct.values()))


def schema_of(distinct: dict[pa.Schema, str], source: str) -> pa.Schema:
    return next(schema for schema, s in distinct.items() if s == source)


def _describe(type_: pa.DataType, schema: pa.Schema, name: str) -> str:
    field = schema.field(name)
    if field.metadata and any(b"pickled" in key for key in field.metadata):
        return f"{type_} (pickled Python objects)"
    return str(type_)


def _with_merged_metadata(unified: pa.Schema, schemas: list[pa.Schema]) -> pa.Schema:
    """Keep every chunk's field and schema metadata (pickled-column and item markers)."""
    schema_meta: dict[bytes, bytes] = {}
    field_meta: dict[str, dict[bytes, bytes]] = {}
    for schema in schemas:
        schema_meta.update(schema.metadata or {})
        for field in schema:
            field_meta.setdefault(field.name, {}).update(field.metadata or {})
    fields = [f.with_metadata(field_meta[f.name]) if field_meta.get(f.name) else f for f in unified]
    return pa.schema(fields, metadata=schema_meta or None)


def with_absent_column(schema: pa.Schema, schemas: Sequence[pa.Schema]) -> pa.Schema:
    """``schema``, unified over ``schemas`` (those of tables or chunks that hold rows), with the
    absent-keys column (``arrow/rows.py``) when one of them lacks a column: rows read from it
    under ``schema`` lack those keys, as they did when they were written."""
    if ABSENT_COLUMN in schema.names or is_item_schema(schema):
        return schema
    names = set(schema.names)
    if all(names.issubset(other.names) for other in schemas):
        return schema
    return schema.append(pa.field(ABSENT_COLUMN, ABSENT_TYPE))


def keeps_absence(schema: pa.Schema, target: pa.Schema) -> bool:
    """Whether rows of ``schema`` conformed to ``target`` still lack the keys they lack: ``target``
    adds no column, or records absent keys."""
    return ABSENT_COLUMN in target.names or is_item_schema(target) or set(target.names).issubset(schema.names)


def conform(table: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table | pa.RecordBatch:
    """Cast a table or batch to ``schema``: add missing columns as nulls, promote types, keep schema
    order; a plain column whose field in ``schema`` is pickled has its values pickled. Where
    ``schema`` has the absent-keys column, the added columns are recorded as keys the rows lack."""
    if table.schema == schema:
        return table
    columns = []
    missing = []
    for field in schema:
        index = table.schema.get_field_index(field.name)
        if index < 0:
            columns.append(pa.nulls(table.num_rows, field.type))
            if field.name != ABSENT_COLUMN:
                missing.append(field.name)
        elif is_pickled(field) and not is_pickled(table.schema.field(index)):
            columns.append(pickled_column(table.column(index)))
        elif table.schema.field(index).type == field.type:
            columns.append(table.column(index))
        else:
            columns.append(_cast(table.column(index), field))
    conformed = type(table).from_arrays(columns, schema=schema)
    return mark_absent(conformed, missing) if ABSENT_COLUMN in schema.names else conformed


def _cast(column: pa.Array | pa.ChunkedArray, field: pa.Field) -> pa.Array | pa.ChunkedArray:
    """``column`` cast to the promoted type of ``field``, which must hold every value exactly."""
    try:
        return column.cast(field.type)
    except pa.ArrowInvalid as error:  # an int above 2**53 meeting floats, say
        raise SchemaConflictError(
            f"column {field.name!r}: {column.type} values meet {field.type} ones, and one does not fit {field.type} "
            f"exactly ({error}); give the column one type in every row (cast the ints to float, or the floats to "
            "int, where that is what the data means)"
        ) from error



def concat_unified(tables: Sequence[pa.Table], sources: Sequence[str]) -> pa.Table:
    """``tables`` as one table of their unified schema; ``sources[i]`` names where ``tables[i]`` came from."""
    schema = unify([table.schema for table in tables], sources)
    schema = with_absent_column(schema, [table.schema for table in tables if table.num_rows])
    return pa.concat_tables([conform(table, schema) for table in tables])


def _plain_type(type_: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(type_) or pa.types.is_string_view(type_):
        return pa.string()
    if pa.types.is_large_binary(type_) or pa.types.is_binary_view(type_):
        return pa.binary()
    if pa.types.is_large_list(type_) or pa.types.is_list_view(type_) or pa.types.is_list(type_):
        return pa.list_(type_.value_field.with_type(_plain_type(type_.value_type)))
    if pa.types.is_struct(type_):
        return pa.struct([type_.field(i).with_type(_plain_type(type_.field(i).type)) for i in range(type_.num_fields)])
    return type_


def normalize(table: pa.Table) -> pa.Table:
    """Cast large and view string/binary/list types (what Polars produces) to the plain ones.

    Chunks written from rows use plain types; normalising keeps one file's batches, and
    the chunks of one output, on one schema instead of two that merely differ in offsets.
    """
    fields = [f.with_type(_plain_type(f.type)) for f in table.schema]
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return table if schema == table.schema else table.cast(schema)


def from_polars(frame: pl.DataFrame, sources: dict[str, pa.Field]) -> pa.Table:
    """``frame`` as an Arrow table of plain types (``normalize``), its columns given their source
    field's metadata back where the type is the same (pickled columns lose it in Polars)."""
    table = normalize(frame.to_arrow())
    fields = []
    for field in table.schema:
        source = sources.get(field.name)
        fields.append(field.with_metadata(source.metadata) if source is not None and source.metadata and source.type == field.type else field)
    schema = pa.schema(fields)
    return table if schema.equals(table.schema, check_metadata=True) else pa.Table.from_arrays(table.columns, schema=schema)
