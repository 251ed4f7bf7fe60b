"""Fault injection with real worker processes: killed workers, hung tasks, Ctrl-C in the driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from helpers import WORKER_START_MARKER, clock_jumps_per_marker, hang_once, kill_own_worker_once
from zephyr_arrow import Dataset, ShardFailedError, ZephyrContext, ZephyrError


def test_worker_killed_on_first_attempt_is_retried_with_exact_result(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with ZephyrContext(backend="local", max_workers=2, chunk_storage_prefix=str(tmp_path / "chunks")) as ctx:
        refs = ctx.execute(Dataset.from_list(list(range(6)), num_shards=6).map(kill_own_worker_once(str(markers))))
        assert refs.to_pylist() == [x * 10 for x in range(6)]
        assert refs.counters == {"rows": 6}  # the killed attempt's counts never arrive
        # Only the accepted attempt's chunk is part of the output.
        assert [c.path.rsplit("-", 1)[-1] for c in refs.shards[2]] == ["1.parquet"]
    assert os.listdir(markers) == ["killed-2"]


def _fail_fast_or_sleep(x):
    if x == 0:
        raise ValueError("shard 0 fails")
    time.sleep(30)  # killed when shard 0's failure stops the stage
    return x


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_workers_stopped_by_a_failed_run_are_not_mistaken_for_deaths_in_the_next(tmp_path, backend, request):
    options = {"num_cpus_per_worker": 0.5} if backend == "ray" else {}
    if backend == "ray":
        request.getfixturevalue("ray_session")
    # One death allowed per task: a stale death notice from the first run would abort the second.
    with ZephyrContext(backend=backend, max_workers=2, max_worker_deaths=1, chunk_storage_prefix=str(tmp_path), **options) as ctx:
        with pytest.raises(ShardFailedError, match="shard 0 fails"):
            ctx.execute(Dataset.from_list([0, 1], num_shards=2).map(_fail_fast_or_sleep))
        assert ctx.execute(Dataset.from_list(["a", "b", "c", "d"], num_shards=4).map(str.upper)).to_pylist() == ["A", "B", "C", "D"]
        assert ctx.execute(Dataset.from_list([1, 2, 3, 4], num_shards=4).map(lambda x: x * 10)).to_pylist() == [10, 20, 30, 40]


def _always_kill(x):
    if x == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def test_task_that_always_kills_its_worker_aborts_the_run(tmp_path):
    # max_worker_deaths is left at its default, which the message shows: 3.
    with ZephyrContext(backend="local", max_workers=2, chunk_storage_prefix=str(tmp_path)) as ctx:
        with pytest.raises(ShardFailedError) as error:
            ctx.execute(Dataset.from_list([0, 1, 2]).map(_always_kill))
        message = str(error.value)
        assert "shard 1 of 3: worker died 3 times" in message and "killed by SIGKILL" in message
        assert error.value.shard_index == 1
        assert os.listdir(tmp_path) == []  # nothing half-written stays behind
        # The context stays usable: dead workers are replaced.
        assert ctx.execute(Dataset.from_list([5, 6]).map(lambda x: x + 1)).to_pylist() == [6, 7]


def test_hung_task_past_timeout_is_treated_as_dead_and_retried(tmp_path, monkeypatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    clock_jumps_per_marker(monkeypatch, str(markers), seconds=120)
    # One worker: no other task runs while the clock jumps; a death more would fail the run.
    options = {"max_workers": 1, "task_timeout": 60.0, "max_worker_deaths": 2}
    with ZephyrContext(backend="local", chunk_storage_prefix=str(tmp_path / "c"), **options) as ctx:
        refs = ctx.execute(Dataset.from_list([0, 1, 2]).map(hang_once(str(markers))))
        assert refs.to_pylist() == [0, 1, 2]
    assert os.listdir(markers) == ["hung-0"]


def _workers_start_by_running(code: str, tmp_path, monkeypatch) -> None:
    """Worker processes started from now run ``code`` first (as their sitecustomize)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(code)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))


def test_worker_start_up_does_not_count_against_the_task_timeout(tmp_path, monkeypatch):
    # Each worker's start-up moves the clock past the timeout (a marker file per start); so does the hang.
    markers = tmp_path / "markers"
    markers.mkdir()
    _workers_start_by_running(WORKER_START_MARKER, tmp_path, monkeypatch)
    monkeypatch.setenv("ZEPHYR_TEST_START_MARKERS", str(markers))
    clock_jumps_per_marker(monkeypatch, str(markers), seconds=120)
    # One death allowed beyond the hang: the hung task's retry runs on a replacement whose
    # start-up moves the clock again, and would be timed out too if its start-up counted.
    options = {"max_workers": 1, "task_timeout": 60.0, "max_worker_deaths": 2}
    with ZephyrContext(backend="local", chunk_storage_prefix=str(tmp_path / "c"), **options) as ctx:
        refs = ctx.execute(Dataset.from_list([0, 1, 2, 3], num_shards=4).map(hang_once(str(markers))))
        assert refs.to_pylist() == [0, 1, 2, 3]
    assert sorted(name.split("-")[0] for name in os.listdir(markers)) == ["hung", "started", "started"]


def test_a_worker_that_cannot_start_stops_the_run_with_its_reason(tmp_path, monkeypatch):
    _workers_start_by_running("import os\nos._exit(3)\n", tmp_path, monkeypatch)
    with ZephyrContext(backend="local", max_workers=2, chunk_storage_prefix=str(tmp_path / "c")) as ctx:
        with pytest.raises(ZephyrError, match="a local worker process exited with code 3 before it was ready"):
            ctx.execute(Dataset.from_list([1, 2]).map(lambda x: x))
    assert not (tmp_path / "c").exists() or os.listdir(tmp_path / "c") == []


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_replaced_worker_takes_tasks_only_once_it_is_up(backend, request):
    if backend == "ray":
        request.getfixturevalue("ray_session")
        from zephyr_arrow.execution.backends.ray import RayBackend

        workers = RayBackend(num_cpus_per_worker=0.25)
    else:
        from zephyr_arrow.execution.backends.local import LocalBackend

        workers = LocalBackend()

    def poll_until_ready(expected: list[int]) -> list:
        events, deadline = [], time.monotonic() + 60
        while workers.ready_workers != expected and time.monotonic() < deadline:
            events += workers.poll(timeout=1)
        assert workers.ready_workers == expected
        return events

    try:
        assert workers.ready_workers == []
        workers.start(2)
        assert poll_until_ready([0, 1]) == []
        workers.kill(0)
        assert workers.ready_workers == [1]  # its replacement is starting
        events = poll_until_ready([0, 1])
        assert [(type(e).__name__, e.worker) for e in events] == [("WorkerDied", 0)]
    finally:
        workers.shutdown()


def test_killing_a_worker_still_starting_is_a_death_not_a_start_up_failure():
    from zephyr_arrow.execution.backends.local import LocalBackend

    workers = LocalBackend()
    try:
        workers.start(1)
        assert workers.ready_workers == []  # it says it is ready only through poll()
        workers.kill(0)
        assert [(type(e).__name__, e.worker, e.reason) for e in workers.poll(timeout=0)] == [("WorkerDied", 0, "killed by SIGKILL")]
    finally:
        workers.shutdown()


def test_max_workers_defaults_to_the_cpu_count_locally(tmp_path):
    with ZephyrContext(backend="local", chunk_storage_prefix=str(tmp_path)) as ctx:
        assert ctx.max_workers == os.cpu_count()
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path)) as ctx:
        assert ctx.max_workers == 1


def _hang_always(x):
    time.sleep(600)


def test_task_that_always_hangs_aborts_with_timeout(tmp_path):
    with ZephyrContext(backend="local", max_workers=1, chunk_storage_prefix=str(tmp_path), task_timeout=0.5, max_worker_deaths=2) as ctx:
        with pytest.raises(ShardFailedError, match=r"worker died 2 times running it \(last: timed out after 0.5s\)"):
            ctx.execute(Dataset.from_list([0]).map(_hang_always))


DRIVER = textwrap.dedent(
    """
    import json, os, sys, time
    from zephyr_arrow import Dataset, ZephyrContext

    fifo, prefix, backend, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])

    def announce_and_hang(x):
        with open(fifo, "w") as out:
            out.write(f"{os.getpid()}\\n")
        time.sleep(600)

    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=prefix, **options) as ctx:
        ctx.execute(Dataset.from_list([0, 1]).map(lambda x: x).reshard(2).map(announce_and_hang))
    """
)


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_ctrl_c_stops_workers_and_removes_chunks(tmp_path, backend, request):
    options = {}
    if backend == "ray":  # the driver joins the session's Ray
        options = {"address": request.getfixturevalue("ray_session").get_runtime_context().gcs_address, "num_cpus_per_worker": 0.5}
    fifo = str(tmp_path / "pids")
    os.mkfifo(fifo)
    prefix = tmp_path / "chunks"
    prefix.mkdir()
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, fifo, str(prefix), backend, json.dumps(options)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    worker_pids = set()
    while len(worker_pids) < 2:
        with open(fifo) as source:  # blocks until a worker is inside a task
            worker_pids.update(int(line) for line in source.read().split())
    if backend == "local":
        all_workers = {child.pid for child in psutil.Process(driver.pid).children(recursive=True)}
        assert worker_pids <= all_workers
    else:
        all_workers = worker_pids  # Ray's actors are the raylet's children, not the driver's
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode != 0 and "KeyboardInterrupt" in stderr
    processes = [psutil.Process(pid) for pid in all_workers if psutil.pid_exists(pid)]
    if backend == "ray":  # Ray ends a killed actor's process after ray.kill returns: wait for the exits
        processes = psutil.wait_procs(processes, timeout=60)[1]
    assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert os.listdir(prefix) == []


def _fail_while_writing(out_dir: str):
    def run(row):
        if row["i"] == 2500:  # in the third batch: the writer has the first ones in its file
            raise ValueError(f"failed while the output directory held {sorted(os.listdir(out_dir))}")
        return row

    return run


@pytest.mark.parametrize("writer", ["write_jsonl", "write_csv"])
def test_a_failing_pipeline_leaves_no_half_written_output_file(ctx, tmp_path, writer):
    out = tmp_path / "out"
    out.mkdir()
    ds = Dataset.from_list([{"i": i, "text": f"row {i}"} for i in range(3000)], num_shards=1).map(_fail_while_writing(str(out)))
    extension = writer.removeprefix("write_")
    with pytest.raises(ShardFailedError, match=r"failed while the output directory held \['\.part-00000\." + extension + r"\.tmp-") as error:
        ctx.execute(getattr(ds, writer)(str(out / f"part-{{shard:05d}}.{extension}")))
    assert f"part-00000.{extension}'" not in str(error.value)  # only a temporary file was being written
    assert os.listdir(out) == []


def _fail_first_attempts(marker_dir: str, failures: int):
    """Item 1 raises on its first ``failures`` attempts (each attempt leaves a marker file)."""

    def run(x):
        attempt = len([name for name in os.listdir(marker_dir) if name.startswith(f"{x}-")])
        open(os.path.join(marker_dir, f"{x}-{attempt}"), "w").close()
        if x == 1 and attempt < failures:
            raise ValueError(f"attempt {attempt} fails")
        return x * 10

    return run


def test_max_task_retries_retries_user_errors_end_to_end(backend, backend_options, tmp_path):
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=str(tmp_path / "c"), max_task_retries=2, **backend_options) as ctx:
        (tmp_path / "twice").mkdir()
        ds = Dataset.from_list([0, 1, 2], num_shards=3).map(_fail_first_attempts(str(tmp_path / "twice"), failures=2))
        assert ctx.execute(ds).to_pylist() == [0, 10, 20]
        assert sorted(os.listdir(tmp_path / "twice")) == ["0-0", "1-0", "1-1", "1-2", "2-0"]
        (tmp_path / "always").mkdir()
        ds = Dataset.from_list([0, 1, 2], num_shards=3).map(_fail_first_attempts(str(tmp_path / "always"), failures=3))
        with pytest.raises(ShardFailedError, match=r"shard 1 of 3: raised ValueError: attempt 2 fails \(after 3 attempts\)"):
            ctx.execute(ds)
        assert sorted(n for n in os.listdir(tmp_path / "always") if n.startswith("1-")) == ["1-0", "1-1", "1-2"]


def _segfault_once(marker_dir: str, always: bool = False):
    def run(x):
        marker = os.path.join(marker_dir, f"crashed-{x}")
        if x == 1 and (always or not os.path.exists(marker)):
            open(marker, "w").close()
            import ctypes

            ctypes.string_at(0)  # a real segmentation fault, as a crashing C extension would cause
        return x * 10

    return run


def test_a_worker_killed_by_a_segfault_is_replaced_and_its_task_retried(tmp_path):
    with ZephyrContext(backend="local", max_workers=2, chunk_storage_prefix=str(tmp_path / "c"), max_worker_deaths=2) as ctx:
        assert ctx.execute(Dataset.from_list([0, 1, 2], num_shards=3).map(_segfault_once(str(tmp_path)))).to_pylist() == [0, 10, 20]
        with pytest.raises(ShardFailedError, match=r"shard 1 of 3: worker died 2 times running it \(last: killed by SIGSEGV\)"):
            ctx.execute(Dataset.from_list([0, 1, 2], num_shards=3).map(_segfault_once(str(tmp_path), always=True)))
