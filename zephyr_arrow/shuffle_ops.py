"""Shuffle and join ops: the ops that end a stage by moving rows between shards.

A shuffle's key is a function of the row, or column names (hashed vectorised, no Python
rows); ``key_of(side)`` is the key of input ``side`` (0, or 1 for a join's right side).
``num_output_shards=None`` keeps the input's shard count. ``right`` (a Dataset) makes the
planner build the right side's stages and a JOIN stage; it is never shipped to workers
(``without_right``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zephyr_arrow import fields_read
from zephyr_arrow.ops import Kind, Op, describe_fn, expr_columns

if TYPE_CHECKING:
    import polars as pl

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


# The shuffles that know the columns they read and move (``input_columns``, ``carried_columns``).
KNOWS_ITS_COLUMNS = (GroupByOp, DeduplicateOp, AggregateOp)
