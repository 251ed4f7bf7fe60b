"""The one scheduler loop: every stage of every run, on every backend, goes through here."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from zephyr_arrow.execution.backends.base import Backend
from zephyr_arrow.execution.coordinator import RetryPolicy, StageCoordinator
from zephyr_arrow.execution.progress import Progress
from zephyr_arrow.execution.run_record import RunRecorder
from zephyr_arrow.execution.tasks import ShardTask, TaskError, TaskResult
from zephyr_arrow.planner import Stage

# How long poll() may block when no task can time out: only bounds how late a
# progress line is, since events wake the loop at once.
_IDLE_POLL_SECONDS = 1.0

# The run record's clock: dates (the wall clock), where scheduling decisions use the monotonic one.
_wall_clock = time.time


class Recovery(Protocol):
    """What writes again the chunks a stage's tasks found lost (``lineage.Lineage``)."""

    def can_recover(self, path: str) -> bool:
        """Whether the chunk at ``path`` can be written again."""

    def recover(self, lost: list[tuple[ShardTask, TaskError]]) -> list[ShardTask]:
        """Write again the chunks ``lost`` names; the tasks, with those in place of the lost ones."""


def run_stage(
    backend: Backend,
    stage: Stage,
    tasks: list[ShardTask],
    policy: RetryPolicy,
    progress: Progress,
    recorder: RunRecorder | None = None,
    on_result: Callable[[TaskResult], None] | None = None,
    recovery: Recovery | None = None,
) -> list[TaskResult]:
    """Run ``tasks`` of ``stage`` to completion; raise ShardFailedError if one fails for good.
    ``recorder`` (the run record) sees every attempt handed out and every event (on the wall clock);
    ``on_result`` is called with each result as it is accepted (a checkpoint commits it there).
    Tasks that found an input chunk lost that ``recovery`` can write again run again once it has,
    when nothing else of the stage runs (so the workers are free for the tasks it reruns)."""
    coordinator = StageCoordinator(stage.name, tasks, policy, recovery.can_recover if recovery is not None else None)
    progress.start_stage(stage, len(tasks))
    if recorder is not None:
        recorder.start_stage(stage, _wall_clock(), len(tasks))
    try:
        while not coordinator.finished:
            if coordinator.stalled:
                coordinator.requeue(recovery.recover(coordinator.take_lost()))
            for worker, task in coordinator.assign(backend.ready_workers, time.monotonic()):
                if recorder is not None:  # first: the sync backend runs the task inside submit
                    recorder.submitted(worker, task, _wall_clock())
                backend.submit(worker, stage, task)
            deadline = coordinator.next_deadline(time.monotonic())
            for event in backend.poll(timeout=_IDLE_POLL_SECONDS if deadline is None else min(deadline, _IDLE_POLL_SECONDS)):
                num_done = coordinator.num_done
                coordinator.handle(event, time.monotonic())
                if on_result is not None and coordinator.num_done > num_done:
                    on_result(event.result)
                progress.update(event)
                if recorder is not None:
                    recorder.event(event, _wall_clock())
            for worker in coordinator.timed_out(time.monotonic()):
                backend.kill(worker)
    except BaseException:
        _stop_running(backend, coordinator)
        if recorder is not None:
            recorder.finish_stage(stage, None, _wall_clock())
        raise
    if coordinator.failure is not None:
        _stop_running(backend, coordinator)
        if recorder is not None:
            recorder.finish_stage(stage, None, _wall_clock())
        raise coordinator.failure
    results = coordinator.results()
    progress.finish_stage(stage, results)
    if recorder is not None:
        recorder.finish_stage(stage, results, _wall_clock())
    return results


def _stop_running(backend: Backend, coordinator: StageCoordinator) -> None:
    """Stop tasks still running for a stage that will not finish (their output is never used).

    The deaths this causes are reported at once and dropped here: left for the next stage,
    they would be taken for deaths of the fresh workers now in those slots. A worker already
    killed for running late is not killed again: its slot now holds a replacement that is
    still starting, and killing that would report a start-up failure instead of the stage's.
    """
    busy = coordinator.busy_workers
    late = coordinator.late_workers
    for worker in busy:
        if worker not in late:
            backend.kill(worker)
    if busy:
        backend.poll(timeout=0)
