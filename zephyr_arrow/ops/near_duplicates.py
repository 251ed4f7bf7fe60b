"""Near-duplicates (``fuzzy_deduplicate``, ``near_duplicate_clusters``): the op the user appends, and
the two columnar ops of the pipelines it runs (``execution/near_duplicates.py`` says how)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zephyr_arrow.ops.base import Key, Kind, Op, describe_key, key_reads

ROW_ID = "row_id"  # a row's position in the input, from 0: shard by shard, row by row
CLUSTER_ID = "cluster_id"  # the row id of the cluster's first row, the one fuzzy_deduplicate keeps
CLUSTER_SIZE = "cluster_size"


@dataclass(frozen=True, eq=False, repr=False)
class NearDuplicatesOp(Op):
    """Clusters of rows whose ``key`` texts are near-duplicates (MinHash LSH); keeps each cluster's
    first row, or (``clusters``) gives the rows of every cluster of two or more with their cluster."""

    kind = Kind.BOUNDARY
    key: Key  # one column name, or a function of the row returning a str
    threshold: float
    ngram_size: int
    num_perm: int
    seed: int
    bands: int
    rows_per_band: int
    verify: bool
    clusters: bool

    def __repr__(self) -> str:
        method = "near_duplicate_clusters" if self.clusters else "fuzzy_deduplicate"
        return f"{method}({describe_key(self.key)}, threshold={self.threshold}, bands={self.bands}x{self.rows_per_band})"


@dataclass(frozen=True, eq=False, repr=False)
class BandKeysOp(Op):
    """Each row's MinHash signature cut into bands: rows of (``ROW_ID``, bucket), one per band
    (with ``signatures``: one row of (``ROW_ID``, signature) instead). ``first_row_ids[i]`` is
    the row id of shard i's first row."""

    kind = Kind.COLUMNAR
    near: NearDuplicatesOp
    first_row_ids: tuple[int, ...]
    signatures: bool = False

    def needs(self, used: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return key_reads(self.near.key)

    def __repr__(self) -> str:
        return "minhash_signatures" if self.signatures else "minhash_bands"


@dataclass(frozen=True, eq=False, repr=False)
class MarkClustersOp(Op):
    """The rows of a shard that ``labels`` (chunks sorted by ``ROW_ID``, with ``CLUSTER_ID`` and
    maybe ``CLUSTER_SIZE``) says to keep: with ``clusters``, the rows it names with their cluster
    columns; else the rows it does not name."""

    kind = Kind.COLUMNAR
    labels: tuple[Any, ...]  # ChunkRefs
    first_row_ids: tuple[int, ...]
    clusters: bool

    def __repr__(self) -> str:
        return "near_duplicate_clusters" if self.clusters else "drop_near_duplicates"
