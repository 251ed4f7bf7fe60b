"""A driver killed mid-run takes its workers with it (local processes, Ray actors); SIGTERM stops a run as Ctrl-C does."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

DRIVER = textwrap.dedent(
    """
    import os, sys, time
    from zephyr_arrow import Dataset, ZephyrContext

    fifo, backend = sys.argv[1], sys.argv[2]

    def busy(x):
        with open(fifo, "w") as out:  # tells the test this worker is running a task
            out.write(f"{os.getpid()}\\n")
        time.sleep(300)  # the task's work: far longer than the test waits
        return x

    options = {"num_cpus_per_worker": 0.5} if backend == "ray" else {}
    with ZephyrContext(backend=backend, max_workers=2, progress=False, **options) as ctx:
        print(ctx.chunk_storage_prefix, flush=True)
        ctx.execute(Dataset.from_list([0, 1], num_shards=2).map(busy))
    """
)


@pytest.fixture(params=["local", "ray"])
def running_driver(request, tmp_path):
    """A driver whose two workers are each in the middle of a task; yields (driver, worker pids, chunk prefix).
    On Ray the driver starts a Ray of its own (not the test session's), as a script run by hand does."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    driver = subprocess.Popen(
        [sys.executable, str(script), str(fifo), request.param], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    prefix = driver.stdout.readline().strip()
    workers = [psutil.Process(int(line)) for line in _lines_from(fifo, 2, driver)]
    yield driver, workers, prefix
    driver.kill()
    for worker in workers:
        if worker.is_running():
            worker.kill()


def _lines_from(fifo, count: int, driver: subprocess.Popen) -> list[str]:
    """The first ``count`` lines written to ``fifo``; fails (never hangs) if the driver exits first."""
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keep_open = os.open(fifo, os.O_WRONLY)  # a writer of our own: no EOF while the workers have not opened it yet
    data = b""
    try:
        deadline = time.monotonic() + 120
        while data.count(b"\n") < count:
            assert driver.poll() is None, f"the driver exited before its workers started: {driver.stderr.read()}"
            assert time.monotonic() < deadline, "the workers did not start their tasks within 120 s"
            if select.select([reader], [], [], 1.0)[0]:  # wakes on data, or each second to look at the driver
                data += os.read(reader, 4096)
    finally:
        os.close(keep_open)
        os.close(reader)
    return data.decode().split()[:count]


def test_workers_die_with_a_driver_killed_by_sigkill(running_driver):
    driver, workers, _ = running_driver
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers {[w.pid for w in alive]} outlived their killed driver"


def test_sigterm_stops_the_run_like_ctrl_c(running_driver):
    driver, workers, prefix = running_driver
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=60) == 128 + signal.SIGTERM, driver.stderr.read()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers {[w.pid for w in alive]} outlived a terminated run"
    assert not os.path.exists(prefix), "a terminated run's chunks are deleted, as on Ctrl-C"
