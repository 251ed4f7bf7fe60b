"""The ray backend: long-lived worker actors on a Ray cluster, or on a Ray started here.

The only module that imports ray, and only when a ``RayBackend`` is made, so
``import zephyr_arrow`` works without it. It is the local backend built from Ray's
own parts: one actor per worker slot (CPUs and memory per actor configurable); a
stage is put into the object store once and fetched by each actor once; a task is
an actor call whose object ref ``poll`` waits on with ``ray.wait``. An exception in
user code comes back as ``TaskFailed``; a task whose actor died (``ray.kill``, a
crash, its node lost) comes back as ``WorkerDied`` and the slot gets a new actor, so
the coordinator retries the task with a new attempt, as on the local backend.

A slot appears once its actor is up: on a busy or autoscaling cluster the stage
runs on the actors that started while Ray places the others.

Connecting: if this process already called ``ray.init`` (with your own
``runtime_env``, say), that connection is used and left open. Otherwise the backend
calls ``ray.init(address)`` itself and ``ray.shutdown()`` when it shuts down, which
also stops a Ray it started on this machine.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from dataclasses import dataclass
from typing import Any

import cloudpickle

from zephyr_arrow.errors import PlanError, ZephyrError
from zephyr_arrow.execution.backends.base import pickle_stage, task_error
from zephyr_arrow.execution.coordinator import Event, TaskFailed, TaskFinished, WorkerDied, WorkerId
from zephyr_arrow.execution.tasks import ShardTask, TaskError, TaskResult
from zephyr_arrow.execution.worker.task import worker_environment
from zephyr_arrow.planner import Stage

StageKey = tuple[str, str]  # ShardTask.stage_key

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_REPLACEMENT_STARTS = 3  # tries to start an actor in a slot whose actor died, before the run fails

logger = logging.getLogger("zephyr_arrow")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise ImportError(f"backend='ray' needs Ray ({error}): pip install 'zephyr_arrow[ray]'") from error
    return ray


class _WorkerActor:
    """The body of a worker actor: runs one task at a time and keeps the current stage between tasks."""

    def __init__(self) -> None:
        self._stage: Stage | None = None

    def ready(self) -> bool:
        return True

    def run(self, stage_bytes: bytes | None, task: ShardTask) -> TaskResult | TaskError:
        from zephyr_arrow.execution.worker.task import run_task_in_worker

        try:
            if stage_bytes is not None:
                self._stage = None  # a stage that fails to load must not leave the previous one in place
                self._stage = cloudpickle.loads(stage_bytes)
            return run_task_in_worker(self._stage, task)
        except Exception as error:
            return task_error(task, error)


@functools.cache
def _actor_class() -> Any:
    return _import_ray().remote(_WorkerActor)


@dataclass
class _Slot:
    actor: Any  # None while its replacement starts
    stage_key: StageKey | None = None  # the stage this actor holds


@dataclass(frozen=True, slots=True)
class _Running:
    worker: WorkerId
    task: ShardTask


class RayBackend:
    """Worker actors on a Ray cluster, one task at a time each.

    Args:
        address: used only when this process has not called ``ray.init``: None starts Ray on
            this machine (or joins the cluster in ``RAY_ADDRESS``), "auto" joins the cluster this
            machine is part of, "ray://head:10001" connects through Ray Client.
        num_cpus_per_worker: CPUs each worker actor reserves (fractions allowed).
        memory_per_worker: bytes of memory each worker actor reserves (None: no reservation).
        runtime_env: a Ray runtime environment for the worker actors, e.g.
            ``{"pip": ["zephyr_arrow", "my-tokenizer"]}`` on a cluster without them installed.
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus_per_worker: float = 1,
        memory_per_worker: int | None = None,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        cpus_ok = isinstance(num_cpus_per_worker, int | float) and not isinstance(num_cpus_per_worker, bool)
        if not cpus_ok or num_cpus_per_worker < 0:
            raise PlanError(f"num_cpus_per_worker must be a number >= 0, got {num_cpus_per_worker!r}")
        if memory_per_worker is not None and (not isinstance(memory_per_worker, int) or memory_per_worker <= 0):
            raise PlanError(f"memory_per_worker must be a positive number of bytes, got {memory_per_worker!r}")
        ray = self._ray = _import_ray()
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            ray.init(address=address)
        # max_restarts=0: a dead actor's slot gets a fresh actor from poll(), which knows the
        # stage it held is gone with it.
        self._actor_options: dict[str, Any] = {"num_cpus": num_cpus_per_worker, "max_restarts": 0}
        if memory_per_worker is not None:
            self._actor_options["memory"] = memory_per_worker
        # Actors get the environment a worker process runs best in; the user's variables win.
        runtime_env = dict(runtime_env or {})
        runtime_env["env_vars"] = {**worker_environment(), **runtime_env.get("env_vars", {})}
        self._actor_options["runtime_env"] = runtime_env
        self._slots: list[_Slot] = []
        # ref of an actor's ready() -> (the actor, the slot it replaces or None for a new one), until it is up
        self._starting: dict[Any, tuple[Any, WorkerId | None]] = {}
        self._failed_starts: dict[WorkerId, int] = {}  # a slot's replacements that failed to start, in a row
        self._running: dict[Any, _Running] = {}  # ref of a run() -> its worker and task
        self._stage_refs: dict[StageKey, Any] = {}
        self._pending: list[Event] = []

    @property
    def default_num_workers(self) -> int:
        """As many actors as the cluster's CPUs hold (its CPU count when actors reserve none)."""
        cpus, per_worker = self._ray.cluster_resources().get("CPU", 1), self._actor_options["num_cpus"]
        return max(int(cpus // per_worker if per_worker else cpus), 1)

    @property
    def ready_workers(self) -> list[WorkerId]:
        return [index for index, slot in enumerate(self._slots) if slot.actor is not None]

    def start(self, num_workers: int) -> None:
        while len(self._slots) + sum(1 for _, replaces in self._starting.values() if replaces is None) < num_workers:
            self._start_actor(replaces=None)

    def _start_actor(self, replaces: WorkerId | None) -> None:
        actor = _actor_class().options(**self._actor_options).remote()
        self._starting[actor.ready.remote()] = (actor, replaces)

    def submit(self, worker: WorkerId, stage: Stage, task: ShardTask) -> None:
        slot = self._slots[worker]
        key = task.stage_key
        stage_ref = None
        if slot.stage_key != key:
            stage_ref = self._stage_ref(key, stage)
            slot.stage_key = key
        # A top-level ObjectRef argument reaches the actor as the bytes it names.
        self._running[slot.actor.run.remote(stage_ref, task)] = _Running(worker, task)

    def _stage_ref(self, key: StageKey, stage: Stage) -> Any:
        if key not in self._stage_refs:
            self._stage_refs.clear()
            self._stage_refs[key] = self._ray.put(pickle_stage(stage))
        return self._stage_refs[key]

    def poll(self, timeout: float | None) -> list[Event]:
        waiting = [*self._running, *self._starting]
        ready: list[Any] = []
        if waiting:
            first, _ = self._ray.wait(waiting, num_returns=1, timeout=0 if self._pending else timeout)
            if first:
                ready, _ = self._ray.wait(waiting, num_returns=len(waiting), timeout=0)
        events, self._pending = self._pending, []
        for ref in ready:
            if ref in self._starting:
                self._join(ref)
            else:
                events.append(self._outcome(ref))
        return events

    def _join(self, ref: Any) -> None:
        """An actor answered ready(): it fills the slot it replaces, or becomes the next one.

        An actor that fails to start ends the run, as an environment that cannot import
        zephyr_arrow would fail every actor, unless it replaces one that ran: the environment
        worked then, so the failure (a node lost while the actor was placed) is retried, up to
        ``_REPLACEMENT_STARTS`` times in a row per slot.
        """
        actor, replaces = self._starting.pop(ref)
        try:
            self._ray.get(ref)
        except self._ray.exceptions.RayError as error:
            failures = self._failed_starts.get(replaces, 0) + 1
            if replaces is not None and failures < _REPLACEMENT_STARTS:
                self._failed_starts[replaces] = failures
                reason = (_plain(error).splitlines() or [""])[0]
                logger.warning("a replacement for Ray worker %d could not start (%s); starting another", replaces, reason)
                self._start_actor(replaces)
                return
            raise ZephyrError(
                f"a Ray worker actor could not start: {_plain(error)}\nEvery node must be able to import "
                "zephyr_arrow and the modules your functions use: install them in the cluster's image, or pass "
                "runtime_env={'pip': [...]} (or 'py_modules') to ZephyrContext(backend='ray', ...)."
            ) from error
        if replaces is None:
            self._slots.append(_Slot(actor))
        else:
            self._slots[replaces] = _Slot(actor)
            self._failed_starts.pop(replaces, None)

    def _outcome(self, ref: Any) -> Event:
        running = self._running.pop(ref)
        exceptions = self._ray.exceptions
        try:
            outcome = self._ray.get(ref)
        except exceptions.RayTaskError as error:
            # Raised outside run()'s own handler: a BaseException from user code, or arguments
            # that could not be unpickled on the worker.
            outcome = _task_error_from_ray(running.task, error)
        except exceptions.RayError as error:
            # The actor died (killed, crashed, out of memory, node lost) or its result was lost.
            self._replace(running.worker)
            return WorkerDied(running.worker, _death_reason(error))
        if isinstance(outcome, TaskError):
            self._slots[running.worker].stage_key = None  # the stage may be what failed: send it again
            return TaskFailed(running.worker, outcome)
        return TaskFinished(running.worker, outcome)

    def _replace(self, worker: WorkerId) -> None:
        """Kill the slot's actor and start another; the slot takes tasks again once it is up."""
        with contextlib.suppress(Exception):  # make sure it is gone, whatever state it is in
            self._ray.kill(self._slots[worker].actor)
        self._slots[worker] = _Slot(None)
        self._start_actor(replaces=worker)

    def kill(self, worker: WorkerId) -> None:
        for ref in [ref for ref, running in self._running.items() if running.worker == worker]:
            del self._running[ref]
        self._replace(worker)
        self._pending.append(WorkerDied(worker, "killed by ray.kill"))

    def shutdown(self) -> None:
        for actor in [slot.actor for slot in self._slots if slot.actor is not None] + [a for a, _ in self._starting.values()]:
            with contextlib.suppress(Exception):
                self._ray.kill(actor)
        self._slots.clear()
        self._starting.clear()
        self._running.clear()
        self._stage_refs.clear()
        self._pending.clear()
        if self._owns_connection:
            self._ray.shutdown()
            self._owns_connection = False


def _plain(error: BaseException) -> str:
    return _ANSI_ESCAPE.sub("", str(error))


def _death_reason(error: BaseException) -> str:
    """The line of Ray's message that says why the actor died, e.g. "killed by `ray.kill`"."""
    lines = _plain(error).splitlines() or [""]
    because = [line for line in lines if line.startswith("The actor is dead because")]
    return f"Ray actor died ({type(error).__name__}): {(because or lines)[0]}"


def _task_error_from_ray(task: ShardTask, error: Any) -> TaskError:
    cause = error.cause if isinstance(error.cause, BaseException) else None
    shown = cause if cause is not None else error
    return TaskError(task.stage_index, task.shard_index, task.attempt, cause, f"{type(shown).__name__}: {shown}", _plain(error))
