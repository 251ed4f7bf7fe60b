"""The backend seam: how tasks reach workers. Backends are thin; the scheduler loop decides."""

from __future__ import annotations

from typing import Protocol

from zephyr_arrow.execution.coordinator import Event, WorkerId
from zephyr_arrow.execution.tasks import ShardTask
from zephyr_arrow.plan import Stage


class Backend(Protocol):
    """Start workers, submit a task, poll for events, stop.

    Workers are numbered slots ``0 .. num_workers - 1``. A worker that dies is reported
    once as ``WorkerDied`` and its slot is refilled by the backend before it is used again.
    """

    @property
    def num_workers(self) -> int: ...

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
