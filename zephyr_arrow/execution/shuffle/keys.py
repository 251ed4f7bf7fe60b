"""Shuffle keys: a stable hash that picks a row's output shard, and an order to sort runs by.

A key is column names or a function of the row:

- **column keys** are hashed vectorised (``hash_columns``), batch by batch with no schema
  shared between batches or inputs: each column is first put in a canonical form in
  which equal keys are equal whatever Arrow type holds them (every number as float64, so
  1 from an int32 batch, 1 from an int64 one and 1.0 from the other side of a join hash
  alike; times as integers of one unit; nested values as ``encode_key`` of their plain
  Python form; null and a missing column as one value). Two keys that the reduce side
  tells apart may share a hash (2**53 and 2**53 + 1 both hash as a float); that only puts
  them in the same round, where the reduce compares the actual values, cast to the type
  unified over every run.
- **function keys** (and every ``group_by``, whose reducer takes Python rows anyway) are
  encoded per row by ``encode_key``: canonical (equal keys give equal bytes: ``1``,
  ``1.0`` and ``True`` are one key, as in a Python dict) and order-preserving (for None,
  numbers, str, bytes, datetimes and tuples/lists of them, bytes order is Python's
  order). The hash is of those bytes.

The hash is Polars' ``Series.hash`` with a fixed seed: the same in every process, run and
machine running one Polars build (tests/test_shuffle.py compares it across processes),
unlike Python's salted ``hash()``. Polars does not promise it across versions, so every
run file records what hashed it (``HASHED_BY``) and a shuffle whose runs disagree (workers
with different Polars, as on a Ray cluster of mixed images) fails before its reduce,
rather than leaving equal keys in different shards.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from zephyr_arrow import ops
from zephyr_arrow.arrow.rows import is_item_schema, is_pickled, table_to_rows
from zephyr_arrow.arrow.tables import kept
from zephyr_arrow.execution.shuffle.key_encoding import BYTES_TAG, NONE_TAG, STR_TAG, encode_key
from zephyr_arrow.ops import fields_read

if TYPE_CHECKING:
    import polars as pl  # imported where a hash is computed: the coordinator reads only the names below

# Columns a shuffle adds to the rows it moves; dropped before any user code sees a row.
HASH = "__zephyr_hash"  # uint64: the key's stable hash
KEY = "__zephyr_key"  # binary: encode_key(key)
SORT = "__zephyr_sort"  # binary: encode_key(sort_by(row))
POSITION = "__zephyr_position"  # int64: input shard << POSITION_BITS | row number, i.e. input order
# string (dictionary): the column of the row that a deduplicate key function returned; the
# row's KEY is then null in the runs, not a second copy of that column (see key_in_column).
KEY_COLUMN = "__zephyr_key_column"
INTERNAL = (HASH, KEY, SORT, POSITION, KEY_COLUMN)
TARGET = "__zephyr_target"  # uint32: the output shard; only while a map task sorts a run
POSITION_BITS = 40

# Changing the seed moves every key to another shard; it is fixed so runs agree.
HASH_SEED = 0x5A3F_2C71
HASHED_BY = b"zephyr_arrow.hashed_by"  # run files' schema metadata: hashed_by() of the worker that wrote them


def hashed_by() -> bytes:
    """What picks output shards in this process: runs that agree on it put equal keys in one shard."""
    import polars as pl

    return f"polars {pl.__version__}, seed {HASH_SEED:#x}".encode()


def hash_columns(table: pa.Table, num_shards: int) -> tuple[pa.Array, pa.Array]:
    """The stable uint64 hash of each row of ``table`` (all its columns), and ``hash % num_shards``.

    Equal values hash alike across Arrow types (see the module docstring), so each batch
    is hashed on its own.
    """
    import polars as pl

    hashes = [_column_hash(table.column(index), table.schema.field(index)) for index in range(table.num_columns)]
    if len(hashes) == 1:
        (hashed,) = hashes
    else:
        frame = pl.DataFrame({f"c{index}": column for index, column in enumerate(hashes)})
        hashed = frame.select(pl.struct(pl.all()).hash(HASH_SEED)).to_series()
    return _array(hashed), _array((hashed % num_shards).cast(pl.UInt32))


def key_table(table: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """The key columns of ``table`` (fields as they are: a pickled column stays marked); one
    the batch lacks is all null (its rows' key is None)."""
    fields, arrays = [], []
    for name in columns:
        index = table.schema.get_field_index(name)
        fields.append(table.schema.field(index) if index >= 0 else pa.field(name, pa.null()))
        arrays.append(table.column(index) if index >= 0 else pa.nulls(table.num_rows))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _column_hash(column: pa.ChunkedArray, field: pa.Field) -> pl.Series:
    import polars as pl

    return pl.from_arrow(_canonical(column, field)).hash(HASH_SEED)


def _canonical(column: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray | pa.Array:
    """``column`` in a form where equal keys are equal values of one type, whatever type held them."""
    type_ = column.type
    if pa.types.is_dictionary(type_):
        column, type_ = column.cast(type_.value_type), type_.value_type
    if is_pickled(field) or is_text(type_) or _is_bytes(type_):
        return column  # Polars hashes str and bytes by their bytes; pickled values as their pickles
    if any(is_kind(type_) for is_kind in _NUMERIC_KINDS):
        return column.cast(pa.float64(), safe=False)
    for is_kind, unit, storage in _TEMPORAL_UNITS:
        if is_kind(type_):
            return column.cast(unit(type_), safe=False).cast(storage)  # Polars hashes int32 and int64 alike
    # Nested and other values: the encoding of their plain form (a struct field that is
    # None equals a missing one, numbers are floats), as unifying the runs makes them.
    return pa.array([None if value is None else encode_key(_plain(value)) for value in column.to_pylist()], pa.binary())


# Types that promote to one another (or to a number, for null) all hash as float64.
_NUMERIC_KINDS = (pa.types.is_null, pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_decimal)
# Times of any unit as integers of one unit: what unifying two units promotes them to.
_TEMPORAL_UNITS = [
    (pa.types.is_timestamp, lambda t: pa.timestamp("us", t.tz), pa.int64()),
    (pa.types.is_date, lambda t: pa.date32(), pa.int32()),
    (pa.types.is_time, lambda t: pa.time64("us"), pa.int64()),
    (pa.types.is_duration, lambda t: pa.duration("us"), pa.int64()),
]


def _plain(value: Any) -> Any:
    if isinstance(value, (bool, int, float, Decimal)):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _array(series: pl.Series) -> pa.Array:
    array = series.to_arrow()
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def key_values(table: pa.Table, columns: tuple[str, ...]) -> list[Any]:
    """The Python key of each row from its key columns: the value, or a tuple for several columns."""
    fields = [table.schema.field(c) for c in columns]
    rows = table_to_rows(pa.Table.from_arrays([table.column(c) for c in columns], schema=pa.schema(fields)))
    if len(columns) == 1:
        (name,) = columns
        return [row[name] for row in rows]
    return [tuple(row[c] for c in columns) for row in rows]


def encoded_keys(table: pa.Table, columns: tuple[str, ...]) -> pa.Array:
    """``encode_key`` of each row's key from its key columns; vectorised for one str or bytes column."""
    if len(columns) == 1:
        field = table.schema.field(columns[0])
        tag = STR_TAG if is_text(field.type) else BYTES_TAG if _is_bytes(field.type) else None
        if tag is not None and not is_pickled(field):
            # The same bytes as _encode_str / _encode_bytes: tag, escaped data, terminator.
            blob = pa.large_binary()
            escaped = pc.replace_substring(table.column(columns[0]).cast(blob), b"\x00", b"\x00\xff")
            parts = (pa.scalar(tag, blob), escaped, pa.scalar(b"\x00\x00", blob), pa.scalar(b"", blob))
            encoded = pc.fill_null(pc.binary_join_element_wise(*parts), pa.scalar(NONE_TAG, blob)).cast(pa.binary())
            return encoded.combine_chunks() if isinstance(encoded, pa.ChunkedArray) else encoded
    return pa.array(list(map(encode_key, key_values(table, columns))), pa.binary())


def encode_keys(values: list[Any], text: pa.Array | pa.ChunkedArray | None = None) -> pa.Array:
    """``encode_key`` of each value; vectorised when they are all str (or all bytes), given as ``text``
    (``text_array(values)``) or not."""
    text = text if text is not None else text_array(values)
    if text is not None:
        return encoded_keys(pa.table({"k": text}), ("k",))
    return pa.array(list(map(encode_key, values)), pa.binary())


def hash_bytes(values: list[Any]) -> pa.Array:
    """What a deduplicate function key is hashed as: a str as its UTF-8 text, anything else as
    ``encode_key``. Equal keys are of one kind (no str equals a non-str), so equal keys hash
    alike whichever batch they are in; a batch of str keys hashes its text array as it is,
    without encoding a copy of every text (the encoding is only compared, for keys whose
    hashes meet)."""
    return pa.array(
        [value.encode("utf-8", "surrogatepass") if isinstance(value, str) else encode_key(value) for value in values],
        pa.binary(),
    )


def text_array(values: list[Any]) -> pa.Array | None:
    """``values`` as one string (or binary) array when they are all str (all bytes), else None."""
    kinds = set(map(type, values))
    if kinds != {str} and kinds != {bytes}:
        return None
    try:
        return pa.array(values, pa.string() if kinds == {str} else pa.binary())
    except UnicodeEncodeError:  # lone surrogates, which encode_key keeps
        return None


def key_in_column(table: pa.Table, keys: pa.Array) -> str | None:
    """The string column of ``table`` that equals ``keys`` (the rows' keys, a string array) on every row, if any.

    A deduplicate key function often returns a field of the row (``lambda d: d["text"]``);
    its runs then name that column instead of holding each key twice (the row's KEY is
    null), and the reduce side encodes the few keys it compares from the column again.
    """
    for field, column in zip(table.schema, table.columns):
        if (
            pa.types.is_string(field.type)
            and column.null_count == 0
            and not is_pickled(field)
            and pc.all(pc.equal(column, keys)).as_py()
        ):
            return field.name
    return None


def key_source_columns(table: pa.Table) -> list[str]:
    """The columns of the row that a deduplicate key function's keys were found in (KEY_COLUMN)."""
    if KEY_COLUMN not in table.column_names:
        return []
    return pc.unique(table.column(KEY_COLUMN)).drop_null().cast(pa.string()).to_pylist()


def carried(table: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """``table`` (with its shuffle columns added) cut to what a shuffle carries: ``columns`` and
    the columns keys were found in (every column of the row if it has none, see ``kept``), and
    the shuffle columns."""
    row_columns = [name for name in table.column_names if name not in INTERNAL]
    shuffle_columns = [name for name in table.column_names if name in INTERNAL]
    return table.select([*kept(row_columns, [*columns, *key_source_columns(table)]), *shuffle_columns])


def keys_from_columns(table: pa.Table) -> pa.Array:
    """The KEY column of ``table`` with the keys that runs left in a column of the row (KEY_COLUMN) encoded again."""
    key = table.column(KEY)
    if KEY_COLUMN not in table.column_names or table.column(KEY_COLUMN).null_count == table.num_rows:
        return key
    sources = table.column(KEY_COLUMN).cast(pa.string())
    for name in key_source_columns(table):
        encoded = encoded_keys(table.select([name]), (name,))
        key = pc.if_else(pc.fill_null(pc.equal(sources, name), False), encoded, key)
    return key


def is_text(type_: pa.DataType) -> bool:
    """Whether Arrow values of ``type_`` are str (string, large_string or string_view)."""
    return pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_string_view(type_)


def _is_bytes(type_: pa.DataType) -> bool:
    return pa.types.is_binary(type_) or pa.types.is_large_binary(type_) or pa.types.is_binary_view(type_)


def key_function(key: Callable[[Any], Any] | tuple[str, ...]) -> Callable[[Any], Any]:
    """A function giving a row's key, for a key function or column names.

    A key function that only returns a field is read as that field, not called: the scatter
    takes such keys from the column, and a reducer's key then comes from the row alike.
    """
    if callable(key):
        name = fields_read.field_getter(key)
        return key if name is None else operator.itemgetter(name)
    if len(key) == 1:
        (name,) = key
        return lambda row: row[name]
    return lambda row: tuple(row[c] for c in key)


# What a shuffle adds to each row ------------------------------------------------------------


@dataclass(frozen=True)
class ShuffleKeys:
    """How one input of a shuffle op is keyed, and the order its runs are sorted in (each
    shuffle's module makes its own: ``Exchange.keys``)."""

    columns: tuple[str, ...] | None  # key columns; None when the key is a function
    function: Callable[[Any], Any] | None
    sort_by: Callable[[Any], Any] | tuple[str, ...] | None = None
    by_encoded_key: bool = False  # group_by: runs sorted by encoded key, so groups come out in key order

    @cached_property
    def reads(self) -> tuple[str, ...] | None:
        """The columns the key and sort functions read (None: any), decoded into their rows."""
        functions = [fn for fn in (self.function, self.sort_by) if callable(fn)]
        return ops.union(*(ops.key_reads(fn) for fn in functions)) if functions else None

    @cached_property
    def getter(self) -> str | None:
        """The field the key function returns as it is (``lambda d: d["text"]``), if it does only that."""
        return fields_read.field_getter(self.function) if self.function is not None else None

    def key_column(self, table: pa.Table) -> pa.ChunkedArray | None:
        """The keys of ``table``'s rows without decoding a row, where the key function returns a
        string column of it (no nulls, not pickled: then each key is that str); else None.

        The column as it is, not combined: it is hashed chunk by chunk, and a copy of a batch's
        text made here was, in a scatter of web documents, a tenth of what it allocated."""
        name = self.getter
        index = table.schema.get_field_index(name) if name is not None else -1
        if index < 0 or not pa.types.is_string(table.schema.field(index).type) or is_pickled(table.schema.field(index)):
            return None
        column = table.column(index)
        return None if column.null_count else column

    def rows(self, table: pa.Table) -> list[Any]:
        """The rows the key and sort functions are called with: only the columns they read, when known (``kept``)."""
        if self.reads is not None and not is_item_schema(table.schema):
            table = table.select(kept(table.column_names, self.reads))
        return table_to_rows(table)

    @property
    def order(self) -> list[str]:
        if self.by_encoded_key:
            return [KEY, *([SORT] if self.sort_by is not None else []), POSITION]
        return [HASH, POSITION]

    @property
    def identity(self) -> list[str]:
        """The columns equal exactly for rows of one key (after the shuffle columns are added)."""
        return [KEY] if self.columns is None or self.by_encoded_key else list(self.columns)


def add_shuffle_columns(table: pa.Table, keys: ShuffleKeys, num_shards: int, first_position: int) -> tuple[pa.Table, pa.Array]:
    """``table`` with the shuffle columns appended, and each row's output shard.

    Key columns keep their types (the reduce side casts them to the type unified over
    every run); a key column the batch lacks is None for each of its rows.
    """
    added: dict[str, pa.Array] = {}
    if keys.columns is not None and not keys.by_encoded_key:
        hashes, targets = hash_columns(key_table(table, keys.columns), num_shards)
        added[HASH] = hashes
    else:
        # A key function that only returns a string column needs no rows decoded: the column is the keys.
        key_text = keys.key_column(table) if keys.function is not None else None
        call_function = keys.function is not None and key_text is None
        rows = keys.rows(table) if call_function or callable(keys.sort_by) else None
        values = [keys.function(row) for row in rows] if call_function else []
        if keys.columns is not None:
            encoded = hashed = encoded_keys(key_table(table, keys.columns), keys.columns)
        elif keys.by_encoded_key:  # group_by: runs are ordered by the encoded key
            encoded = hashed = encode_keys(values, key_text)
        else:
            text = key_text if key_text is not None else text_array(values)
            in_string = text is not None and pa.types.is_string(text.type)
            source = None
            if in_string and len(text):
                source = keys.getter if key_text is not None else key_in_column(table, text)
            if source is not None:
                added[KEY_COLUMN] = pa.repeat(pa.scalar(source), table.num_rows).dictionary_encode()
            # A key that is a column of the row is not held twice: KEY is null, KEY_COLUMN names the column.
            encoded = pa.nulls(table.num_rows, pa.binary()) if source is not None else encode_keys(values, text)
            hashed = text if in_string else hash_bytes(values)
        hashes, targets = hash_columns(pa.table({KEY: hashed}), num_shards)
        if not keys.by_encoded_key:
            added[HASH] = hashes
        added[KEY] = encoded
        if keys.sort_by is not None:
            if isinstance(keys.sort_by, tuple):
                sort_values = key_values(key_table(table, keys.sort_by), keys.sort_by)
            else:
                sort_values = map(keys.sort_by, rows)
            added[SORT] = pa.array(list(map(encode_key, sort_values)), pa.binary())
    added[POSITION] = pa.array(range(first_position, first_position + table.num_rows), pa.int64())
    for name, column in added.items():
        table = table.append_column(name, column)
    return table, targets


def without_shuffle_columns(table: pa.Table) -> pa.Table:
    """The rows as the user sees them: no shuffle columns, no record of what hashed the run."""
    table = table.drop_columns([name for name in (*INTERNAL, TARGET) if name in table.column_names])
    metadata = table.schema.metadata
    if metadata and HASHED_BY in metadata:
        rest = {key: value for key, value in metadata.items() if key != HASHED_BY}
        table = table.replace_schema_metadata(rest or None)
    return table
