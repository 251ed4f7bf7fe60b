"""Near-duplicate clusters (MinHash LSH), as pipelines of existing shuffles run one after another.

The ``NearDuplicatesOp`` stage gets its input's chunks (the documents) and runs, through the
engine, with every step columnar and no step holding all documents or all candidate pairs:

1. **buckets**: each document's row id (its position in the input: the driver counts rows per
   shard from the chunks' row counts) and its MinHash signature cut into bands, one row per
   (document, band) (``BandKeysOp``, vectorised in ``minhash.py``); an ``aggregate`` by band
   bucket lists each bucket's documents, and each document of a bucket of two or more is joined
   to the bucket's first one (a star); a second ``aggregate`` by document gives each document
   its neighbours and, as its label, the least row id among itself and them.
2. **rounds** of min-label propagation: every document sends its label to its neighbours and
   takes the least it receives (one ``aggregate`` by document per round), until a round changes
   no label (a counter the driver reads). The labels are then the connected components' least
   row ids: the cluster of a document is named by its first row in input order.
3. **output**: the labels, sorted by row id (``sort``: each output shard a range of row ids),
   and a last pass over the documents (``MarkClustersOp``) in which each shard reads only the
   labels of its own row range and drops the rows of a cluster but its first (or keeps the rows
   of the clusters, with their cluster columns). Rows keep their shards and order.

Row ids count shard by shard and row by row, so the kept document, the clusters and the output
are the same on every backend, with any number of workers, run after run.

With ``verify``, a candidate pair (a document and its bucket's first document) is kept only
when their signatures agree on at least ``threshold`` of the permutations (the estimated
Jaccard similarity); the signatures reach the pair through two hash joins.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from zephyr_arrow import counters, minhash, ops
from zephyr_arrow.arrow.rows import table_to_rows
from zephyr_arrow.arrow.stream import Stream
from zephyr_arrow.errors import PlanError
from zephyr_arrow.ops.near_duplicates import CLUSTER_ID, CLUSTER_SIZE, ROW_ID, BandKeysOp, MarkClustersOp, NearDuplicatesOp
from zephyr_arrow.store import ShardRefs

BUCKET = "bucket"
SIGNATURE = "signature"
_NODE, _LABEL, _OLD, _NEIGHBOURS = "node", "label", "old_label", "neighbours"
LABELS_CHANGED = "zephyr_arrow/near_duplicates/labels_changed"  # counted by each round; never reported to the user


class Pipelines(Protocol):
    """What the executor gives the stage: runs of pipelines of its own, and their release."""

    def execute(self, dataset: Any, name: str) -> ShardRefs: ...

    def release(self, refs: ShardRefs) -> None: ...


def run(op: NearDuplicatesOp, docs: ShardRefs, pipelines: Pipelines) -> ShardRefs:
    """The stage's output: the documents kept (or the clusters' rows), in their shards and order."""
    from zephyr_arrow.dataset import Dataset

    shard_rows = [sum(chunk.num_rows for chunk in shard) for shard in docs.shards]
    first_row_ids = tuple(itertools.accumulate(shard_rows, initial=0))
    totals = _Totals()
    labelled = totals.add(pipelines.execute(_labelled(_candidate_pairs(op, docs, first_row_ids)), "buckets"))
    rounds = 1
    while labelled.counters.get(LABELS_CHANGED, 0):
        previous = labelled
        labelled = totals.add(pipelines.execute(_propagated(Dataset(ops.RefsSource(previous))), f"round-{rounds}"))
        pipelines.release(previous)
        rounds += 1
    labels = Dataset(ops.RefsSource(labelled)).map_batches(_cluster_ids, batch_format="polars")
    if op.clusters:
        sizes = labels.aggregate(CLUSTER_ID, pl.len().cast(pl.Int64).alias(CLUSTER_SIZE))
        labels = labels.join(sizes, on=CLUSTER_ID)
    else:
        labels = labels.filter(pl.col(ROW_ID) != pl.col(CLUSTER_ID))
    sorted_labels = totals.add(pipelines.execute(labels.sort(ROW_ID), "labels"))
    pipelines.release(labelled)
    mark = MarkClustersOp(tuple(sorted_labels.chunks), first_row_ids, op.clusters)
    output = totals.add(pipelines.execute(Dataset(ops.RefsSource(docs), (mark,)), "output"))
    pipelines.release(sorted_labels)
    return ShardRefs(output.shards, counters=totals.counters, stats=totals.stats)


class _Totals:
    """The user's counters and the engine's counts over every pipeline run (without the rounds' own)."""

    def __init__(self) -> None:
        self.counters: dict[str, int | float] = {}
        self.stats: dict[str, int | float] = {}

    def add(self, refs: ShardRefs) -> ShardRefs:
        for name, value in refs.counters.items():
            if name != LABELS_CHANGED:
                self.counters[name] = self.counters.get(name, 0) + value
        for name, value in refs.stats.items():
            self.stats[name] = self.stats.get(name, 0) + value
        return refs


def _candidate_pairs(op: NearDuplicatesOp, docs: ShardRefs, first_row_ids: tuple[int, ...]) -> Any:
    """(ROW_ID, root) for each document of a band bucket of two or more but the bucket's first."""
    from zephyr_arrow.dataset import Dataset

    buckets = Dataset(ops.RefsSource(docs), (BandKeysOp(op, first_row_ids),)).aggregate(
        BUCKET, pl.col(ROW_ID).min().alias(_LABEL), pl.col(ROW_ID).alias(_NEIGHBOURS)
    )
    pairs = buckets.map_batches(_bucket_pairs, batch_format="polars")
    if not op.verify:
        return pairs
    signatures = Dataset(ops.RefsSource(docs), (BandKeysOp(op, first_row_ids, signatures=True),))
    with_own = pairs.join(signatures, on=ROW_ID)
    with_root = with_own.join(signatures.map_batches(_as_root, batch_format="polars"), left_on=_LABEL, right_on=_LABEL)
    return with_root.map_batches(_Agreeing(op.threshold), batch_format="polars")


def _bucket_pairs(buckets: pl.DataFrame) -> pl.DataFrame:
    return (
        buckets.filter(pl.col(_NEIGHBOURS).list.len() > 1)
        .explode(_NEIGHBOURS)
        .filter(pl.col(_NEIGHBOURS) != pl.col(_LABEL))
        .select(pl.col(_NEIGHBOURS).alias(ROW_ID), _LABEL)
    )


def _as_root(signatures: pl.DataFrame) -> pl.DataFrame:
    return signatures.select(pl.col(ROW_ID).alias(_LABEL), pl.col(SIGNATURE).alias(f"{SIGNATURE}_root"))


class _Agreeing:
    """The pairs whose signatures agree on at least ``threshold`` of their permutations."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, pairs: pl.DataFrame) -> pl.DataFrame:
        if not pairs.height:
            return pairs.select(ROW_ID, _LABEL)
        own = pairs.get_column(SIGNATURE).to_numpy()  # Array columns: rows by permutations
        root = pairs.get_column(f"{SIGNATURE}_root").to_numpy()
        agree = (own == root).mean(axis=1) >= self.threshold
        return pairs.filter(pl.Series(agree)).select(ROW_ID, _LABEL)


def _labelled(pairs: Any) -> Any:
    """Each document of a pair with its neighbours (both ways) and the least row id among them and itself."""
    messages = pairs.map_batches(_pair_messages, batch_format="polars")
    return _by_document(messages)


def _pair_messages(pairs: pl.DataFrame) -> pl.DataFrame:
    member, root = pl.col(ROW_ID), pl.col(_LABEL)
    return pl.concat(
        [
            pairs.select(member.alias(_NODE), root.alias(_LABEL), pl.concat_list(root).alias(_NEIGHBOURS)),
            pairs.select(root.alias(_NODE), root.alias(_LABEL), pl.concat_list(member).alias(_NEIGHBOURS)),
        ]
    ).with_columns(pl.lit(None, pl.Int64).alias(_OLD))


def _propagated(labelled: Any) -> Any:
    """One round: every document sends its label to its neighbours and keeps the least it gets."""
    return _by_document(labelled.map_batches(_round_messages, batch_format="polars"))


def _round_messages(labelled: pl.DataFrame) -> pl.DataFrame:
    own = labelled.select(_NODE, _LABEL, _NEIGHBOURS, pl.col(_LABEL).alias(_OLD))
    sent = (
        labelled.select(_NEIGHBOURS, _LABEL)
        .explode(_NEIGHBOURS)
        .select(
            pl.col(_NEIGHBOURS).alias(_NODE),
            _LABEL,
            pl.lit(None, pl.List(pl.Int64)).alias(_NEIGHBOURS),
            pl.lit(None, pl.Int64).alias(_OLD),
        )
    )
    return pl.concat([own, sent])


def _by_document(messages: Any) -> Any:
    gathered = messages.aggregate(
        _NODE,
        pl.col(_LABEL).min(),
        pl.col(_OLD).min(),
        pl.col(_NEIGHBOURS).explode().drop_nulls().unique(),
    )
    return gathered.map_batches(_count_changed, batch_format="polars")


def _count_changed(labelled: pl.DataFrame) -> pl.DataFrame:
    changed = labelled.select((pl.col(_OLD).is_null() | (pl.col(_LABEL) < pl.col(_OLD))).sum()).item()
    counters.increment(LABELS_CHANGED, changed)
    return labelled


def _cluster_ids(labelled: pl.DataFrame) -> pl.DataFrame:
    return labelled.select(pl.col(_NODE).alias(ROW_ID), pl.col(_LABEL).alias(CLUSTER_ID))


# Worker side: the two columnar ops --------------------------------------------------------------


def band_keys(op: BandKeysOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    """(ROW_ID, BUCKET) per band of each row with text (or (ROW_ID, SIGNATURE) per row)."""
    near = op.near

    def tables() -> Iterator[pa.Table]:
        row_id = op.first_row_ids[shard.shard_idx]
        for table in stream.as_tables():
            shingles, num_shingles = minhash.shingle_hashes(key_texts(near, table), near.ngram_size)
            signature = minhash.signatures(shingles, num_shingles, near.num_perm, near.seed)
            has_text = num_shingles > 0
            row_ids = np.arange(row_id, row_id + table.num_rows, dtype=np.int64)[has_text]
            row_id += table.num_rows
            if op.signatures:
                values = pa.array(signature[has_text].astype(np.uint32).ravel(), pa.uint32())
                yield pa.table({ROW_ID: row_ids, SIGNATURE: pa.FixedSizeListArray.from_arrays(values, near.num_perm)})
            else:
                buckets = minhash.band_hashes(signature[has_text], near.bands, near.rows_per_band)
                yield pa.table({ROW_ID: np.repeat(row_ids, near.bands), BUCKET: buckets.ravel()})

    return Stream(tables=tables())


def key_texts(op: NearDuplicatesOp, table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """The text of each row: its key column, or the key function of the row."""
    if isinstance(op.key, tuple):
        (name,) = op.key
        if name not in table.column_names:
            raise PlanError(f"{op!r}: no column {name!r}; the rows have columns {table.column_names}")
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_null(column.type)):
            raise PlanError(f"{op!r}: column {name!r} holds {column.type}, not text; pass a function that returns the text")
        return column
    texts = [op.key(row) for row in table_to_rows(table)]
    wrong = next((text for text in texts if text is not None and not isinstance(text, str)), None)
    if wrong is not None:
        raise TypeError(f"{op!r}: the key function must return a str (or None), got {type(wrong).__name__}: {wrong!r:.80}")
    return pa.array(texts, pa.large_string())


def mark_clusters(op: MarkClustersOp, stream: Stream, shard: ops.ShardInfo) -> Stream:
    """The shard's rows, less the near-duplicates (or only the clusters' rows, with their columns)."""

    def tables() -> Iterator[pa.Table]:
        first, end = op.first_row_ids[shard.shard_idx], op.first_row_ids[shard.shard_idx + 1]
        labels = labels_between(op.labels, first, end)
        labelled_ids = labels.column(ROW_ID).to_numpy()
        row_id = first
        for table in stream.as_tables():
            row_ids = np.arange(row_id, row_id + table.num_rows, dtype=np.int64)
            row_id += table.num_rows
            found = np.isin(row_ids, labelled_ids)
            if not op.clusters:
                yield table.filter(pa.array(~found))
                continue
            at = np.searchsorted(labelled_ids, row_ids[found])
            picked = table.filter(pa.array(found))
            picked = picked.append_column(ROW_ID, pa.array(row_ids[found]))
            for name in (CLUSTER_ID, CLUSTER_SIZE):
                picked = picked.append_column(name, labels.column(name).take(pa.array(at)))
            yield picked

    return Stream(tables=tables())


def labels_between(chunks: tuple[Any, ...], first: int, end: int) -> pa.Table:
    """The labels of row ids ``first <= ROW_ID < end``, sorted by row id: of the labels' row groups
    (sorted by row id), only those whose statistics overlap the range are read."""
    tables = []
    for chunk in chunks:
        if chunk.row_range is not None:
            tables.append(chunk.read())
            continue
        with chunk.opened() as parquet:
            metadata = parquet.metadata
            column = parquet.schema_arrow.get_field_index(ROW_ID)
            groups = [group for group in range(metadata.num_row_groups) if _may_hold(metadata.row_group(group).column(column), first, end)]
            if groups:
                tables.append(parquet.read_row_groups(groups))
    # Every column, as int64: labels of no rows may have none of them (an empty join's output).
    frame = pl.concat([_LABELS_SCHEMA.clear(), *(pl.from_arrow(table, schema_overrides=_LABELS_SCHEMA.schema) for table in tables)], how="diagonal_relaxed")
    frame = frame.select(_LABELS_SCHEMA.columns).cast(pl.Int64)
    return frame.filter(pl.col(ROW_ID).is_between(first, end, closed="left")).sort(ROW_ID).to_arrow()


_LABELS_SCHEMA = pl.DataFrame(schema={ROW_ID: pl.Int64, CLUSTER_ID: pl.Int64, CLUSTER_SIZE: pl.Int64})


def _may_hold(column: Any, first: int, end: int) -> bool:
    statistics = column.statistics
    if statistics is None or not statistics.has_min_max:
        return True
    return statistics.min < end and statistics.max >= first
