"""Dataset: an immutable, lazy chain of operations on sharded data.

Every method validates its arguments (a wrong one is a PlanError raised right there,
showing the value) and returns a new Dataset with one op appended. Nothing runs until
``ZephyrContext.execute(dataset)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from zephyr_arrow import ops
from zephyr_arrow.errors import PlanError

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

    from zephyr_arrow.store import ShardRefs

DEFAULT_FILE_PATH_COLUMN = "__file_path"
_LOAD_FORMATS = ("auto", "jsonl", "parquet", "csv")


def _check_callable(method: str, name: str, value: Any) -> None:
    if not callable(value):
        raise PlanError(f"{method}() needs a callable {name}, got {value!r} ({type(value).__name__})")


def _check_positive_int(method: str, name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PlanError(f"{method}() needs {name} to be an int >= {minimum}, got {value!r}")


def _is_polars_expr(value: Any) -> bool:
    return type(value).__module__.startswith("polars") and type(value).__name__ == "Expr"


def _check_columns(method: str, columns: Any) -> tuple[str, ...]:
    if isinstance(columns, str):
        columns = (columns,)
    columns = tuple(columns)
    if not columns or not all(isinstance(c, str) and c for c in columns):
        raise PlanError(f"{method}() needs one or more column names (non-empty strings), got {columns!r}")
    return columns


class Dataset:
    """A lazy pipeline: a source and the ops applied to it.

    >>> from zephyr_arrow import Dataset, ZephyrContext
    >>> with ZephyrContext(backend="sync") as ctx:
    ...     ctx.execute(Dataset.from_list([1, 2, 3]).map(lambda x: x * 10)).to_pylist()
    [10, 20, 30]
    """

    def __init__(self, source: ops.Source, operations: tuple[ops.Op, ...] = ()) -> None:
        self.source = source
        self.operations = tuple(operations)

    def __repr__(self) -> str:
        return " -> ".join([repr(self.source), *(repr(op) for op in self.operations)])

    def _then(self, op: ops.Op) -> Dataset:
        return Dataset(self.source, (*self.operations, op))

    # Sources ------------------------------------------------------------------------------

    @staticmethod
    def from_list(items: list[Any], num_shards: int | None = None) -> Dataset:
        """Items as a dataset: one shard per item (Zephyr's rule), or ``num_shards`` contiguous shards."""
        if isinstance(items, (str, bytes, dict)) or not isinstance(items, Iterable):
            raise PlanError(f"from_list() needs a list of items, got {type(items).__name__}: {items!r:.80}")
        items = tuple(items)
        if num_shards is None:
            num_shards = max(len(items), 1)
        _check_positive_int("from_list", "num_shards", num_shards)
        return Dataset(ops.ItemsSource(items, num_shards))

    @staticmethod
    def from_iterable(iterable: Iterable[Any], num_shards: int | None = None) -> Dataset:
        """Like ``from_list``; the iterable is consumed now."""
        return Dataset.from_list(list(iterable), num_shards=num_shards)

    @staticmethod
    def from_files(pattern: str, empty_glob_ok: bool = False) -> Dataset:
        """File paths matching ``pattern`` (fsspec glob with ``**`` and ``{a,b}``), sorted, one shard per file."""
        if not isinstance(pattern, str) or not pattern:
            raise PlanError(f"from_files() needs a glob pattern string, got {pattern!r}")
        if not isinstance(empty_glob_ok, bool):
            raise PlanError(
                f"from_files() got empty_glob_ok={empty_glob_ok!r}; it must be a bool. To match files under a "
                "directory, put the pattern in the path: from_files('dir/**/*.jsonl')"
            )
        return Dataset(ops.FilesSource(pattern, empty_glob_ok))

    @staticmethod
    def from_refs(refs: ShardRefs) -> Dataset:
        """An existing output (``ShardRefs``) as the input of a new pipeline, read in place."""
        from zephyr_arrow.store import ShardRefs

        if not isinstance(refs, ShardRefs):
            raise PlanError(f"from_refs() needs ShardRefs, got {type(refs).__name__}")
        return Dataset(ops.RefsSource(refs))

    # Row operations -----------------------------------------------------------------------

    def map(self, fn: Callable[[Any], Any]) -> Dataset:
        _check_callable("map", "fn", fn)
        return self._then(ops.MapOp(fn))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]]) -> Dataset:
        _check_callable("flat_map", "fn", fn)
        return self._then(ops.FlatMapOp(fn))

    def filter(self, predicate: Callable[[Any], Any] | pl.Expr) -> Dataset:
        """Keep rows where ``predicate(row)`` is truthy; a Polars expression filters columnar."""
        if _is_polars_expr(predicate):
            return self._then(ops.FilterExprOp(predicate))
        _check_callable("filter", "predicate (or a Polars expression)", predicate)
        return self._then(ops.FilterOp(predicate))

    def select(self, *columns: str) -> Dataset:
        """Keep only these columns, in this order (a column a row lacks is left out)."""
        return self._then(ops.SelectOp(_check_columns("select", columns)))

    def map_shard(self, fn: Callable[..., Iterable[Any]]) -> Dataset:
        """``fn(rows_iterator, ShardInfo) -> iterable``: stateful processing of a whole shard."""
        _check_callable("map_shard", "fn", fn)
        return self._then(ops.MapShardOp(fn))

    def window(self, size: int) -> Dataset:
        """Tumbling windows: lists of at most ``size`` consecutive rows of a shard."""
        _check_positive_int("window", "size", size)
        return self._then(ops.WindowOp(size))

    def window_by(self, folder_fn: Callable[[Any, Any], tuple[bool, Any]], initial_state: Any = None) -> Dataset:
        """Windows closed by ``folder_fn(state, row) -> (keep_going, new_state)``; the closing row opens the next."""
        _check_callable("window_by", "folder_fn", folder_fn)
        return self._then(ops.WindowByOp(folder_fn, initial_state))

    def take_per_shard(self, n: int) -> Dataset:
        """The first ``n`` rows of every shard."""
        _check_positive_int("take_per_shard", "n", n, minimum=0)
        return self._then(ops.TakePerShardOp(n))

    # Columnar operations -------------------------------------------------------------------

    def with_columns(self, *exprs: pl.Expr, **named: pl.Expr) -> Dataset:
        """Add or replace columns with Polars expressions (no Python row objects)."""
        import polars as pl

        all_exprs = (*exprs, *((v if _is_polars_expr(v) else pl.lit(v)).alias(k) for k, v in named.items()))
        bad = [e for e in exprs if not _is_polars_expr(e)]
        if bad or not all_exprs:
            raise PlanError(f"with_columns() needs Polars expressions, got {bad or 'nothing'!r}")
        return self._then(ops.WithColumnsOp(tuple(all_exprs)))

    def map_batches(self, fn: Callable[[Any], Any], batch_format: str = "arrow", batch_size: int | None = None) -> Dataset:
        """``fn(batch) -> batch`` on Arrow tables or Polars DataFrames of up to ``batch_size`` rows."""
        _check_callable("map_batches", "fn", fn)
        if batch_format not in ("arrow", "polars"):
            raise PlanError(f"map_batches() batch_format must be 'arrow' or 'polars', got {batch_format!r}")
        if batch_size is not None:
            _check_positive_int("map_batches", "batch_size", batch_size)
        return self._then(ops.MapBatchesOp(fn, batch_format, batch_size))

    # Loading ---------------------------------------------------------------------------------

    def _load(
        self, method: str, format: str, columns: Any, include_file_paths: bool, file_path_column: str
    ) -> Dataset:
        if columns is not None:
            columns = _check_columns(method, columns)
        if not isinstance(file_path_column, str) or not file_path_column:
            raise PlanError(f"{method}() needs file_path_column to be a non-empty string, got {file_path_column!r}")
        return self._then(ops.LoadOp(format, columns, None, bool(include_file_paths), file_path_column))

    def load_file(
        self,
        columns: list[str] | None = None,
        include_file_paths: bool = False,
        file_path_column: str = DEFAULT_FILE_PATH_COLUMN,
    ) -> Dataset:
        """Read each file path as records, choosing the reader by extension (.jsonl, .parquet, .csv, ...)."""
        return self._load("load_file", "auto", columns, include_file_paths, file_path_column)

    def load_jsonl(self, include_file_paths: bool = False, file_path_column: str = DEFAULT_FILE_PATH_COLUMN) -> Dataset:
        return self._load("load_jsonl", "jsonl", None, include_file_paths, file_path_column)

    def load_parquet(
        self,
        columns: list[str] | None = None,
        include_file_paths: bool = False,
        file_path_column: str = DEFAULT_FILE_PATH_COLUMN,
    ) -> Dataset:
        return self._load("load_parquet", "parquet", columns, include_file_paths, file_path_column)

    def load_csv(
        self,
        columns: list[str] | None = None,
        include_file_paths: bool = False,
        file_path_column: str = DEFAULT_FILE_PATH_COLUMN,
    ) -> Dataset:
        return self._load("load_csv", "csv", columns, include_file_paths, file_path_column)

    # Stage boundaries -------------------------------------------------------------------------

    def reshard(self, num_shards: int | None) -> Dataset:
        """Rebalance rows into ``num_shards`` shards (sizes differ by at most one row, order kept)."""
        if num_shards is None:
            return self
        _check_positive_int("reshard", "num_shards", num_shards)
        return self._then(ops.ReshardOp(num_shards))

    def _write(self, format: str, pattern: Any, schema: Any = None, skip_existing: bool = False) -> Dataset:
        method = f"write_{format}"
        if not (isinstance(pattern, str) and pattern) and not callable(pattern):
            raise PlanError(f"{method}() needs an output pattern string or a function (shard, total) -> path, got {pattern!r}")
        if isinstance(pattern, str):
            try:
                pattern.format(shard=0, total=1, basename="shard_0")
            except (KeyError, IndexError, ValueError) as error:
                raise PlanError(
                    f"{method}() pattern {pattern!r} has an unknown placeholder ({error}); "
                    "use {shard}, {total} and {basename}"
                ) from error
        if schema is not None:
            import pyarrow as pa

            if not isinstance(schema, pa.Schema):
                raise PlanError(f"{method}() schema must be a pyarrow.Schema, got {type(schema).__name__}")
        return self._then(ops.WriteOp(format, pattern, schema, bool(skip_existing)))

    def write_parquet(self, output_pattern: str | Callable[[int, int], str], schema: pa.Schema | None = None, skip_existing: bool = False) -> Dataset:
        """Write each shard to one Parquet file; the output rows are the written paths."""
        return self._write("parquet", output_pattern, schema, skip_existing)

    def write_jsonl(self, output_pattern: str | Callable[[int, int], str], skip_existing: bool = False) -> Dataset:
        """Write each shard to one JSONL file (.gz / .zst compress by extension)."""
        return self._write("jsonl", output_pattern, None, skip_existing)

    def write_csv(self, output_pattern: str | Callable[[int, int], str], skip_existing: bool = False) -> Dataset:
        return self._write("csv", output_pattern, None, skip_existing)
