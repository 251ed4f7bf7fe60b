"""Functions the fault tests of several backends share (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import os
import time
import types


def hang_once(marker_dir: str):
    """A map function that hangs on item 0 the first time (a marker file remembers), then returns items."""

    def run(x):
        marker = os.path.join(marker_dir, f"hung-{x}")
        if x == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(600)  # simulates a hung task; the timeout must end it
        return x

    return run


def clock_jumps_once_hung(monkeypatch, marker_dir: str, seconds: float) -> None:
    """The scheduler's clock runs ``seconds`` ahead from the moment ``hang_once``'s task has
    started hanging (its marker file exists), and only from then.

    With a task timeout below ``seconds`` the hung task times out as soon as it signals it
    hangs, while every other attempt gets the whole timeout in real time: a test with a
    timeout of a minute runs in a second, and a slow machine cannot time out a healthy task.
    """
    from zephyr_arrow.execution import scheduler

    hung = os.path.join(marker_dir, "hung-0")
    monotonic = time.monotonic
    monkeypatch.setattr(scheduler, "time", types.SimpleNamespace(monotonic=lambda: monotonic() + (seconds if os.path.exists(hung) else 0.0)))
