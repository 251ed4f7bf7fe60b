"""ZephyrContext: the user's handle on workers and chunk storage."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from zephyr_arrow.dataset import Dataset
from zephyr_arrow.errors import PlanError, ZephyrError
from zephyr_arrow.execution.backends.base import Backend
from zephyr_arrow.execution.coordinator import RetryPolicy
from zephyr_arrow.execution.executor import Executor
from zephyr_arrow.execution.progress import Progress
from zephyr_arrow.execution.run_record import RunRecord, RunRecorder, environment
from zephyr_arrow.execution.tasks import ExecutionInfo
from zephyr_arrow.fs import filesystem, remove_quietly
from zephyr_arrow.planner import Plan
from zephyr_arrow.planner import plan as make_plan
from zephyr_arrow.store import ShardRefs, layout

if TYPE_CHECKING:
    from zephyr_arrow.execution.dashboard import Dashboard

BACKENDS = ("sync", "local", "ray")
# The keyword arguments each backend takes beyond ZephyrContext's own.
BACKEND_OPTIONS = {"sync": (), "local": (), "ray": ("address", "num_cpus_per_worker", "memory_per_worker", "runtime_env")}
# Zephyr's ZephyrContext arguments for its own machinery (fray clients, Iris resources, its coordinator
# job, heartbeats, subprocess runners): accepted, so a Zephyr program runs unchanged, with no effect here.
ZEPHYR_ONLY_OPTIONS = (
    "client",
    "resources",
    "coordinator_resources",
    "no_workers_timeout",
    "max_execution_retries",
    "stage_runner_factory",
    "map_workers_per_actor",
    "reduce_workers_per_actor",
    "heartbeat_timeout",
)
logger = logging.getLogger("zephyr_arrow")


def _make_backend(name: str, options: dict[str, Any]) -> Backend:
    if name == "sync":
        from zephyr_arrow.execution.backends.sync import SyncBackend

        return SyncBackend()
    if name == "local":
        from zephyr_arrow.execution.backends.local import LocalBackend

        return LocalBackend(**options)
    from zephyr_arrow.execution.backends.ray import RayBackend

    return RayBackend(**options)


class ZephyrContext:
    """Runs pipelines on workers; chunks live under ``chunk_storage_prefix`` until it closes.

    >>> from zephyr_arrow import Dataset, ZephyrContext
    >>> with ZephyrContext(backend="sync") as ctx:
    ...     refs = ctx.execute(Dataset.from_list(["a", "bb"]).map(len))
    ...     refs.to_pylist()
    [1, 2]

    Args:
        backend: "local" (worker processes on this machine), "sync" (in this process,
            for debugging) or "ray".
        max_workers: at most this many workers; never more than shards. Default: as many as
            there are CPUs (local: this machine's; ray: the cluster's over num_cpus_per_worker).
        chunk_storage_prefix: any fsspec URL or path; default: a fresh temporary directory.
        preserve_chunks: keep every run's chunk files after the context closes.
        max_task_retries: how often a task whose user code raised is retried (default 0).
        max_worker_deaths: a task that kills its worker this many times aborts the run.
        task_timeout: seconds after which a running task is treated as a dead worker.
        progress: True: a progress bar on stderr; False: none, and stage summaries only to the
            ``zephyr_arrow`` logger. Default: a bar on a terminal, else one summary line per stage
            on stderr (through the logger when logging is configured).
        run_dir: a path or fsspec URL where each run's record (``refs.run``: tasks, stages, counters,
            plan) is written with its HTML report, in a directory of its own that outlives the
            context. Default: ``$ZEPHYR_ARROW_RUN_DIR``, else none is written.
        dashboard: serve the run report live while the context is open: True (127.0.0.1, port
            8642), a port, or "host:port"; another free port when that one is taken. Its URL is
            printed once; it stops when the context closes.
        max_shard_failures: Zephyr's name for how often a task may fail: ``max_task_retries + 1``.
        max_shard_infra_failures: Zephyr's name for ``max_worker_deaths``.
        **options: the ray backend's ``address``, ``num_cpus_per_worker``, ``memory_per_worker`` and
            ``runtime_env``; Zephyr's other arguments (``ZEPHYR_ONLY_OPTIONS``) are accepted and
            have no effect. Any other name is a TypeError.
    """

    def __init__(
        self,
        backend: str = "local",
        max_workers: int | None = None,
        chunk_storage_prefix: str | None = None,
        preserve_chunks: bool = False,
        max_task_retries: int = 0,
        max_worker_deaths: int = 3,
        task_timeout: float | None = None,
        progress: bool | None = None,
        name: str = "",
        run_dir: str | None = None,
        dashboard: bool | int | str = False,
        max_shard_failures: int | None = None,
        max_shard_infra_failures: int | None = None,
        **options: Any,
    ) -> None:
        if backend not in BACKENDS:
            raise PlanError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        backend_options = _backend_options(backend, options)
        if max_shard_failures is not None:
            if not isinstance(max_shard_failures, int) or max_shard_failures < 1 or max_task_retries:
                raise PlanError(
                    f"max_shard_failures must be a positive int and not given with max_task_retries, got {max_shard_failures!r}"
                )
            max_task_retries = max_shard_failures - 1  # Zephyr counts the first failure too
        if max_shard_infra_failures is not None:
            max_worker_deaths = max_shard_infra_failures
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise PlanError(f"max_workers must be a positive int, got {max_workers!r}")
        if task_timeout is not None and backend == "sync":
            raise PlanError("task_timeout needs a backend that can stop a task (local or ray), not sync")
        self.backend_name = backend
        self._max_workers = max_workers
        # A relative prefix is made absolute here, so chunks stay where they began if the driver changes directory.
        if chunk_storage_prefix is not None and "://" not in chunk_storage_prefix:
            chunk_storage_prefix = os.path.abspath(chunk_storage_prefix)
        self.chunk_storage_prefix = chunk_storage_prefix or tempfile.mkdtemp(prefix="zephyr-arrow-")
        self.policy = RetryPolicy(max_task_retries, max_worker_deaths, task_timeout)
        self.progress = progress
        self.name = name
        run_dir = run_dir or os.environ.get("ZEPHYR_ARROW_RUN_DIR") or None
        self.run_dir = os.path.abspath(run_dir) if run_dir is not None and "://" not in run_dir else run_dir
        self._backend_options = backend_options
        self._shared: dict[str, Any] = {}
        self._running = threading.Lock()  # held by the one execute() running
        self.last_stage_summaries: list[str] = []
        self._resources = _Resources(self.chunk_storage_prefix, chunk_storage_prefix is None, preserve_chunks)
        if dashboard is not False:
            from zephyr_arrow.execution.dashboard import Dashboard

            self._resources.dashboard = Dashboard(*_dashboard_address(dashboard))
        # Runs when the context is closed, garbage-collected or left open at exit, whichever comes first.
        self._cleanup = weakref.finalize(self, self._resources.release)

    @property
    def dashboard_url(self) -> str | None:
        """Where the live dashboard is served (None without ``dashboard=``)."""
        return None if self._resources.dashboard is None else self._resources.dashboard.url

    @property
    def max_workers(self) -> int:
        """The most workers a run uses: as given, or the backend's CPU count (ray: connects to find it)."""
        return self._max_workers or self._get_backend().default_num_workers

    def __enter__(self) -> ZephyrContext:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def put(self, name: str, obj: Any) -> None:
        """Share ``obj`` with every worker; read it there with ``worker_ctx().get_shared(name)``."""
        self._check_open("put")
        if not isinstance(name, str) or not name:
            raise PlanError(f"put() needs a non-empty name, got {name!r}")
        self._shared[name] = obj

    def execute(self, dataset: Dataset, verbose: bool = False, dry_run: bool = False, checkpoint: str | None = None) -> ShardRefs:
        """Run ``dataset`` and return references to its output chunks (nothing is loaded).

        ``checkpoint``: a key naming the run under the chunk prefix. Each finished task is
        committed; a run that fails or is killed keeps what was committed, and running the
        pipeline again with the same key runs only what is missing or changed (README: Resumable runs).
        """
        self._check_open("execute")
        if checkpoint is not None and (not isinstance(checkpoint, str) or not checkpoint):
            raise PlanError(f"checkpoint must be a non-empty string, got {checkpoint!r}")
        if checkpoint is not None and self._resources.owns_prefix:
            raise PlanError(
                "checkpoint= needs a chunk_storage_prefix that outlives this context: without one, chunks go to a "
                "temporary directory deleted when it closes, and nothing would be left to resume"
            )
        plan = make_plan(dataset)
        if dry_run or verbose:
            print(plan.explain())
        if dry_run:
            return ShardRefs([])
        # One run at a time: a run's events come back through the backend's one channel to its
        # workers, and two runs sharing it would take each other's results. Waiting could deadlock
        # a caller that holds something the other run needs; refusing says what to do instead.
        if not self._running.acquire(blocking=False):
            raise ZephyrError(
                "this ZephyrContext is already running a pipeline (execute() was called from another thread); "
                "give each thread a ZephyrContext of its own, or run the pipelines one after the other"
            )
        try:
            # The backend first: Ray's start installs a SIGTERM handler of its own (which aborts
            # the process), and the run's must replace it, not be replaced by it.
            backend = self._get_backend()
            with _terminate_like_interrupt():
                return self._execute(plan, backend) if checkpoint is None else self._execute_checkpointed(plan, checkpoint, backend)
        finally:
            self._running.release()

    def _execute(self, plan: Plan, backend: Backend) -> ShardRefs:
        execution_id = layout.new_execution_id() if not self.name else f"{self.name}-{layout.new_execution_id()}"
        executions = self._resources.executions
        executions.append(layout.execution_dir(self.chunk_storage_prefix, execution_id))
        progress = Progress(self.progress)
        recorder = RunRecorder(execution_id, plan, environment(self.backend_name, self.max_workers, self.chunk_storage_prefix), time.time())
        if self._resources.dashboard is not None:
            self._resources.dashboard.recorder = recorder
        try:
            execution = ExecutionInfo(
                self.chunk_storage_prefix, execution_id, self._write_shared(execution_id), _fsspec_config(), os.getcwd()
            )
            refs = Executor(backend, execution, self.policy, progress, self.max_workers, recorder).execute(plan)
        except BaseException as error:
            remove_quietly(executions.pop())
            run = self._keep(recorder.record("failed", f"{type(error).__name__}: {error}", time.time()), failed=True)
            with contextlib.suppress(AttributeError):  # an exception type with __slots__ cannot carry it
                error.run = run
            raise
        finally:
            self.last_stage_summaries = progress.summaries
        return replace(refs, run=self._keep(recorder.record("succeeded", "", time.time(), refs.counters)))

    def _keep(self, record: RunRecord, failed: bool = False) -> RunRecord:
        """``record``, saved under ``run_dir`` if there is one. A failed run's error is the one to
        see: a record that cannot be written then is a warning. The dashboard shows it from now on."""
        if self._resources.dashboard is not None:
            self._resources.dashboard.last, self._resources.dashboard.recorder = record, None
        if self.run_dir is None:
            return record
        try:
            return record.save(self.run_dir)
        except Exception as error:
            if not failed:
                raise
            warnings.warn(f"the failed run's record could not be written to {self.run_dir}: {error}", stacklevel=3)
            return record

    def _execute_checkpointed(self, plan: Plan, key: str, backend: Backend) -> ShardRefs:
        """Run ``plan`` kept under ``key``: committed work stays on failure; the output's chunks
        are released when the context closes, the run's small record stays."""
        from zephyr_arrow.execution.checkpoint import Checkpoint
        from zephyr_arrow.execution.executor import stage_dirs_of
        from zephyr_arrow.execution.fingerprint import digest

        run = Checkpoint(self.chunk_storage_prefix, key, digest(sorted(self._shared.items()))).open()
        progress = Progress(self.progress)
        recorder = RunRecorder(run.execution_id, plan, environment(self.backend_name, self.max_workers, self.chunk_storage_prefix), time.time())
        if self._resources.dashboard is not None:
            self._resources.dashboard.recorder = recorder
        try:
            execution = ExecutionInfo(
                self.chunk_storage_prefix, run.execution_id, self._write_shared(run.execution_id), _fsspec_config(), os.getcwd()
            )
            refs = Executor(backend, execution, self.policy, progress, self.max_workers, recorder, checkpoint=run).execute(plan)
            self._resources.executions.extend(stage_dirs_of(refs, execution))
        except BaseException as error:
            if not isinstance(error, PlanError):  # a pipeline wrong as written (say, not fingerprintable) has nothing to resume
                hint = run.resume_hint()
                error.add_note(hint)
                logger.warning("%s", hint)
            record = self._keep(recorder.record("failed", f"{type(error).__name__}: {error}", time.time()), failed=True)
            with contextlib.suppress(AttributeError):  # an exception type with __slots__ cannot carry it
                error.run = record
            raise
        finally:
            run.close()
            self.last_stage_summaries = progress.summaries
        return replace(refs, run=self._keep(recorder.record("succeeded", "", time.time(), refs.counters)))

    def checkpoint_refs(self, key: str, stage: int) -> ShardRefs:
        """The output of stage ``stage`` of the run kept under checkpoint ``key`` (every shard of it
        committed), to query the rows that went into a stage that failed: ``.sql(...)``, ``.to_polars()``."""
        from zephyr_arrow.execution.kept_runs import stage_refs

        return stage_refs(self.chunk_storage_prefix, key, stage)

    def replay(self, key: str, stage: int, shard: int) -> ShardRefs:
        """Run one task of the run kept under ``key`` again, in this process, on its recorded inputs
        (breakpoints and prints work); returns what it wrote. A write task writes its file again."""
        from zephyr_arrow.execution.executor import regroup
        from zephyr_arrow.execution.kept_runs import replay

        result = replay(self.chunk_storage_prefix, key, stage, shard)
        return ShardRefs(regroup([result], 1 + max((o.shard_index for o in result.outputs), default=0)).shards, counters=result.counters)

    def close(self) -> None:
        """Stop the workers and delete this context's chunk files (unless preserve_chunks); a
        closed context runs nothing more. Closing twice does nothing."""
        self._resources.closed = True
        self._cleanup()

    def shutdown(self) -> None:
        """Zephyr's name for ``close()``."""
        self.close()

    def _check_open(self, method: str) -> None:
        if not self._cleanup.alive:
            raise ZephyrError(
                f"{method}() on a closed ZephyrContext: its workers are stopped and its chunks deleted; "
                "open a new one (with ZephyrContext(...) as ctx: ...)"
            )

    def _get_backend(self) -> Backend:
        self._check_open("execute")
        if self._resources.backend is None:
            self._resources.backend = _make_backend(self.backend_name, self._backend_options)
        return self._resources.backend

    def _write_shared(self, execution_id: str) -> dict[str, str]:
        import cloudpickle

        paths = {}
        for name, obj in self._shared.items():
            path = layout.shared_object_path(self.chunk_storage_prefix, execution_id, name)
            fs, fs_path = filesystem(path)
            fs.makedirs(fs._parent(fs_path), exist_ok=True)
            with fs.open(fs_path, "wb") as out:
                cloudpickle.dump(obj, out)
            paths[name] = path
        return paths


def _backend_options(backend: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options meant for ``backend``; an unknown name (a typo, an option of another backend) is a TypeError."""
    for name in options:
        if name not in BACKEND_OPTIONS[backend] and name not in ZEPHYR_ONLY_OPTIONS:
            where = [other for other, names in BACKEND_OPTIONS.items() if name in names]
            why = f"it applies to backend={where[0]!r} only" if where else "no backend takes it"
            raise TypeError(
                f"ZephyrContext() got an unexpected keyword argument {name!r} ({why}); backend={backend!r} takes "
                f"{', '.join(BACKEND_OPTIONS[backend]) or 'no options of its own'}"
            )
    return {name: value for name, value in options.items() if name in BACKEND_OPTIONS[backend]}


@contextlib.contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    """While a run goes on in the main thread, SIGTERM (a job scheduler's, ``kill``) stops it as
    Ctrl-C does: the workers' tasks are stopped and the run's chunks deleted; then the process
    exits with SIGTERM's status. A handler the program set itself is left alone; Ray's (set by
    ``ray.init``, with one in its core that aborts the process) is replaced for the run."""
    before = signal.getsignal(signal.SIGTERM)
    rays = getattr(before, "__module__", "").startswith("ray.")
    if threading.current_thread() is not threading.main_thread() or (before is not signal.SIG_DFL and not rays):
        yield
        return

    received: list[int] = []

    def terminate(signum: int, frame: object) -> None:
        received.append(signum)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except SystemExit:
        if received:  # Ray's wait turns the handler's exit into SystemExit(1): give SIGTERM's status
            raise SystemExit(128 + received[0]) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, before)


@dataclass
class _Resources:
    """What a context holds that must be released: its workers and its chunk files. Apart from
    the context, so a context dropped without ``close()`` (or open at exit) still releases them."""

    chunk_storage_prefix: str
    owns_prefix: bool
    preserve_chunks: bool
    backend: Backend | None = None
    dashboard: Dashboard | None = None
    executions: list[str] = field(default_factory=list)
    closed: bool = False  # by close(), not found open at exit or by the garbage collector

    def release(self) -> None:
        if not self.closed:
            warnings.warn(
                f"a ZephyrContext was never closed; its workers are stopped and its chunks under "
                f"{self.chunk_storage_prefix} deleted now (use 'with ZephyrContext(...) as ctx:' or call close())",
                ResourceWarning,
                stacklevel=2,
            )
        if self.dashboard is not None:
            self.dashboard.stop()
            self.dashboard = None
        if self.backend is not None:
            self.backend.shutdown()
            self.backend = None
        if not self.preserve_chunks:
            for path in self.executions:
                remove_quietly(path)
            if self.owns_prefix:
                remove_quietly(self.chunk_storage_prefix)
        self.executions.clear()


def _dashboard_address(dashboard: bool | int | str) -> tuple[str, int]:
    """``dashboard=`` as (host, port): True is loopback on the default port."""
    from zephyr_arrow.execution.dashboard import DEFAULT_PORT

    if dashboard is True:
        return "127.0.0.1", DEFAULT_PORT
    if isinstance(dashboard, int) and not isinstance(dashboard, bool) and 0 <= dashboard < 65536:
        return "127.0.0.1", dashboard
    if isinstance(dashboard, str) and dashboard.rpartition(":")[2].isdigit() and dashboard.rpartition(":")[0]:
        host, _, port = dashboard.rpartition(":")
        return host, int(port)
    raise PlanError(f"dashboard must be True, a port or 'host:port', got {dashboard!r}")


def _fsspec_config() -> dict[str, dict[str, Any]]:
    """fsspec's configuration in this process (empty if fsspec was never imported: nothing set it)."""
    config = sys.modules.get("fsspec.config")
    return copy.deepcopy(config.conf) if config is not None else {}
