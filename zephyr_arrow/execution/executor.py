"""Run a plan stage by stage, every stage kind's tasks through one ``run_tasks``; between stages only references move.

A map or scatter stage's tasks read its source or the upstream stage's chunks; a shuffle's
or join's reduce tasks get their inputs from its module (``exchange_for(op).reduce_inputs``,
a pure function of the upstream runs' ChunkRefs); a reshard runs no task.

Each stage's output is a ``ShardRefs`` built from the tasks' ``StageResult``s without
reading data. A PIPELINES stage (``fuzzy_deduplicate``) runs pipelines of its own over its
input (``near_duplicates.run``), each a plan executed like this one, in a directory of the stage's. A stage's chunk files are deleted as soon as no later stage, and not
the final output, refers to them (a reshard's output points into its input's files,
so deletion follows references, not stage order).

With a checkpoint (``checkpoint.py``), each finished task is committed as it is accepted,
a stage runs only the tasks not committed under its fingerprint, and chunks are kept
until the run completes (a resumed stage may need any earlier stage's output). A stage
whose files are cut commits each piece (and, if it writes, each shard's write); a PIPELINES
stage runs each of its pipelines as a nested checkpointed run, and commits its output's
shards once they all ran.

A task that finds an input chunk of this run damaged or gone has the task that wrote it rerun
(``lineage.py``, which keeps what every task read and wrote); later stages read the new chunks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

from zephyr_arrow import ops
from zephyr_arrow.counters import CounterTotals
from zephyr_arrow.errors import PlanError
from zephyr_arrow.execution import success_marker
from zephyr_arrow.execution.backends.base import Backend
from zephyr_arrow.execution.checkpoint import Checkpoint, listing
from zephyr_arrow.execution.coordinator import RetryPolicy
from zephyr_arrow.execution.fingerprint import StageFingerprint, stage_fingerprints
from zephyr_arrow.execution.lineage import Lineage
from zephyr_arrow.execution.progress import Progress
from zephyr_arrow.execution.reshard import reshard
from zephyr_arrow.execution.run_record import RunRecorder
from zephyr_arrow.execution.scheduler import run_stage
from zephyr_arrow.execution.shuffle import exchange_for
from zephyr_arrow.execution.sources import source_inputs, split_inputs
from zephyr_arrow.execution.stats import TaskStats, add_counters, sum_counters
from zephyr_arrow.execution.tasks import (
    ChunksInput,
    ExecutionInfo,
    ItemsInput,
    ScatterInput,
    ShardInput,
    ShardTask,
    StageResult,
    TaskResult,
)
from zephyr_arrow.fs import filesystem, remove_quietly
from zephyr_arrow.io.pieces import FilePiece
from zephyr_arrow.planner import Plan, Stage, StageKind, validate
from zephyr_arrow.planner import plan as make_plan
from zephyr_arrow.store import ChunkRef, ShardRefs, layout

if TYPE_CHECKING:
    from zephyr_arrow.dataset import Dataset

logger = logging.getLogger("zephyr_arrow")


@dataclass
class Executor:
    backend: Backend
    execution: ExecutionInfo
    policy: RetryPolicy
    progress: Progress
    max_workers: int
    recorder: RunRecorder | None = None
    checkpoint: Checkpoint | None = None
    _fingerprints: dict[int, StageFingerprint] = field(default_factory=dict, init=False)
    _lineage: Lineage = field(init=False)

    def execute(self, plan: Plan) -> ShardRefs:
        self._lineage = Lineage(self._rerun, 0 if self.checkpoint is None else self.checkpoint.attempt_base)
        source_stage_inputs = {s.index: source_inputs(s.source) for s in plan.stages if s.source is not None}
        shard_counts = validate.shard_counts(plan, {i: len(inputs) for i, inputs in source_stage_inputs.items()})
        split = {
            s.index: pieces
            for s in plan.stages
            if s.reads_pieces and (pieces := split_inputs(source_stage_inputs[s.index], s.ops[0], self.max_workers))
        }
        source_stage_inputs.update({index: pieces.inputs for index, pieces in split.items()})
        last_use = _last_use(plan)
        if self.checkpoint is not None:
            self._fingerprints = stage_fingerprints(plan, source_stage_inputs, shard_counts, last_use, self.checkpoint.shared_digest)
            done = self.checkpoint.completed_output(self._fingerprints[plan.output])
            if done is not None:
                return done
            # A stage whose files are cut (and that writes no files) commits a task per piece.
            num_tasks = {s.index: len(split[s.index].inputs) for s in plan.stages if s.index in split and s.sink is None}
            self.checkpoint.begin(plan, self._fingerprints, {**shard_counts, **num_tasks})
        outputs: dict[int, ShardRefs] = {}
        counters = CounterTotals()
        engine_counts: dict[str, int | float] = {}
        for stage in plan.stages:
            outputs = {index: self._lineage.current(refs) for index, refs in outputs.items()}  # lost chunks written again
            if stage.kind is StageKind.RESHARD:
                outputs[stage.index] = reshard(outputs[stage.inputs[0]], stage.boundary.num_shards)
                if self.recorder is not None:
                    now = time.time()
                    self.recorder.start_stage(stage, now)
                    self.recorder.finish_stage(stage, [], now, num_rows=outputs[stage.index].num_rows)
            elif stage.kind is StageKind.PIPELINES:
                started = time.time()
                outputs[stage.index] = self._run_pipelines(stage, outputs[stage.inputs[0]], shard_counts[stage.index])
                if self.recorder is not None:  # the stage as one step: its pipelines' own stages are not the plan's
                    self.recorder.start_stage(stage, started)
                    self.recorder.finish_stage(stage, [], time.time(), num_rows=outputs[stage.index].num_rows)
                counters.add(outputs[stage.index].counters, {})  # its pipelines' totals, added as sums
                engine_counts = add_counters(engine_counts, outputs[stage.index].stats)
            else:
                inputs = self._task_inputs(stage, source_stage_inputs, outputs, shard_counts, last_use)
                broadcast = tuple(tuple(outputs[index].chunks) for index in stage.broadcast)
                num_output_shards = shard_counts[last_use[stage.index] if stage.kind is StageKind.SCATTER else stage.index]
                output_dirs = [] if stage.sink is None else success_marker.output_directories(stage.sink, num_output_shards)
                success_marker.remove_markers(output_dirs)
                try:
                    if stage.index in split:
                        results = self._run_pieces(stage, inputs, broadcast, split[stage.index].shards)
                    else:
                        committed = None
                        if self.checkpoint is not None:
                            committed = self.checkpoint.committed(stage, self._fingerprints[stage.index], len(inputs))
                        results = _with_origins(stage, inputs, self.run_tasks(stage, inputs, broadcast, committed=committed))
                finally:
                    if stage.kind in (StageKind.SHUFFLE, StageKind.JOIN):
                        self._remove_spills(stage)
                _check_columns_exist(stage, inputs, results)
                success_marker.write_markers(output_dirs)  # every task of a write stage succeeded
                outputs[stage.index] = regroup(results, num_output_shards)
                counters.add_all(results)
                engine_counts = add_counters(engine_counts, sum_counters(r.engine_counts for r in results))
            if self.checkpoint is None:
                self._release(plan, stage.index, outputs, last_use)
        final = self._lineage.current(outputs[plan.output])
        refs = ShardRefs(final.shards, counters=counters.values, stats=engine_counts)
        if self.checkpoint is not None:
            self.checkpoint.complete(self._fingerprints[plan.output], refs, stage_dirs_of(refs, self.execution))
        return refs

    def _task_inputs(
        self,
        stage: Stage,
        source_stage_inputs: dict[int, list[ShardInput]],
        outputs: dict[int, ShardRefs],
        shard_counts: dict[int, int],
        last_use: dict[int, int],
    ) -> list[ShardInput]:
        """One input per task of ``stage``; reads no data (a shuffle's come from its runs' ChunkRefs)."""
        if stage.kind in (StageKind.SHUFFLE, StageKind.JOIN):
            upstream = [outputs[index] for index in stage.inputs]
            return exchange_for(stage.boundary).reduce_inputs(stage.boundary, upstream, shard_counts[stage.index])
        if stage.index in source_stage_inputs:
            inputs = source_stage_inputs[stage.index]
        else:
            inputs = [ChunksInput(shard) for shard in outputs[stage.inputs[0]].shards]
        if stage.kind is StageKind.SCATTER:
            # The shuffle reading this stage (its only consumer) decides how many shards the runs are cut for.
            return [ScatterInput(shard_input, shard_counts[last_use[stage.index]]) for shard_input in inputs]
        return inputs

    def _run_pieces(
        self, stage: Stage, inputs: list[ShardInput], broadcast: tuple[tuple[ChunkRef, ...], ...], shards: list[int]
    ) -> list[TaskResult]:
        """Run ``stage`` one task per piece of its files (``shards``: the shard of each); the results
        are the shards' as if a task per shard had run: the pieces' chunks, in order, make up
        their shard (a scatter's runs are the shuffle's already). A sink then writes each
        shard's file from its pieces' chunks, which are deleted after (with a checkpoint, when
        the run completes: a resumed run's writes may need them).

        With a checkpoint, each piece is committed as a task of the stage, its chunks as its
        shard's; a stage that writes commits its pieces apart and each shard's write as its task."""
        checkpoint, fingerprint = self.checkpoint, self._fingerprints.get(stage.index)

        def as_shard(result: TaskResult) -> TaskResult:
            return result if stage.kind is StageKind.SCATTER else _as_shard(result, shards[result.shard_index])

        def run_pieces(piece_stage: Stage, stage_dir: str | None, pieces: bool) -> list[TaskResult]:
            def commit(result: TaskResult) -> None:
                checkpoint.commit(fingerprint, as_shard(result), pieces=pieces)

            committed = None if checkpoint is None else checkpoint.committed(stage, fingerprint, len(inputs), pieces=pieces, unit="pieces")
            results = self.run_tasks(piece_stage, inputs, broadcast, stage_dir, committed, commit)
            return [as_shard(result) for result in _with_origins(stage, inputs, results)]

        sink = stage.sink
        if sink is None:
            return run_pieces(stage, None, pieces=False)
        pieces_dir = layout.pieces_dir_name(self._stage_dir_name(stage))
        num_shards = shards[-1] + 1
        written_before = None if checkpoint is None else checkpoint.committed(stage, fingerprint, num_shards)
        try:
            results = run_pieces(replace(stage, ops=stage.ops[:-1]), pieces_dir, pieces=True)
            sink_stage = replace(stage, ops=(sink,), source=None, input_columns=None, broadcast=())
            sink_inputs = [ChunksInput(tuple(shard)) for shard in regroup(results, num_shards).shards]
            written = _with_origins(sink_stage, sink_inputs, self.run_tasks(sink_stage, sink_inputs, committed=written_before))
            return [replace(result, outputs=()) for result in results] + written  # the pieces' counters count
        finally:
            if checkpoint is None:
                remove_quietly(layout.stage_dir(self.execution.chunk_prefix, self.execution.execution_id, pieces_dir))

    def run_tasks(
        self,
        stage: Stage,
        inputs: list[ShardInput],
        broadcast: tuple[tuple[ChunkRef, ...], ...] = (),
        stage_dir: str | None = None,
        committed: dict[int, TaskResult] | None = None,
        commit: Callable[[TaskResult], None] | None = None,
    ) -> list[TaskResult]:
        """Run one task per input of ``stage`` through the scheduler loop, but for the shards already
        ``committed``; every task gets all of ``broadcast`` (the chunks of each of its broadcast
        joins' right side). Returns every shard's result, in shard order. With ``committed`` (a
        checkpointed run, even if empty), each result is committed as it is accepted (by ``commit``;
        by default as the stage's task)."""
        stage_dir = stage_dir or self._stage_dir_name(stage)
        attempt = 0 if self.checkpoint is None else self.checkpoint.attempt_base
        done = committed or {}
        every_task = [
            ShardTask(stage.index, stage_dir, index, len(inputs), attempt, shard_input, self.execution, broadcast)
            for index, shard_input in enumerate(inputs)
        ]
        tasks = [task for task in every_task if task.shard_index not in done]
        on_result = None if committed is None else commit or partial(self.checkpoint.commit, self._fingerprints[stage.index])
        results = list(done.values())
        if tasks or not done:
            if committed is not None:
                self.checkpoint.record_stage(stage, every_task)
            self.backend.start(min(self.max_workers, max(len(tasks), 1)))
            results += run_stage(self.backend, stage, tasks, self.policy, self.progress, self.recorder, on_result, self._lineage)
        results.sort(key=lambda result: result.shard_index)
        self._lineage.add(stage, every_task, results, on_result)  # what a task finding a chunk of theirs lost reruns
        return results

    def _rerun(self, stage: Stage, tasks: list[ShardTask], on_result: Callable[[TaskResult], None] | None) -> list[TaskResult]:
        """Run ``tasks`` of an earlier ``stage`` again, to write chunks a task found lost (``Lineage``)."""
        if self.recorder is not None:
            self.recorder.reran(len(tasks))
        try:
            return run_stage(self.backend, stage, tasks, self.policy, Progress(enabled=False), None, on_result, self._lineage)
        finally:
            if stage.kind in (StageKind.SHUFFLE, StageKind.JOIN):
                self._remove_spills(stage)

    def _stage_dir_name(self, stage: Stage) -> str:
        fingerprint = self._fingerprints.get(stage.index)
        return layout.stage_dir_name(stage.index, stage.kind.value, fingerprint.digest if fingerprint else "")

    def _run_pipelines(self, stage: Stage, refs: ShardRefs, num_shards: int) -> ShardRefs:
        """The output of a stage that runs pipelines of its own (``near_duplicates.run``), each in a
        directory under the stage's, which goes when the stage's output does.

        With a checkpoint, each pipeline is a nested checkpointed run (one killed in its third
        round resumes there: the earlier ones return their recorded output, kept until then),
        and once all ran the output is committed a task per shard (the first holding the
        pipelines' counters) and the other pipelines' directories are deleted."""
        from zephyr_arrow.execution import near_duplicates

        pipelines = _StagePipelines(self, stage)
        if self.checkpoint is None:
            return near_duplicates.run(stage.boundary, refs, pipelines)
        fingerprint = self._fingerprints[stage.index]
        committed = self.checkpoint.committed(stage, fingerprint, num_shards)
        if len(committed) < num_shards:
            output = near_duplicates.run(stage.boundary, refs, pipelines)
            committed = {
                index: TaskResult(
                    stage.index, index, self.checkpoint.attempt_base, tuple(StageResult(index, chunk) for chunk in shard), TaskStats(),
                    output.counters if index == 0 else {}, output.stats if index == 0 else {},
                )
                for index, shard in enumerate(output.shards)
            }
            for result in committed.values():
                self.checkpoint.commit(fingerprint, result)
        results = [committed[index] for index in sorted(committed)]
        pipelines.remove_all_but(results)
        counters = CounterTotals()
        counters.add_all(results)
        return ShardRefs(regroup(results, len(results)).shards, counters=counters.values, stats=sum_counters(r.engine_counts for r in results))

    def _remove_spills(self, stage: Stage) -> None:
        """Delete what a shuffle's reduce tasks merged in passes (a failed attempt's files too)."""
        for side in range(len(stage.inputs)):
            name = layout.spill_dir_name(self._stage_dir_name(stage), side)
            remove_quietly(layout.stage_dir(self.execution.chunk_prefix, self.execution.execution_id, name))

    def _release(self, plan: Plan, done: int, outputs: dict[int, ShardRefs], last_use: dict[int, int]) -> None:
        """Delete the chunk files no remaining stage (nor the final output) refers to."""
        live = [refs for index, refs in outputs.items() if index == plan.output or last_use.get(index, -1) > done]
        referenced = {chunk.path for refs in live for chunk in refs.chunks}
        for index in [i for i in outputs if i != plan.output and last_use.get(i, -1) <= done]:
            stage_paths = {chunk.path for chunk in outputs[index].chunks}
            if not stage_paths & referenced:
                directories = _stage_dirs(stage_paths, self.execution)
                for path in directories:
                    remove_quietly(path)
                self._lineage.released(directories)
            del outputs[index]


def _check_columns_exist(stage: Stage, inputs: list[ShardInput], results: list[TaskResult]) -> None:
    """A column that no row of the whole stage had is a typo, not a sparse column: say so,
    with the columns there are (a shard's rows may lack a column other shards have)."""
    named = [op for op in stage.ops if isinstance(op, ops.SelectOp)]
    if stage.kind is StageKind.SCATTER and isinstance(stage.boundary, ops.AggregateOp):
        named.append(stage.boundary)
    for op in named:
        used = op.columns_used()
        seen = set().union(*(result.columns_seen.get(used, ()) for result in results))
        missing = [column for column in used if column not in seen]
        if seen and missing:
            there = sorted(column for column in seen | _loaded_columns(stage, inputs) if not column.startswith("__zephyr_"))
            raise PlanError(f"{op!r} in stage {stage.index}: no row has column {', '.join(map(repr, missing))}; the rows have {there}")


def _loaded_columns(stage: Stage, inputs: list[ShardInput]) -> set[str]:
    """The columns of the stage's first input row or file: the planner has the stage read
    only the columns it uses, and a typo's column is among those (read only on error)."""
    from zephyr_arrow import io

    first = inputs[0].source if inputs and isinstance(inputs[0], ScatterInput) else inputs[0] if inputs else None
    if not isinstance(first, ItemsInput) or not first.items:
        return set()
    load = next((op for op in stage.ops if isinstance(op, ops.LoadOp)), None)
    if load is None:
        return set(first.items[0]) if isinstance(first.items[0], dict) else set()
    path = _file_path(first.items[0])
    table = next(io.read_file(path, None, None, None if load.format == "auto" else load.format), None)
    return set() if table is None else set(table.column_names)


def _with_origins(stage: Stage, inputs: list[ShardInput], results: list[TaskResult]) -> list[TaskResult]:
    """``results`` with each chunk's ``origin``: the files its task loaded, or the one origin
    of the chunks it read (a reduce task's rows come from many: none)."""
    origins = [_origin(stage, shard_input) for shard_input in inputs]
    return [
        replace(result, outputs=tuple(replace(out, chunk=replace(out.chunk, origin=origin)) for out in result.outputs))
        if (origin := origins[result.shard_index]) is not None
        else result
        for result in results
    ]


def _origin(stage: Stage, shard_input: ShardInput) -> str | None:
    source = shard_input.source if isinstance(shard_input, ScatterInput) else shard_input
    if isinstance(source, ItemsInput) and source.items and any(isinstance(op, ops.LoadOp) for op in stage.ops):
        paths = [_file_path(path) for path in source.items]
        return paths[0] if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more files"
    if isinstance(source, ChunksInput):
        origins = {chunk.origin for chunk in source.chunks}
        return origins.pop() if len(origins) == 1 else None
    return None


def _file_path(item: object) -> str:
    """The file an input row of a load names: a path, a piece of one (see ``split_inputs``), or an InputFileSpec's."""
    from zephyr_arrow.io.spec import InputFileSpec

    return item.path if isinstance(item, (FilePiece, InputFileSpec)) else str(item)


def _as_shard(result: TaskResult, shard_index: int) -> TaskResult:
    """A piece's result as its shard's (a map task's chunks are its own shard's)."""
    return replace(result, outputs=tuple(replace(output, shard_index=shard_index) for output in result.outputs))
@dataclass
class _StagePipelines:
    """Runs the pipelines of one PIPELINES stage, on the executor's workers, and deletes their outputs."""

    executor: Executor
    stage: Stage
    num_runs: int = 0

    def execute(self, dataset: Dataset, name: str) -> ShardRefs:
        """Run ``dataset`` in a directory of the stage's; under a checkpoint, as a nested checkpointed
        run there (its name and the stage's fingerprint make the directory: the same on resume)."""
        self.num_runs += 1
        run_name = f"{self.num_runs:03d}-{name}"
        run_id = layout.join(self.executor.execution.execution_id, self.executor._stage_dir_name(self.stage), run_name)
        outer = self.executor.checkpoint
        checkpoint = None if outer is None else outer.nested(run_id, f"stage {self.stage.index}, pipeline {run_name}")
        executor = replace(self.executor, execution=replace(self.executor.execution, execution_id=run_id), recorder=None, checkpoint=checkpoint)
        return executor.execute(make_plan(dataset))

    def release(self, refs: ShardRefs) -> None:
        """Delete the directories of the pipeline run that wrote ``refs``; under a checkpoint, none
        until the stage is committed (``remove_all_but``): a resumed stage reruns a pipeline
        whose output is not all there, and the next one reads it."""
        if self.executor.checkpoint is None:
            for path in self._run_dirs(refs.chunks):
                remove_quietly(path)

    def remove_all_but(self, results: list[TaskResult]) -> None:
        """Delete the directories of the stage's pipeline runs, but those holding ``results``' chunks."""
        stage_dir = self._root().rstrip("/")
        keep = self._run_dirs(output.chunk for result in results for output in result.outputs)
        fs, fs_dir = filesystem(stage_dir)
        for path in listing(fs, fs_dir):
            path = fs.unstrip_protocol(path) if "://" in stage_dir else path
            if path.rstrip("/") not in keep:
                remove_quietly(path)

    def _root(self) -> str:
        execution = self.executor.execution
        return layout.join(layout.execution_dir(execution.chunk_prefix, execution.execution_id), self.executor._stage_dir_name(self.stage)) + "/"

    def _run_dirs(self, chunks: Iterable[ChunkRef]) -> set[str]:
        root = self._root()
        return {root + chunk.path[len(root) :].split("/", 1)[0] for chunk in chunks if chunk.path.startswith(root)}


def stage_dirs_of(refs: ShardRefs, execution: ExecutionInfo) -> set[str]:
    """The stage directories (under this execution's own directory) holding ``refs``' chunks."""
    return _stage_dirs({chunk.path for chunk in refs.chunks}, execution)


def _stage_dirs(paths: set[str], execution: ExecutionInfo) -> set[str]:
    """The stage directories (under this execution's own directory) holding ``paths``."""
    root = layout.execution_dir(execution.chunk_prefix, execution.execution_id) + "/"
    return {root + path[len(root) :].split("/", 1)[0] for path in paths if path.startswith(root)}


def _last_use(plan: Plan) -> dict[int, int]:
    last: dict[int, int] = {}
    for stage in plan.stages:
        for upstream in (*stage.inputs, *stage.broadcast):
            last[upstream] = stage.index
    return last


def regroup(results: list[TaskResult], num_shards: int) -> ShardRefs:
    """Group the tasks' output chunks by output shard, in task order; no data is read."""
    shards: list[list[ChunkRef]] = [[] for _ in range(num_shards)]
    for result in results:
        for output in result.outputs:
            shards[output.shard_index].append(output.chunk)
    return ShardRefs(shards)
