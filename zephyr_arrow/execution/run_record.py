"""The run record: what one ``execute`` did, per task attempt, per stage, and its counters over time.

``RunRecorder`` is fed where events already flow (the scheduler loop: every task handed to a
worker, every TaskFinished / TaskFailed / WorkerDied) and gives a ``RunRecord``: ``refs.run``
after a run, ``error.run`` after a failed one. ``RunRecord.save(run_dir)`` writes it as
``tasks.parquet`` (one row per attempt) and ``run.json`` (stages, counters, plan, environment),
with the HTML report beside them (``report.py``); ``RunRecord.open`` reads it back.

An attempt's fields are named as ``TaskResult``'s and ``TaskStats``'s (``stage_index``,
``shard_index``, ``attempt``, ``rows_in`` ... ``seconds``), as in a checkpoint's task records.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from zephyr_arrow.counters import CounterTotals
from zephyr_arrow.execution.coordinator import Event, TaskFailed, TaskFinished, WorkerId
from zephyr_arrow.execution.stats import TaskStats
from zephyr_arrow.execution.tasks import ShardTask, TaskResult
from zephyr_arrow.fs import atomic_output, filesystem
from zephyr_arrow.planner import Plan, Stage
from zephyr_arrow.store.layout import join

if TYPE_CHECKING:
    import duckdb
    import polars as pl

FORMAT_VERSION = 1
TASKS_FILE = "tasks.parquet"
RUN_FILE = "run.json"
REPORT_FILE = "report.html"
COUNTER_SAMPLE_SECONDS = 0.5  # counters are sampled at most this often (and at each stage's end)


@dataclass(frozen=True, slots=True)
class TaskAttempt:
    """One attempt of one task: how it ended and what it did. Times are the driver's clock
    (seconds since the epoch); ``seconds`` and ``cpu_seconds`` are the worker's."""

    stage_index: int
    stage: str
    shard_index: int
    attempt: int
    status: str  # "ok", "failed" (raised), "died" (its worker died or timed out), "stopped" (the run ended first)
    worker: int  # the backend's worker slot
    host: str  # "" where the worker's death left no word of it
    pid: int
    started_at: float
    ended_at: float
    rows_in: int = 0
    rows_out: int = 0
    chunks_out: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    bytes_in: int = 0
    cpu_seconds: float = 0.0
    peak_rss_bytes: int = 0
    error: str = ""  # "ValueError: bad row", "killed by SIGKILL"
    traceback: str = ""


# Fields are copied by name: dataclasses.asdict's deep copies cost ~0.4 ms an attempt.
_STATS_FIELDS = tuple(f.name for f in fields(TaskStats))
_ATTEMPT_SCHEMA = pa.schema(
    [
        pa.field(f.name, {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}[f.type])
        for f in fields(TaskAttempt)
    ]
)


class RecordTable:
    """Rows of a run record, queryable as an output is: ``sql`` (DuckDB, the table ``data``), Polars, pyarrow.

    >>> RecordTable(pa.table({"seconds": [1.0, 3.0]})).sql("select max(seconds) from data").fetchall()
    [(3.0,)]
    """

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def sql(self, query: str, connection: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyRelation:
        import duckdb

        con = connection if connection is not None else duckdb.connect()
        con.register("data", self.table)
        return con.sql(query)

    def to_polars(self) -> pl.LazyFrame:
        import polars as pl

        return pl.from_arrow(self.table).lazy()

    def to_pylist(self) -> list[dict[str, Any]]:
        return self.table.to_pylist()

    def __repr__(self) -> str:
        return f"RecordTable({self.num_rows} rows: {', '.join(self.table.column_names)})"


@dataclass(frozen=True)
class RunRecord:
    """What one ``execute`` did. ``tasks``: one row per attempt (``TaskAttempt``'s fields); ``stages``:
    per stage its plan fragment, rows, bytes, wall time and skew (max / median task seconds);
    ``counters``: final; ``counter_samples``: ``{"seconds": since the start, "counters": {...}}`` over time."""

    run_id: str
    status: str  # "succeeded" or "failed"
    error: str
    tasks: RecordTable
    stages: list[dict[str, Any]]
    counters: dict[str, int | float]
    counter_samples: list[dict[str, Any]]
    plan: str
    environment: dict[str, Any]
    started_at: float
    ended_at: float
    path: str | None = field(default=None, compare=False)  # where it was saved, if it was

    def save(self, run_dir: str) -> RunRecord:
        """Write the record (and its HTML report) to ``{run_dir}/{run_id}/``; return it with ``path`` set."""
        import pyarrow.parquet as pq

        from zephyr_arrow.execution.report import render_report

        path = join(run_dir, self.run_id)
        fs, fs_path = filesystem(path)
        fs.makedirs(fs_path, exist_ok=True)
        with atomic_output(join(path, TASKS_FILE)) as temp, temp.open() as out:
            pq.write_table(self.tasks.table, out)
        meta = {name: getattr(self, name) for name in _META_FIELDS}
        _write_text(join(path, RUN_FILE), json.dumps({"version": FORMAT_VERSION, **meta}, default=str))
        saved = RunRecord(**{**self._fields(), "path": path})
        _write_text(join(path, REPORT_FILE), render_report(saved))
        return saved

    @classmethod
    def open(cls, path: str) -> RunRecord:
        """Read a record saved by ``save`` (``path``: the run's own directory)."""
        import pyarrow.parquet as pq

        fs, fs_path = filesystem(path)
        with fs.open(join(fs_path, RUN_FILE), "rb") as source:
            meta = json.loads(source.read().decode())
        if meta.pop("version", None) != FORMAT_VERSION:
            raise ValueError(f"{path}: not a run record of format {FORMAT_VERSION} (no {RUN_FILE} of that version)")
        with fs.open(join(fs_path, TASKS_FILE), "rb") as source:
            tasks = pq.read_table(source)
        return cls(tasks=RecordTable(tasks), path=path, **{name: meta[name] for name in _META_FIELDS})

    def _fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __repr__(self) -> str:
        return f"RunRecord({self.run_id}: {self.status}, {len(self.stages)} stages, {self.tasks.num_rows} task attempts)"


_META_FIELDS = ("run_id", "status", "error", "stages", "counters", "counter_samples", "plan", "environment", "started_at", "ended_at")


def _write_text(path: str, text: str) -> None:
    with atomic_output(path) as temp, temp.open() as out:
        out.write(text.encode())


@dataclass(slots=True)
class _Open:
    worker: WorkerId
    task: ShardTask
    started_at: float


class RunRecorder:
    """Collects the run record from the scheduler loop's events (the clock is passed in)."""

    def __init__(self, run_id: str, plan: Plan, environment: dict[str, Any], now: float) -> None:
        self.run_id = run_id
        self.plan = plan
        self.environment = environment
        self.started_at = now
        self.attempts: list[TaskAttempt] = []
        self.stages: list[dict[str, Any]] = []
        self.counters: dict[str, int | float] = {}
        self._counter_totals = CounterTotals()
        self.counter_samples: list[dict[str, Any]] = []
        self._open: dict[WorkerId, _Open] = {}
        self._workers: dict[WorkerId, tuple[str, int]] = {}  # the host and pid each slot last reported
        self._stage: Stage | None = None
        self._stage_started = 0.0
        self._stage_tasks = 0
        self._stage_reruns = 0
        self._stage_name = ""
        self._last_sample = now

    def start_stage(self, stage: Stage, now: float, num_tasks: int = 0) -> None:
        self._stage, self._stage_started, self._stage_tasks, self._stage_reruns = stage, now, num_tasks, 0
        self._stage_name = stage.name  # a property that builds the string

    def reran(self, num_tasks: int) -> None:
        """Tasks of an earlier stage ran again, to write chunks the running stage's tasks found lost."""
        self._stage_reruns += num_tasks

    def submitted(self, worker: WorkerId, task: ShardTask, now: float) -> None:
        self._open[worker] = _Open(worker, task, now)

    def event(self, event: Event, now: float) -> None:
        running = self._open.get(event.worker)
        if isinstance(event, TaskFinished):
            result = event.result
            self._workers[event.worker] = (result.host, result.pid)
            if running is None or (running.task.shard_index, running.task.attempt) != (result.shard_index, result.attempt):
                return  # a stale attempt, already recorded as stopped or died
            del self._open[event.worker]
            self._add(running, "ok", result.host, result.pid, now, result.stats)
            self._counter_totals.add(result.counters, result.counter_modes)  # each by its aggregation (MAX is no sum)
            self.counters = self._counter_totals.values
            if now - self._last_sample >= COUNTER_SAMPLE_SECONDS:
                self._sample(now)
        elif isinstance(event, TaskFailed):
            error = event.error
            self._workers[event.worker] = (error.host, error.pid)
            if running is None or (running.task.shard_index, running.task.attempt) != (error.shard_index, error.attempt):
                return
            del self._open[event.worker]
            self._add(running, "failed", error.host, error.pid, now, TaskStats(seconds=now - running.started_at),
                      error.summary, error.traceback)
        else:
            host, pid = self._workers.pop(event.worker, ("", 0))  # the slot's next process is another
            if running is not None:
                del self._open[event.worker]
                self._add(running, "died", host, pid, now, TaskStats(seconds=now - running.started_at), event.reason)

    def finish_stage(self, stage: Stage, results: list[TaskResult] | None, now: float, num_rows: int | None = None) -> None:
        """Close the stage: attempts still running are recorded as stopped; ``results`` None: it failed
        (a reshard, which runs no task, gives its ``num_rows``)."""
        for worker, running in list(self._open.items()):
            self._add(running, "stopped", *self._workers.get(worker, ("", 0)), now, TaskStats(seconds=now - running.started_at))
        self._open.clear()
        attempts = [a for a in self.attempts if a.stage_index == stage.index]
        ok = [a for a in attempts if a.status == "ok"]
        total = sum((TaskStats(a.rows_in, a.rows_out, a.chunks_out, a.bytes_out, a.seconds, a.bytes_in, a.cpu_seconds, a.peak_rss_bytes)
                     for a in ok), TaskStats())
        times = [a.seconds for a in ok]
        median = statistics.median(times) if times else 0.0
        self.stages.append(
            {
                "index": stage.index,
                "name": stage.name,
                "kind": stage.kind.value,
                "inputs": list(stage.inputs),
                "broadcast": list(stage.broadcast),
                "status": "failed" if results is None else "ok",
                "num_tasks": len(results) if results is not None else self._stage_tasks,
                "num_attempts": len(attempts),
                "num_retries": len(attempts) - len({a.shard_index for a in attempts}),
                "num_reruns": self._stage_reruns,  # earlier stages' tasks rerun for chunks this stage found lost
                **{name: getattr(total, name) for name in _STATS_FIELDS if name != "seconds"},
                "rows_out": total.rows_out if num_rows is None else num_rows,
                "task_seconds": total.seconds,
                "started_at": self._stage_started,
                "ended_at": now,
                "wall_seconds": now - self._stage_started,
                "skew": max(times) / median if median > 0 else 1.0,
            }
        )
        self._sample(now)

    def record(self, status: str, error: str, now: float, counters: dict[str, int | float] | None = None) -> RunRecord:
        """The record so far (``counters``: the run's final ones, where it finished)."""
        if counters is not None:
            self.counters = dict(counters)
        attempts = list(self.attempts)
        tasks = pa.table({name: [getattr(a, name) for a in attempts] for name in _ATTEMPT_SCHEMA.names}, schema=_ATTEMPT_SCHEMA)
        return RunRecord(
            self.run_id, status, error, RecordTable(tasks), list(self.stages), dict(self.counters), list(self.counter_samples),
            self.plan.explain(), self.environment, self.started_at, now,
        )

    def live(self, now: float) -> dict[str, Any] | None:
        """The running stage as the live dashboard shows it: tasks done of total, rate, ETA, the
        longest-running attempts (None between stages). Read from another thread: only copies are iterated."""
        stage = self._stage
        if stage is None or any(s["index"] == stage.index for s in list(self.stages)):
            return None
        done = sum(1 for a in list(self.attempts) if a.stage_index == stage.index and a.status == "ok")
        elapsed = max(now - self._stage_started, 1e-9)
        rate = done / elapsed
        running = sorted(list(self._open.values()), key=lambda r: r.started_at)[:10]
        return {
            "stage_index": stage.index,
            "stage": stage.name,
            "num_tasks": self._stage_tasks,
            "done": done,
            "tasks_per_second": rate,
            "eta_seconds": (self._stage_tasks - done) / rate if rate > 0 else None,
            "running": [
                {"shard_index": r.task.shard_index, "attempt": r.task.attempt, "worker": r.worker, "seconds": now - r.started_at}
                for r in running
            ],
            "workers": [
                {"worker": worker, "host": host, "pid": pid, **_process_usage(host, pid)}
                for worker, (host, pid) in sorted(dict(self._workers).items())
            ],
        }

    def _add(self, running: _Open, status: str, host: str, pid: int, now: float, stats: TaskStats, error: str = "", traceback: str = "") -> None:
        task = running.task
        stage_name = self._stage_name if self._stage is not None and self._stage.index == task.stage_index else ""
        self.attempts.append(
            TaskAttempt(task.stage_index, stage_name, task.shard_index, task.attempt, status, running.worker, host, pid, running.started_at, now,
                        **{name: getattr(stats, name) for name in _STATS_FIELDS}, error=error, traceback=traceback)
        )

    def _sample(self, now: float) -> None:
        self._last_sample = now
        self.counter_samples.append({"seconds": now - self.started_at, "counters": dict(self.counters)})


def _process_usage(host: str, pid: int) -> dict[str, float | None]:
    """A worker process's resident memory and CPU seconds so far, read from /proc where it runs on
    this machine (Linux); None elsewhere (a Ray node's worker, another OS)."""
    rss = cpu = None
    if host == socket.gethostname():
        try:
            with open(f"/proc/{pid}/status") as status:
                rss = next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:")), None)
            with open(f"/proc/{pid}/stat") as stat:
                fields_after_name = stat.read().rsplit(")", 1)[1].split()
            cpu = (int(fields_after_name[11]) + int(fields_after_name[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    return {"rss_bytes": rss, "cpu_seconds": cpu}


def environment(backend: str, num_workers: int, chunk_prefix: str) -> dict[str, Any]:
    """What the report shows of where the run ran."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("zephyr_arrow", "pyarrow", "polars", "duckdb", "fsspec", "ray"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:  # an optional package that is not installed
            continue
    return {
        "versions": versions,
        "backend": backend,
        "max_workers": num_workers,
        "chunk_prefix": chunk_prefix,
        "driver": {"host": socket.gethostname(), "pid": os.getpid(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "recorded_at": time.time(),
    }
