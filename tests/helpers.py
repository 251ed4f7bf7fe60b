"""Functions the fault tests of several backends share (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import os
import signal
import time
import types

from zephyr_arrow import counters


def kill_own_worker_once(marker_dir: str):
    """A map function that kills its own worker on item 2 the first time (a marker file remembers),
    counting each row it sees in the counter "rows"; it returns ``x * 10``."""

    def run(x):
        counters.increment("rows")
        marker = os.path.join(marker_dir, f"killed-{x}")
        if x == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return x * 10

    return run


def hang_once(marker_dir: str):
    """A map function that hangs on item 0 the first time (a marker file remembers), then returns items."""

    def run(x):
        marker = os.path.join(marker_dir, f"hung-{x}")
        if x == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(600)  # simulates a hung task; the timeout must end it
        return x

    return run


def clock_jumps_per_marker(monkeypatch, marker_dir: str, seconds: float) -> None:
    """The scheduler's clock runs ``seconds`` ahead for every file in ``marker_dir``: ``hang_once``'s
    task leaves one as it starts hanging, and ``WORKER_START_MARKER`` one as a worker starts.

    With a task timeout below ``seconds``, the hung task times out as soon as it signals it
    hangs (and a task would time out at once if a worker's start-up counted against it), while
    every other attempt gets the whole timeout in real time: a test with a timeout of a minute
    runs in seconds, and a slow machine cannot time out a healthy task. Use one worker, so that
    no healthy task runs while the clock jumps.
    """
    from zephyr_arrow.execution import scheduler

    monotonic = time.monotonic
    monkeypatch.setattr(scheduler, "time", types.SimpleNamespace(monotonic=lambda: monotonic() + seconds * len(os.listdir(marker_dir))))


# A worker's sitecustomize.py: leaves a marker file in $ZEPHYR_TEST_START_MARKERS as its process starts.
WORKER_START_MARKER = """
import os
if os.environ.get("ZEPHYR_TEST_START_MARKERS"):
    open(os.path.join(os.environ["ZEPHYR_TEST_START_MARKERS"], f"started-{os.getpid()}"), "w").close()
"""
