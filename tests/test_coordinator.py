"""The coordinator state machine, driven by hand: no processes, no sleeps, the clock passed in."""

from __future__ import annotations

import pyarrow as pa
import pytest

from zephyr_arrow.errors import ShardFailedError
from zephyr_arrow.execution.coordinator import (
    RetryPolicy,
    StageCoordinator,
    TaskFailed,
    TaskFinished,
    WorkerDied,
)
from zephyr_arrow.execution.stats import TaskStats
from zephyr_arrow.execution.tasks import ExecutionInfo, ItemsInput, ShardTask, StageResult, TaskError, TaskResult
from zephyr_arrow.store import ChunkRef

RUN = ExecutionInfo("/tmp/none", "run-test")


def tasks(n: int) -> list[ShardTask]:
    return [ShardTask(0, "stage-00-map", i, n, 0, ItemsInput((i,)), RUN) for i in range(n)]


def finished(worker: int, task: ShardTask, counters=None) -> TaskFinished:
    chunk = ChunkRef(f"/tmp/none/{task.shard_index}-{task.attempt}.parquet", 1, pa.schema([]))
    result = TaskResult(0, task.shard_index, task.attempt, (StageResult(task.shard_index, chunk),), TaskStats(rows_out=1), counters or {})
    return TaskFinished(worker, result)


def failed(worker: int, task: ShardTask) -> TaskFailed:
    error = ValueError("bad row")
    return TaskFailed(worker, TaskError(0, task.shard_index, task.attempt, error, "ValueError: bad row", "Traceback ...\nValueError: bad row"))


def test_assigns_tasks_in_shard_order_to_idle_workers():
    coordinator = StageCoordinator("map", tasks(3), RetryPolicy())
    first = coordinator.assign([0, 1], now=0.0)
    assert [(w, t.shard_index) for w, t in first] == [(0, 0), (1, 1)]
    assert coordinator.assign([0, 1], now=0.0) == []  # both busy
    coordinator.handle(finished(1, first[1][1]), now=1.0)
    assert [(w, t.shard_index) for w, t in coordinator.assign([0, 1], now=1.0)] == [(1, 2)]


def test_dead_worker_retries_task_with_next_attempt():
    coordinator = StageCoordinator("map", tasks(2), RetryPolicy(max_worker_deaths=3))
    (w0, t0), (w1, t1) = coordinator.assign([0, 1], now=0.0)
    coordinator.handle(WorkerDied(w0, "killed by SIGKILL"), now=1.0)
    ((worker, retry),) = coordinator.assign([0], now=1.0)
    assert (worker, retry.shard_index, retry.attempt) == (0, 0, 1)
    coordinator.handle(finished(0, retry), now=2.0)
    coordinator.handle(finished(1, t1), now=2.0)
    assert coordinator.finished and coordinator.failure is None
    assert [r.attempt for r in coordinator.results()] == [1, 0]


def test_stale_attempt_result_is_ignored():
    coordinator = StageCoordinator("map", tasks(1), RetryPolicy())
    ((worker, first),) = coordinator.assign([0], now=0.0)
    coordinator.handle(WorkerDied(worker, "killed by SIGKILL"), now=1.0)
    ((worker, second),) = coordinator.assign([1], now=1.0)
    coordinator.handle(finished(0, first, counters={"n": 5}), now=2.0)  # the old attempt reports late
    assert not coordinator.finished
    coordinator.handle(finished(1, second, counters={"n": 1}), now=3.0)
    (result,) = coordinator.results()
    assert result.attempt == 1 and result.counters == {"n": 1}


def test_duplicate_result_for_a_done_shard_is_ignored():
    coordinator = StageCoordinator("map", tasks(2), RetryPolicy())
    (w0, t0), _ = coordinator.assign([0, 1], now=0.0)
    coordinator.handle(finished(w0, t0), now=1.0)
    coordinator.handle(finished(w0, t0), now=1.0)
    assert coordinator.num_done == 1


def test_worker_deaths_cap_aborts_with_stage_shard_and_reason():
    coordinator = StageCoordinator("load_jsonl -> map", tasks(2), RetryPolicy(max_worker_deaths=2))
    ((worker, task), _) = coordinator.assign([0, 1], now=0.0)
    coordinator.handle(WorkerDied(worker, "killed by SIGKILL"), now=1.0)
    ((worker, task),) = coordinator.assign([0], now=1.0)
    coordinator.handle(WorkerDied(worker, "killed by SIGKILL"), now=2.0)
    assert coordinator.finished
    assert isinstance(coordinator.failure, ShardFailedError)
    message = str(coordinator.failure)
    assert "stage 0 (load_jsonl -> map), shard 0 of 2: worker died 2 times" in message and "SIGKILL" in message
    assert coordinator.assign([0], now=3.0) == []


def test_user_error_fails_at_once_by_default_and_chains_the_exception():
    coordinator = StageCoordinator("map", tasks(2), RetryPolicy())
    ((worker, task), _) = coordinator.assign([0, 1], now=0.0)
    coordinator.handle(failed(worker, task), now=1.0)
    assert coordinator.finished
    assert "shard 0 of 2: raised ValueError: bad row" in str(coordinator.failure)
    assert isinstance(coordinator.failure.__cause__, ValueError)


def test_user_error_retries_up_to_max_task_retries():
    coordinator = StageCoordinator("map", tasks(1), RetryPolicy(max_task_retries=2))
    for attempt in range(3):
        ((worker, task),) = coordinator.assign([0], now=float(attempt))
        assert task.attempt == attempt
        coordinator.handle(failed(worker, task), now=float(attempt))
    assert "after 3 attempts" in str(coordinator.failure)


def test_death_of_an_idle_worker_changes_nothing():
    coordinator = StageCoordinator("map", tasks(1), RetryPolicy())
    coordinator.handle(WorkerDied(5, "exited with code 1"), now=0.0)
    assert not coordinator.finished and len(coordinator.assign([0], now=0.0)) == 1


def test_timeouts_are_reported_once_and_count_as_deaths():
    coordinator = StageCoordinator("map", tasks(2), RetryPolicy(task_timeout=10.0, max_worker_deaths=1))
    coordinator.assign([0], now=0.0)
    coordinator.assign([1], now=5.0)
    assert coordinator.next_deadline(now=6.0) == pytest.approx(4.0)
    assert coordinator.timed_out(now=9.0) == []
    assert coordinator.timed_out(now=10.5) == [0]
    assert coordinator.timed_out(now=10.6) == []  # already reported
    coordinator.handle(WorkerDied(0, "killed by SIGKILL"), now=10.7)
    assert "timed out after 10.0s" in str(coordinator.failure)


def test_no_timeout_means_no_deadline():
    coordinator = StageCoordinator("map", tasks(1), RetryPolicy())
    coordinator.assign([0], now=0.0)
    assert coordinator.next_deadline(now=1e9) is None and coordinator.timed_out(now=1e9) == []


def test_empty_stage_is_finished_at_once():
    assert StageCoordinator("map", [], RetryPolicy()).finished
