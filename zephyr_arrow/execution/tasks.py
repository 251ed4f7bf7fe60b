"""Messages between the coordinator and workers: ShardTask out, TaskResult back.

A task names its stage by index; the stage itself (its ops and user functions) is
shipped to each worker once per stage, not once per task.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zephyr_arrow.execution.stats import TaskStats
from zephyr_arrow.store import ChunkRef, layout

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True, slots=True)
class ItemsInput:
    """Rows carried inside the task (from_list items, or file paths from from_files)."""

    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ChunksInput:
    """An upstream stage's chunks for this shard, read in order."""

    chunks: tuple[ChunkRef, ...]


@dataclass(frozen=True, slots=True)
class ScatterInput:
    """A shard to run a SCATTER stage's ops on and cut into key-sorted runs, one per output shard of its shuffle."""

    source: ItemsInput | ChunksInput
    num_output_shards: int


@dataclass(frozen=True, slots=True)
class MergeInput:
    """Sorted runs for this shard from every map task of a shuffle, merged by key."""

    runs: tuple[ChunkRef, ...]
    schema: pa.Schema | None = None  # unified over every run of the shuffle, so an empty shard has the columns too


@dataclass(frozen=True, slots=True)
class JoinInput:
    """Both sides' chunks for this shard of a join."""

    left: tuple[ChunkRef, ...]
    right: tuple[ChunkRef, ...]
    left_schema: pa.Schema | None = None
    right_schema: pa.Schema | None = None


@dataclass(frozen=True, slots=True)
class RangeInput:
    """A sort's output shard: the rows of its key range, ``lower <= key < upper`` (None: unbounded),
    from row ranges of every sorted run that may hold them."""

    runs: tuple[ChunkRef, ...]
    schema: pa.Schema
    lower: bytes | None
    upper: bytes | None


ShardInput = ItemsInput | ChunksInput | ScatterInput | MergeInput | JoinInput | RangeInput
ReduceInput = MergeInput | JoinInput | RangeInput  # what a shuffle's or join's reduce task reads


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """Where one ``execute`` writes, and what its workers need from the driver: the same for every task of it."""

    chunk_prefix: str
    execution_id: str
    shared: dict[str, str] = field(default_factory=dict)  # name -> path of the pickled object
    # The driver's fsspec.config.conf (endpoints, credentials set in code): workers in other
    # processes apply it over their own (see worker.run_task_in_worker).
    fsspec_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The driver's working directory: relative paths (inputs, output patterns, files a user
    # function opens) mean the same on a worker as on the driver (see worker.run_task_in_worker).
    cwd: str = ""


@dataclass(frozen=True, slots=True)
class ShardTask:
    stage_index: int
    stage_dir: str
    shard_index: int
    num_shards: int
    attempt: int
    input: ShardInput
    execution: ExecutionInfo
    broadcast: tuple[tuple[ChunkRef, ...], ...] = ()  # each broadcast join's right side, in the stage's order

    @property
    def key(self) -> tuple[int, int]:
        return (self.stage_index, self.shard_index)

    @property
    def stage_key(self) -> tuple[str, str]:
        """The run of a stage this task is of (a stage whose files are cut runs twice: its pieces,
        then its sink); a worker keeps the stage it was sent under this key. By its directory, not
        its index: a resumed checkpoint runs under the same execution id, and a checkpointed
        stage's directory names its fingerprint, so a worker never runs a fixed stage with the
        code it held before the fix."""
        return (self.execution.execution_id, self.stage_dir)

    def chunk_path(self, index: int, stage_dir: str | None = None) -> str:
        """Where this attempt writes its ``index``-th file (``stage_dir`` defaults to its stage's)."""
        execution = self.execution
        return layout.chunk_path(
            execution.chunk_prefix, execution.execution_id, stage_dir or self.stage_dir, self.shard_index, index, self.attempt
        )


@dataclass(frozen=True, slots=True)
class StageResult:
    """One chunk a task wrote, and the output shard it belongs to."""

    shard_index: int
    chunk: ChunkRef


@dataclass(frozen=True, slots=True)
class TaskResult:
    stage_index: int
    shard_index: int
    attempt: int
    outputs: tuple[StageResult, ...]
    stats: TaskStats
    counters: dict[str, int | float]  # the user's (and Zephyr's zephyr/ names)
    engine_counts: dict[str, int] = field(default_factory=dict)  # the engine's own (stats.count)
    # Per select of the stage (by its columns): the columns the rows reaching it had.
    columns_seen: dict[tuple[str, ...], set[str]] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)  # of the worker that ran it (made there)
    pid: int = field(default_factory=os.getpid)
    # Counters not summed: name -> (aggregation, values folded); see counters.CounterTotals.
    counter_modes: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskError:
    """User code (or the worker's own code) raised while running a task."""

    stage_index: int
    shard_index: int
    attempt: int
    error: BaseException | None  # None when the exception could not be sent back
    summary: str  # "ValueError: bad row"
    traceback: str
    host: str = field(default_factory=socket.gethostname)  # of the worker that raised (made there)
    pid: int = field(default_factory=os.getpid)
    # The input chunk the task found damaged or gone (the path its ChunkCorruptError or ChunkMissingError
    # names), said apart from the message: the executor has the task that wrote it run again.
    lost_chunk: str | None = None
