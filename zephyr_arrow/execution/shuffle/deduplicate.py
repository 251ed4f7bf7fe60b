"""deduplicate: keep the first row (in input order) of each key.

Map side: runs are sorted by (hash, input position), and repeated keys within a run are
dropped before it is written (``first_of_each_key``). A key function that only returns a
string field of the row (``lambda d: d["text"]``) keys by that column: its runs name the
column instead of holding each key twice (``keys.key_in_column``). Reduce side: each
merge round's first row of each key, found by sorting only the order columns and
comparing keys only where a hash is shared; the keys kept at the round's last hash are
carried into the next, so a key spanning rounds keeps only its first row.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pyarrow as pa

from zephyr_arrow import ops
from zephyr_arrow.arrow.rows import is_pickled
from zephyr_arrow.arrow.stream import Stream
from zephyr_arrow.arrow.tables import take
from zephyr_arrow.execution.shuffle import keys as K
from zephyr_arrow.execution.shuffle.exchange import MergeExchange


class DeduplicateExchange(MergeExchange):
    sorts_rounds = False  # a round's order columns alone are sorted (first_of_each_key)

    def keys(self, op: ops.DeduplicateOp, side: int = 0) -> K.ShuffleKeys:
        columns = op.key if isinstance(op.key, tuple) else None
        return K.ShuffleKeys(columns, None if columns else op.key)

    def sorted_run(self, op: ops.DeduplicateOp, keys: K.ShuffleKeys, table: pa.Table) -> tuple[pa.Table, pa.Array | None]:
        return table, first_of_each_key(table, [K.TARGET, *keys.order], keys.identity)[0]  # sorted and deduplicated in one order

    def reduce_merged(self, op: ops.DeduplicateOp, tables: Iterator[pa.Table], schema: pa.Schema) -> Stream:
        return Stream(tables=_deduplicate(self.keys(op), tables, schema, op.read_after))


EXCHANGE = DeduplicateExchange()


def _deduplicate(
    keys: K.ShuffleKeys, tables: Iterator[pa.Table], schema: pa.Schema, read_after: tuple[str, ...] | None
) -> Iterator[pa.Table]:
    carry: pa.Table | None = None  # keys already kept whose hash is the last one seen
    for table in tables:
        keep, carry = first_of_each_key(table, keys.order, keys.identity, carry)
        # Kept in the round's order: a gather in ascending order reads memory sequentially.
        yield _gathered(K.without_shuffle_columns(table), keep.sort(), read_after)
    yield K.without_shuffle_columns(schema.empty_table())  # an empty shard still has the columns


def _gathered(table: pa.Table, rows: pa.Array, read: tuple[str, ...] | None) -> pa.Table:
    """The ``rows`` of ``table``, with the columns not in ``read`` (None: every column) as nulls of
    their type: a key no op after a deduplicate reads (its text, before ``count()``) is not copied."""
    if read is None:
        return take(table, rows)
    names = [name for name in table.column_names if name in read]
    taken = take(table.select(names), rows) if names else None  # a table of no columns has no rows to take
    columns = [taken.column(f.name) if f.name in names else pa.nulls(len(rows), f.type) for f in table.schema]
    return pa.Table.from_arrays(columns, schema=table.schema)


def first_of_each_key(
    table: pa.Table, order: list[str], identity: list[str], prior: pa.Table | None = None
) -> tuple[pa.Array, pa.Table]:
    """The rows of ``table`` that are the first of their key (in ``order``, which ends with HASH,
    POSITION), as indices in ``order``, skipping keys in ``prior``; and the kept keys at the last hash.

    The rows need not be sorted: only the small order columns are. And only rows whose hash is
    shared (by another row, or by a key of ``prior``, kept by an earlier round) have their key
    (``identity``, maybe a long text) read and compared; most rows have a hash of their own.
    Those are picked with a filter, which copies them chunk by chunk: a merge round is slices
    of many runs, and taking rows from it combined all their text first (twice, with the
    carry), half of what the reduce of a dedup of web documents allocated.
    Keys are tables of HASH and the key's identity (see ``_keys_of``).
    """
    num_prior = prior.num_rows if prior is not None else 0
    frame = pl.from_arrow(table.select(order)).with_row_index(_ROW)
    shared = pl.col(K.HASH).is_duplicated()
    if num_prior:
        shared = shared | pl.col(K.HASH).is_in(pl.from_arrow(prior.column(K.HASH)).implode())
    frame = frame.with_columns(shared.alias(_SHARED))
    keyed = _key_columns(table, identity)
    candidates = _keys_of(keyed.filter(frame.get_column(_SHARED).to_arrow()))  # in table order
    frame = frame.sort(order)
    checked = frame.filter(pl.col(_SHARED)).get_column(_ROW)
    ranks = checked.arg_sort().cast(pl.Int64)  # the place in ``order`` of each candidate, in table order
    if num_prior:
        candidates = _concat_keys(prior, candidates)
        ranks = pl.concat([pl.int_range(-num_prior, 0, dtype=pl.Int64, eager=True), ranks])
    first = _first_ranks(candidates, ranks)
    winners = checked.gather(first.filter(first >= 0))
    kept = frame.filter(~pl.col(_SHARED) | pl.col(_ROW).is_in(winners.implode()))
    keep = kept.get_column(_ROW).to_arrow()
    if not kept.height:
        return keep, prior
    last_hash = kept.get_column(K.HASH).max()
    at_last = kept.filter(pl.col(K.HASH) == last_hash).get_column(_ROW)
    carry = _keys_of(keyed.filter(pl.zeros(table.num_rows, pl.Boolean, eager=True).scatter(at_last, True).to_arrow()))
    if num_prior and prior.column(K.HASH)[0].as_py() == last_hash:
        carry = _concat_keys(prior, carry)
    return keep, carry


def _first_ranks(keys: pa.Table, ranks: pl.Series) -> pl.Series:
    """The least of ``ranks`` (one per row of ``keys``) of each distinct key."""
    frame = pl.from_arrow(keys).with_columns(ranks.alias(_RANK))
    return frame.filter(pl.col(_RANK) == pl.col(_RANK).min().over(keys.column_names)).get_column(_RANK)


def _key_columns(table: pa.Table, identity: list[str]) -> pa.Table:
    """The columns of ``table`` that its rows' keys are read from: HASH and ``identity``; and,
    where keys may be in a column of the row (a null KEY, see ``keys.key_in_column``), that
    column and KEY_COLUMN."""
    if K.KEY in identity and K.KEY_COLUMN in table.column_names and table.column(K.KEY).null_count:
        return table.select([K.HASH, K.KEY, K.KEY_COLUMN, *K.key_source_columns(table)])
    return K.key_table(table, (K.HASH, *identity))


def _keys_of(picked: pa.Table) -> pa.Table:
    """HASH and the key's identity of the rows of ``picked`` (``_key_columns`` of some rows).

    Keys in a column of the row are compared as that column's text (``_KEY_TEXT``) when all
    of ``picked`` have them in one column: equal strs are equal keys. Encoding them again
    (``keys.keys_from_columns``), as a mix of such keys and encoded ones needs, copies each
    text three more times: deduplicating a file of 50k web documents by ``lambda d: d["text"]``
    allocated 70 MB here that way and 19 MB so, and the peak of two workers doing that at
    once was 35 MB higher.
    """
    if K.KEY_COLUMN not in picked.column_names:
        return picked
    sources = [name for name in picked.column_names if name not in (K.HASH, K.KEY, K.KEY_COLUMN)]
    # In a merge round a column that also came from runs holding other values is pickled.
    in_text = len(sources) == 1 and K.is_text(picked.field(sources[0]).type) and not is_pickled(picked.field(sources[0]))
    if in_text and picked.column(K.KEY).null_count == picked.num_rows:
        return pa.table({K.HASH: picked.column(K.HASH), _KEY_TEXT: picked.column(sources[0]).cast(pa.binary())})
    return pa.table({K.HASH: picked.column(K.HASH), K.KEY: K.keys_from_columns(picked)})


def _concat_keys(prior: pa.Table, keys: pa.Table) -> pa.Table:
    """``prior`` then ``keys``, in one form: where one holds texts and the other encoded keys, the texts are encoded."""
    if prior.column_names != keys.column_names:
        prior, keys = _encoded(prior), _encoded(keys)
    return pa.concat_tables([prior, keys.cast(prior.schema)])


def _encoded(keys: pa.Table) -> pa.Table:
    if _KEY_TEXT not in keys.column_names:
        return keys
    text = pa.table({_KEY_TEXT: keys.column(_KEY_TEXT).cast(pa.string())})
    return pa.table({K.HASH: keys.column(K.HASH), K.KEY: K.encoded_keys(text, (_KEY_TEXT,))})


_ROW = "__zephyr_row"
_SHARED = "__zephyr_shared"
_RANK = "__zephyr_rank"
_KEY_TEXT = "__zephyr_key_text"  # binary: the UTF-8 of a str key found in a column of the row
