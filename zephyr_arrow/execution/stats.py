"""What a task did, and counters; both add up (a stage's is ``sum(results, TaskStats())``).

The engine's own counts (``count``: shuffle files written, ...) are collected apart from the
user's counters (``zephyr_arrow.counters``), so ``refs.counters`` holds only the user's and
Zephyr's, and the run's statistics, ``refs.stats``, the engine's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, fields

SHUFFLE_FILES = "shuffle/files_written"  # scatter files, merge-pass files and output chunks

_engine_counts: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar("zephyr_arrow_engine", default=None)
_columns_seen: contextvars.ContextVar[dict[tuple[str, ...], set[str]] | None] = contextvars.ContextVar(
    "zephyr_arrow_columns_seen", default=None
)


@dataclass(frozen=True, slots=True)
class TaskStats:
    rows_in: int = 0
    rows_out: int = 0
    chunks_out: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    bytes_in: int = 0  # Arrow bytes of the rows read (a carried item counts none)
    cpu_seconds: float = 0.0  # user + system CPU time of the worker process while the task ran
    peak_rss_bytes: int = 0  # the worker process's peak resident memory while the task ran (where measurable)

    def __add__(self, other: TaskStats) -> TaskStats:
        added = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        added["peak_rss_bytes"] = max(self.peak_rss_bytes, other.peak_rss_bytes)  # a peak does not add up
        return TaskStats(**added)


@contextlib.contextmanager
def collecting() -> Iterator[dict[str, int]]:
    """Collect the engine's counts of one task (used by the worker around each task)."""
    counts: dict[str, int] = {}
    token = _engine_counts.set(counts)
    try:
        yield counts
    finally:
        _engine_counts.reset(token)


def count(name: str, value: int = 1) -> None:
    """Add ``value`` to the engine's count ``name`` for the running task (a no-op outside one)."""
    counts = _engine_counts.get()
    if counts is not None:
        counts[name] = counts.get(name, 0) + value


@contextlib.contextmanager
def seeing_columns() -> Iterator[dict[tuple[str, ...], set[str]]]:
    """Collect, per op of one task that names columns (a ``select``, an ``aggregate``'s map
    side; keyed by ``columns_used()``), the columns the rows reaching it had."""
    seen: dict[tuple[str, ...], set[str]] = {}
    token = _columns_seen.set(seen)
    try:
        yield seen
    finally:
        _columns_seen.reset(token)


def columns_seen(used: tuple[str, ...]) -> set[str] | None:
    """The running task's set of the columns the rows reaching an op that uses ``used`` had
    (None outside a task), which the coordinator unions over a stage's tasks."""
    seen = _columns_seen.get()
    return None if seen is None else seen.setdefault(used, set())


def add_counters(total: dict[str, int | float], more: dict[str, int | float]) -> dict[str, int | float]:
    merged = dict(total)
    for name, value in more.items():
        merged[name] = merged.get(name, 0) + value
    return merged


def sum_counters(counter_sets) -> dict[str, int | float]:
    """Counters of several tasks added up (each set once)."""
    total: dict[str, int | float] = {}
    for counters in counter_sets:
        total = add_counters(total, counters)
    return total
