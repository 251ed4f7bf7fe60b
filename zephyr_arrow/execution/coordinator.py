"""The coordinator of one stage: a state machine with no I/O.

It takes events (a task finished, a task raised, a worker died) and the time, and
returns decisions (which task goes to which idle worker, which workers to kill for
running past the timeout). Retries, attempt numbers, stale results and failure caps
are all decided here, so they are tested without processes or sleeps.

A task that fails because an input chunk it read is damaged or gone, where the chunk is
one the run can write again (``can_recover``), is not at fault: it is set aside, not
retried or failed, until the stage's other tasks are done; then the caller has the chunk
written again (``take_lost``) and gives the task back with it (``requeue``).
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from zephyr_arrow.errors import ShardFailedError
from zephyr_arrow.execution.tasks import ShardTask, TaskError, TaskResult

WorkerId = int


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_task_retries: int = 0  # retries after user code raised (not retried by default)
    max_worker_deaths: int = 3  # a task that kills its worker this many times aborts the run
    task_timeout: float | None = None  # seconds; a task running longer is treated as a dead worker


@dataclass(frozen=True, slots=True)
class TaskFinished:
    worker: WorkerId
    result: TaskResult


@dataclass(frozen=True, slots=True)
class TaskFailed:
    worker: WorkerId
    error: TaskError


@dataclass(frozen=True, slots=True)
class WorkerDied:
    worker: WorkerId
    reason: str  # "killed by SIGKILL", "exited with code 3"


Event = TaskFinished | TaskFailed | WorkerDied


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "disappeared"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


@dataclass(slots=True)
class _Running:
    task: ShardTask
    started: float
    timed_out: bool = False


class StageCoordinator:
    """Hands out one stage's tasks and collects their results."""

    def __init__(
        self, stage_name: str, tasks: list[ShardTask], policy: RetryPolicy, can_recover: Callable[[str], bool] | None = None
    ) -> None:
        self.stage_name = stage_name
        self.policy = policy
        self._tasks = {task.shard_index: task for task in tasks}
        self._queue: deque[int] = deque(sorted(self._tasks))
        self._running: dict[WorkerId, _Running] = {}
        self._results: dict[int, TaskResult] = {}
        self._deaths: dict[int, int] = {}
        self._errors: dict[int, int] = {}
        self._can_recover = can_recover
        self._lost: dict[int, TaskError] = {}  # tasks set aside: an input chunk they read is lost
        self.failure: ShardFailedError | None = None

    @property
    def finished(self) -> bool:
        return self.failure is not None or len(self._results) == len(self._tasks)

    @property
    def stalled(self) -> bool:
        """Nothing runs or waits but tasks set aside for a lost input chunk (``take_lost``)."""
        return self.failure is None and bool(self._lost) and not self._queue and not self._running

    @property
    def num_done(self) -> int:
        return len(self._results)

    @property
    def busy_workers(self) -> list[WorkerId]:
        """Workers running a task (one killed for running late included, until its death is reported)."""
        return list(self._running)

    @property
    def late_workers(self) -> list[WorkerId]:
        """Busy workers already handed to the caller to kill for running past the timeout."""
        return [worker for worker, running in self._running.items() if running.timed_out]

    def results(self) -> list[TaskResult]:
        """Accepted results in shard order (one per shard)."""
        return [self._results[index] for index in sorted(self._results)]

    def take_lost(self) -> list[tuple[ShardTask, TaskError]]:
        """The tasks set aside because an input chunk they read is lost, with their errors (which name it)."""
        lost = [(self._tasks[index], error) for index, error in sorted(self._lost.items())]
        self._lost.clear()
        return lost

    def requeue(self, tasks: list[ShardTask]) -> None:
        """Run again, as new attempts, tasks set aside (their inputs now name the chunks written again)."""
        for task in tasks:
            self._tasks[task.shard_index] = replace(task, attempt=task.attempt + 1)
            self._queue.append(task.shard_index)

    def assign(self, workers: list[WorkerId], now: float) -> list[tuple[WorkerId, ShardTask]]:
        """Give queued tasks to the idle ones among ``workers``."""
        if self.failure is not None:
            return []
        assignments = []
        for worker in workers:
            if not self._queue:
                break
            if worker in self._running:
                continue
            task = self._tasks[self._queue.popleft()]
            self._running[worker] = _Running(task, now)
            assignments.append((worker, task))
        return assignments

    def handle(self, event: Event, now: float) -> None:
        if isinstance(event, TaskFinished):
            self._on_finished(event)
        elif isinstance(event, TaskFailed):
            self._on_failed(event)
        else:
            self._on_died(event)

    def timed_out(self, now: float) -> list[WorkerId]:
        """Workers whose task has run past the timeout; the caller kills them (they come back as WorkerDied)."""
        if self.policy.task_timeout is None:
            return []
        late = []
        for worker, running in self._running.items():
            if not running.timed_out and now - running.started > self.policy.task_timeout:
                running.timed_out = True
                late.append(worker)
        return late

    def next_deadline(self, now: float) -> float | None:
        """Seconds until the next task times out (None when nothing can)."""
        if self.policy.task_timeout is None or not self._running:
            return None
        pending = [r.started + self.policy.task_timeout - now for r in self._running.values() if not r.timed_out]
        return max(min(pending), 0.0) if pending else None

    def _is_current(self, worker: WorkerId, shard_index: int, attempt: int) -> bool:
        running = self._running.get(worker)
        return running is not None and running.task.shard_index == shard_index and running.task.attempt == attempt

    def _on_finished(self, event: TaskFinished) -> None:
        result = event.result
        if not self._is_current(event.worker, result.shard_index, result.attempt):
            return  # a stale attempt: its output is never used
        del self._running[event.worker]
        self._results[result.shard_index] = result

    def _on_failed(self, event: TaskFailed) -> None:
        error = event.error
        if not self._is_current(event.worker, error.shard_index, error.attempt):
            return
        task = self._running.pop(event.worker).task
        if error.lost_chunk is not None and self._can_recover is not None and self._can_recover(error.lost_chunk):
            self._lost[task.shard_index] = error  # not the task's fault: no retry of user errors is spent
            return
        count = self._errors[task.shard_index] = self._errors.get(task.shard_index, 0) + 1
        if count > self.policy.max_task_retries:
            self._fail(task, f"raised {error.summary}" + (f" (after {count} attempts)" if count > 1 else ""),
                       detail=f"\n\nTraceback from the worker:\n{error.traceback}", cause=error.error)
        else:
            self._retry(task)

    def _on_died(self, event: WorkerDied) -> None:
        running = self._running.pop(event.worker, None)
        if running is None:
            return  # an idle worker died; the backend replaces it
        task = running.task
        reason = f"timed out after {self.policy.task_timeout}s" if running.timed_out else event.reason
        count = self._deaths[task.shard_index] = self._deaths.get(task.shard_index, 0) + 1
        if count >= self.policy.max_worker_deaths:
            self._fail(task, f"worker died {count} times running it (last: {reason})")
        else:
            self._retry(task)

    def _retry(self, task: ShardTask) -> None:
        self._tasks[task.shard_index] = replace(task, attempt=task.attempt + 1)
        self._queue.appendleft(task.shard_index)

    def _fail(self, task: ShardTask, what: str, detail: str = "", cause: BaseException | None = None) -> None:
        message = f"stage {task.stage_index} ({self.stage_name}), shard {task.shard_index} of {task.num_shards}: {what}{detail}"
        self.failure = ShardFailedError(message, stage=self.stage_name, shard_index=task.shard_index)
        self.failure.__cause__ = cause
