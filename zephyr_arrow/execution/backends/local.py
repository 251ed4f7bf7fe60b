"""The local backend: long-lived worker processes on this machine (the default).

Workers are fresh interpreters (``python -m zephyr_arrow.execution.backends.local``),
not forks, so threads and open handles of the driver never leak into them, and unlike
multiprocessing's spawn they never re-run the user's main script: a pipeline script
needs no ``if __name__ == "__main__"`` guard. They live until the context closes, so
whatever a user function caches in a module global (a tokenizer, a model) is built
once per worker. Each stage's ops travel to a worker once, with cloudpickle (lambdas,
closures and functions defined in ``__main__`` work); tasks and results are small
messages over a socket pair. The driver waits on the sockets and on the processes'
pidfds together, so a result or a death wakes it at once: no polling, no sleeps.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import cloudpickle

from zephyr_arrow.errors import ZephyrError
from zephyr_arrow.execution.backends.base import pickle_stage, task_error
from zephyr_arrow.execution.coordinator import Event, TaskFailed, TaskFinished, WorkerDied, WorkerId, describe_exit
from zephyr_arrow.execution.tasks import ShardTask
from zephyr_arrow.execution.worker.task import worker_environment
from zephyr_arrow.planner import Stage

_STOP_GRACE_SECONDS = 5.0


def _worker_main(connection: Connection, driver_pid: int) -> None:
    """A worker process: receive stages and tasks, run them, send results back."""
    # Ctrl-C reaches the whole process group; the driver decides what stops, and when.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_driver(driver_pid)
    sys.path[:] = connection.recv()  # import what the driver can import
    from zephyr_arrow.execution.worker.task import run_task_in_worker

    connection.send(("ready", None))  # tasks are given only from now: start-up never counts against a timeout
    stages: dict[tuple[str, str], Stage] = {}
    while True:
        try:
            kind, payload = connection.recv()
        except EOFError:
            return  # the driver is gone
        if kind == "stop":
            return
        if kind == "stage":
            key, stage_bytes = payload
            stages.clear()  # one stage runs at a time; older ones are done with
            stages[key] = cloudpickle.loads(stage_bytes)
            continue
        task: ShardTask = cloudpickle.loads(payload)
        stage = stages[task.stage_key]
        try:
            connection.send(("done", run_task_in_worker(stage, task)))
        except Exception as error:
            connection.send(("error", task_error(task, error)))


def _exit_with_driver(driver_pid: int) -> None:
    """End this process as soon as the driver's is gone, even mid-task: a killed driver's
    workers would go on writing outputs nobody will read. A thread waits on the driver's
    pidfd; where there is none, it checks every half second whether the worker was orphaned."""

    def watch() -> None:
        try:
            pidfd = os.pidfd_open(driver_pid)
        except (AttributeError, OSError):
            while os.getppid() == driver_pid:
                time.sleep(0.5)
        else:
            select.select([pidfd], [], [])
        os._exit(1)

    if os.getppid() != driver_pid:  # it died while this process started
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-driver", daemon=True).start()


@dataclass
class _Worker:
    process: subprocess.Popen
    connection: Connection
    exited: Any  # a pidfd (readable once the process exits) or, where there is none, the connection
    stage_key: tuple[str, str] | None = None
    ready: bool = False  # it has imported what it needs and said so

    def close(self) -> None:
        self.connection.close()
        if isinstance(self.exited, int):
            os.close(self.exited)


class LocalBackend:
    """Worker processes on this machine, one task at a time each."""

    def __init__(self) -> None:
        self._workers: list[_Worker] = []
        self._stage_bytes: dict[tuple[str, str], bytes] = {}
        self._pending: list[Event] = []

    @property
    def default_num_workers(self) -> int:
        return os.cpu_count() or 1

    @property
    def ready_workers(self) -> list[WorkerId]:
        return [index for index, slot in enumerate(self._workers) if slot.ready]

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    def start(self, num_workers: int) -> None:
        while len(self._workers) < num_workers:
            self._workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        parent_end, child_end = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-m", "zephyr_arrow.execution.backends.local", str(child_end.fileno()), str(os.getpid())],
            pass_fds=[child_end.fileno()],
            stdin=subprocess.DEVNULL,
            env={**os.environ, **worker_environment()},
        )
        child_end.close()
        connection = Connection(parent_end.detach())
        # A worker that exits at once (a broken environment) may be gone before this: its exit
        # is reported, with its code, like any death while starting.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.send(list(sys.path))
        try:
            exited: Any = os.pidfd_open(process.pid)
        except (AttributeError, OSError):
            exited = connection  # EOF on the socket also tells of the worker's death
        return _Worker(process, connection, exited)

    def submit(self, worker: WorkerId, stage: Stage, task: ShardTask) -> None:
        slot = self._workers[worker]
        key = task.stage_key
        try:
            if slot.stage_key != key:
                slot.connection.send(("stage", (key, self._pickled_stage(key, stage))))
                slot.stage_key = key
            slot.connection.send(("task", cloudpickle.dumps(task)))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass  # the worker died; poll() reports it

    def _pickled_stage(self, key: tuple[str, str], stage: Stage) -> bytes:
        if key not in self._stage_bytes:
            self._stage_bytes.clear()
            self._stage_bytes[key] = pickle_stage(stage)
        return self._stage_bytes[key]

    def poll(self, timeout: float | None) -> list[Event]:
        if self._pending:
            timeout = 0
        waitables: list[Any] = [w.connection for w in self._workers] + [w.exited for w in self._workers if w.exited is not w.connection]
        ready = set(wait(waitables, timeout=timeout)) if waitables else set()
        events, self._pending = self._pending, []
        for index, slot in enumerate(self._workers):
            if slot.connection in ready:
                try:
                    kind, payload = slot.connection.recv()
                except (EOFError, ConnectionResetError, OSError):
                    kind = None
                if kind == "ready":
                    slot.ready = True
                    continue
                if kind == "done":
                    events.append(TaskFinished(index, payload))
                    continue
                if kind == "error":
                    events.append(TaskFailed(index, payload))
                    continue
            if slot.connection in ready or slot.exited in ready:
                events.append(WorkerDied(index, self._replace(index)))
        return events

    def kill(self, worker: WorkerId) -> None:
        self._workers[worker].process.kill()
        self._pending.append(WorkerDied(worker, self._replace(worker, killed=True)))

    def _replace(self, worker: WorkerId, killed: bool = False) -> str:
        """Reap the dead (or ``killed``) worker, start a fresh one in its slot; say how the old one ended."""
        slot = self._workers[worker]
        reason = describe_exit(_reap(slot))
        slot.close()
        self._workers[worker] = self._spawn()
        # One that died starting would fail again, and again: stop the run instead of retrying
        # forever. One the driver killed while it started says nothing about start-up.
        if not slot.ready and not killed:
            raise ZephyrError(
                f"a local worker process {reason} before it was ready to run tasks (its error output is above); "
                "it runs the driver's interpreter with the driver's sys.path and environment"
            )
        return reason

    def shutdown(self) -> None:
        for slot in self._workers:
            try:
                slot.connection.send(("stop", None))
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
        for slot in self._workers:
            _reap(slot)
            slot.close()
        self._workers.clear()
        self._stage_bytes.clear()


def _reap(slot: _Worker) -> int | None:
    """Wait for a dead (or dying) worker and return its exit code (negative: killed by that signal);
    one that has not exited after ``_STOP_GRACE_SECONDS`` is killed.

    Waits on the pidfd where there is one: ``Popen.wait(timeout=...)`` polls with sleeps of
    up to 50 ms, which was most of the time a context took to shut down two idle workers.
    """
    if isinstance(slot.exited, int):
        exited = bool(wait([slot.exited], timeout=_STOP_GRACE_SECONDS))
    else:
        try:
            slot.process.wait(timeout=_STOP_GRACE_SECONDS)
            exited = True
        except subprocess.TimeoutExpired:
            exited = False
    if not exited:
        slot.process.kill()
    return slot.process.wait()


if __name__ == "__main__":
    _worker_main(Connection(int(sys.argv[1])), int(sys.argv[2]))
    # Idle, every result sent: skip the interpreter's teardown (~60 ms with Arrow and Polars
    # loaded, paid by every context's shutdown). Only what user code printed needs flushing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
