"""Run a plan stage by stage; between stages only references move.

Each stage's output is a ``ShardRefs`` built from the tasks' ``StageResult``s without
reading data. A stage's chunk files are deleted as soon as no later stage, and not
the final output, refers to them (a reshard's output points into its input's files,
so deletion follows references, not stage order).
"""

from __future__ import annotations

from dataclasses import dataclass

from zephyr_arrow import ops
from zephyr_arrow.errors import PlanError
from zephyr_arrow.execution.backends.base import Backend
from zephyr_arrow.execution.coordinator import RetryPolicy
from zephyr_arrow.execution.progress import Progress
from zephyr_arrow.execution.reshard import reshard
from zephyr_arrow.execution.scheduler import run_stage
from zephyr_arrow.execution.sources import source_inputs
from zephyr_arrow.execution.stats import add_counters, sum_counters
from zephyr_arrow.execution.tasks import ChunksInput, RunInfo, ScatterInput, ShardInput, ShardTask, TaskResult
from zephyr_arrow.planner import Plan, Stage, StageKind
from zephyr_arrow.store import ChunkRef, ShardRefs, layout
from zephyr_arrow.store.files import remove_tree


@dataclass
class Runner:
    backend: Backend
    run: RunInfo
    policy: RetryPolicy
    progress: Progress
    max_workers: int

    def execute(self, plan: Plan) -> ShardRefs:
        source_stage_inputs = {s.index: source_inputs(s.source) for s in plan.stages if s.source is not None}
        shard_counts = check_shard_counts(plan, {i: len(inputs) for i, inputs in source_stage_inputs.items()})
        last_use = _last_use(plan)
        outputs: dict[int, ShardRefs] = {}
        counters: dict[str, int | float] = {}
        for stage in plan.stages:
            if stage.kind in (StageKind.MAP, StageKind.SCATTER):
                if stage.index in source_stage_inputs:
                    inputs = source_stage_inputs[stage.index]
                else:
                    inputs = [ChunksInput(shard) for shard in outputs[stage.inputs[0]].shards]
                num_output_shards = len(inputs)
                if stage.kind is StageKind.SCATTER:
                    # The shuffle reading this stage (its only consumer) decides how many shards the runs are cut for.
                    num_output_shards = shard_counts[last_use[stage.index]]
                    inputs = [ScatterInput(shard_input, num_output_shards) for shard_input in inputs]
                broadcast = tuple(tuple(outputs[index].chunks) for index in stage.broadcast)
                results = self.run_map(stage, inputs, broadcast=broadcast)
                outputs[stage.index] = regroup(results, num_output_shards)
                counters = add_counters(counters, sum_counters(r.counters for r in results))
            elif stage.kind is StageKind.RESHARD:
                outputs[stage.index] = reshard(outputs[stage.inputs[0]], stage.boundary.num_shards)
            else:
                from zephyr_arrow.execution import shuffle

                refs, stage_counters = shuffle.run(self, stage, [outputs[i] for i in stage.inputs])
                outputs[stage.index] = refs
                counters = add_counters(counters, stage_counters)
            self._release(plan, stage.index, outputs, last_use)
        final = outputs[plan.output]
        return ShardRefs(final.shards, counters=counters)

    def stage_dir(self, stage: Stage, suffix: str = "") -> str:
        return layout.stage_dir_name(stage.index, f"{stage.kind.value}{suffix}")

    def run_map(
        self, stage: Stage, inputs: list[ShardInput], suffix: str = "", broadcast: tuple[tuple[ChunkRef, ...], ...] = ()
    ) -> list[TaskResult]:
        """Run one task per input shard of ``stage`` through the scheduler loop; every task gets
        all of ``broadcast`` (the chunks of each of its broadcast joins' right side)."""
        stage_dir = self.stage_dir(stage, suffix)
        tasks = [
            ShardTask(stage.index, stage_dir, index, len(inputs), 0, shard_input, self.run, broadcast)
            for index, shard_input in enumerate(inputs)
        ]
        self.backend.start(min(self.max_workers, max(len(tasks), 1)))
        return run_stage(self.backend, stage, tasks, self.policy, self.progress)

    def _release(self, plan: Plan, done: int, outputs: dict[int, ShardRefs], last_use: dict[int, int]) -> None:
        """Delete the chunk files no remaining stage (nor the final output) refers to."""
        live = [refs for index, refs in outputs.items() if index == plan.output or last_use.get(index, -1) > done]
        referenced = {chunk.path for refs in live for chunk in refs.chunks}
        for index in [i for i in outputs if i != plan.output and last_use.get(i, -1) <= done]:
            stage_paths = {chunk.path for chunk in outputs[index].chunks}
            if not stage_paths & referenced:
                for path in _stage_dirs(stage_paths, self.run):
                    remove_tree(path)
            del outputs[index]


def _stage_dirs(paths: set[str], run: RunInfo) -> set[str]:
    """The stage directories (under this run's own directory) holding ``paths``."""
    root = layout.execution_dir(run.chunk_prefix, run.execution_id) + "/"
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



def _names_shard(pattern: str) -> bool:
    return "{shard" in pattern or "{basename" in pattern


def check_shard_counts(plan: Plan, source_shards: dict[int, int]) -> dict[int, int]:
    """Every stage's shard count, known before anything runs; checks write patterns against them."""
    counts: dict[int, int] = {}
    for stage in plan.stages:
        upstream = counts[stage.inputs[0]] if stage.inputs else source_shards[stage.index]
        if stage.kind is StageKind.RESHARD:
            counts[stage.index] = stage.boundary.num_shards
        elif stage.kind in (StageKind.MAP, StageKind.SCATTER):
            counts[stage.index] = upstream  # its tasks (a SCATTER's runs are cut for its shuffle's count)
        else:
            counts[stage.index] = getattr(stage.boundary, "num_output_shards", None) or upstream
            check_inputs = getattr(stage.boundary, "check_input_shards", None)
            if check_inputs is not None:
                check_inputs([counts[i] for i in stage.inputs])
        sink = stage.sink
        if isinstance(sink, ops.WriteOp) and isinstance(sink.pattern, str) and counts[stage.index] > 1 and not _names_shard(sink.pattern):
            raise PlanError(
                f"{sink!r} would write {counts[stage.index]} shards to the same file: "
                "put {shard} in the pattern (e.g. 'out/part-{shard:05d}.parquet')"
            )
    return counts
