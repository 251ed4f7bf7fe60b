"""What a task did, and counters; both add up (a stage's is ``sum(results, TaskStats())``)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class TaskStats:
    rows_in: int = 0
    rows_out: int = 0
    chunks_out: int = 0
    bytes_out: int = 0
    seconds: float = 0.0

    def __add__(self, other: TaskStats) -> TaskStats:
        return TaskStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


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
