"""The sync backend: tasks run in this process, one at a time. For debugging and tests."""

from __future__ import annotations

import sys

from zephyr_arrow.execution.backends.base import error_traceback, lost_chunk
from zephyr_arrow.execution.coordinator import Event, TaskFailed, TaskFinished, WorkerId
from zephyr_arrow.execution.tasks import ShardTask, TaskError
from zephyr_arrow.execution.worker.task import run_task
from zephyr_arrow.planner import Stage


class SyncBackend:
    """One in-process worker; ``pdb`` and breakpoints in user functions just work."""

    def __init__(self) -> None:
        self._events: list[Event] = []

    @property
    def default_num_workers(self) -> int:
        return 1

    @property
    def ready_workers(self) -> list[WorkerId]:
        return [0]

    def start(self, num_workers: int) -> None:
        pass

    def submit(self, worker: WorkerId, stage: Stage, task: ShardTask) -> None:
        try:
            self._events.append(TaskFinished(worker, run_task(stage, task)))
        except Exception as error:
            summary = f"{type(error).__name__}: {error}"
            text = error_traceback(error)
            failed = TaskError(task.stage_index, task.shard_index, task.attempt, error, summary, text, lost_chunk=lost_chunk(error))
            self._events.append(TaskFailed(worker, failed))

    def poll(self, timeout: float | None) -> list[Event]:
        events, self._events = self._events, []
        return events

    def kill(self, worker: WorkerId) -> None:
        """Nothing to stop: a task has finished by the time ``submit`` returns."""

    def shutdown(self) -> None:
        self._events.clear()
        broadcast = sys.modules.get("zephyr_arrow.execution.shuffle.join")  # loaded if a join ran here
        if broadcast is not None:
            broadcast.forget()
