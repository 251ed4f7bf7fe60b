"""Run one shard task: its input's reader -> the stage's ops -> its output's writer.

Every task of every stage kind goes through ``run_task``: a reader per kind of input
(carried items, an upstream stage's chunks, a shuffle's reduce) and a writer per kind of
output (chunks, a shuffle's runs, the user's file). Knows nothing about backends: it needs
only a filesystem, so it is tested with a temporary directory alone. Backends call it
in-process (sync) or in a long-lived worker process (local, ray).
"""

from __future__ import annotations

import contextlib
import copy
import os
import resource
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from zephyr_arrow import counters, ops
from zephyr_arrow.arrow.stream import RowCount, Stream
from zephyr_arrow.arrow.tables import kept
from zephyr_arrow.errors import ZephyrError
from zephyr_arrow.execution import stats as engine
from zephyr_arrow.execution.shuffle import exchange_for
from zephyr_arrow.execution.stats import TaskStats
from zephyr_arrow.execution.tasks import ChunksInput, ItemsInput, ReduceInput, ScatterInput, ShardTask, StageResult, TaskResult
from zephyr_arrow.execution.worker import operators
from zephyr_arrow.fs import exists, size
from zephyr_arrow.planner import Stage
from zephyr_arrow.store import ChunkRef
from zephyr_arrow.store.chunk_writer import ChunkWriter


def worker_environment() -> dict[str, str]:
    """Environment variables for a process that only runs tasks (local and Ray workers).

    Arrow's default allocator, mimalloc, kept the memory of finished batches: a worker's
    RSS grew through a shuffle to ~450 MB, where jemalloc returning freed pages after a
    delay peaks ~30% lower. The delay trades memory for page faults, which are dear: a
    take into fresh memory ran at 400 MB/s, into reused memory at 2.3 GB/s. With no delay
    the small corpus ran 40% slower; medium exact dedup took 4.95 s (795 MB peak, summed
    over processes) at 300 ms, 4.9 s at 1 s, 4.5 s (870-917 MB) at 3 s. But at 3 s worker
    memory stopped being flat: benches/shuffle_bench.py's dedup grew 1.33x from 1x to 4x
    data (1.25x at 300 ms; the goal is 1.3x), so 300 ms it is. Arrow reads these when it is
    first imported, so they must be in the worker's environment from the start; a choice
    the user made in theirs is kept.
    """
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ or "jemalloc" not in pa.supported_memory_backends():
        return {}
    return {
        "ARROW_DEFAULT_MEMORY_POOL": "jemalloc",
        "JE_ARROW_MALLOC_CONF": os.environ.get("JE_ARROW_MALLOC_CONF", "dirty_decay_ms:300,muzzy_decay_ms:0"),
    }


def run_task_in_worker(stage: Stage, task: ShardTask) -> TaskResult:
    """``run_task`` in a worker process (local or Ray): with the driver's fsspec configuration
    first, in the driver's working directory (a Ray worker starts in its node's)."""
    _use_fsspec_config(task.execution.fsspec_config)
    _use_working_directory(task.execution.cwd)
    _reset_peak_rss()
    return run_task(stage, task)


def _reset_peak_rss() -> None:
    """Start the process's peak RSS afresh, so a task's peak is its own, not an earlier task's
    (Linux only: elsewhere the peak is the worker's since it started)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")


def _peak_rss_bytes() -> int:
    """The process's peak RSS since it started or ``_reset_peak_rss`` (Linux: VmHWM; elsewhere ru_maxrss)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def _use_working_directory(cwd: str) -> None:
    if not cwd or os.getcwd() == cwd:
        return
    if not os.path.isdir(cwd):
        raise ZephyrError(
            f"the driver's working directory {cwd} does not exist on this worker ({socket.gethostname()}), so relative "
            "paths cannot mean what they mean on the driver: give inputs, outputs and the chunk prefix as absolute paths "
            "or URLs on storage every node shares"
        )
    os.chdir(cwd)


_own_fsspec_config: dict[str, dict[str, Any]] | None = None  # this process's, before any driver's was applied


def _use_fsspec_config(driver: dict[str, dict[str, Any]]) -> None:
    """Make fsspec's configuration this process's own with the driver's options over it, protocol by protocol.

    An endpoint or credentials set in code on the driver (``fsspec.config.conf["s3"] = ...``) then
    reach the workers, while options only the worker's environment sets (``FSSPEC_*`` variables
    on a Ray node) stay. Each run replaces the previous run's options, so one removed is gone.
    """
    global _own_fsspec_config
    if not driver and _own_fsspec_config is None:
        return
    import fsspec.config

    if _own_fsspec_config is None:
        _own_fsspec_config = copy.deepcopy(fsspec.config.conf)
    config = copy.deepcopy(_own_fsspec_config)
    for protocol, options in driver.items():
        config[protocol] = {**config.get(protocol, {}), **options}
    fsspec.config.conf.clear()
    fsspec.config.conf.update(config)


def run_task(stage: Stage, task: ShardTask) -> TaskResult:
    """Run ``task`` (one shard of ``stage``): its input's reader -> the stage's ops -> its output's writer."""
    started, cpu_started = time.perf_counter(), time.process_time()
    rows_in = RowCount()
    with (
        counters.collecting(task.execution.shared, f"[{stage.index}] {stage.name}") as collected,
        engine.collecting() as engine_counts,
        engine.seeing_columns() as columns_seen,
        _read(stage, task, rows_in) as stream,
    ):
        outputs = _write(stage, task, stream)
    paths = {output.chunk.path for output in outputs}
    stats = TaskStats(
        rows_in=rows_in.count,
        rows_out=sum(output.chunk.num_rows for output in outputs),
        chunks_out=len(paths),
        bytes_out=sum(size(path) for path in paths),
        seconds=time.perf_counter() - started,
        bytes_in=rows_in.nbytes,
        cpu_seconds=time.process_time() - cpu_started,
        peak_rss_bytes=_peak_rss_bytes(),
    )
    return TaskResult(
        task.stage_index,
        task.shard_index,
        task.attempt,
        tuple(outputs),
        stats,
        collected.totals,
        engine_counts,
        columns_seen,
        counter_modes=collected.modes(),
    )


@contextlib.contextmanager
def _read(stage: Stage, task: ShardTask, rows_in: RowCount) -> Iterator[Stream]:
    """The task's input rows, by kind of input: items it carries, an upstream stage's chunks,
    or (a shuffle's or join's reduce task) its shuffle's reduce."""
    source = task.input.source if isinstance(task.input, ScatterInput) else task.input
    if isinstance(source, ItemsInput):
        yield Stream(rows=rows_in.rows(iter(source.items)))
    elif isinstance(source, ChunksInput):
        yield Stream(tables=rows_in.tables(_read_chunks(source, stage.input_columns)))
    else:
        with exchange_for(stage.boundary).reduce(stage, task, rows_in) as stream:
            yield stream


def _write(stage: Stage, task: ShardTask, stream: Stream) -> list[StageResult]:
    """The task's output, by kind: the user's file (a sink), a shuffle's runs (a scatter task), or chunks."""
    shard = ops.ShardInfo(task.shard_index, task.num_shards)
    sink = stage.sink
    if sink is not None:
        return [StageResult(task.shard_index, _write_sink(stage, sink, stream, task, shard))]
    tables = _apply(stage.ops, stream, shard, task).as_tables()
    if isinstance(task.input, ScatterInput):
        return exchange_for(stage.boundary).scatter(stage, task, tables)
    chunks = ChunkWriter(task.chunk_path).write_all(tables)
    if isinstance(task.input, ReduceInput):
        engine.count(engine.SHUFFLE_FILES, len(chunks))
    return [StageResult(task.shard_index, chunk) for chunk in chunks]


def _apply(stage_ops: tuple[ops.Op, ...], stream: Stream, shard: ops.ShardInfo, task: ShardTask) -> Stream:
    """The stream after ``stage_ops``; a broadcast join reads the task's next broadcast side."""
    sides = iter(task.broadcast)
    for op in stage_ops:
        if isinstance(op, ops.BroadcastJoinOp):
            # Imported here: it imports Polars, ~45 MB a worker that only maps and writes does without.
            from zephyr_arrow.execution.shuffle.join import broadcast_join

            stream = Stream(tables=broadcast_join(op, stream.as_tables(), next(sides)))
        else:
            stream = operators.apply(op, stream, shard)
    return stream


def _read_chunks(source: ChunksInput, columns: tuple[str, ...] | None) -> Iterator[pa.Table]:
    """The chunks' rows; with ``columns`` (those the stage uses), only those a chunk has (``kept``)."""
    for chunk in source.chunks:
        for batch in chunk.iter_batches(None if columns is None else kept(chunk.schema.names, columns)):
            yield pa.Table.from_batches([batch])


def _write_sink(stage: Stage, sink: ops.WriteOp, stream: Stream, task: ShardTask, shard: ops.ShardInfo) -> ChunkRef:
    """Write the shard's rows to the user's output file; the stage's output row is its path."""
    from zephyr_arrow import io

    path = sink.output_path(task.shard_index, task.num_shards)
    if sink.skip_existing and exists(path):
        # The stream is lazy, so none of the upstream ops run for this shard.
        counters.increment("zephyr/partitions_skipped")
    else:
        stream = _apply(stage.ops[:-1], stream, shard, task)
        if sink.format == "parquet":
            io.write_parquet_file(stream.as_tables(), path, schema=sink.schema)
        elif sink.format == "jsonl":
            io.write_jsonl_file(stream.as_tables(), path)
        elif sink.format == "vortex":
            from zephyr_arrow.io.vortex import write_vortex_file

            write_vortex_file(stream.as_tables(), path, schema=sink.schema)
        else:
            io.write_csv_file(stream.as_tables(), path)
    return ChunkRef.write(task.chunk_path(0), [path])
