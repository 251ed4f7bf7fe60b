"""zephyr_arrow: lazy, sharded dataset pipelines whose chunks are Parquet files.

The data flows through the package in this order:

    Dataset (dataset.py, ops.py)                    what the user asked for
      -> Plan (plan.py)                             fused into stages
      -> ShardTasks (execution/tasks.py)            one per shard, run by the scheduler loop
         (execution/scheduler.py, coordinator.py)   on a backend (execution/backends/)
      -> workers (execution/worker.py, operators.py) read chunks -> ops -> write chunks
         shuffles (execution/shuffle*.py, keys.py, merge.py) scatter sorted runs, merge them
      -> Parquet chunks (store/)                    ChunkRef, rows <-> Arrow in rows.py
         file formats (io.py), user-facing record helpers (records.py)
      -> ShardRefs -> pyarrow / Polars / DuckDB / rows

    >>> from zephyr_arrow import Dataset, ZephyrContext
    >>> with ZephyrContext(backend="sync") as ctx:
    ...     refs = ctx.execute(Dataset.from_list([{"n": 1}, {"n": 2}]).map(lambda r: {**r, "sq": r["n"] ** 2}))
    ...     refs.sql("select sum(sq) from data").fetchall()
    [(5,)]
"""

from zephyr_arrow import counters
from zephyr_arrow.counters import WorkerContext, worker_ctx
from zephyr_arrow.dataset import DEFAULT_FILE_PATH_COLUMN, Dataset
from zephyr_arrow.errors import (
    ChunkMissingError,
    InputFileError,
    PlanError,
    SchemaConflictError,
    ShardFailedError,
    ZephyrError,
)
from zephyr_arrow.execution.context import ZephyrContext
from zephyr_arrow.ops import ShardInfo
from zephyr_arrow.plan import Plan, plan
from zephyr_arrow.records import load_file, load_jsonl, load_parquet, write_jsonl_file, write_parquet_file
from zephyr_arrow.store import ChunkRef, ShardRefs


def read_parquet(paths: str | list[str]) -> ShardRefs:
    """Existing Parquet files (a path, a glob or a list) as ShardRefs, one shard per file; nothing is copied."""
    import pyarrow.parquet as pq

    from zephyr_arrow.execution.sources import glob_files
    from zephyr_arrow.store.files import filesystem, is_local

    files = [p for pattern in ([paths] if isinstance(paths, str) else paths) for p in glob_files(pattern)]
    shards = []
    for path in files:
        if is_local(path):
            metadata = pq.read_metadata(path.removeprefix("file://"))
        else:
            fs, fs_path = filesystem(path)
            with fs.open(fs_path, "rb") as source:
                metadata = pq.read_metadata(source)
        shards.append([ChunkRef(path, metadata.num_rows, metadata.schema.to_arrow_schema())])
    return ShardRefs(shards)


zephyr_worker_ctx = worker_ctx
compute_plan = plan


def __getattr__(name: str):
    # Zephyr's col/lit build filter expressions; Polars' do the same here. Imported on first
    # use so that `import zephyr_arrow` stays light (reading an output needs no Polars).
    if name in ("col", "lit"):
        import polars

        return getattr(polars, name)
    raise AttributeError(f"module 'zephyr_arrow' has no attribute {name!r}")


__all__ = [
    "DEFAULT_FILE_PATH_COLUMN",
    "ChunkMissingError",
    "ChunkRef",
    "Dataset",
    "InputFileError",
    "Plan",
    "PlanError",
    "SchemaConflictError",
    "ShardFailedError",
    "ShardInfo",
    "ShardRefs",
    "WorkerContext",
    "ZephyrContext",
    "ZephyrError",
    "col",
    "compute_plan",
    "counters",
    "lit",
    "load_file",
    "load_jsonl",
    "load_parquet",
    "plan",
    "read_parquet",
    "worker_ctx",
    "write_jsonl_file",
    "write_parquet_file",
    "zephyr_worker_ctx",
]
