"""The scheduler loop with a scripted backend and a simulated clock: no processes, no sleeps."""

from __future__ import annotations

import types

import pytest

from zephyr_arrow.errors import ShardFailedError
from zephyr_arrow.execution import scheduler
from zephyr_arrow.execution.coordinator import RetryPolicy, WorkerDied
from zephyr_arrow.execution.progress import Progress
from zephyr_arrow.execution.tasks import ExecutionInfo, ItemsInput, ShardTask
from zephyr_arrow.planner import Stage, StageKind

RUN = ExecutionInfo("/tmp/none", "run-test")


class Clock:
    """Each reading moves time on a little (the loop's own work); waiting and killing move it on more."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 0.001
        return self.now


class HangingBackend:
    """Workers whose tasks never finish. Worker 1 is up only after the first poll; killing a
    worker takes ``kill_seconds`` (reaping it, starting its replacement) and leaves its slot
    starting, as the local backend does."""

    def __init__(self, clock: Clock, kill_seconds: float) -> None:
        self.clock, self.kill_seconds = clock, kill_seconds
        self.ready = {0}
        self.kills: list[int] = []
        self.pending: list[WorkerDied] = []

    @property
    def ready_workers(self) -> list[int]:
        return sorted(self.ready)

    def submit(self, worker, stage, task) -> None:
        assert worker in self.ready

    def poll(self, timeout):
        self.ready.add(1)
        if self.pending:
            events, self.pending = self.pending, []
            return events
        self.clock.now += timeout
        return []

    def kill(self, worker: int) -> None:
        self.kills.append(worker)
        self.clock.now += self.kill_seconds
        self.ready.discard(worker)
        self.pending.append(WorkerDied(worker, "killed by SIGKILL"))


def test_a_worker_killed_for_its_timeout_is_not_killed_again_when_the_stage_fails(monkeypatch):
    # Shard 0 times out; killing its worker takes long enough that shard 1 times out too just
    # after shard 0's death fails the stage. Killing worker 1 a second time would kill its
    # starting replacement (which the local backend reported as a start-up failure, hiding
    # the timeout that failed the stage).
    clock = Clock()
    monkeypatch.setattr(scheduler, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    backend = HangingBackend(clock, kill_seconds=2.0)
    stage = Stage(0, StageKind.MAP)
    tasks = [ShardTask(0, "stage-00-map", i, 2, 0, ItemsInput((i,)), RUN) for i in range(2)]
    policy = RetryPolicy(max_worker_deaths=1, task_timeout=10.0)
    with pytest.raises(ShardFailedError, match=r"shard 0 of 2: worker died 1 times running it \(last: timed out after 10.0s\)"):
        scheduler.run_stage(backend, stage, tasks, policy, Progress(enabled=False))
    assert backend.kills == [0, 1]
    assert backend.pending == []  # every death was collected: none is left for the next stage
