"""The ops that fuse into a stage: row functions, columnar ops, loads, and the ones that end a stage without a shuffle (reshard, writes).

Each says what it reads (``reads``): the columns its input must have for the columns
needed after it to be right, which is all the planner needs to read only those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zephyr_arrow.ops.base import Kind, Op, describe_fn, expr_columns, function_reads, union

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa


def exprs_need(used: tuple[str, ...] | None, exprs: tuple[pl.Expr, ...], outputs: tuple[str, ...]) -> tuple[str, ...] | None:
    """The columns needed before Polars expressions that make ``outputs`` (none for a filter)
    for ``used`` to be right after them; None when ``used`` is or an expression picks columns
    by pattern, type or position."""
    reads = [expr_columns(expr) for expr in exprs]
    if used is None or any(names is None for names in reads):
        return None
    kept = tuple(name for name in used if name not in outputs)
    return tuple(dict.fromkeys([*kept, *(name for names in reads for name in names)]))


# Row operations ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class MapOp(Op):
    fn: Callable[[Any], Any]

    def needs(self, used: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return function_reads(self.fn)  # its output rows are made from what it reads

    def __repr__(self) -> str:
        return f"map({describe_fn(self.fn)})"


@dataclass(frozen=True, eq=False, repr=False)
class FlatMapOp(Op):
    fn: Callable[[Any], Any]

    def needs(self, used: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return function_reads(self.fn)

    def __repr__(self) -> str:
        return f"flat_map({describe_fn(self.fn)})"


@dataclass(frozen=True, eq=False, repr=False)
class FilterOp(Op):
    predicate: Callable[[Any], Any]

    def needs(self, used: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return union(used, function_reads(self.predicate))  # its rows pass on

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

    def needs(self, used: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return used

    def __repr__(self) -> str:
        return f"take_per_shard({self.num_rows})"


# Columnar operations ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class FilterExprOp(Op):
    kind = Kind.COLUMNAR
    expr: pl.Expr

    def needs(self, used: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return exprs_need(used, (self.expr,), outputs=())

    def __repr__(self) -> str:
        return f"filter({self.expr})"


@dataclass(frozen=True, eq=False, repr=False)
class SelectOp(Op):
    """Keep these columns in this order; a column a chunk lacks is left out (Zephyr's rule)."""

    kind = Kind.COLUMNAR
    columns: tuple[str, ...]

    def needs(self, used: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return self.columns if used is None else tuple(name for name in self.columns if name in used)

    def columns_used(self) -> tuple[str, ...]:
        """The columns at least one row must have (the coordinator checks, see executor.py)."""
        return self.columns

    def __repr__(self) -> str:
        return f"select({', '.join(self.columns)})"


@dataclass(frozen=True, eq=False, repr=False)
class WithColumnsOp(Op):
    kind = Kind.COLUMNAR
    exprs: tuple[pl.Expr, ...]

    def needs(self, used: tuple[str, ...] | None) -> tuple[str, ...] | None:
        outputs = tuple(expr.meta.output_name(raise_if_undetermined=False) for expr in self.exprs)
        return None if None in outputs else exprs_need(used, self.exprs, outputs)

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

    def needs(self, used: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return self.reads

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
    batch_mode: bool = False  # the rows are pa.RecordBatch objects, not records (Zephyr's load_parquet(batch_mode=True))

    def __repr__(self) -> str:
        pushed = []
        if self.columns is not None:
            pushed.append(f"columns={list(self.columns)}")
        if self.keep is not None:
            pushed.append(f"keep={list(self.keep)}")
        if self.filter is not None:
            pushed.append(f"filter={self.filter}")
        if self.batch_mode:
            pushed.append("batch_mode=True")
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
    format: str  # "parquet" | "jsonl" | "csv" | "vortex"
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


