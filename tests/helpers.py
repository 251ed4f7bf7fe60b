"""Functions the fault tests of several backends share (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import os
import time


def hang_once(marker_dir: str):
    """A map function that hangs on item 0 the first time (a marker file remembers), then returns items."""

    def run(x):
        marker = os.path.join(marker_dir, f"hung-{x}")
        if x == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(600)  # simulates a hung task; the timeout must end it
        return x

    return run
