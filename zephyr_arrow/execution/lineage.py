"""Lost chunks are written again by lineage: a chunk of an earlier stage that a task finds damaged
or gone is replaced by a rerun of the task that wrote it.

A task that fails reading an input chunk (``TaskError.lost_chunk``: the file its ChunkCorruptError
or ChunkMissingError names) does not fail its stage when a task of this run wrote that chunk:
the stage's coordinator sets it aside, and once nothing else of the stage runs the scheduler hands
it to ``Lineage.recover``. That reruns the tasks that wrote the lost chunks (new attempts, so new
files), after rerunning, the same way, those that wrote their own inputs where those are gone: the
executor deletes a stage's chunks once its last reader is done (``released``), so a rerun may go
back stage by stage to the sources (a reduce task's inputs are runs from every scatter task of the
stage before it). Then the tasks set aside run again, reading the new chunks, and so do the
executor's later stages (``current``).

What is kept for it is metadata: per run of a stage's tasks, its tasks and their results (no data).
A rerun must write what the first run wrote, chunk for chunk (rows and schema): tasks are taken to
be deterministic, as retries take them to be; a task that wrote other chunks the second time cannot
replace its lost ones, and the run fails saying so. A chunk lost again after ``MAX_RERUNS`` reruns
of its task fails the stage reading it, as any other error of it would, naming the file. A rerun
task's counters are not counted: its first run's are in the totals already, and count its rows once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from zephyr_arrow.errors import ShardFailedError
from zephyr_arrow.execution.tasks import ChunksInput, JoinInput, MergeInput, RangeInput, ScatterInput, ShardTask, TaskError, TaskResult
from zephyr_arrow.fs import remove_quietly
from zephyr_arrow.planner import Stage
from zephyr_arrow.store import ChunkRef, ShardRefs, layout

logger = logging.getLogger("zephyr_arrow")

MAX_RERUNS = 3  # reruns of one task to replace its lost chunks; lost once more, the chunk is the reader's error

# Runs ``tasks`` of ``stage`` to completion (through the scheduler loop, with this lineage as its
# recovery), calling ``on_result`` with each result; returns their results.
RunTasks = Callable[[Stage, list[ShardTask], Callable[[TaskResult], None] | None], list[TaskResult]]
Writer = tuple[int, int]  # (which run of tasks, shard index): the task that wrote a chunk


@dataclass
class _Run:
    """One run of a stage's tasks (its pieces', or its sink's) and what they wrote."""

    stage: Stage
    tasks: dict[int, ShardTask]  # by shard index, as first run (their inputs' chunks as then)
    results: dict[int, TaskResult]  # by shard index, the latest
    on_result: Callable[[TaskResult], None] | None  # a checkpoint's commit: a rerun's result replaces the record
    directory: str
    released: bool = False  # the executor deleted its chunks once their last reader was done


class Lineage:
    """What wrote each chunk of one ``execute``, to write it again when a task finds it lost."""

    def __init__(self, run_tasks: RunTasks, attempt_base: int = 0) -> None:
        self._run_tasks = run_tasks
        self._attempt_base = attempt_base  # a checkpointed run's: attempt numbers this driver may use start here
        self._runs: list[_Run] = []
        self._writers: dict[str, Writer] = {}  # chunk path -> the task that wrote it
        self._swaps: dict[str, str] = {}  # a lost chunk's path -> the path of the chunk written again
        self._reruns: dict[Writer, int] = defaultdict(int)  # reruns for a lost chunk, per task
        self._rewritten: set[Writer] = set()  # tasks whose deleted chunks were written again, for a rerun's inputs
        self._depth = 0

    def add(self, stage: Stage, tasks: list[ShardTask], results: list[TaskResult], on_result: Callable[[TaskResult], None] | None) -> None:
        """Keep what ``tasks`` of ``stage`` wrote (``results``, one per task)."""
        execution = tasks[0].execution if tasks else None
        directory = layout.stage_dir(execution.chunk_prefix, execution.execution_id, tasks[0].stage_dir) if execution else ""
        run_index = len(self._runs)
        self._runs.append(_Run(stage, {t.shard_index: t for t in tasks}, {r.shard_index: r for r in results}, on_result, directory))
        for result in results:
            for output in result.outputs:
                self._writers[output.chunk.path] = (run_index, result.shard_index)

    def released(self, directories: set[str]) -> None:
        """The executor deleted these stage directories: chunks there are gone, not lost."""
        for run in self._runs:
            run.released = run.released or run.directory in directories

    def can_recover(self, path: str) -> bool:
        """Whether a task of this run wrote the chunk at ``path``, rerun fewer than ``MAX_RERUNS`` times for it."""
        writer = self._writers.get(path)
        if writer is not None and self._reruns[writer] >= MAX_RERUNS:
            stage = self._runs[writer[0]].stage
            logger.warning("chunk %s, of stage %d (%s), shard %d, is lost again after %d reruns of its task: the stage reading "
                           "it fails", path, stage.index, stage.name, writer[1], MAX_RERUNS)
        return writer is not None and self._reruns[writer] < MAX_RERUNS

    def recover(self, lost: list[tuple[ShardTask, TaskError]]) -> list[ShardTask]:
        """Rerun the tasks that wrote the chunks ``lost`` names (each a task set aside and its error);
        return those tasks with the chunks written again in place of the lost ones."""
        writers = set()
        for task, error in lost:
            writer = self._writers[error.lost_chunk]
            writers.add(writer)
            run = self._runs[writer[0]]
            logger.warning(
                "stage %d, shard %d: input chunk %s is lost (%s); rerunning the task that wrote it, stage %d (%s), "
                "shard %d (rerun %d of at most %d)", task.stage_index, task.shard_index, error.lost_chunk,
                error.summary.split(": ", 1)[0], run.stage.index, run.stage.name, writer[1], self._reruns[writer] + 1, MAX_RERUNS,
            )
        self._depth += 1
        try:
            self._rerun(writers, lost=True)
        finally:
            self._depth -= 1
        if self._depth == 0:  # what was written again only as inputs of reruns is not needed now
            for directory in {self._runs[run_index].directory for run_index, _ in self._rewritten}:
                remove_quietly(directory)
            self._rewritten.clear()
        return [self._current_task(task) for task, _ in lost]

    def current(self, refs: ShardRefs) -> ShardRefs:
        """``refs`` with every chunk written again in place of the lost one."""
        if not self._swaps or not any(chunk.path in self._swaps for chunk in refs.chunks):
            return refs
        return replace(refs, shards=[[self._chunk(chunk) for chunk in shard] for shard in refs.shards])

    def _rerun(self, writers: set[Writer], lost: bool) -> None:
        """Rerun the tasks ``writers`` name (``lost``: their chunks were found lost, which counts
        towards ``MAX_RERUNS``; else they are gone by the executor's design, and are needed again),
        each run's together, after those that wrote their inputs where those were deleted."""
        by_run: dict[int, list[int]] = defaultdict(list)
        for run_index, shard_index in writers:
            by_run[run_index].append(shard_index)
        for run_index, shard_indexes in sorted(by_run.items()):
            run = self._runs[run_index]
            deleted = {
                writer
                for shard_index in shard_indexes
                for chunk in _chunks(self._current_task(run.tasks[shard_index]))
                if (writer := self._writers.get(chunk.path)) is not None
                and self._runs[writer[0]].released
                and writer not in self._rewritten
            }
            if deleted:
                logger.info("stage %d (%s), shards %s: rerunning first the %d tasks that wrote their inputs (deleted once read)",
                            run.stage.index, run.stage.name, sorted(shard_indexes), len(deleted))
                self._rerun(deleted, lost=False)
            tasks = []
            for shard_index in sorted(shard_indexes):
                if lost:
                    self._reruns[(run_index, shard_index)] += 1
                attempt = max(run.results[shard_index].attempt + 1, self._attempt_base)
                tasks.append(replace(self._current_task(run.tasks[shard_index]), attempt=attempt))
            for result in self._run_tasks(run.stage, tasks, run.on_result):
                self._replace(run_index, result)
            if run.released:
                self._rewritten.update((run_index, shard_index) for shard_index in shard_indexes)

    def _replace(self, run_index: int, result: TaskResult) -> None:
        """Take a rerun's ``result`` for its first run's, chunk for chunk."""
        run = self._runs[run_index]
        old = run.results[result.shard_index]
        paths: dict[str, str] = {}
        same = len(old.outputs) == len(result.outputs)
        for before, after in zip(old.outputs, result.outputs):
            same = same and _same_chunk(before, after) and paths.setdefault(before.chunk.path, after.chunk.path) == after.chunk.path
        if not same:
            rows = sum(output.chunk.num_rows for output in old.outputs), sum(output.chunk.num_rows for output in result.outputs)
            raise ShardFailedError(
                f"stage {run.stage.index} ({run.stage.name}), shard {result.shard_index}: rerun to write its lost chunks "
                f"again, it wrote other chunks than its first run ({len(old.outputs)} chunks of {rows[0]} rows, then "
                f"{len(result.outputs)} of {rows[1]}): its functions do not give the same rows each time, so its "
                "chunks cannot be replaced; run the pipeline again",
                stage=run.stage.name,
                shard_index=result.shard_index,
            )
        for before, after in paths.items():
            for key, swapped in self._swaps.items():
                if swapped == before:
                    self._swaps[key] = after
            self._swaps[before] = after
            self._writers[after] = self._writers.pop(before)
        run.results[result.shard_index] = result

    def _chunk(self, chunk: ChunkRef) -> ChunkRef:
        path = self._swaps.get(chunk.path)
        return chunk if path is None else replace(chunk, path=path)

    def _current_task(self, task: ShardTask) -> ShardTask:
        if not self._swaps:
            return task
        return replace(task, input=_map_chunks(task.input, self._chunk), broadcast=_map_chunks(task.broadcast, self._chunk))


def _same_chunk(before: Any, after: Any) -> bool:
    """The same rows in the same place (not compared: the output shard, which a piece's committed
    result names as its file's shard and its task's result as the piece)."""
    one, other = before.chunk, after.chunk
    return (one.num_rows, one.row_range) == (other.num_rows, other.row_range) and one.schema == other.schema


_READS_CHUNKS = (ChunksInput, ScatterInput, MergeInput, JoinInput, RangeInput)


def _map_chunks(value: Any, change: Callable[[ChunkRef], ChunkRef]) -> Any:
    """``value`` (a task's input or broadcast sides) with ``change`` applied to each chunk it reads;
    the user's items are left as they are."""
    if isinstance(value, ChunkRef):
        return change(value)
    if isinstance(value, tuple):
        return tuple(_map_chunks(item, change) for item in value)
    if isinstance(value, _READS_CHUNKS):
        return replace(value, **{f.name: _map_chunks(getattr(value, f.name), change) for f in fields(value)})
    return value


def _chunks(task: ShardTask) -> list[ChunkRef]:
    """The chunks ``task`` reads."""
    found: list[ChunkRef] = []
    _map_chunks((task.input, task.broadcast), lambda chunk: found.append(chunk) or chunk)
    return found
