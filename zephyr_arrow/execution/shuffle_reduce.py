"""The reduce side of shuffles: merge one output shard's sorted runs and apply the op.

Every op reads its runs through ``merge.merged``, a stream of tables in the runs' order,
and holds one round of it (plus a small carry) at a time:

- group_by: rows are decoded a few thousand at a time and grouped by encoded key; the
  reducer gets an iterator that pulls its group's rows from the merge, so a group
  larger than memory streams through.
- deduplicate: each round's first row of each key, found by sorting only the order
  columns and comparing keys only where a hash is shared; the keys kept at the round's
  last hash are carried into the next, so a key spanning rounds keeps only its first row.
- aggregate: Polars group_by on each round's complete hashes; rows of the round's last
  hash wait for the next round. Memory holds the largest group (exact aggregations such
  as median need all its rows).
- join: both sides merged, cut at a hash both have passed, joined per round with Polars;
  a key's rows of both sides are in memory together.
- sorted_merge_join (no shuffle): shard i of both sides merged row by row, buffering one
  key's right rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from zephyr_arrow import ops, shuffle_ops
from zephyr_arrow.execution import keys as K
from zephyr_arrow.execution import partial_aggregate
from zephyr_arrow.execution.merge import merged
from zephyr_arrow.execution import operators
from zephyr_arrow.execution.operators import Stream
from zephyr_arrow.execution.tasks import JoinInput, MergeInput, ShardTask
from zephyr_arrow.planner import Stage
from zephyr_arrow.rows import is_pickled, table_to_rows
from zephyr_arrow.store import ChunkRef, layout
from zephyr_arrow.store.chunk_writer import ChunkWriter
from zephyr_arrow.store.schema import from_polars
from zephyr_arrow.store.tables import take

ROWS_PER_DECODE = 4096  # rows turned into Python objects at a time
_POLARS_HOW = {"inner": "inner", "left": "left", "right": "right", "outer": "full"}
_ABOVE_EVERY_HASH = 1 << 64


def reduce(stage: Stage, task: ShardTask) -> tuple[int, list[ChunkRef]]:
    """Write output shard ``task.shard_index`` of a shuffle or join, through the ops fused
    after it (``stage.ops``); return (rows read, chunks)."""
    op = stage.boundary
    counted = _Counted()
    if isinstance(op, shuffle_ops.SortedMergeJoinOp):
        spec: JoinInput = task.input
        rows = _sorted_merge_join(op, counted.rows(_rows(spec.left)), counted.rows(_rows(spec.right)), task.shard_index)
        return counted.count, _write(stage, task, Stream(rows=rows))
    if isinstance(op, shuffle_ops.JoinOp):
        spec = task.input
        with (
            merged(list(spec.left), K.shuffle_keys(op, 0).order, spec.left_schema, _spill(task, 0)) as left,
            merged(list(spec.right), K.shuffle_keys(op, 1).order, spec.right_schema, _spill(task, 1)) as right,
        ):
            tables = _join(op, counted.tables(left), counted.tables(right), spec.left_schema, spec.right_schema)
            chunks = _write(stage, task, Stream(tables=tables))  # before reading the count: writing pulls the rows through
            return counted.count, chunks
    spec: MergeInput = task.input
    keys = K.shuffle_keys(op)
    sort = not isinstance(op, shuffle_ops.DeduplicateOp)  # deduplicate sorts only the order columns of a round
    with merged(list(spec.runs), keys.order, spec.schema, _spill(task, 0), sort) as tables:
        tables = counted.tables(tables)
        if isinstance(op, shuffle_ops.GroupByOp):
            output = Stream(rows=_group_by(op, tables))
        elif isinstance(op, shuffle_ops.DeduplicateOp):
            output = Stream(tables=_deduplicate(keys, tables, spec.schema, op.read_after))
        else:
            output = Stream(tables=_aggregate(op, tables, spec.schema))
        chunks = _write(stage, task, output)
        return counted.count, chunks


def _write(stage: Stage, task: ShardTask, stream: Stream) -> list[ChunkRef]:
    shard = ops.ShardInfo(task.shard_index, task.num_shards)
    for op in stage.ops:
        stream = operators.apply(op, stream, shard)
    return ChunkWriter(lambda index: task_path(task, index)).write_all(stream.as_tables())


def task_path(task: ShardTask, index: int, stage_dir: str | None = None) -> str:
    """Where a task writes its ``index``-th file (``stage_dir`` defaults to the task's own)."""
    run = task.run
    return layout.chunk_path(run.chunk_prefix, run.execution_id, stage_dir or task.stage_dir, task.shard_index, index, task.attempt)


def _spill(task: ShardTask, side: int) -> Callable[[int], str]:
    return lambda index: task_path(task, index, stage_dir=layout.spill_dir_name(task.stage_dir, side))


class _Counted:
    def __init__(self) -> None:
        self.count = 0

    def tables(self, tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
        for table in tables:
            self.count += table.num_rows
            yield table

    def rows(self, rows: Iterator[Any]) -> Iterator[Any]:
        for row in rows:
            self.count += 1
            yield row


def _group_by(op: shuffle_ops.GroupByOp, tables: Iterator[pa.Table]) -> Iterator[Any]:
    key_of = K.key_function(op.key)
    for _, group in itertools.groupby(keyed_rows(tables, [K.KEY]), key=itemgetter(0)):
        rows = map(itemgetter(1), group)
        first = next(rows)
        # Flattened before the next group is read: the group's iterator is only valid until then.
        yield from flatten(op.reducer(key_of(first), itertools.chain([first], rows)))


def _deduplicate(
    keys: K.ShuffleKeys, tables: Iterator[pa.Table], schema: pa.Schema, read_after: tuple[str, ...] | None
) -> Iterator[pa.Table]:
    carry: pa.Table | None = None  # keys already kept whose hash is the last one seen
    for table in tables:
        keep, carry = first_of_each_key(table, keys.order, keys.identity, carry)
        # Kept in the round's order: a gather in ascending order reads memory sequentially.
        yield _gathered(without_shuffle_columns(table), keep.sort(), read_after)
    yield without_shuffle_columns(schema.empty_table())  # an empty shard still has the columns


def _gathered(table: pa.Table, rows: pa.Array, read: tuple[str, ...] | None) -> pa.Table:
    """The ``rows`` of ``table``, with the columns not in ``read`` (None: every column) as nulls of
    their type: a key no op after a deduplicate reads (its text, before ``count()``) is not copied."""
    if read is None:
        return take(table, rows)
    names = [name for name in table.column_names if name in read]
    taken = take(table.select(names), rows) if names else None  # a table of no columns has no rows to take
    columns = [taken.column(f.name) if f.name in names else pa.nulls(len(rows), f.type) for f in table.schema]
    return pa.Table.from_arrays(columns, schema=table.schema)


def _aggregate(op: shuffle_ops.AggregateOp, tables: Iterator[pa.Table], schema: pa.Schema) -> Iterator[pa.Table]:
    parts = partial_aggregate.split(op.exprs)
    pending: pa.Table | None = None  # rows of the last hash seen: the group may go on
    for table in tables:
        if pending is not None:
            table = pa.concat_tables([pending, table])
        hashes = table.column(K.HASH)
        complete = pc.index(hashes, hashes[-1]).as_py()
        if complete:
            yield _aggregated(op, parts, table.slice(0, complete))
        pending = table.slice(complete)
    yield _aggregated(op, parts, pending if pending is not None else schema.empty_table())


def _aggregated(op: shuffle_ops.AggregateOp, parts: tuple[partial_aggregate.Part, ...] | None, table: pa.Table) -> pa.Table:
    """The aggregation of ``table``'s rows: over partials when the runs were folded."""
    frame = pl.from_arrow(without_shuffle_columns(table))
    exprs = op.exprs
    if parts is not None and partial_aggregate.is_folded(frame.schema):
        exprs = partial_aggregate.final_exprs(parts, frame.schema)
    result = frame.group_by(list(op.by), maintain_order=True).agg(*exprs)
    return from_polars(result, {name: table.schema.field(name) for name in op.by})


# Shared with the map side (a combiner, and deduplicate within a run, reduce early) -----


def flatten(result: Any) -> Iterator[Any]:
    """A reducer's or combiner's result as rows: an iterator is flattened, anything else is one row."""
    if isinstance(result, Iterator):
        return result
    return iter((result,))


def keyed_rows(tables: Iterable[pa.Table], columns: list[str]) -> Iterator[tuple]:
    """``(*values of columns, row)`` for every row, decoding ``ROWS_PER_DECODE`` rows at a time."""
    for table in tables:
        for start in range(0, table.num_rows, ROWS_PER_DECODE):
            piece = table.slice(start, ROWS_PER_DECODE)
            values = [piece.column(name).to_pylist() for name in columns]
            yield from zip(*values, table_to_rows(without_shuffle_columns(piece)))


def without_shuffle_columns(table: pa.Table) -> pa.Table:
    """The rows as the user sees them: no shuffle columns, no record of what hashed the run."""
    table = table.drop_columns([name for name in (*K.INTERNAL, K.TARGET) if name in table.column_names])
    metadata = table.schema.metadata
    if metadata and K.HASHED_BY in metadata:
        rest = {key: value for key, value in metadata.items() if key != K.HASHED_BY}
        table = table.replace_schema_metadata(rest or None)
    return table


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


# Joins ------------------------------------------------------------------------------------


class _JoinSide:
    """One side's merged tables, buffered from the last complete hash on."""

    def __init__(self, tables: Iterator[pa.Table], schema: pa.Schema) -> None:
        self._tables = tables
        self.buffer = schema.empty_table()
        self.done = False

    def fill(self) -> None:
        while not self.done and not self.buffer.num_rows:
            self.pull()

    def pull(self) -> None:
        table = next(self._tables, None)
        if table is None:
            self.done = True
        else:
            self.buffer = pa.concat_tables([self.buffer, table])

    @property
    def last_hash(self) -> int:
        return _ABOVE_EVERY_HASH if self.done else self.buffer.column(K.HASH)[-1].as_py()

    def take_below(self, bound: int) -> pa.Table:
        if bound == _ABOVE_EVERY_HASH:
            part, self.buffer = self.buffer, self.buffer.slice(0, 0)
            return part
        below = pc.sum(pc.less(self.buffer.column(K.HASH), pa.scalar(bound, pa.uint64()))).as_py() or 0
        part, self.buffer = self.buffer.slice(0, below), self.buffer.slice(below)
        return part


def _join(
    op: shuffle_ops.JoinOp, left_tables: Iterator[pa.Table], right_tables: Iterator[pa.Table], left_schema: pa.Schema, right_schema: pa.Schema
) -> Iterator[pa.Table]:
    sides = [_JoinSide(left_tables, left_schema), _JoinSide(right_tables, right_schema)]
    while True:
        for side in sides:
            side.fill()
        # Every row below the smaller of the two last hashes has arrived on both sides.
        bound = min(side.last_hash for side in sides)
        left, right = (side.take_below(bound) for side in sides)
        if _has_output(op.how, left, right):
            yield joined(op, left, right)
        if bound == _ABOVE_EVERY_HASH:
            break
        for side in sides:
            if not side.done and side.last_hash == bound:
                side.pull()
    yield joined(op, left_schema.empty_table(), right_schema.empty_table())  # the columns, for an empty shard


def _has_output(how: str, left: pa.Table, right: pa.Table) -> bool:
    return {
        "inner": left.num_rows and right.num_rows,
        "left": left.num_rows,
        "right": right.num_rows,
        "outer": left.num_rows or right.num_rows,
    }[how] > 0


def joined(op: shuffle_ops.JoinOp | shuffle_ops.BroadcastJoinOp, left: pa.Table, right: pa.Table, keep_left_order: bool = False) -> pa.Table:
    """``left`` joined with ``right`` as ``op`` says (Polars), with the columns named and typed alike
    whatever rows there are; ``keep_left_order``: in the order of ``left``'s rows."""
    left_frame = pl.from_arrow(without_shuffle_columns(left))
    right_frame = pl.from_arrow(without_shuffle_columns(right))
    frame = left_frame.join(
        right_frame,
        left_on=list(op.left_on),
        right_on=list(op.right_on),
        how=_POLARS_HOW[op.how],
        coalesce=True,
        suffix=op.suffix,
        maintain_order="left" if keep_left_order else None,
    )
    if op.how == "right":  # Polars names a right join's keys after the right side
        frame = frame.rename({r: l for l, r in zip(op.left_on, op.right_on, strict=True) if l != r})
    fields = {field.name: field for field in left.schema}
    for field in right.schema:
        if field.name not in op.right_on and field.name not in K.INTERNAL:
            name = field.name + op.suffix if field.name in left_frame.columns else field.name
            fields[name] = field.with_name(name)
    names = [name for name in fields if name not in K.INTERNAL]
    return from_polars(frame.select(names), fields)


# Sorted merge join ------------------------------------------------------------------------


def _rows(chunks: tuple[ChunkRef, ...]) -> Iterator[Any]:
    tables = (pa.Table.from_batches([batch]) for chunk in chunks for batch in chunk.iter_batches())
    return Stream(tables=tables).as_rows()


def _sorted_merge_join(op: shuffle_ops.SortedMergeJoinOp, left_rows: Iterator[Any], right_rows: Iterator[Any], shard_index: int) -> Iterator[Any]:
    combiner = op.combiner or merge_dicts
    right = _groups(right_rows, op.right_key, "right", shard_index)
    right_group = next(right, None)
    for encoded, left_group in _groups(left_rows, op.left_key, "left", shard_index):
        while right_group is not None and right_group[0] < encoded:
            right_group = next(right, None)
        if right_group is not None and right_group[0] == encoded:
            buffered = list(right_group[1])  # one key's right rows; the left rows stream
            for left_row in left_group:
                for right_row in buffered:
                    yield combiner(left_row, right_row)
            right_group = next(right, None)
        elif op.how == "left":
            for left_row in left_group:
                yield combiner(left_row, None)


def merge_dicts(left: dict, right: dict | None) -> dict:
    """The default combiner: ``{**left, **right}``; an unmatched left row passes through."""
    return dict(left) if right is None else {**left, **right}


def _groups(rows: Iterator[Any], key_fn: Any, side: str, shard_index: int) -> Iterator[tuple[bytes, Iterator[Any]]]:
    def keyed() -> Iterator[tuple[bytes, Any]]:
        previous: tuple[bytes, Any] | None = None
        for row in rows:
            key = key_fn(row)
            encoded = K.encode_key(key)
            if previous is not None and encoded < previous[0]:
                raise ValueError(
                    f"sorted_merge_join: shard {shard_index} of the {side} side is not sorted by its key: "
                    f"{key!r} comes after {previous[1]!r}. Sort and co-shard both sides by the key, e.g. with "
                    "group_by(key, ..., num_output_shards=N) on each, or use join(), which needs neither"
                )
            previous = (encoded, key)
            yield encoded, row

    for encoded, group in itertools.groupby(keyed(), key=itemgetter(0)):
        yield encoded, map(itemgetter(1), group)
