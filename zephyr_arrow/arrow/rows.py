"""Row codec: Python rows <-> ``pa.Table``, exactly.

Row functions work on plain Python objects; chunks between stages are Arrow
tables written as Parquet. ``rows_to_table`` and ``table_to_rows`` convert
between the two so that ``table_to_rows(rows_to_table(rows)) == rows``, with
the same Python types, also after a Parquet write and read:

- **dict rows** (every row a ``dict`` with ``str`` keys) become one column per
  key, in first-seen key order over the rows. A row lacking a key that other
  rows have is null there, and the hidden column ``__zephyr_absent`` (a list of
  the keys each row lacks, null for a row that lacks none) records it, so the
  row comes back without the key; the column exists only when some row lacks a
  key, so tables of rows that agree pay nothing. Views (SQL, Polars, pyarrow)
  leave it out and see nulls. A nested dict lacking a field that other dicts of
  its struct column have comes back with the field set to ``None``. Rows come
  back with their keys in column order.
- **items**: any other rows (ints, strings, paths, tuples, a mix of dicts and
  non-dicts, dicts with non-str keys, only ``{}``) become one column named
  ``item``; the schema metadata ``zephyr_arrow.item = 1`` marks it, and the
  rows come back as the bare values.
- **native columns**: a column is stored as an Arrow type when all its
  non-None values share one Python type that Arrow holds exactly: bool ->
  bool, int -> int64, float -> float64, str -> string, bytes -> binary,
  date -> date32, time (naive) -> time64[us], timedelta -> duration[us],
  datetime -> timestamp[us] (naive, or every value in the same time zone),
  Decimal -> decimal128/256 (every value with the same exponent), list ->
  list, dict with str keys -> struct; recursively for list items and struct
  fields. None is null; a column of only None is ``pa.null()``.
- **pickled columns**: any other column (tuples, sets, dataclasses, custom
  classes, dicts with non-str keys or no keys at all, mixed types such as
  int with float or bool with int, ints beyond int64, ``fold=1`` datetimes,
  strings with lone surrogates, anything ``pa.array`` rejects) is stored
  whole as binary, one ``pickle`` (protocol 5) per non-None value, marked by
  the field metadata ``zephyr_arrow.pickled = 1``. Slower, never wrong.
- **no rows** give a table with no columns and no rows, which decodes to ``[]``.

``table_to_rows`` decodes whatever table it gets: one promoted by schema
unification over chunks (int64 read as double, missing columns or struct
fields added as nulls) or one never made here (a user's Parquet file: no
metadata, so plain columns become dicts).

>>> table_to_rows(rows_to_table([{"id": 1, "tags": ("a", "b")}, {"id": 2}]))
[{'id': 1, 'tags': ('a', 'b')}, {'id': 2}]
"""

from __future__ import annotations

import datetime as dt
import pickle
from decimal import Decimal
from itertools import chain
from operator import itemgetter

import pyarrow as pa

ITEM_COLUMN = "item"
# The keys each row lacks (list<string>; null: none). Only in tables where some row lacks a key.
ABSENT_COLUMN = "__zephyr_absent"
ABSENT_TYPE = pa.list_(pa.string())
ITEM_METADATA_KEY = b"zephyr_arrow.item"
PICKLED_METADATA_KEY = b"zephyr_arrow.pickled"
_PICKLE_PROTOCOL = 5

# Python types Arrow holds exactly without looking at the values.
_PLAIN_TYPES = {
    bool: pa.bool_(),
    int: pa.int64(),  # out-of-range ints make pa.array raise, which pickles the column
    float: pa.float64(),
    str: pa.string(),
    bytes: pa.binary(),
    dt.date: pa.date32(),
    dt.timedelta: pa.duration("us"),
}
# What pa.array and pa.scalar raise on values their type cannot hold.
_CONVERSION_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError)


class _NotNative(Exception):
    """Values Arrow cannot hold exactly under one type; their column is pickled."""


def rows_to_table(rows: list) -> pa.Table:
    """Encode Python rows as a table that ``table_to_rows`` turns back into equal rows.

    >>> rows_to_table([{"a": 1}, {"a": None, "b": "x"}]).schema.names
    ['a', 'b', '__zephyr_absent']
    """
    if not rows:
        return pa.table({})
    if set(map(type, rows)) == {dict}:
        columns, absent = _dict_columns(rows)
        if columns and all(type(name) is str for name in columns) and ABSENT_COLUMN not in columns:
            fields, arrays = zip(*(_encode_column(name, values) for name, values in columns.items()))
            if absent is not None:
                fields, arrays = (*fields, pa.field(ABSENT_COLUMN, ABSENT_TYPE)), (*arrays, pa.array(absent, ABSENT_TYPE))
            return pa.Table.from_arrays(list(arrays), schema=pa.schema(fields))
    field, array = _encode_column(ITEM_COLUMN, rows)
    return pa.Table.from_arrays([array], schema=pa.schema([field], metadata={ITEM_METADATA_KEY: b"1"}))


def table_to_rows(table: pa.Table) -> list:
    """Decode a table into Python rows: bare items for an item table, else one dict per row.

    >>> table_to_rows(rows_to_table(["a.txt", "b.txt"]))
    ['a.txt', 'b.txt']
    """
    names = table.column_names
    absent = None
    if ABSENT_COLUMN in names:
        absent = table.column(ABSENT_COLUMN).to_pylist()
        table = table.drop_columns([ABSENT_COLUMN])
        names = table.column_names
    pickled = set(pickled_columns(table.schema))
    columns = [_decode_column(column, name in pickled) for name, column in zip(names, table.columns)]
    if is_item_schema(table.schema):
        return columns[names.index(ITEM_COLUMN)]
    rows = [dict(zip(names, values)) for values in zip(*columns)] if names else [{} for _ in range(table.num_rows)]
    if absent is not None:
        for row, lacks in zip(rows, absent):
            for name in lacks or ():
                row.pop(name, None)
    return rows


def without_absent(table: pa.Table) -> pa.Table:
    """``table`` without the absent-keys column: what views and the user's batch functions see."""
    return table.drop_columns([ABSENT_COLUMN]) if ABSENT_COLUMN in table.column_names else table


def mark_absent(table: pa.Table | pa.RecordBatch, names: list[str]) -> pa.Table | pa.RecordBatch:
    """``table`` with ``names`` added to every row's absent keys (a chunk that lacks these columns
    read under a schema that has them)."""
    if not names or not table.num_rows:
        return table
    field = pa.field(ABSENT_COLUMN, ABSENT_TYPE)
    index = table.schema.get_field_index(ABSENT_COLUMN)
    if index >= 0 and table.column(index).null_count < table.num_rows:
        merged = pa.array([[*(lacks or ()), *names] for lacks in table.column(index).to_pylist()], ABSENT_TYPE)
        return table.set_column(index, field, merged)
    column = pa.repeat(pa.scalar(names, ABSENT_TYPE), table.num_rows)
    if index >= 0:
        return table.set_column(index, field, column)
    return type(table).from_arrays([*table.columns, column], schema=table.schema.append(field))


def is_item_schema(schema: pa.Schema) -> bool:
    """True when the rows are bare items stored in the ``item`` column."""
    return (schema.metadata or {}).get(ITEM_METADATA_KEY) == b"1"


def is_pickled(field: pa.Field) -> bool:
    """Whether the column's values are stored pickled (mixed or non-Arrow Python values)."""
    return (field.metadata or {}).get(PICKLED_METADATA_KEY) == b"1"


def pickled_columns(schema: pa.Schema) -> list[str]:
    """Names of the top-level columns whose values are stored pickled."""
    return [field.name for field in schema if is_pickled(field)]


def plain_arrow_type(kind: type) -> pa.DataType | None:
    """The Arrow type that holds every value of Python type ``kind`` exactly, where one does for all.

    >>> plain_arrow_type(str), plain_arrow_type(set)
    (DataType(string), None)
    """
    return _PLAIN_TYPES.get(kind)


def carry_markers(source: pa.Schema, table: pa.Table) -> pa.Table:
    """Re-attach the codec's markers that a trip through Polars (or a user's batch function) drops.

    A pickled column keeps its marker when it comes out under the same name as binary; the
    item marker stays while the table is still just the ``item`` column.
    """
    pickled = set(pickled_columns(source))
    item = is_item_schema(source) and table.column_names == [ITEM_COLUMN]
    if not pickled and not item:
        return table
    fields = [
        field.with_metadata({PICKLED_METADATA_KEY: b"1"}) if field.name in pickled and pa.types.is_binary(field.type) else field
        for field in table.schema
    ]
    metadata = {**(table.schema.metadata or {}), ITEM_METADATA_KEY: b"1"} if item else table.schema.metadata
    return table.cast(pa.schema(fields, metadata=metadata))


def _dict_columns(rows: list[dict]) -> tuple[dict, list[list[str] | None] | None]:
    """Column name -> values, in first-seen key order, None where a row lacks the key; and the
    keys each row lacks (None for a row that lacks none), or None when no row lacks any."""
    first = rows[0]
    # Rows as wide as the first that hold all its keys have exactly its keys;
    # checking that is much cheaper than taking the union of every row's keys.
    if all(map(len(first).__eq__, map(len, rows))):
        try:
            return {name: list(map(itemgetter(name), rows)) for name in first}, None
        except KeyError:
            pass
    names = dict.fromkeys(chain.from_iterable(rows))
    width = len(names)
    absent = [None if len(row) == width else [name for name in names if name not in row] for row in rows]
    columns = {name: [row.get(name) for row in rows] for name in names}
    return columns, absent if any(absent) else None


def _encode_column(name: str, values: list) -> tuple[pa.Field, pa.Array | pa.ChunkedArray]:
    try:
        arrow_type = _arrow_type(values)
        if _nesting(arrow_type) > MAX_NESTING:
            raise _NotNative
        return pa.field(name, arrow_type), pa.array(values, type=arrow_type)
    except (_NotNative, *_CONVERSION_ERRORS):
        pickled = [None if value is None else _pickle(name, value) for value in values]
        field = pa.field(name, pa.binary(), metadata={PICKLED_METADATA_KEY: b"1"})
        return field, pa.array(pickled, type=pa.binary())


# Lists and structs nested deeper than this are pickled: Parquet readers refuse files nested
# much deeper (pyarrow: "Parquet schema too deeply nested" from 50 levels of lists), so a run
# would write an output nobody could read. 32 leaves room under every reader's limit.
MAX_NESTING = 32


def _nesting(type_: pa.DataType) -> int:
    """How many lists, maps and structs ``type_`` nests, at its deepest."""
    if pa.types.is_struct(type_):
        return 1 + max((_nesting(type_.field(i).type) for i in range(type_.num_fields)), default=0)
    if pa.types.is_map(type_):
        return 1 + max(_nesting(type_.key_type), _nesting(type_.item_type))
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return 1 + _nesting(type_.value_type)
    return 0


def pickled_column(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A plain column's values pickled: how a chunk where every value had one Arrow type joins
    chunks where the column held mixed Python values (and was pickled), value for value."""
    return pa.array([None if value is None else _pickle("", value) for value in column.to_pylist()], pa.binary())


def _decode_column(column: pa.ChunkedArray, pickled: bool) -> list:
    values = column.to_pylist()
    if pickled:
        return [None if value is None else pickle.loads(value) for value in values]
    return values


def _pickle(column_name: str, value: object) -> bytes:
    try:
        return pickle.dumps(value, protocol=_PICKLE_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"column {column_name!r}: a {type(value).__qualname__} value is neither an Arrow type nor "
            f"picklable ({exc}); return plain data (dicts, lists, str, numbers) or a module-level class"
        ) from exc


def _arrow_type(values: list) -> pa.DataType:
    """The one Arrow type that holds every value exactly; raises _NotNative if there is none."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if not kinds:
        return pa.null()
    if len(kinds) > 1:
        raise _NotNative
    (kind,) = kinds
    if kind in _PLAIN_TYPES:
        return _PLAIN_TYPES[kind]
    present = [value for value in values if value is not None]
    if kind is list:
        return pa.list_(_arrow_type(list(chain.from_iterable(present))))
    if kind is dict:
        return _struct_type(present)
    if kind is dt.datetime:
        return _timestamp_type(present)
    if kind is dt.time and not any(value.tzinfo is not None or value.fold for value in present):
        return pa.time64("us")
    if kind is Decimal:
        return _decimal_type(present)
    raise _NotNative


def _struct_type(dicts: list[dict]) -> pa.DataType:
    names = dict.fromkeys(chain.from_iterable(dicts))
    # Parquet cannot store a struct without fields.
    if not names or any(type(name) is not str for name in names):
        raise _NotNative
    return pa.struct([(name, _arrow_type([d.get(name) for d in dicts])) for name in names])


def _timestamp_type(datetimes: list[dt.datetime]) -> pa.DataType:
    # Compare time zones by repr: equal dt.timezone objects may differ in name,
    # and ZoneInfo objects compare by identity.
    zones = {id(value.tzinfo): value.tzinfo for value in datetimes}.values()
    if len({repr(zone) for zone in zones}) > 1 or any(value.fold for value in datetimes):
        raise _NotNative
    first = datetimes[0]
    # Arrow stores UTC: a wall time in a daylight-saving gap would come back
    # shifted by an hour. Fixed offsets have no gaps.
    if type(first.tzinfo) not in (type(None), dt.timezone) and any(
        value.astimezone(dt.timezone.utc).astimezone(value.tzinfo) != value for value in datetimes
    ):
        raise _NotNative
    arrow_type = pa.timestamp("us", _zone_name(first))
    # Arrow must give back the very same tzinfo, not just an equal offset.
    if repr(pa.scalar(first, type=arrow_type).as_py()) != repr(first):
        raise _NotNative
    return arrow_type


def _zone_name(value: dt.datetime) -> str | None:
    zone = value.tzinfo
    if type(zone) is dt.timezone:
        # Arrow names dt.timezone.utc "UTC", which reads back as ZoneInfo("UTC");
        # an offset name reads back as the dt.timezone it came from.
        minutes = round(zone.utcoffset(None).total_seconds() / 60)
        return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return None if zone is None else pa.scalar(value).type.tz


def _decimal_type(decimals: list[Decimal]) -> pa.DataType:
    parts = [value.as_tuple() for value in decimals]
    exponents = {part.exponent for part in parts}
    # One exponent keeps each value's scale (1.5 is not 1.50); NaN and Infinity
    # have str exponents; Arrow has no negative zero.
    if len(exponents) > 1 or type(first_exponent := parts[0].exponent) is not int or first_exponent > 0:
        raise _NotNative
    if any(part.sign and not any(part.digits) for part in parts):
        raise _NotNative
    scale = -first_exponent
    precision = max(scale, *(len(part.digits) for part in parts))
    if precision <= 38:
        return pa.decimal128(38, scale)
    if precision <= 76:
        return pa.decimal256(76, scale)
    raise _NotNative
