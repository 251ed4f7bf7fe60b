"""Logical operations: what the user asked for, one frozen value per Dataset method call.

Each op declares how it runs, which is all the planner needs to fuse ops into stages:

- ``ROW``: a function over the shard's stream of Python rows (fuses with its neighbours);
- ``COLUMNAR``: a function over Arrow batches, no Python row objects (fuses too);
- ``LOAD``: turns a stream of file paths into the files' records (fuses; may absorb a
  following columnar filter or select as pushdown);
- ``BOUNDARY``: ends the stage (reshard; the shuffles and joins of ``shuffle_ops.py``);
- ``SINK``: writes the shard to a file and ends the stage.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa


class Kind(enum.Enum):
    ROW = "row"
    COLUMNAR = "columnar"
    LOAD = "load"
    BOUNDARY = "boundary"
    SINK = "sink"


def describe_fn(fn: Any) -> str:
    """A short readable name for a user function (unwrapping functools.partial)."""
    if isinstance(fn, functools.partial):
        return f"partial({describe_fn(fn.func)})"
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return name.rpartition("<locals>.")[2]


@dataclass(frozen=True, eq=False)
class Op:
    kind = Kind.ROW

    @property
    def name(self) -> str:
        return type(self).__name__.removesuffix("Op").lower()

    def __repr__(self) -> str:
        return self.name


def expr_columns(expr: pl.Expr) -> tuple[str, ...] | None:
    """The input columns a Polars expression reads, or None when it picks columns by pattern,
    type or position (``pl.all()``, ``pl.first()``, selectors, regexes): then any column."""
    if expr.meta.has_multiple_outputs() or expr.meta.is_regex_projection():
        return None
    return tuple(expr.meta.root_names())


# Row operations ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class MapOp(Op):
    fn: Callable[[Any], Any]

    def __repr__(self) -> str:
        return f"map({describe_fn(self.fn)})"


@dataclass(frozen=True, eq=False, repr=False)
class FlatMapOp(Op):
    fn: Callable[[Any], Any]

    def __repr__(self) -> str:
        return f"flat_map({describe_fn(self.fn)})"


@dataclass(frozen=True, eq=False, repr=False)
class FilterOp(Op):
    predicate: Callable[[Any], Any]

    def __repr__(self) -> str:
        return f"filter({describe_fn(self.predicate)})"


@dataclass(frozen=True, eq=False, repr=False)
class MapShardOp(Op):
    fn: Callable[..., Any]

    def __repr__(self) -> str:
        return f"map_shard({describe_fn(self.fn)})"


@dataclass(frozen=True, eq=False, repr=False)
class WindowOp(Op):
    size: int

    def __repr__(self) -> str:
        return f"window({self.size})"


@dataclass(frozen=True, eq=False, repr=False)
class WindowByOp(Op):
    folder_fn: Callable[[Any, Any], tuple[bool, Any]]
    initial_state: Any = None

    def __repr__(self) -> str:
        return f"window_by({describe_fn(self.folder_fn)})"


@dataclass(frozen=True, eq=False, repr=False)
class TakePerShardOp(Op):
    num_rows: int

    def __repr__(self) -> str:
        return f"take_per_shard({self.num_rows})"


# Columnar operations ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class FilterExprOp(Op):
    kind = Kind.COLUMNAR
    expr: pl.Expr

    def __repr__(self) -> str:
        return f"filter({self.expr})"


@dataclass(frozen=True, eq=False, repr=False)
class SelectOp(Op):
    """Keep these columns in this order; a column a chunk lacks is left out (Zephyr's rule)."""

    kind = Kind.COLUMNAR
    columns: tuple[str, ...]

    def __repr__(self) -> str:
        return f"select({', '.join(self.columns)})"


@dataclass(frozen=True, eq=False, repr=False)
class WithColumnsOp(Op):
    kind = Kind.COLUMNAR
    exprs: tuple[pl.Expr, ...]

    def __repr__(self) -> str:
        return f"with_columns({', '.join(str(e) for e in self.exprs)})"


@dataclass(frozen=True, eq=False, repr=False)
class MapBatchesOp(Op):
    kind = Kind.COLUMNAR
    fn: Callable[[Any], Any]
    batch_format: str = "arrow"
    batch_size: int | None = None
    # The only columns ``fn`` reads, where known (``count()``'s reads none); None: any column.
    reads: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"map_batches({describe_fn(self.fn)}, {self.batch_format})"


# Loading ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class LoadOp(Op):
    """Read each input row (a file path) as the file's records."""

    kind = Kind.LOAD
    format: str  # "auto" picks by extension
    columns: tuple[str, ...] | None = None
    filter: pl.Expr | None = None
    include_file_paths: bool = False
    file_path_column: str = "__file_path"
    # Set by the planner: the only columns the rest of the stage uses; the reader skips the others.
    keep: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        pushed = []
        if self.columns is not None:
            pushed.append(f"columns={list(self.columns)}")
        if self.keep is not None:
            pushed.append(f"keep={list(self.keep)}")
        if self.filter is not None:
            pushed.append(f"filter={self.filter}")
        name = "load_file" if self.format == "auto" else f"load_{self.format}"
        return f"{name}({', '.join(pushed)})" if pushed else name


# Stage boundaries ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class ReshardOp(Op):
    kind = Kind.BOUNDARY
    num_shards: int

    def __repr__(self) -> str:
        return f"reshard({self.num_shards})"


@dataclass(frozen=True, eq=False, repr=False)
class WriteOp(Op):
    kind = Kind.SINK
    format: str  # "parquet" | "jsonl" | "csv"
    pattern: str | Callable[[int, int], str]
    schema: pa.Schema | None = None
    skip_existing: bool = False

    def output_path(self, shard_index: int, num_shards: int) -> str:
        if callable(self.pattern):
            return self.pattern(shard_index, num_shards)
        path = self.pattern.format(shard=shard_index, total=num_shards, basename=f"shard_{shard_index}")
        scheme, sep, rest = path.rpartition("://")
        while "//" in rest:
            rest = rest.replace("//", "/")
        return f"{scheme}{sep}{rest}"

    def __repr__(self) -> str:
        return f"write_{self.format}({self.pattern if isinstance(self.pattern, str) else describe_fn(self.pattern)})"


@dataclass(frozen=True)
class ShardInfo:
    """Which shard a ``map_shard`` function is processing (Zephyr's names)."""

    shard_idx: int
    total_shards: int


@dataclass(frozen=True)
class Source:
    """Where a dataset's rows come from before any op."""


@dataclass(frozen=True)
class ItemsSource(Source):
    """In-memory items, cut into ``num_shards`` contiguous shards (default one per item)."""

    items: tuple[Any, ...] = field(repr=False)
    num_shards: int

    def __repr__(self) -> str:
        return f"from_list({len(self.items)} items, {self.num_shards} shards)"


@dataclass(frozen=True)
class FilesSource(Source):
    """Files matching a glob (resolved when the plan runs), one shard per file."""

    pattern: str
    empty_glob_ok: bool = False

    def __repr__(self) -> str:
        return f"from_files({self.pattern!r})"


@dataclass(frozen=True)
class RefsSource(Source):
    """An existing output (ShardRefs), read in place."""

    refs: Any = field(repr=False)

    def __repr__(self) -> str:
        return f"from_refs({self.refs.num_shards} shards)"


def shard_items(items: Sequence[Any], num_shards: int) -> list[list[Any]]:
    """Cut ``items`` into ``num_shards`` contiguous runs whose lengths differ by at most one."""
    base, extra = divmod(len(items), num_shards)
    shards, start = [], 0
    for index in range(num_shards):
        stop = start + base + (1 if index < extra else 0)
        shards.append(list(items[start:stop]))
        start = stop
    return shards
