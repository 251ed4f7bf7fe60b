"""A checkpointed run: its stable directory, its lock, and the records of its committed tasks.

    {prefix}/ckpt-{key}-{hash}/                          the run's execution directory (layout.py)
        stage-02-scatter-{fingerprint}/shard=00003/...   chunk files, one directory per stage fingerprint
        _checkpoint/lock.json                            the driver holding the run: host, pid, since, heartbeat
        _checkpoint/run.json                             the plan: each stage's name, shard count, fingerprint
        _checkpoint/stages/stage-02.pkl                  a stage's ops and its tasks' inputs, for replaying one task
        _checkpoint/tasks/stage-02-{fingerprint}/shard-00003.json   one TaskRecord per committed task
        _checkpoint/tasks/stage-00-{fingerprint}-pieces/...          a writing stage's pieces (files cut, io/pieces.py)
        _checkpoint/complete.json                        the final output's refs, once the run completed
        stage-05-pipelines-{fingerprint}/003-round-2/    a pipeline a PIPELINES stage ran: a nested run with
            _checkpoint/run.json, tasks/, complete.json      records of its own (``nested``), kept until the
                                                         stage's own records are committed

A task is committed when its record exists; the record is written after the task's chunks
are in place. On resume each stage keeps the records of its current fingerprint whose chunk
files are all still there, and runs the rest of its shards (or pieces).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from zephyr_arrow.errors import CheckpointLockedError
from zephyr_arrow.execution.fingerprint import StageFingerprint
from zephyr_arrow.execution.task_record import TaskRecord, read_record, write_record
from zephyr_arrow.execution.tasks import ShardTask, TaskResult
from zephyr_arrow.fs import atomic_output, filesystem, is_local, remove_quietly
from zephyr_arrow.planner import Plan, Stage
from zephyr_arrow.store import ShardRefs, layout
from zephyr_arrow.store.shard_refs import chunk_entry, chunk_from_entry

logger = logging.getLogger("zephyr_arrow")

HEARTBEAT_SECONDS = 10.0  # how often the holder of a run's lock says it is alive
STALE_SECONDS = 60.0  # a lock whose heartbeat is older than this is taken over


@dataclass(frozen=True, slots=True)
class LockHolder:
    host: str
    pid: int
    since: float
    heartbeat: float
    session: int  # how many drivers have held the run, this one included

    def is_stale(self, now: float) -> bool:
        if now - self.heartbeat > STALE_SECONDS:
            return True
        return self.host == socket.gethostname() and not _pid_alive(self.pid)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"host {self.host}, pid {self.pid}, since {since} (last heartbeat {time.time() - self.heartbeat:.0f}s ago)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Checkpoint:
    """The run kept under ``key`` below ``prefix``, held by this driver from ``open`` to ``close``."""

    def __init__(self, prefix: str, key: str, shared_digest: str = "", execution_id: str | None = None) -> None:
        self.prefix = prefix
        self.key = key
        self.shared_digest = shared_digest  # of the objects given to ctx.put: part of every stage's fingerprint
        self.execution_id = execution_id or layout.checkpoint_execution_id(key)
        self.root = layout.execution_dir(prefix, self.execution_id)
        self.holder: LockHolder | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._recorded_parts: dict[int, dict[str, str]] = {}

    # The lock ------------------------------------------------------------------------------
    def open(self) -> Checkpoint:
        """Take the run's lock (CheckpointLockedError if a live driver holds it) and start its heartbeat."""
        path = self._path("lock.json")
        now = time.time()
        current = read_lock(path)
        if current is not None and not current.is_stale(now):
            raise CheckpointLockedError(
                f"checkpoint {self.key!r} ({self.root}) is being run by another driver: {current.describe()}; "
                f"wait for it to finish, or stop it (a holder silent for {STALE_SECONDS:.0f}s no longer blocks)"
            )
        session = (current.session if current is not None else self._last_session()) + 1
        self.holder = LockHolder(socket.gethostname(), os.getpid(), now, now, session)
        self._write_lock(exclusive=current is None)
        holder = read_lock(path)
        if holder != self.holder:  # another driver wrote after us: it holds the run
            raise CheckpointLockedError(
                f"checkpoint {self.key!r} ({self.root}) was taken by another driver as this one started: "
                f"{holder.describe() if holder else 'it has finished since'}"
            )
        self._heartbeat = threading.Thread(target=self._beat, name="zephyr-checkpoint-heartbeat", daemon=True)
        self._heartbeat.start()
        return self

    def close(self) -> None:
        """Stop the heartbeat and release the lock (if this driver still holds it)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        path = self._path("lock.json")
        current = read_lock(path)
        if current is not None and self.holder is not None and (current.host, current.pid) == (self.holder.host, self.holder.pid):
            remove_quietly(path)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.holder = LockHolder(self.holder.host, self.holder.pid, self.holder.since, time.time(), self.holder.session)
            try:
                self._write_lock()
            except Exception as error:  # noqa: BLE001 - the next beat tries again; the run goes on
                logger.warning("checkpoint %r: could not renew its lock: %s", self.key, error)

    def _write_lock(self, exclusive: bool = False) -> None:
        """Write this driver's lock; ``exclusive``: only if there is none (on a local disk two drivers
        starting at once cannot both create it; an object store has no such check, so the lock is
        read back, which narrows the race to the moment between the two writes)."""
        holder = self.holder
        data = {"host": holder.host, "pid": holder.pid, "since": holder.since, "heartbeat": holder.heartbeat, "session": holder.session}
        path = self._path("lock.json")
        if not (exclusive and is_local(path)):
            _write_json(path, data)
            return
        path = path.removeprefix("file://")
        candidate = f"{path}.{holder.host}-{holder.pid}"
        with atomic_output(candidate) as temp, temp.open() as out:
            out.write(json.dumps(data).encode())
        try:
            os.link(candidate, path)  # fails if the file exists: the one atomic create-if-absent
        except FileExistsError:
            pass  # the read-back in open() names the driver that created it
        finally:
            os.remove(candidate)

    def _last_session(self) -> int:
        run = read_json(self._path("run.json"))
        return run.get("session", 0) if run else 0

    def nested(self, execution_id: str, name: str) -> Checkpoint:
        """The checkpoint of a pipeline that a stage runs itself (a PIPELINES stage's), in ``execution_id``
        (a directory of the stage's, whose name carries the stage's fingerprint): held by this driver,
        under this run's lock, with its attempt numbers and shared objects."""
        inner = Checkpoint(self.prefix, f"{self.key}, {name}", self.shared_digest, execution_id)
        inner.holder = self.holder
        return inner

    @property
    def attempt_base(self) -> int:
        """The first attempt number of this driver's tasks: a dead driver's orphaned workers, still
        writing attempt files, never write the names this driver's records point to."""
        return (self.holder.session - 1) * 1000

    # The plan ------------------------------------------------------------------------------
    def begin(self, plan: Plan, fingerprints: dict[int, StageFingerprint], shard_counts: dict[int, int]) -> None:
        """Record the plan (names, shard counts, fingerprints), keeping what the last run recorded to explain changes."""
        previous = read_json(self._path("run.json")) or {}
        self._recorded_parts = {int(index): stage["parts"] for index, stage in previous.get("stages", {}).items()}
        stages = {
            str(stage.index): {
                "name": stage.name,
                "kind": stage.kind.value,
                "num_shards": shard_counts.get(stage.index, 0),
                "fingerprint": fingerprints[stage.index].digest,
                "parts": fingerprints[stage.index].parts,
            }
            for stage in plan.stages
        }
        now = time.time()
        run = {"key": self.key, "session": self.holder.session, "created": previous.get("created", now), "updated": now, "stages": stages}
        remove_quietly(self._path("complete.json"))
        _write_json(self._path("run.json"), run)

    def stage_dir_name(self, stage: Stage, fingerprint: StageFingerprint) -> str:
        return layout.stage_dir_name(stage.index, stage.kind.value, fingerprint.digest)

    def committed(
        self, stage: Stage, fingerprint: StageFingerprint, num_tasks: int, pieces: bool = False, unit: str = "shards"
    ) -> dict[int, TaskResult]:
        """The stage's committed results whose chunk files all exist, by task (a shard, or a piece of
        a file cut: ``unit``); logs what is reused and why. ``pieces``: the pieces before its write tasks."""
        records_dir = layout.task_records_dir(self.prefix, self.execution_id, stage.index, fingerprint.digest, pieces)
        fs, fs_dir = filesystem(records_dir)
        names = record_names(fs, fs_dir)
        results: dict[int, TaskResult] = {}
        lost: list[int] = []
        present = None
        for name in sorted(names):
            record = read_record(layout.join(records_dir, name), self.root)
            if present is None:
                stage_dir_name = self.stage_dir_name(stage, fingerprint)
                stage_dir = layout.stage_dir(self.prefix, self.execution_id, layout.pieces_dir_name(stage_dir_name) if pieces else stage_dir_name)
                chunk_fs, chunk_dir = filesystem(stage_dir)
                present = {chunk_fs.unstrip_protocol(p) if "://" in stage_dir else p for p in listing(chunk_fs, chunk_dir, recursive=True)}
            if all(_local(output.chunk.path) in present for output in record.result.outputs):
                results[record.result.shard_index] = record.result
            else:
                lost.append(record.result.shard_index)
        where = f"checkpoint {self.key!r}: stage {stage.index} ({stage.name})" + (", its pieces before the writes" if pieces else "")
        self._log_reuse(where, stage, fingerprint, (num_tasks, "pieces" if pieces else unit), results, lost)
        return results

    def _log_reuse(
        self, where: str, stage: Stage, fingerprint: StageFingerprint, tasks: tuple[int, str], results: dict, lost: list[int]
    ) -> None:
        num_tasks, unit = tasks
        lost_note = f"; {unit} {', '.join(map(str, lost))} rerun: chunk files of theirs are gone" if lost else ""
        if results and len(results) == num_tasks:
            logger.info("%s: reused (%d of %d %s committed)", where, len(results), num_tasks, unit)
        elif results:
            logger.info("%s: partly reused (%d of %d %s committed; %d to run)%s", where, len(results), num_tasks, unit,
                        num_tasks - len(results), lost_note)
        elif stage.index not in self._recorded_parts:
            logger.info("%s: runs (first run of this checkpoint)", where)
        else:
            why = fingerprint.differences(self._recorded_parts[stage.index]) or ["no shard of it was committed"]
            logger.info("%s: rerun (%s)%s", where, "; ".join(why), lost_note)

    def record_stage(self, stage: Stage, tasks: list[ShardTask]) -> None:
        """Keep what replaying one of the stage's tasks needs: the stage as workers get it, and its tasks."""
        import cloudpickle

        with atomic_output(self._path("stages", f"stage-{stage.index:02d}.pkl")) as temp, temp.open() as out:
            cloudpickle.dump((stage.for_worker(), tasks), out)

    def commit(self, fingerprint: StageFingerprint, result: TaskResult, pieces: bool = False) -> None:
        """Commit one finished task: its record, written once its chunk files are in place (``pieces``:
        a piece before the stage's write tasks)."""
        path = layout.task_record_path(self.prefix, self.execution_id, result.stage_index, fingerprint.digest, result.shard_index, pieces)
        write_record(path, TaskRecord(fingerprint.digest, result), self.root)

    def resume_hint(self) -> str:
        """What a failed run kept, and how to resume it."""
        run = read_json(self._path("run.json")) or {"stages": {}}
        done = []
        for index, stage in sorted(run["stages"].items(), key=lambda item: int(item[0])):
            records_dir = layout.task_records_dir(self.prefix, self.execution_id, int(index), stage["fingerprint"])
            fs, fs_dir = filesystem(records_dir)
            done.append(f"stage {index}: {len(record_names(fs, fs_dir))}/{stage['num_shards']}")
        return (
            f"The run is kept under checkpoint {self.key!r} ({self.root}); shards committed: {', '.join(done) or 'none'}. "
            f"Fix the cause and run the same pipeline again with checkpoint={self.key!r} to resume it: committed "
            f"shards are not run again (`zephyr-arrow runs {self.prefix}` lists kept runs)."
        )

    # Completion ----------------------------------------------------------------------------
    def completed_output(self, fingerprint: StageFingerprint) -> ShardRefs | None:
        """The output of a completed run of the same final stage, if every chunk of it is still readable."""
        complete = read_json(self._path("complete.json"))
        if complete is None or complete["fingerprint"] != fingerprint.digest:
            return None
        shards = [[chunk_from_entry(entry, self.root) for entry in shard] for shard in complete["shards"]]
        refs = ShardRefs(shards, counters=complete["counters"], stats=complete["stats"])
        from zephyr_arrow.fs import exists

        if not all(exists(chunk.path) for chunk in refs.chunks):
            return None
        logger.info("checkpoint %r: completed before; its output is returned as it is", self.key)
        return refs

    def complete(self, fingerprint: StageFingerprint, output: ShardRefs, output_dirs: set[str]) -> None:
        """Mark the run complete (a small record of its output), then delete what only resuming needed:
        task records, replay inputs and every stage's chunks but the output's."""
        entries = [[chunk_entry(chunk, self.root) for chunk in shard] for shard in output.shards]
        data = {"fingerprint": fingerprint.digest, "completed": time.time(), "shards": entries,
                "counters": output.counters, "stats": output.stats}
        _write_json(self._path("complete.json"), data)
        remove_quietly(self._path("tasks"))
        remove_quietly(self._path("stages"))
        fs, fs_root = filesystem(self.root)
        keep = {layout.CHECKPOINT_DIR_NAME, *(path.rstrip("/").rsplit("/", 1)[1] for path in output_dirs)}
        for path in listing(fs, fs_root):
            if path.rstrip("/").rsplit("/", 1)[1] not in keep:
                remove_quietly(fs.unstrip_protocol(path) if "://" in self.root else path)

    def _path(self, *parts: str) -> str:
        return layout.checkpoint_path(self.prefix, self.execution_id, *parts)


def read_lock(path: str) -> LockHolder | None:
    data = read_json(path)
    return None if data is None else LockHolder(**data)


def record_names(fs, records_dir: str) -> list[str]:
    """The names of the committed task records in ``records_dir`` (not a half-written one's hidden temporary file)."""
    names = (path.rsplit("/", 1)[1] for path in listing(fs, records_dir))
    return [name for name in names if name.endswith(".json") and not name.startswith(".")]


def listing(fs, path: str, recursive: bool = False) -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return list(fs.find(path)) if recursive else list(fs.ls(path, detail=False))
    return []


def _local(path: str) -> str:
    return path.removeprefix("file://")


def read_json(path: str) -> dict | None:
    fs, fs_path = filesystem(path)
    try:
        with fs.open(fs_path, "rb") as source:
            return json.loads(source.read())
    except FileNotFoundError:
        return None


def _write_json(path: str, data: dict) -> None:
    with atomic_output(path) as temp, temp.open() as out:
        out.write(json.dumps(data).encode())
