"""Progress of a run: a bar per stage on a terminal, sparse log lines otherwise, a summary at the end.

On a terminal (stderr is a TTY) the bar redraws in place and each stage ends with one
summary line. Elsewhere (a batch job, a notebook's log, CI) lines go to the ``zephyr_arrow``
logger at INFO: each stage's summary, and a progress line at most every ``LOG_EVERY_SECONDS``
per stage. While nobody has configured logging (no handler on the way to the root logger, no
level set on ``zephyr_arrow``), the summaries are printed to stderr anyway, one line per stage,
as Ray Data and Spark do. ``logging.getLogger("zephyr_arrow").setLevel(logging.WARNING)`` or
``ZephyrContext(progress=False)`` silences them.
"""

from __future__ import annotations

import logging
import sys
import time

from zephyr_arrow.execution.coordinator import Event, TaskFinished
from zephyr_arrow.execution.stats import TaskStats
from zephyr_arrow.execution.tasks import TaskResult
from zephyr_arrow.planner import Stage

logger = logging.getLogger("zephyr_arrow")
LOG_EVERY_SECONDS = 10.0


class Progress:
    def __init__(self, enabled: bool | None = None) -> None:
        on_terminal = sys.stderr.isatty()
        self.terminal = on_terminal if enabled is None else enabled
        # progress=False keeps the summaries in the logger, printed only where logging is configured to.
        self._print_summaries = enabled is None and not on_terminal
        self.summaries: list[str] = []
        self._stage: Stage | None = None
        self._total = self._done = self._rows = 0
        self._started = self._last_line = 0.0

    def start_stage(self, stage: Stage, num_tasks: int) -> None:
        self._stage, self._total, self._done, self._rows = stage, num_tasks, 0, 0
        self._started = self._last_line = time.monotonic()

    def update(self, event: Event) -> None:
        if not isinstance(event, TaskFinished):
            return
        self._done += 1
        self._rows += event.result.stats.rows_out
        now = time.monotonic()
        rate = self._rows / max(now - self._started, 1e-9)
        line = f"[{self._stage.index}] {self._done}/{self._total} shards, {self._rows:,} rows ({rate:,.0f} rows/s)"
        if self.terminal:
            width = 24
            filled = width * self._done // max(self._total, 1)
            sys.stderr.write(f"\r{'#' * filled}{'.' * (width - filled)} {line}\033[K")
            sys.stderr.flush()
        elif now - self._last_line >= LOG_EVERY_SECONDS:
            self._last_line = now
            logger.info("%s", line)

    def finish_stage(self, stage: Stage, results: list[TaskResult]) -> TaskStats:
        stats = sum((r.stats for r in results), TaskStats())
        seconds = time.monotonic() - self._started
        summary = (
            f"[{stage.index}] {shorten(stage.name)}: {len(results)} shards, {stats.rows_in:,} rows in, "
            f"{stats.rows_out:,} rows out, {stats.chunks_out} chunks, {stats.bytes_out / 2**20:,.1f} MB, {seconds:.2f}s"
        )
        self.summaries.append(summary)
        if self.terminal:
            sys.stderr.write(f"\r{summary}\033[K\n")
            sys.stderr.flush()
        elif self._print_summaries and logger.level == logging.NOTSET and not logger.hasHandlers():
            print(f"zephyr_arrow: {summary}", file=sys.stderr, flush=True)
        else:
            logger.info("%s", summary)
        return stats


def shorten(name: str, width: int = 70) -> str:
    """A stage name cut to about ``width`` in the middle, at op boundaries where it can be:
    its source and its last ops both show.

    >>> shorten("from_files('data/*.jsonl.gz') -> load_jsonl -> filter(keep) -> map(clean) -> write_parquet", 60)
    "from_files('data/*.jsonl.gz') -> … -> write_parquet"
    >>> shorten("x" * 100, 21)
    'xxxxxxxxx … xxxxxxxxx'
    """
    if len(name) <= width:
        return name
    first, *rest = name.split(" -> ")
    tail: list[str] = []
    while rest and len(first) + len(" -> … -> ") + len(" -> ".join([rest[-1], *tail])) <= width:
        tail.insert(0, rest.pop())
    if tail:
        return f"{first} -> … -> {' -> '.join(tail)}"
    head = (width - 3) // 2
    return f"{name[:head]} … {name[len(name) - (width - 3 - head):]}"
