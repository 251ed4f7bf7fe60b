"""zephyr_arrow: lazy, sharded dataset pipelines whose chunks are Parquet files.

The data flows through the package in this order:

    Dataset (dataset.py; ops/: base, transforms, shuffles)   what the user asked for: one op per call
      -> Plan (planner/: cut.py, then passes.PASSES)          ops fused into stages; pure, no I/O
      -> ShardTasks (execution/executor.py, tasks.py)         one per shard, every stage through one run_tasks,
         (execution/scheduler.py, coordinator.py)             one scheduler loop, on a backend (execution/backends/)
      -> workers (execution/worker/task.py, operators.py)     input reader -> ops -> output writer
         shuffles (execution/shuffle/: one module per op)     scatter runs -> reduce_inputs -> merge and reduce
      -> Parquet chunks (store/: chunk_ref, chunk_writer)     written atomically (fs.py), laid out by store/layout.py
      -> ShardRefs (store/shard_refs.py, views.py) -> pyarrow / Polars / DuckDB / rows

    Under them all: arrow/ (the row codec, schemas, tables, streams) and fs.py (filesystems,
    atomic writes, the one Parquet opener). Users' file formats are io/; the command line, cli/.

    >>> from zephyr_arrow import Dataset, ZephyrContext
    >>> with ZephyrContext(backend="sync") as ctx:
    ...     refs = ctx.execute(Dataset.from_list([{"n": 1}, {"n": 2}]).map(lambda r: {**r, "sq": r["n"] ** 2}))
    ...     refs.sql("select sum(sq) from data").fetchall()
    [(5,)]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # What the lazy loader below returns, spelled out for type checkers (mypy, pyright), which
    # cannot follow __getattr__: they see the real classes and functions, not Any.

    from zephyr_arrow import counters as counters
    from zephyr_arrow.counters import WorkerContext as WorkerContext, worker_ctx as worker_ctx
    from zephyr_arrow.counters import worker_ctx as zephyr_worker_ctx
    from zephyr_arrow.dataset import DEFAULT_FILE_PATH_COLUMN as DEFAULT_FILE_PATH_COLUMN, Dataset as Dataset
    from zephyr_arrow.errors import (
        ChunkCorruptError as ChunkCorruptError,
        ChunkMissingError as ChunkMissingError,
        InputFileError as InputFileError,
        ObjectStoreError as ObjectStoreError,
        OutputTypeError as OutputTypeError,
        PlanError as PlanError,
        SchemaConflictError as SchemaConflictError,
        ShardFailedError as ShardFailedError,
        ZephyrError as ZephyrError,
        ZephyrWorkerError as ZephyrWorkerError,
    )
    from zephyr_arrow.execution.context import ZephyrContext as ZephyrContext
    from zephyr_arrow.expr import Expr as Expr, col as col, lit as lit
    from zephyr_arrow.io.spec import InputFileSpec as InputFileSpec
    from zephyr_arrow.ops import ShardInfo as ShardInfo
    from zephyr_arrow.planner import Plan as Plan, plan as compute_plan, plan as plan
    from zephyr_arrow.records import (
        infer_arrow_schema as infer_arrow_schema,
        load_file as load_file,
        load_jsonl as load_jsonl,
        load_parquet as load_parquet,
        load_vortex as load_vortex,
        write_jsonl_file as write_jsonl_file,
        write_parquet_file as write_parquet_file,
        write_vortex_file as write_vortex_file,
    )
    from zephyr_arrow.store import ChunkRef as ChunkRef, ShardRefs as ShardRefs
    from zephyr_arrow.store import ShardRefs as ZephyrExecutionResult

# Public names and the modules they live in, imported on first use: `import zephyr_arrow`
# stays light, and a process that only reads an output (``read_parquet(...).sql(...)``)
# never imports the engine, Polars or cloudpickle.
_LAZY = {
    name: (module, attribute)
    for module, names in {
        "zephyr_arrow.counters": {"WorkerContext": "WorkerContext", "worker_ctx": "worker_ctx", "zephyr_worker_ctx": "worker_ctx"},
        "zephyr_arrow.dataset": {"DEFAULT_FILE_PATH_COLUMN": "DEFAULT_FILE_PATH_COLUMN", "Dataset": "Dataset"},
        "zephyr_arrow.errors": {
            name: name
            for name in (
                "ChunkCorruptError",
                "ChunkMissingError",
                "InputFileError",
                "ObjectStoreError",
                "OutputTypeError",
                "PlanError",
                "SchemaConflictError",
                "ShardFailedError",
                "ZephyrError",
                "ZephyrWorkerError",
            )
        },
        "zephyr_arrow.execution.context": {"ZephyrContext": "ZephyrContext"},
        "zephyr_arrow.io.spec": {"InputFileSpec": "InputFileSpec"},
        "zephyr_arrow.ops": {"ShardInfo": "ShardInfo"},
        "zephyr_arrow.planner": {"Plan": "Plan", "compute_plan": "plan", "plan": "plan"},
        "zephyr_arrow.records": {
            name: name
            for name in (
                "infer_arrow_schema",
                "load_file",
                "load_jsonl",
                "load_parquet",
                "load_vortex",
                "write_jsonl_file",
                "write_parquet_file",
                "write_vortex_file",
            )
        },
        # execute() returns ShardRefs, which has Zephyr's ZephyrExecutionResult.results and .counters.
        "zephyr_arrow.store": {"ChunkRef": "ChunkRef", "ShardRefs": "ShardRefs", "ZephyrExecutionResult": "ShardRefs"},
        # Zephyr's col/lit build filter expressions; here they are Polars', with Zephyr's col("a")["b"] and evaluate().
        "zephyr_arrow.expr": {"Expr": "Expr", "col": "col", "lit": "lit"},
    }.items()
    for name, attribute in names.items()
}


def read_parquet(paths: str | list[str]) -> ShardRefs:
    """Existing Parquet files (a path, a glob or a list) as ShardRefs, one shard per file; nothing is copied."""
    import pyarrow as pa

    from zephyr_arrow.errors import InputFileError
    from zephyr_arrow.fs import glob_files, open_parquet
    from zephyr_arrow.store import ChunkRef, ShardRefs

    files = [p for pattern in ([paths] if isinstance(paths, str) else paths) for p in glob_files(pattern)]
    shards = []
    for path in files:
        try:
            with open_parquet(path) as parquet:
                shards.append([ChunkRef(path, parquet.metadata.num_rows, parquet.schema_arrow, checksummed=False)])
        except (OSError, pa.ArrowInvalid) as error:
            raise InputFileError(f"{path} is not a readable Parquet file: {error}") from error
    return ShardRefs(shards)


def __getattr__(name: str) -> Any:
    if name == "counters":
        return importlib.import_module("zephyr_arrow.counters")
    if name not in _LAZY:
        raise AttributeError(f"module 'zephyr_arrow' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "DEFAULT_FILE_PATH_COLUMN",
    "ChunkCorruptError",
    "ChunkMissingError",
    "Expr",
    "ChunkRef",
    "Dataset",
    "InputFileError",
    "InputFileSpec",
    "ObjectStoreError",
    "OutputTypeError",
    "Plan",
    "PlanError",
    "SchemaConflictError",
    "ShardFailedError",
    "ShardInfo",
    "ShardRefs",
    "WorkerContext",
    "ZephyrContext",
    "ZephyrError",
    "ZephyrExecutionResult",
    "ZephyrWorkerError",
    "col",
    "compute_plan",
    "counters",
    "infer_arrow_schema",
    "lit",
    "load_file",
    "load_jsonl",
    "load_parquet",
    "load_vortex",
    "plan",
    "read_parquet",
    "worker_ctx",
    "write_jsonl_file",
    "write_parquet_file",
    "write_vortex_file",
    "zephyr_worker_ctx",
]
