"""The backend seam: how tasks reach workers. Backends are thin; the scheduler loop decides.

Besides the ``Backend`` protocol, the two steps every backend whose workers live in
other processes (local, ray) shares: pickling a stage once for its workers, and
turning an exception raised in a worker into a ``TaskError`` that can travel back (with the
chunk it found lost, if that is why it failed).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sysconfig
import traceback
import types
from typing import Protocol

import cloudpickle

from zephyr_arrow.errors import ChunkCorruptError, ChunkMissingError, PlanError
from zephyr_arrow.execution.coordinator import Event, WorkerId
from zephyr_arrow.execution.tasks import ShardTask, TaskError
from zephyr_arrow.planner import Stage

# Frames in these directories are the engine's, the standard library's or an installed package's.
_NOT_USER_CODE = tuple(
    {os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep}
    | {path + os.sep for path in (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])}
    | {"<frozen "}
)


class Backend(Protocol):
    """Start workers, submit a task, poll for events, stop.

    Workers are numbered slots. A worker that dies is reported once as ``WorkerDied`` and
    its slot is refilled by the backend before it is used again.
    """

    @property
    def default_num_workers(self) -> int:
        """How many workers a context uses when the user did not say: what the machine or cluster has CPUs for."""

    @property
    def ready_workers(self) -> list[WorkerId]:
        """The slots that can take a task now (a replacement still starting cannot: its start-up
        must not count against the task's timeout)."""

    def start(self, num_workers: int) -> None:
        """Make at least ``num_workers`` workers available (never fewer than already running)."""

    def submit(self, worker: WorkerId, stage: Stage, task: ShardTask) -> None:
        """Start ``task`` on an idle worker; its outcome comes back from ``poll``."""

    def poll(self, timeout: float | None) -> list[Event]:
        """Events that happened, waiting up to ``timeout`` seconds (None: until one happens)."""

    def kill(self, worker: WorkerId) -> None:
        """Stop a worker now; it is reported as ``WorkerDied``."""

    def shutdown(self) -> None:
        """Stop every worker and release everything the backend holds."""


def pickle_stage(stage: Stage) -> bytes:
    """The stage as its workers receive it (cloudpickled: lambdas and closures work)."""
    try:
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(stage.for_worker())
        return buffer.getvalue()
    except Exception as error:
        raise PlanError(
            f"stage {stage.index} ({stage.name}) cannot be sent to worker processes: {type(error).__name__}: "
            f"{error}. Functions are shipped with cloudpickle; one that captures a lock, an open file or "
            "a connection cannot be: create such objects inside the function instead."
        ) from error


def _code_with_its_file(code: types.CodeType) -> tuple:
    """cloudpickle's reduction of a code object, but keeping the file it was defined in: cloudpickle
    names every function it ships by value ``<dynamic-code>``, so a worker's traceback showed that,
    with no source line, for a function of the user's script."""
    constructor, args = _CLOUDPICKLE_CODE_REDUCE(code)
    return constructor, tuple(code.co_filename if arg == "<dynamic-code>" else arg for arg in args)


_CLOUDPICKLE_CODE_REDUCE = cloudpickle.Pickler.dispatch_table[types.CodeType]


class _Pickler(cloudpickle.Pickler):
    dispatch_table = collections.ChainMap({types.CodeType: _code_with_its_file}, cloudpickle.Pickler.dispatch_table)


def error_traceback(error: BaseException) -> str:
    """``error``'s traceback, starting with the frames of the user's own code, then the whole
    stack through the engine."""
    own = [frame for frame in traceback.extract_tb(error.__traceback__) if not frame.filename.startswith(_NOT_USER_CODE)]
    text = "".join(traceback.format_exception(error))
    return "In your code:\n" + "".join(traceback.format_list(own)) + "\n" + text if own else text


def task_error(task: ShardTask, error: BaseException) -> TaskError:
    """``error``, raised by a worker running ``task``, as a TaskError (carrying the exception only if it pickles)."""
    text = error_traceback(error)
    try:
        pickle.dumps(error)
        sendable: BaseException | None = error
    except Exception:
        sendable = None
    summary = f"{type(error).__name__}: {error}"
    return TaskError(task.stage_index, task.shard_index, task.attempt, sendable, summary, text, lost_chunk=lost_chunk(error))


def lost_chunk(error: BaseException | None) -> str | None:
    """The chunk whose loss ``error`` reports: the file a ChunkCorruptError or ChunkMissingError
    names, raised as ``error`` or as what it was raised from."""
    while error is not None:
        if isinstance(error, (ChunkCorruptError, ChunkMissingError)):
            return error.path
        error = error.__cause__
    return None
