"""Shuffle and join ops: the ops that move rows between shards, and the joins.

A shuffle (``scatters``) has its input cut into sorted runs by key; how each one's runs are
cut, sorted and reduced is its own module of ``execution/shuffle/``. A shuffle's key is a
function of the row, or column names (hashed vectorised, no Python rows); ``key_of(side)``
is the key of input ``side`` (0, or 1 for a join's right side). ``num_output_shards=None``
keeps the input's shard count. A join's ``right`` (a Dataset, ``TwoSided``) makes the
planner build the right side's stages first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zephyr_arrow.ops import fields_read
from zephyr_arrow.ops.base import Key, Kind, Op, TwoSided, describe_fn, describe_key, expr_columns, key_reads, union

if TYPE_CHECKING:
    import polars as pl

@dataclass(frozen=True, eq=False, repr=False)
class GroupByOp(Op):
    """``reducer(key, rows_iterator)`` once per key, the key's rows streamed in ``sort_by`` order."""

    kind = Kind.BOUNDARY
    scatters = True
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
        reducer_reads = fields_read.fields_of_rows(self.reducer)
        return union(key_reads(self.key), None if reducer_reads is None else tuple(sorted(reducer_reads)))

    def input_columns(self) -> tuple[str, ...] | None:
        """The columns the scatter reads: those carried and those ``sort_by`` reads; None: every column."""
        return union(self.carried_columns(), () if self.sort_by is None else key_reads(self.sort_by))

    def __repr__(self) -> str:
        return f"group_by({describe_key(self.key)}, {describe_fn(self.reducer)})"


@dataclass(frozen=True, eq=False, repr=False)
class DeduplicateOp(Op):
    """Keep the first row (in input order) of each key."""

    kind = Kind.BOUNDARY
    scatters = True
    key: Key
    num_output_shards: int | None = None
    # Set by the planner: the only columns the rows carry through the shuffle besides the key
    # (those the ops after it read; a key column is one of them, and so is the column a key
    # function's keys are found in, at run time); None: every column.
    carries: tuple[str, ...] | None = None
    # Set by the planner: the columns the ops after it read; its output has the others as nulls
    # (a key column no op reads is not gathered for nothing); None: every column.
    read_after: tuple[str, ...] | None = None

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
    scatters = True
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

    def columns_used(self) -> tuple[str, ...]:
        """The columns at least one row must have (the coordinator checks, see executor.py)."""
        return self.input_columns() or self.by

    def __repr__(self) -> str:
        return f"aggregate({', '.join(self.by)}: {', '.join(str(e) for e in self.exprs)})"


@dataclass(frozen=True, eq=False, repr=False)
class JoinOp(TwoSided):
    """Hash join on key columns; the right side's clashing non-key columns get ``suffix``."""

    kind = Kind.BOUNDARY
    scatters = True
    right: Any  # Dataset; None in the op workers get
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: str  # "inner" | "left" | "right" | "outer"
    num_output_shards: int | None = None
    suffix: str = "_right"

    def key_of(self, side: int = 0) -> Key:
        return self.right_on if side else self.left_on

    def __repr__(self) -> str:
        on = ", ".join(self.left_on) if self.left_on == self.right_on else f"{', '.join(self.left_on)} = {', '.join(self.right_on)}"
        return f"join({self.how} on {on})"


@dataclass(frozen=True, eq=False, repr=False)
class BroadcastJoinOp(TwoSided):
    """``JoinOp`` without a shuffle (inner or left): each task of the left side reads the whole
    right side, which the planner computes first as a stage of its own, and joins its rows with it."""

    kind = Kind.COLUMNAR
    right: Any  # Dataset; None in the op workers get
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: str  # "inner" | "left"
    suffix: str = "_right"

    def needs(self, used: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """Its left side's part (the right side's: see ``plan.passes.narrow_broadcast_sides``)."""
        return None if used is None else union(self.left_on, used, unsuffixed(used, self.suffix))

    def __repr__(self) -> str:
        on = ", ".join(self.left_on) if self.left_on == self.right_on else f"{', '.join(self.left_on)} = {', '.join(self.right_on)}"
        return f"broadcast_join({self.how} on {on})"


@dataclass(frozen=True, eq=False, repr=False)
class SortedMergeJoinOp(TwoSided):
    """Zephyr's streaming join of shard i with shard i of co-partitioned, key-sorted inputs."""

    kind = Kind.BOUNDARY
    right: Any  # Dataset; None in the op workers get
    left_key: Callable[[Any], Any]
    right_key: Callable[[Any], Any]
    combiner: Callable[[Any, Any], Any] | None = None
    how: str = "inner"  # "inner" | "left"

    def __repr__(self) -> str:
        return f"sorted_merge_join({self.how}, {describe_fn(self.left_key)} = {describe_fn(self.right_key)})"


@dataclass(frozen=True, eq=False, repr=False)
class SortOp(Op):
    """A global sort: output shards are ranges of the key in order, rows sorted within each,
    ties in input order, nulls last. ``descending`` has one entry per key column (one for a
    key function)."""

    kind = Kind.BOUNDARY
    scatters = True
    key: Key
    descending: tuple[bool, ...]
    num_output_shards: int | None = None

    def key_of(self, side: int = 0) -> Key:
        return self.key

    def __repr__(self) -> str:
        order = "" if not any(self.descending) else f", descending={list(self.descending)}"
        return f"sort({describe_key(self.key)}{order})"


def unsuffixed(names: tuple[str, ...], suffix: str) -> tuple[str, ...]:
    """The right side's names of ``names`` a join renamed with ``suffix`` (they clashed with a left column)."""
    return tuple(name[: -len(suffix)] for name in names if suffix and name.endswith(suffix))
