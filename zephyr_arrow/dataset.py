"""Dataset: an immutable, lazy chain of operations on sharded data.

Every method validates its arguments (a wrong one is a PlanError raised right there,
showing the value) and returns a new Dataset with one op appended. Nothing runs until
``ZephyrContext.execute(dataset)``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from zephyr_arrow import ops
from zephyr_arrow.arguments import check_callable, check_columns, check_key, check_num_output_shards, check_positive_int, is_polars_expr
from zephyr_arrow.errors import PlanError
from zephyr_arrow.ops import fields_read

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

    from zephyr_arrow.store import ShardRefs

DEFAULT_FILE_PATH_COLUMN = "__file_path"
_LOAD_FORMATS = ("auto", "jsonl", "parquet", "csv", "vortex")


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
        if isinstance(self.source, ops.FilesSource) and not self.operations and _reads_records(op):
            raise PlanError(
                f"{op!r} reads fields of its rows, but the rows of {self.source!r} are file paths; "
                "add .load_jsonl() / .load_parquet() / .load_csv() to read them"
            )
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
        check_positive_int("from_list", "num_shards", num_shards)
        return Dataset(ops.ItemsSource(items, num_shards))

    @staticmethod
    def from_iterable(iterable: Iterable[Any], num_shards: int | None = None) -> Dataset:
        """Like ``from_list``; the iterable is consumed now."""
        return Dataset.from_list(list(iterable), num_shards=num_shards)

    @staticmethod
    def from_files(pattern: str, empty_glob_ok: bool = False) -> Dataset:
        """File paths matching ``pattern`` (fsspec glob with ``**`` and ``{a,b}``), sorted, one shard per file.

        A file loaded by ``load_*`` that is more than its share of the input may be read by several
        tasks, in pieces; its shard's output is the same (see the README)."""
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
        """Replace each row with ``fn(row)``.

        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> with ZephyrContext(backend="sync") as ctx:
        ...     ctx.execute(Dataset.from_list([{"n": 1}, {"n": 2}]).map(lambda r: {**r, "sq": r["n"] ** 2})).to_pylist()
        [{'n': 1, 'sq': 1}, {'n': 2, 'sq': 4}]
        """
        check_callable("map", "fn", fn)
        return self._then(ops.MapOp(fn))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]]) -> Dataset:
        """Replace each row with the rows of the iterable ``fn(row)`` (none, one or many).

        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> with ZephyrContext(backend="sync") as ctx:
        ...     ctx.execute(Dataset.from_list(["a b", "c"]).flat_map(str.split)).to_pylist()
        ['a', 'b', 'c']
        """
        check_callable("flat_map", "fn", fn)
        return self._then(ops.FlatMapOp(fn))

    def filter(self, predicate: Callable[[Any], Any] | pl.Expr) -> Dataset:
        """Keep rows where ``predicate(row)`` is truthy; a Polars expression filters columnar,
        batch by batch (see ``with_columns`` on aggregating expressions)."""
        if is_polars_expr(predicate):
            return self._then(ops.FilterExprOp(predicate))
        check_callable("filter", "predicate (or a Polars expression)", predicate)
        return self._then(ops.FilterOp(predicate))

    def select(self, *columns: str) -> Dataset:
        """Keep only these columns, in this order (a column a row lacks is left out)."""
        return self._then(ops.SelectOp(check_columns("select", columns)))

    def map_shard(self, fn: Callable[..., Iterable[Any]]) -> Dataset:
        """``fn(rows_iterator, ShardInfo) -> iterable``: stateful processing of a whole shard."""
        check_callable("map_shard", "fn", fn)
        return self._then(ops.MapShardOp(fn))

    def window(self, size: int) -> Dataset:
        """Tumbling windows: lists of at most ``size`` consecutive rows of a shard."""
        check_positive_int("window", "size", size)
        return self._then(ops.WindowOp(size))

    def window_by(self, folder_fn: Callable[[Any, Any], tuple[bool, Any]], initial_state: Any = None) -> Dataset:
        """Windows closed by ``folder_fn(state, row) -> (keep_going, new_state)``; the closing row opens the next."""
        check_callable("window_by", "folder_fn", folder_fn)
        return self._then(ops.WindowByOp(folder_fn, initial_state))

    def take_per_shard(self, n: int) -> Dataset:
        """The first ``n`` rows of every shard."""
        check_positive_int("take_per_shard", "n", n, minimum=0)
        return self._then(ops.TakePerShardOp(n))

    # Columnar operations -------------------------------------------------------------------

    def with_columns(self, *exprs: pl.Expr, **named: pl.Expr) -> Dataset:
        """Add or replace columns with Polars expressions (no Python row objects).

        Expressions run on each batch of a shard, so they should be row-wise: an aggregating
        or window expression (``col("x").mean()``, ``rank()``, ``over(...)``) would see one
        batch, not the shard or the dataset. Use ``aggregate`` or ``group_by`` for those.
        """
        import polars as pl

        all_exprs = (*exprs, *((v if is_polars_expr(v) else pl.lit(v)).alias(k) for k, v in named.items()))
        bad = [e for e in exprs if not is_polars_expr(e)]
        if bad or not all_exprs:
            raise PlanError(f"with_columns() needs Polars expressions, got {bad or 'nothing'!r}")
        return self._then(ops.WithColumnsOp(tuple(all_exprs)))

    def map_batches(self, fn: Callable[[Any], Any], batch_format: str = "arrow", batch_size: int | None = None) -> Dataset:
        """``fn(batch) -> batch`` on Arrow tables or Polars DataFrames of up to ``batch_size`` rows."""
        check_callable("map_batches", "fn", fn)
        if batch_format not in ("arrow", "polars"):
            raise PlanError(f"map_batches() batch_format must be 'arrow' or 'polars', got {batch_format!r}")
        if batch_size is not None:
            check_positive_int("map_batches", "batch_size", batch_size)
        return self._then(ops.MapBatchesOp(fn, batch_format, batch_size))

    # Loading ---------------------------------------------------------------------------------

    def _load(
        self,
        method: str,
        format: str,
        columns: Any,
        include_file_paths: bool,
        file_path_column: str,
        approx_shard_bytes: int | None = None,
        batch_mode: bool = False,
    ) -> Dataset:
        if columns is not None:
            columns = check_columns(method, columns)
        if not isinstance(file_path_column, str) or not file_path_column:
            raise PlanError(f"{method}() needs file_path_column to be a non-empty string, got {file_path_column!r}")
        dataset = self
        if approx_shard_bytes is not None:
            check_positive_int(method, "approx_shard_bytes", approx_shard_bytes)
            if not isinstance(self.source, ops.FilesSource) or self.operations:
                raise PlanError(f"{method}(approx_shard_bytes=...) splits the files of from_files(): call it right after from_files()")
            dataset = Dataset(dataclasses.replace(self.source, approx_shard_bytes=approx_shard_bytes))
        load = ops.LoadOp(format, columns, None, bool(include_file_paths), file_path_column, batch_mode=bool(batch_mode))
        return dataset._then(load)

    def load_file(
        self,
        columns: list[str] | None = None,
        approx_shard_bytes: int | None = None,
        include_file_paths: bool = False,
        file_path_column: str = DEFAULT_FILE_PATH_COLUMN,
    ) -> Dataset:
        """Read each file path (or ``InputFileSpec``) as records, choosing the reader by extension
        (.jsonl, .parquet, .csv, ...). ``approx_shard_bytes``: as ``load_parquet``'s, for its Parquet files."""
        return self._load("load_file", "auto", columns, include_file_paths, file_path_column, approx_shard_bytes)

    def load_jsonl(self, include_file_paths: bool = False, file_path_column: str = DEFAULT_FILE_PATH_COLUMN) -> Dataset:
        """Read each file path (from ``from_files``) as JSON lines, one record per line (.gz, .zst, .bz2
        and .xz are decompressed). ``include_file_paths`` adds each record's file as ``file_path_column``.

        >>> import os, tempfile
        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> path = os.path.join(tempfile.mkdtemp(), "docs.jsonl")
        >>> _ = open(path, "w").write('{"id": 1, "text": "hello"}\\n{"id": 2, "text": "world"}\\n')
        >>> with ZephyrContext(backend="sync") as ctx:
        ...     ctx.execute(Dataset.from_files(path).load_jsonl()).to_pylist()
        [{'id': 1, 'text': 'hello'}, {'id': 2, 'text': 'world'}]
        """
        return self._load("load_jsonl", "jsonl", None, include_file_paths, file_path_column)

    def load_parquet(
        self,
        columns: list[str] | None = None,
        approx_shard_bytes: int | None = None,
        include_file_paths: bool = False,
        file_path_column: str = DEFAULT_FILE_PATH_COLUMN,
        *,
        batch_mode: bool = False,
    ) -> Dataset:
        """Read each file path (from ``from_files``) or ``InputFileSpec`` as a Parquet file; ``columns``
        reads only those.

        ``approx_shard_bytes`` (right after ``from_files``) cuts each file into shards of about that
        many bytes at row-group boundaries, as Zephyr does. With ``batch_mode=True`` the rows are
        ``pyarrow.RecordBatch`` objects (up to ``io.BATCH_ROWS`` rows of one row group each), for a
        function that works on whole batches.

        >>> from pathlib import Path
        >>> import zephyr_arrow
        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> kjv = Path(zephyr_arrow.__file__).parent / "datasets" / "kjv" / "kjv_passages.parquet"
        >>> with ZephyrContext(backend="sync") as ctx:
        ...     ctx.execute(Dataset.from_files(str(kjv)).load_parquet(columns=["book", "ref"]).take_per_shard(1)).to_pylist()
        [{'book': 'Genesis', 'ref': '1:1'}]
        """
        return self._load("load_parquet", "parquet", columns, include_file_paths, file_path_column, approx_shard_bytes, batch_mode)

    def load_csv(
        self,
        columns: list[str] | None = None,
        include_file_paths: bool = False,
        file_path_column: str = DEFAULT_FILE_PATH_COLUMN,
    ) -> Dataset:
        """Read each file path (from ``from_files``) as CSV with a header line; ``columns`` keeps only those.

        >>> from pathlib import Path
        >>> import zephyr_arrow
        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> airlines = Path(zephyr_arrow.__file__).parent / "datasets" / "nycflights13" / "airlines.csv"
        >>> with ZephyrContext(backend="sync") as ctx:
        ...     ctx.execute(Dataset.from_files(str(airlines)).load_csv().take_per_shard(2)).to_pylist()
        [{'carrier': '9E', 'name': 'Endeavor Air Inc.'}, {'carrier': 'AA', 'name': 'American Airlines Inc.'}]
        """
        return self._load("load_csv", "csv", columns, include_file_paths, file_path_column)

    def load_vortex(
        self,
        columns: list[str] | None = None,
        include_file_paths: bool = False,
        file_path_column: str = DEFAULT_FILE_PATH_COLUMN,
    ) -> Dataset:
        """Read each file path (from ``from_files``) or ``InputFileSpec`` as a Vortex file (needs
        ``pip install 'zephyr_arrow[vortex]'``); ``columns`` keeps only those."""
        return self._load("load_vortex", "vortex", columns, include_file_paths, file_path_column)

    # Stage boundaries -------------------------------------------------------------------------

    def reshard(self, num_shards: int | None) -> Dataset:
        """Rebalance rows into ``num_shards`` shards (sizes differ by at most one row, order kept)."""
        if num_shards is None:
            return self
        if isinstance(num_shards, int) and not isinstance(num_shards, bool) and num_shards < 1:
            raise PlanError(f"reshard(): num_shards must be positive, got {num_shards}")  # Zephyr's words, which its tests match
        check_positive_int("reshard", "num_shards", num_shards)
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

    def write_vortex(self, output_pattern: str | Callable[[int, int], str], schema: pa.Schema | None = None, skip_existing: bool = False) -> Dataset:
        """Write each shard to one Vortex file (needs ``pip install 'zephyr_arrow[vortex]'``); the output rows are the written paths."""
        return self._write("vortex", output_pattern, schema, skip_existing)

    def write_jsonl(self, output_pattern: str | Callable[[int, int], str], skip_existing: bool = False) -> Dataset:
        """Write each shard to one JSONL file (.gz / .zst compress by extension)."""
        return self._write("jsonl", output_pattern, None, skip_existing)

    def write_csv(self, output_pattern: str | Callable[[int, int], str], skip_existing: bool = False) -> Dataset:
        """Write each shard to one CSV file with a header line; the output rows are the written paths."""
        return self._write("csv", output_pattern, None, skip_existing)

    # Shuffles ---------------------------------------------------------------------------------

    def group_by(
        self,
        key: Callable[[Any], Any] | str | list[str],
        reducer: Callable[[Any, Iterator[Any]], Any],
        *,
        sort_by: Callable[[Any], Any] | str | list[str] | None = None,
        combiner: Callable[[Any, Iterator[Any]], Any] | None = None,
        num_output_shards: int | None = None,
    ) -> Dataset:
        """Call ``reducer(key, rows_iterator)`` once per key; it returns a row or an iterator of rows.

        ``key`` is a function of the row, or column name(s) (the reducer then gets the value,
        or a tuple of values). Keys are equal as in a Python dict (1, 1.0 and True are one key).
        A group's rows are streamed, in ``sort_by`` order and then input order, so a group
        larger than memory works. ``combiner(key, rows) -> rows`` pre-aggregates on the map
        side and must be associative. Each output shard holds its groups in key order.

        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> ds = Dataset.from_list([{"k": "a", "n": 1}, {"k": "b", "n": 2}, {"k": "a", "n": 3}])
        >>> with ZephyrContext(backend="sync") as ctx:
        ...     ctx.execute(ds.group_by("k", lambda k, rows: {"k": k, "n": sum(r["n"] for r in rows)}, num_output_shards=1)).to_pylist()
        [{'k': 'a', 'n': 4}, {'k': 'b', 'n': 2}]
        """
        check_callable("group_by", "reducer", reducer)
        if combiner is not None:
            check_callable("group_by", "combiner", combiner)
        return self._then(
            ops.GroupByOp(
                check_key("group_by", "key", key),
                reducer,
                None if sort_by is None else check_key("group_by", "sort_by", sort_by),
                combiner,
                check_num_output_shards("group_by", num_output_shards),
            )
        )

    def deduplicate(self, key: Callable[[Any], Any] | str | list[str], num_output_shards: int | None = None) -> Dataset:
        """Keep one row per key: the first in input order (shard order, then row order).

        With column name(s) as ``key`` no Python rows are made.

        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> ds = Dataset.from_list([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 1, "v": "c"}])
        >>> with ZephyrContext(backend="sync") as ctx:
        ...     sorted(r["v"] for r in ctx.execute(ds.deduplicate("id")).to_pylist())
        ['a', 'b']
        """
        return self._then(ops.DeduplicateOp(check_key("deduplicate", "key", key), check_num_output_shards("deduplicate", num_output_shards)))

    def fuzzy_deduplicate(
        self,
        key: str | Callable[[Any], str],
        threshold: float = 0.8,
        ngram_size: int = 5,
        num_perm: int = 128,
        seed: int = 42,
        bands: int | None = None,
        rows_per_band: int | None = None,
        verify: bool = False,
    ) -> Dataset:
        """Keep one row per cluster of near-duplicate texts: the first in input order.

        ``key`` is a text column's name or a function of the row returning its text. Texts are
        lower-cased and cut into words (runs of letters, digits and ``_``; punctuation and
        whitespace only separate words); their similarity is the Jaccard similarity of their
        sets of ``ngram_size``-word shingles, estimated by MinHash with ``num_perm``
        permutations drawn from ``seed``. Rows whose signatures agree on all of one of
        ``bands`` bands of ``rows_per_band`` values are candidates (by default the pair that
        balances false positives and false negatives around ``threshold``, as datasketch's
        MinHashLSH picks them); clusters are the connected components of the candidate pairs
        (``verify=True`` keeps only pairs whose estimated similarity reaches ``threshold``).
        Rows keep their shards and order; rows without text are kept.

        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> ds = Dataset.from_list([{"text": "the cat sat on the mat today"}, {"text": "a dog ran"},
        ...                         {"text": "The cat sat on the mat, today!"}])
        >>> with ZephyrContext(backend="sync", progress=False) as ctx:
        ...     ctx.execute(ds.fuzzy_deduplicate("text", threshold=0.7, ngram_size=3)).to_pylist()
        [{'text': 'the cat sat on the mat today'}, {'text': 'a dog ran'}]
        """
        return self._then(_near_duplicates_op("fuzzy_deduplicate", key, threshold, ngram_size, num_perm, seed, bands, rows_per_band, verify, False))

    def near_duplicate_clusters(
        self,
        key: str | Callable[[Any], str],
        threshold: float = 0.8,
        ngram_size: int = 5,
        num_perm: int = 128,
        seed: int = 42,
        bands: int | None = None,
        rows_per_band: int | None = None,
        verify: bool = False,
    ) -> Dataset:
        """The rows of every cluster of two or more near-duplicates (as ``fuzzy_deduplicate``
        finds them), with ``row_id`` (the row's position in the input, from 0), ``cluster_id``
        (the row id of the cluster's first row, the one ``fuzzy_deduplicate`` keeps) and
        ``cluster_size``. Rows keep their shards and order.

        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> ds = Dataset.from_list([{"text": "the cat sat on the mat today"}, {"text": "a dog ran"},
        ...                         {"text": "The cat sat on the mat, today!"}])
        >>> with ZephyrContext(backend="sync", progress=False) as ctx:
        ...     ctx.execute(ds.near_duplicate_clusters("text", threshold=0.7, ngram_size=3)).to_pylist()
        [{'text': 'the cat sat on the mat today', 'row_id': 0, 'cluster_id': 0, 'cluster_size': 2}, {'text': 'The cat sat on the mat, today!', 'row_id': 2, 'cluster_id': 0, 'cluster_size': 2}]
        """
        return self._then(_near_duplicates_op("near_duplicate_clusters", key, threshold, ngram_size, num_perm, seed, bands, rows_per_band, verify, True))

    def sort(
        self,
        by: str | list[str] | None = None,
        *,
        key: Callable[[Any], Any] | None = None,
        descending: bool | list[bool] = False,
        num_output_shards: int | None = None,
    ) -> Dataset:
        """Sort every row by column(s) ``by``, or by ``key(row)``: output shard i holds a range of
        keys before shard i+1's, its rows in order; ties keep input order and nulls come last.

        ``descending`` is one flag, or one per column. Shards are cut from a sample of the keys
        so they hold about as many rows each (one key's rows stay in one shard).

        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> ds = Dataset.from_list([{"n": 3}, {"n": None}, {"n": 1}, {"n": 2}], num_shards=2)
        >>> with ZephyrContext(backend="sync") as ctx:
        ...     ctx.execute(ds.sort("n", descending=True)).to_pylist()
        [{'n': 3}, {'n': 2}, {'n': 1}, {'n': None}]
        """
        if (by is None) == (key is None):
            raise PlanError(f"sort() needs either column name(s) or key=, not {'both' if by is not None else 'neither'}")
        if key is not None:
            check_callable("sort", "key", key)
            sort_key: Callable[[Any], Any] | tuple[str, ...] = key
        else:
            sort_key = check_columns("sort", by)
        flags = [descending] * (1 if key is not None else len(sort_key)) if isinstance(descending, bool) else list(descending)
        if not all(isinstance(flag, bool) for flag in flags) or len(flags) != (1 if key is not None else len(sort_key)):
            what = "one bool for the key function" if key is not None else f"a bool or {len(sort_key)} bools, one per column"
            raise PlanError(f"sort() needs descending to be {what}, got {descending!r}")
        return self._then(ops.SortOp(sort_key, tuple(flags), check_num_output_shards("sort", num_output_shards)))

    def aggregate(self, by: str | list[str], *exprs: pl.Expr, num_output_shards: int | None = None) -> Dataset:
        """Polars aggregations per group of the ``by`` columns: one row per group, no Python rows.

        When every expression is ``pl.len()`` or a column's ``len``, ``count``, ``sum``, ``min``,
        ``max`` or ``mean``, each map task folds its rows per key before the shuffle
        (``execution/partial_aggregate.py``); other expressions see every row of a group.

        >>> import polars as pl
        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> ds = Dataset.from_list([{"lang": "en", "s": 1.0}, {"lang": "en", "s": 3.0}, {"lang": "de", "s": 2.0}])
        >>> with ZephyrContext(backend="sync") as ctx:
        ...     ctx.execute(ds.aggregate("lang", pl.len().alias("n"), pl.col("s").mean())).sql("select * from data order by lang").fetchall()
        [('de', 1, 2.0), ('en', 2, 2.0)]
        """
        bad = [e for e in exprs if not is_polars_expr(e)]
        if bad or not exprs:
            raise PlanError(f"aggregate() needs Polars aggregation expressions after the key columns, got {bad or 'none'!r}")
        return self._then(ops.AggregateOp(check_columns("aggregate", by), exprs, check_num_output_shards("aggregate", num_output_shards)))

    def join(
        self,
        right: Dataset,
        on: str | list[str] | None = None,
        *,
        left_on: str | list[str] | None = None,
        right_on: str | list[str] | None = None,
        how: str = "inner",
        num_output_shards: int | None = None,
        broadcast: bool = False,
    ) -> Dataset:
        """Hash join with ``right`` on key columns; neither side needs to be sorted or co-sharded.

        ``how`` is "inner", "left", "right" or "outer". The key columns appear once, under the
        left side's names; a right non-key column whose name the left side also has gets the
        suffix ``_right``. Keys that are None match nothing (as in SQL).

        ``broadcast=True`` joins without a shuffle, for a ``right`` small enough to hold in
        memory: it is computed first, then every task of this side reads all of it and joins its
        own rows with it. The result keeps this side's shards and, within each, its order. Only
        "inner" and "left" joins can (an unmatched right row is only known once every shard ran).

        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> docs = Dataset.from_list([{"id": 1, "text": "a"}, {"id": 2, "text": "b"}])
        >>> scores = Dataset.from_list([{"id": 2, "score": 0.5}])
        >>> with ZephyrContext(backend="sync") as ctx:
        ...     ctx.execute(docs.join(scores, on="id")).to_pylist()
        [{'id': 2, 'text': 'b', 'score': 0.5}]
        """
        if not isinstance(right, Dataset):
            raise PlanError(f"join() needs a Dataset to join with, got {type(right).__name__}")
        if how not in ("inner", "left", "right", "outer"):
            raise PlanError(f"join() how must be 'inner', 'left', 'right' or 'outer', got {how!r}")
        if (on is not None and (left_on is not None or right_on is not None)) or (on is None and (left_on is None or right_on is None)):
            raise PlanError(f"join() needs either on= or both left_on= and right_on=, got on={on!r}, left_on={left_on!r}, right_on={right_on!r}")
        left_columns = check_columns("join", on if on is not None else left_on)
        right_columns = check_columns("join", on if on is not None else right_on)
        if len(left_columns) != len(right_columns):
            raise PlanError(f"join() needs as many left_on as right_on columns, got {list(left_columns)} and {list(right_columns)}")
        if not broadcast:
            return self._then(ops.JoinOp(right, left_columns, right_columns, how, check_num_output_shards("join", num_output_shards)))
        if how not in ("inner", "left"):
            raise PlanError(f"join(broadcast=True) does inner and left joins, got how={how!r}: leave broadcast off for {how} joins")
        if num_output_shards is not None:
            raise PlanError("join(broadcast=True) keeps the left side's shards: num_output_shards does not apply")
        return self._then(ops.BroadcastJoinOp(right, left_columns, right_columns, how))

    def sorted_merge_join(
        self,
        right: Dataset,
        left_key: Callable[[Any], Any],
        right_key: Callable[[Any], Any],
        combiner: Callable[[Any, Any], Any] | None = None,
        how: str = "inner",
    ) -> Dataset:
        """Zephyr's streaming join of shard i with shard i of ``right``, both sorted by key.

        Both sides must have the same number of shards (a PlanError otherwise) and be sorted
        and co-sharded by the key, as ``group_by`` with the same ``num_output_shards`` leaves
        them. Duplicate keys give every pair. ``combiner(left, right)`` makes the output row
        (default ``{**left, **right}``); with ``how="left"`` an unmatched left row gets
        ``combiner(left, None)`` (the default passes the left row through).
        """
        if not isinstance(right, Dataset):
            raise PlanError(f"sorted_merge_join() needs a Dataset to join with, got {type(right).__name__}")
        check_callable("sorted_merge_join", "left_key", left_key)
        check_callable("sorted_merge_join", "right_key", right_key)
        if combiner is not None:
            check_callable("sorted_merge_join", "combiner", combiner)
        if how not in ("inner", "left"):
            raise PlanError(f"sorted_merge_join() supports how='inner' or 'left', got {how!r}; join() does right and outer joins")
        return self._then(ops.SortedMergeJoinOp(right, left_key, right_key, combiner, how))

    def reduce(self, local_reducer: Callable[[Iterator[Any]], Any], global_reducer: Callable[[Iterator[Any]], Any] | None = None) -> Dataset:
        """One value: ``local_reducer`` folds each shard, ``global_reducer`` (default: the same) folds those.

        Shards without rows are skipped, so an empty dataset gives an empty result.

        >>> from zephyr_arrow import Dataset, ZephyrContext
        >>> with ZephyrContext(backend="sync") as ctx:
        ...     ctx.execute(Dataset.from_list(list(range(100))).reduce(sum)).to_pylist()
        [4950]
        """
        check_callable("reduce", "local_reducer", local_reducer)
        if global_reducer is not None:
            check_callable("reduce", "global_reducer", global_reducer)
        local = _FoldShard("reduce", local_reducer)
        return self.map_shard(local).reshard(1).map_shard(_FoldShard("reduce[global]", global_reducer or local_reducer))

    def count(self) -> Dataset:
        """The number of rows, as one value (counted on Arrow batches, no Python rows); empty gives empty.

        Counting reads no column: a deduplicate just before it moves only its key.
        """
        return self._then(ops.MapBatchesOp(_count_rows, reads=())).reshard(1).map_shard(_FoldShard("count", sum))


class _FoldShard:
    """``map_shard`` function of reduce/count: one value per shard that has rows, none otherwise."""

    def __init__(self, name: str, fn: Callable[[Iterator[Any]], Any]) -> None:
        self.fn = fn
        self.__qualname__ = f"{name}({ops.describe_fn(fn)})"

    def __call__(self, rows: Iterator[Any], shard: ops.ShardInfo) -> Iterator[Any]:
        rows = iter(rows)
        for first in rows:
            return iter([self.fn(itertools.chain([first], rows))])
        return iter(())


def _reads_records(op: ops.Op) -> bool:
    """Whether ``op`` certainly fails on rows that are strings: it names columns, or its row
    function's code reads a field by name."""
    if isinstance(op, (ops.SelectOp, ops.WithColumnsOp, ops.FilterExprOp)):
        return True
    if isinstance(op, (ops.MapOp, ops.FlatMapOp)):
        return fields_read.names_fields(op.fn)
    if isinstance(op, ops.FilterOp):
        return fields_read.names_fields(op.predicate)
    return hasattr(op, "key_of") and isinstance(op.key_of(0), tuple)


def _near_duplicates_op(
    method: str, key: Any, threshold: Any, ngram_size: Any, num_perm: Any, seed: Any, bands: Any, rows_per_band: Any, verify: Any, clusters: bool
) -> ops.NearDuplicatesOp:
    """The op of ``fuzzy_deduplicate`` / ``near_duplicate_clusters``, its arguments checked."""
    from zephyr_arrow.minhash import optimal_bands

    if isinstance(key, str) and key:
        key = (key,)
    elif not callable(key):
        raise PlanError(f"{method}() needs key to be a text column's name or a function of the row returning its text, got {key!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise PlanError(f"{method}() needs threshold to be a number in (0, 1], got {threshold!r}")
    check_positive_int(method, "ngram_size", ngram_size)
    check_positive_int(method, "num_perm", num_perm)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PlanError(f"{method}() needs seed to be an int >= 0, got {seed!r}")
    if (bands is None) != (rows_per_band is None):
        raise PlanError(f"{method}() needs both bands and rows_per_band, or neither; got bands={bands!r}, rows_per_band={rows_per_band!r}")
    if bands is None:
        bands, rows_per_band = optimal_bands(float(threshold), num_perm)
    check_positive_int(method, "bands", bands)
    check_positive_int(method, "rows_per_band", rows_per_band)
    if bands * rows_per_band > num_perm:
        raise PlanError(f"{method}() needs bands * rows_per_band <= num_perm, got {bands} * {rows_per_band} > {num_perm}")
    if not isinstance(verify, bool):
        raise PlanError(f"{method}() needs verify to be a bool, got {verify!r}")
    return ops.NearDuplicatesOp(key, float(threshold), ngram_size, num_perm, seed, bands, rows_per_band, verify, clusters)


def _count_rows(table: pa.Table) -> pa.Table:
    from zephyr_arrow.arrow.rows import rows_to_table

    return rows_to_table([table.num_rows] if table.num_rows else [])
