"""User counters and the worker context, for use inside user functions.

    from zephyr_arrow import counters
    def keep(doc):
        counters.increment("docs/seen")
        return doc["score"] > 0.5

Counters are summed over every successful task (a retried task counts once) and come
back on the result: ``ctx.execute(ds).counters``. Outside a run, ``increment`` does
nothing. ``worker_ctx().get_shared(name)`` returns an object broadcast with
``ctx.put(name, obj)``, loaded once per worker process.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Collected:
    shared: dict[str, str]  # what ctx.put shared: name -> path of the pickled object
    totals: dict[str, int | float] = field(default_factory=dict)


_current: contextvars.ContextVar[_Collected | None] = contextvars.ContextVar("zephyr_arrow_task", default=None)
_shared_cache: dict[str, Any] = {}


@contextlib.contextmanager
def collecting(shared: dict[str, str]) -> Iterator[_Collected]:
    """Collect the counters of one task (used by the worker around each task); ``shared``: the run's ``ctx.put`` objects."""
    collected = _Collected(shared)
    token = _current.set(collected)
    try:
        yield collected
    finally:
        _current.reset(token)


def increment(name: str, value: int | float = 1) -> None:
    """Add ``value`` to counter ``name`` (a no-op outside a running task)."""
    collected = _current.get()
    if collected is not None:
        collected.totals[name] = collected.totals.get(name, 0) + value


def get_counters() -> dict[str, int | float]:
    """This task's counters so far (empty outside a task)."""
    collected = _current.get()
    return dict(collected.totals) if collected is not None else {}


@dataclass(frozen=True)
class WorkerContext:
    """What a user function can reach while it runs on a worker."""

    shared: dict[str, str]  # name -> path of the pickled object

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
    return WorkerContext(collected.shared)
