"""What every op is: its kind, what it reads, whether it scatters; and where a dataset's rows come from.

Each op declares how it runs, which is all the planner needs to fuse ops into stages:

- ``ROW``: a function over the shard's stream of Python rows (fuses with its neighbours);
- ``COLUMNAR``: a function over Arrow batches, no Python row objects (fuses too);
- ``LOAD``: turns a stream of file paths into the files' records (fuses; may absorb a
  following columnar filter or select as pushdown);
- ``BOUNDARY``: ends the stage (reshard; the shuffles and joins of ``shuffles.py``);
- ``SINK``: writes the shard to a file and ends the stage.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zephyr_arrow.ops import fields_read

if TYPE_CHECKING:
    import polars as pl


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


Key = Callable[[Any], Any] | tuple[str, ...]  # a shuffle's key: a function of the row, or column names


@dataclass(frozen=True, eq=False)
class Op:
    """One Dataset method call. What it declares is all the planner needs to know of it."""

    kind = Kind.ROW
    # A shuffle: its input is cut into sorted runs by key first (the planner makes a SCATTER stage for it).
    scatters = False

    @property
    def name(self) -> str:
        return type(self).__name__.removesuffix("Op").lower()

    def needs(self, used: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """The columns this op's input must have for ``used`` (None: every column) to be right
        after it; None: every column (what it reads is not known)."""
        return None

    def input_columns(self) -> tuple[str, ...] | None:
        """A shuffle: the columns its scatter reads (its key's and what it moves); None: every column."""
        return None

    def carried_columns(self) -> tuple[str, ...] | None:
        """A shuffle: the columns its rows carry through it besides the shuffle's own; None: every column."""
        return None

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False, repr=False)
class TwoSided(Op):
    """An op with a second input, ``right`` (a Dataset): the planner builds its stages first.
    Workers get the op without it (``without_right``), since it may hold a long list of items."""

    def without_right(self) -> TwoSided:
        return dataclasses.replace(self, right=None)


def describe_key(key: Key) -> str:
    return ", ".join(key) if isinstance(key, tuple) else describe_fn(key)


def function_reads(fn: Callable[[Any], Any]) -> tuple[str, ...] | None:
    """The fields of its row a function's code shows it reads (None: any)."""
    fields = fields_read.fields_of_row(fn)
    return None if fields is None else tuple(sorted(fields))


def key_reads(key: Key) -> tuple[str, ...] | None:
    """The columns a key reads: its columns, or the fields its function's code shows it reads (None: any)."""
    return key if isinstance(key, tuple) else function_reads(key)


def union(*columns: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The columns of every set in order, or None (every column) if any is None."""
    if any(names is None for names in columns):
        return None
    return tuple(dict.fromkeys(name for names in columns for name in names))


def expr_columns(expr: pl.Expr) -> tuple[str, ...] | None:
    """The input columns a Polars expression reads, or None when it picks columns by pattern,
    type or position (``pl.all()``, ``pl.first()``, selectors, regexes): then any column."""
    if expr.meta.has_multiple_outputs() or expr.meta.is_regex_projection():
        return None
    return tuple(expr.meta.root_names())


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
    # Set by load_parquet(approx_shard_bytes=...): Parquet files are cut into shards of about this many bytes.
    approx_shard_bytes: int | None = None

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

