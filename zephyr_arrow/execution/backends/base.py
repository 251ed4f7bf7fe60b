"""The backend seam: how tasks reach workers. Backends are thin; the scheduler loop decides.

Besides the ``Backend`` protocol, the two steps every backend whose workers live in
other processes (local, ray) shares: pickling a stage once for its workers, and
turning an exception raised in a worker into a ``TaskError`` that can travel back.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Protocol

import cloudpickle

from zephyr_arrow.errors import PlanError
from zephyr_arrow.execution.coordinator import Event, WorkerId
from zephyr_arrow.execution.tasks import ShardTask, TaskError
from zephyr_arrow.planner import Stage


class Backend(Protocol):
    """Start workers, submit a task, poll for events, stop.

    Workers are numbered slots. A worker that dies is reported once as ``WorkerDied`` and
    its slot is refilled by the backend before it is used again.
    """

    @property
    def default_num_workers(self) -> int:
        """How many workers a context uses when the user did not say: what the machine or cluster has CPUs for."""

    @property
    def ready_workers(self) -> list[WorkerId]:
        """The slots that can take a task now (a replacement still starting cannot: its start-up
        must not count against the task's timeout)."""

    def start(self, num_workers: int) -> None:
        """Make at least ``num_workers`` workers available (never fewer than already running)."""

    def submit(self, worker: WorkerId, stage: Stage, task: ShardTask) -> None:
        """Start ``task`` on an idle worker; its outcome comes back from ``poll``."""

    def poll(self, timeout: float | None) -> list[Event]:
        """Events that happened, waiting up to ``timeout`` seconds (None: until one happens)."""

    def kill(self, worker: WorkerId) -> None:
        """Stop a worker now; it is reported as ``WorkerDied``."""

    def shutdown(self) -> None:
        """Stop every worker and release everything the backend holds."""


def pickle_stage(stage: Stage) -> bytes:
    """The stage as its workers receive it (cloudpickled: lambdas and closures work)."""
    try:
        return cloudpickle.dumps(stage.for_worker())
    except Exception as error:
        raise PlanError(
            f"stage {stage.index} ({stage.name}) cannot be sent to worker processes: {type(error).__name__}: "
            f"{error}. Functions are shipped with cloudpickle; one that captures a lock, an open file or "
            "a connection cannot be: create such objects inside the function instead."
        ) from error


def task_error(task: ShardTask, error: BaseException) -> TaskError:
    """``error``, raised by a worker running ``task``, as a TaskError (carrying the exception only if it pickles)."""
    text = "".join(traceback.format_exception(error))
    try:
        pickle.dumps(error)
        sendable: BaseException | None = error
    except Exception:
        sendable = None
    return TaskError(task.stage_index, task.shard_index, task.attempt, sendable, f"{type(error).__name__}: {error}", text)
