"""User counters and the worker context, for use inside user functions.

    from zephyr_arrow import counters
    def keep(doc):
        counters.increment("docs/seen")
        return doc["score"] > 0.5

Counters are summed over every successful task (a retried task counts once) and come
back on the result: ``ctx.execute(ds).counters``. Outside a run, every call does
nothing. ``worker_ctx().get_shared(name)`` returns an object broadcast with
``ctx.put(name, obj)``, loaded once per worker process.

Zephyr's scoped API works as in Zephyr: ``counters.pipeline``, ``counters.stage(name)`` and
``counters.current_stage()`` give ``ScopedCounters`` with ``update_counter`` (by the counter's
aggregation; the first call sets it), ``set_counter`` (overwrites), ``set_aggregation`` and
``get_counters``. A counter is one name whatever its scope (the scope is a label that
``get_counters`` filters by). ``Aggregation.SUM`` (the default), ``MAX`` and ``MIN`` combine
tasks as they say; ``AVERAGE`` is the mean of every value given, weighted by how many each task
saw (Zephyr averages the tasks' means and truncates to an int).

    counters.pipeline.set_aggregation("longest", counters.Aggregation.MAX)
    counters.pipeline.update_counter("longest", len(doc["text"]))
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


class Aggregation(str, enum.Enum):
    """How a counter's values combine, within a task and over tasks."""

    SUM = "sum"
    AVERAGE = "average"
    MAX = "max"
    MIN = "min"


@dataclass
class _Collected:
    shared: dict[str, str]  # what ctx.put shared: name -> path of the pickled object
    stage: str = ""  # the running stage's name, as counters.current_stage() scopes it
    totals: dict[str, int | float] = field(default_factory=dict)
    aggregations: dict[str, Aggregation] = field(default_factory=dict)  # where set; else SUM
    observations: dict[str, int] = field(default_factory=dict)  # values folded into each (by update; increment skips SUMs)
    scopes: dict[str, str | None] = field(default_factory=dict)  # the stage each counter was last given under

    def update(self, name: str, value: int | float, scope: str | None) -> None:
        if name not in self.totals:  # the first value sets the counter, and its scope label
            self.totals[name] = value
            if scope is not None:
                self.scopes[name] = scope
        else:
            aggregation = self.aggregations.get(name, Aggregation.SUM)
            self.totals[name] = _fold(aggregation, self.totals[name], self.observations.get(name, 1), value, 1)
        self.observations[name] = self.observations.get(name, 0) + 1

    def set(self, name: str, value: int | float, scope: str | None) -> None:
        self.totals[name] = value
        self.observations[name] = 1
        if scope is None:
            self.scopes.pop(name, None)
        else:
            self.scopes[name] = scope

    def modes(self) -> dict[str, tuple[str, int]]:
        """Each counter not summed: its aggregation and how many values it folds (for a weighted mean)."""
        return {
            name: (aggregation.value, self.observations.get(name, 1))
            for name, aggregation in self.aggregations.items()
            if name in self.totals and aggregation is not Aggregation.SUM
        }


def _fold(aggregation: Aggregation, value: int | float, weight: int, other: int | float, other_weight: int) -> int | float:
    if aggregation is Aggregation.MAX:
        return max(value, other)
    if aggregation is Aggregation.MIN:
        return min(value, other)
    if aggregation is Aggregation.AVERAGE:
        total = weight + other_weight
        return (value * weight + other * other_weight) / total if total else value
    return value + other


class CounterTotals:
    """The counters of a run's tasks combined, each by its aggregation (the driver keeps one per run)."""

    def __init__(self) -> None:
        self.values: dict[str, int | float] = {}
        self._modes: dict[str, tuple[Aggregation, int]] = {}

    def add(self, values: dict[str, int | float], modes: dict[str, tuple[str, int]]) -> None:
        for name, value in values.items():
            aggregation, weight = modes.get(name, ("sum", 1))
            aggregation = Aggregation(aggregation)
            if name not in self.values:
                self.values[name] = value
                self._modes[name] = (aggregation, weight)
                continue
            # A counter two tasks aggregate differently keeps the first one's way (as in Zephyr).
            first, seen = self._modes[name]
            self.values[name] = _fold(first, self.values[name], seen, value, weight)
            self._modes[name] = (first, seen + weight)

    def add_all(self, results: Iterable[Any]) -> None:
        """Add each task result's counters (``TaskResult.counters`` and ``counter_modes``)."""
        for result in results:
            self.add(result.counters, result.counter_modes)


_current: contextvars.ContextVar[_Collected | None] = contextvars.ContextVar("zephyr_arrow_task", default=None)
_shared_cache: dict[str, Any] = {}


@contextlib.contextmanager
def collecting(shared: dict[str, str], stage: str = "") -> Iterator[_Collected]:
    """Collect the counters of one task (used by the worker around each task); ``shared``: the run's
    ``ctx.put`` objects; ``stage``: the running stage's name."""
    collected = _Collected(shared, stage)
    token = _current.set(collected)
    try:
        yield collected
    finally:
        _current.reset(token)


class ScopedCounters:
    """Counters under one scope: the pipeline (``counters.pipeline``) or a stage (``counters.stage(name)``)."""

    def __init__(self, stage: str | None) -> None:
        self.stage = stage

    def update_counter(self, name: str, value: int | float) -> None:
        """Fold ``value`` into counter ``name`` by its aggregation (SUM adds); the first value sets it."""
        collected = _current.get()
        if collected is not None:
            collected.update(name, value, self.stage)

    def set_counter(self, name: str, value: int | float) -> None:
        """Overwrite counter ``name`` with ``value`` in this task (the tasks' values still combine)."""
        collected = _current.get()
        if collected is not None:
            collected.set(name, value, self.stage)

    def set_aggregation(self, name: str, aggregation: Aggregation) -> None:
        """How counter ``name`` combines (per name, whatever the scope); SUM unless set."""
        collected = _current.get()
        if collected is not None:
            collected.aggregations[name] = Aggregation(aggregation)

    def get_counters(self) -> dict[str, int | float]:
        """This task's counters last given under this scope (empty outside a task)."""
        collected = _current.get()
        if collected is None:
            return {}
        return {name: value for name, value in collected.totals.items() if collected.scopes.get(name) == self.stage}


pipeline = ScopedCounters(None)


def stage(name: str) -> ScopedCounters:
    """Counters labelled with stage ``name``."""
    return ScopedCounters(name)


def current_stage() -> ScopedCounters:
    """Counters labelled with the running stage's name (``counters.pipeline`` outside a task)."""
    collected = _current.get()
    return pipeline if collected is None else ScopedCounters(collected.stage)


def increment(name: str, value: int | float = 1) -> None:
    """Add ``value`` to counter ``name`` (a no-op outside a running task): ``pipeline.update_counter``."""
    collected = _current.get()
    if collected is None:
        return
    if name in collected.aggregations:
        collected.update(name, value, None)
    else:  # the common case, called per row: a plain sum
        collected.totals[name] = collected.totals.get(name, 0) + value


def set_counter(name: str, value: int | float) -> None:
    """``pipeline.set_counter``."""
    pipeline.set_counter(name, value)


def get_counters() -> dict[str, int | float]:
    """This task's counters so far, whatever their scope (empty outside a task)."""
    collected = _current.get()
    return dict(collected.totals) if collected is not None else {}


@dataclass(frozen=True)
class WorkerContext:
    """What a user function can reach while it runs on a worker."""

    shared: dict[str, str]  # name -> path of the pickled object
    stage: str = ""

    def current_stage_name(self) -> str:
        """The running stage's name, as ``counters.current_stage()`` scopes it."""
        return self.stage

    def get_shared(self, name: str) -> Any:
        """The object put with ``ctx.put(name, obj)``; loaded once per worker process."""
        path = self.shared.get(name)
        if path is None:
            known = ", ".join(sorted(self.shared)) or "none"
            raise KeyError(f"no shared object named {name!r} (ctx.put names: {known})")
        if path not in _shared_cache:
            import cloudpickle
            import fsspec

            with fsspec.open(path, "rb") as source:
                _shared_cache[path] = cloudpickle.load(source)
        return _shared_cache[path]

    def increment(self, name: str, value: int | float = 1) -> None:
        """Add ``value`` to counter ``name``, as ``counters.increment`` does."""
        increment(name, value)


def worker_ctx() -> WorkerContext:
    """The running task's worker context; RuntimeError outside a task."""
    collected = _current.get()
    if collected is None:
        raise RuntimeError("worker_ctx() is only available inside a function run by ZephyrContext.execute()")
    return WorkerContext(collected.shared, collected.stage)
