"""Logical operations: what the user asked for, one frozen value per Dataset method call.

Each op declares how it runs, which is all the planner needs to fuse ops into stages:

- ``ROW``: a function over the shard's stream of Python rows (fuses with its neighbours);
- ``COLUMNAR``: a function over Arrow batches, no Python row objects (fuses too);
- ``LOAD``: turns a stream of file paths into the files' records (fuses; may absorb a
  following columnar filter or select as pushdown);
- ``BOUNDARY``: ends the stage (reshard, shuffles, joins);
- ``SINK``: writes the shard to a file and ends the stage.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zephyr_arrow import fields_read

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


# Shuffles -----------------------------------------------------------------------------------
# A shuffle's key is a function of the row, or column names (hashed vectorised, no Python
# rows); ``key_of(side)`` is the key of input ``side`` (0, or 1 for a join's right side). ``num_output_shards=None`` keeps the input's shard count. ``right`` (a Dataset)
# makes the planner build the right side's stages and a JOIN stage; it is never shipped
# to workers (``without_right``).

Key = Callable[[Any], Any] | tuple[str, ...]


def describe_key(key: Key) -> str:
    return ", ".join(key) if isinstance(key, tuple) else describe_fn(key)


def key_reads(key: Key) -> tuple[str, ...] | None:
    """The columns a key reads: its columns, or the fields its function's code shows it reads (None: any)."""
    return key if isinstance(key, tuple) else _fields(fields_read.fields_of_row, key)


def _fields(analysis: Callable[[Any], frozenset[str] | None], fn: Callable[..., Any]) -> tuple[str, ...] | None:
    fields = analysis(fn)
    return None if fields is None else tuple(sorted(fields))


def union(*columns: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The columns of every set in order, or None (every column) if any is None."""
    if any(names is None for names in columns):
        return None
    return tuple(dict.fromkeys(name for names in columns for name in names))


@dataclass(frozen=True, eq=False, repr=False)
class GroupByOp(Op):
    """``reducer(key, rows_iterator)`` once per key, the key's rows streamed in ``sort_by`` order."""

    kind = Kind.BOUNDARY
    key: Key
    reducer: Callable[[Any, Any], Any]
    sort_by: Key | None = None
    combiner: Callable[[Any, Any], Any] | None = None
    num_output_shards: int | None = None

    def key_of(self, side: int = 0) -> Key:
        return self.key

    def carried_columns(self) -> tuple[str, ...] | None:
        """The columns the rows carry through the shuffle: those the key and the reducer read
        (the reduce side gives the reducer rows of just those); None: every column (a combiner
        makes new rows, or a function's reads are not known)."""
        if self.combiner is not None:
            return None
        return union(key_reads(self.key), _fields(fields_read.fields_of_rows, self.reducer))

    def input_columns(self) -> tuple[str, ...] | None:
        """The columns the scatter reads: those carried and those ``sort_by`` reads; None: every column."""
        return union(self.carried_columns(), () if self.sort_by is None else key_reads(self.sort_by))

    def __repr__(self) -> str:
        return f"group_by({describe_key(self.key)}, {describe_fn(self.reducer)})"


@dataclass(frozen=True, eq=False, repr=False)
class DeduplicateOp(Op):
    """Keep the first row (in input order) of each key."""

    kind = Kind.BOUNDARY
    key: Key
    num_output_shards: int | None = None
    # Set by the planner: the only columns the rows carry through the shuffle besides the key
    # (those the ops after it read; a key column is one of them, and so is the column a key
    # function's keys are found in, at run time); None: every column.
    carries: tuple[str, ...] | None = None

    def key_of(self, side: int = 0) -> Key:
        return self.key

    def carried_columns(self) -> tuple[str, ...] | None:
        return self.carries

    def input_columns(self) -> tuple[str, ...] | None:
        """The columns the scatter reads (those carried and those the key reads), or None for every column."""
        return union(self.carries, key_reads(self.key))

    def __repr__(self) -> str:
        return f"deduplicate({describe_key(self.key)})"


@dataclass(frozen=True, eq=False, repr=False)
class AggregateOp(Op):
    """Polars aggregations per group of the ``by`` columns."""

    kind = Kind.BOUNDARY
    by: tuple[str, ...]
    exprs: tuple[pl.Expr, ...]
    num_output_shards: int | None = None

    def key_of(self, side: int = 0) -> Key:
        return self.by

    def input_columns(self) -> tuple[str, ...] | None:
        """The columns the aggregation reads (``by`` and the expressions' columns), or None
        when an expression picks columns by pattern, type or position (``pl.all()``, selectors)."""
        used = [expr_columns(expr) for expr in self.exprs]
        if any(names is None for names in used):
            return None
        return tuple(dict.fromkeys([*self.by, *(name for names in used for name in names)]))

    def carried_columns(self) -> tuple[str, ...] | None:
        return self.input_columns()

    def __repr__(self) -> str:
        return f"aggregate({', '.join(self.by)}: {', '.join(str(e) for e in self.exprs)})"


@dataclass(frozen=True, eq=False, repr=False)
class JoinOp(Op):
    """Hash join on key columns; the right side's clashing non-key columns get ``suffix``."""

    kind = Kind.BOUNDARY
    right: Any  # Dataset; None once stripped for workers
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: str  # "inner" | "left" | "right" | "outer"
    num_output_shards: int | None = None
    suffix: str = "_right"

    def without_right(self) -> JoinOp:
        import dataclasses

        return dataclasses.replace(self, right=None)

    def key_of(self, side: int = 0) -> Key:
        return self.right_on if side else self.left_on

    def __repr__(self) -> str:
        on = ", ".join(self.left_on) if self.left_on == self.right_on else f"{', '.join(self.left_on)} = {', '.join(self.right_on)}"
        return f"join({self.how} on {on})"


@dataclass(frozen=True, eq=False, repr=False)
class BroadcastJoinOp(Op):
    """``JoinOp`` without a shuffle (inner or left): each task of the left side reads the whole
    right side, which the planner computes first as a stage of its own, and joins its rows with it."""

    kind = Kind.COLUMNAR
    right: Any  # Dataset; None once stripped for workers
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: str  # "inner" | "left"
    suffix: str = "_right"

    def without_right(self) -> BroadcastJoinOp:
        import dataclasses

        return dataclasses.replace(self, right=None)

    def __repr__(self) -> str:
        on = ", ".join(self.left_on) if self.left_on == self.right_on else f"{', '.join(self.left_on)} = {', '.join(self.right_on)}"
        return f"broadcast_join({self.how} on {on})"


@dataclass(frozen=True, eq=False, repr=False)
class SortedMergeJoinOp(Op):
    """Zephyr's streaming join of shard i with shard i of co-partitioned, key-sorted inputs."""

    kind = Kind.BOUNDARY
    right: Any  # Dataset; None once stripped for workers
    left_key: Callable[[Any], Any]
    right_key: Callable[[Any], Any]
    combiner: Callable[[Any, Any], Any] | None = None
    how: str = "inner"  # "inner" | "left"

    def without_right(self) -> SortedMergeJoinOp:
        import dataclasses

        return dataclasses.replace(self, right=None)

    def check_input_shards(self, shard_counts: list[int]) -> None:
        """Both sides must have as many shards (checked before anything runs)."""
        from zephyr_arrow.errors import PlanError

        left, right = shard_counts
        if left != right:
            raise PlanError(
                f"{self!r} needs both sides to have the same number of shards, got {left} on the left and "
                f"{right} on the right: produce both with group_by(..., num_output_shards=N) on the join key, "
                "or use join(), which shuffles both sides itself"
            )

    def __repr__(self) -> str:
        return f"sorted_merge_join({self.how}, {describe_fn(self.left_key)} = {describe_fn(self.right_key)})"
