"""Runs kept under a chunk prefix: list them, read a committed stage's output, replay one task,
delete one, and collect what dead drivers left behind (the ``zephyr-arrow runs``, ``replay`` and
``gc`` commands, and ``ZephyrContext.checkpoint_refs`` / ``replay``)."""

from __future__ import annotations

import datetime
import re
import time
from dataclasses import dataclass, replace

from zephyr_arrow.errors import CheckpointLockedError, ZephyrError
from zephyr_arrow.execution.checkpoint import listing, read_json, read_lock, record_names
from zephyr_arrow.execution.executor import regroup
from zephyr_arrow.execution.task_record import read_record
from zephyr_arrow.execution.tasks import ShardTask, TaskResult
from zephyr_arrow.fs import filesystem, remove_tree
from zephyr_arrow.store import ShardRefs, layout

_EXECUTION_DIR = re.compile(r"(^|-)run-[0-9a-f]{12}$")  # what layout.new_execution_id names (after a context's name)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One kept run, as ``zephyr-arrow runs`` lists it."""

    key: str
    path: str
    state: str  # "running" (a live driver holds it), "failed" (stopped before the end) or "complete"
    shards: tuple[tuple[int, int], ...]  # per stage: (shards committed, shards)
    num_bytes: int
    updated: float  # the newest file's modification time

    @property
    def stages_done(self) -> int:
        return sum(done == total for done, total in self.shards)


def list_runs(prefix: str) -> list[RunSummary]:
    """Every checkpointed run under ``prefix``, by key."""
    fs, fs_prefix = filesystem(prefix)
    runs = []
    for directory in listing(fs, fs_prefix):
        root = _url(fs, prefix, directory)
        run = read_json(layout.join(root, layout.CHECKPOINT_DIR_NAME, "run.json"))
        if run is None:
            continue
        complete = fs.exists(_fs_path(layout.join(root, layout.CHECKPOINT_DIR_NAME, "complete.json")))
        lock = read_lock(layout.join(root, layout.CHECKPOINT_DIR_NAME, "lock.json"))
        state = "complete" if complete else "running" if lock is not None and not lock.is_stale(time.time()) else "failed"
        shards = []
        for index, stage in sorted(run["stages"].items(), key=lambda item: int(item[0])):
            total = stage["num_shards"]
            records = layout.task_records_dir(prefix, root.rsplit("/", 1)[1], int(index), stage["fingerprint"])
            shards.append((total if complete else len(record_names(fs, _fs_path(records))), total))
        files = fs.find(directory, detail=True)
        updated = max((_mtime(info) for info in files.values()), default=0.0)
        runs.append(RunSummary(run["key"], root, state, tuple(shards), sum(info.get("size") or 0 for info in files.values()), updated))
    return sorted(runs, key=lambda run: run.key)


def stage_refs(prefix: str, key: str, stage_index: int) -> ShardRefs:
    """The output of stage ``stage_index`` of the run kept under ``key``, from its committed tasks' records."""
    root, run = _run(prefix, key)
    stage = run["stages"].get(str(stage_index))
    if stage is None:
        raise ZephyrError(f"checkpoint {key!r} has no stage {stage_index}; its stages are 0 to {len(run['stages']) - 1}")
    records_dir = layout.task_records_dir(prefix, layout.checkpoint_execution_id(key), stage_index, stage["fingerprint"])
    fs, fs_dir = filesystem(records_dir)
    results = [read_record(layout.join(records_dir, name), root).result for name in record_names(fs, fs_dir)]
    missing = sorted(set(range(stage["num_shards"])) - {result.shard_index for result in results})
    if missing:
        complete = read_json(layout.join(root, layout.CHECKPOINT_DIR_NAME, "complete.json")) is not None
        why = "the run completed, which keeps only its output" if complete else f"shards {_ranges(missing)} were not committed"
        raise ZephyrError(f"stage {stage_index} of checkpoint {key!r} ({stage['name']}) is not all there: {why}")
    num_output_shards = int(stage["parts"]["shards"].split("/")[1])
    return regroup(sorted(results, key=lambda r: r.shard_index), num_output_shards)


def replay(prefix: str, key: str, stage_index: int, shard_index: int) -> TaskResult:
    """Run one task of the run kept under ``key`` in this process, on the inputs it was given
    (so a debugger and print statements work); its chunks go to ``_replay-*`` in the run's directory."""
    import cloudpickle

    from zephyr_arrow.execution.worker.task import run_task

    root, _ = _run(prefix, key)
    path = layout.join(root, layout.CHECKPOINT_DIR_NAME, "stages", f"stage-{stage_index:02d}.pkl")
    fs, fs_path = filesystem(path)
    try:
        with fs.open(fs_path, "rb") as source:
            stage, tasks = cloudpickle.load(source)
    except FileNotFoundError:
        raise ZephyrError(
            f"checkpoint {key!r} recorded no tasks of stage {stage_index}: it never ran in this checkpoint, "
            "or the run completed (a completed run keeps only its output)"
        ) from None
    task: ShardTask | None = next((t for t in tasks if t.shard_index == shard_index), None)
    if task is None:
        raise ZephyrError(f"stage {stage_index} of checkpoint {key!r} has shards 0 to {len(tasks) - 1}, not {shard_index}")
    return run_task(stage, replace(task, stage_dir=f"_replay-{task.stage_dir}", attempt=0))


def delete_run(prefix: str, key: str) -> str:
    """Delete the run kept under ``key`` (chunks and records); refused while a live driver holds it."""
    root, _ = _run(prefix, key)
    lock = read_lock(layout.join(root, layout.CHECKPOINT_DIR_NAME, "lock.json"))
    if lock is not None and not lock.is_stale(time.time()):
        raise CheckpointLockedError(f"checkpoint {key!r} is being run by {lock.describe()}; stop that driver first")
    remove_tree(root)
    return root


def collect_garbage(prefix: str, older_than: float, checkpoints: bool = False) -> list[str]:
    """Delete execution directories under ``prefix`` in which nothing changed for ``older_than``
    seconds: those of runs without a checkpoint (a driver killed outright cleans up nothing),
    and with ``checkpoints`` also kept runs no live driver holds. Returns what was deleted."""
    fs, fs_prefix = filesystem(prefix)
    cutoff = time.time() - older_than
    removed = []
    for directory in listing(fs, fs_prefix):
        root = _url(fs, prefix, directory)
        name = root.rsplit("/", 1)[1]
        if fs.exists(_fs_path(layout.join(root, layout.CHECKPOINT_DIR_NAME))):
            lock = read_lock(layout.join(root, layout.CHECKPOINT_DIR_NAME, "lock.json"))
            if not checkpoints or (lock is not None and not lock.is_stale(time.time())):
                continue
        elif not _EXECUTION_DIR.search(name):
            continue  # not a run's directory: something else the user keeps under the prefix
        files = fs.find(directory, detail=True)
        if max((_mtime(info) for info in files.values()), default=0.0) < cutoff:
            remove_tree(root)
            removed.append(root)
    return removed


def _run(prefix: str, key: str) -> tuple[str, dict]:
    root = layout.execution_dir(prefix, layout.checkpoint_execution_id(key))
    run = read_json(layout.join(root, layout.CHECKPOINT_DIR_NAME, "run.json"))
    if run is None:
        raise ZephyrError(f"no run is kept under checkpoint {key!r} in {prefix} (`zephyr-arrow runs {prefix}` lists them)")
    return root, run


def _url(fs, prefix: str, path: str) -> str:
    return fs.unstrip_protocol(path) if "://" in prefix else path


def _fs_path(url: str) -> str:
    return filesystem(url)[1]


def _mtime(info: dict) -> float:
    value = info.get("mtime") or info.get("LastModified") or 0.0
    return value.timestamp() if isinstance(value, datetime.datetime) else float(value)  # object stores give a datetime


def _ranges(indices: list[int]) -> str:
    shown = ", ".join(map(str, indices[:10]))
    return shown + (f" and {len(indices) - 10} more" if len(indices) > 10 else "")
