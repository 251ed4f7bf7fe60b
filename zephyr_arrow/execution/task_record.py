"""The record a checkpointed run keeps of one finished task: ``TaskRecord``, as one small JSON file.

A record holds the task's ``TaskResult`` (its output ChunkRefs, stats, the user's counters, the
engine's counts and the columns its selects saw) and the fingerprint of the stage it ran for. It is written once, atomically,
after the task's chunk files are in place, so a record that exists is whole and what it names was
written. Chunk paths under the run's directory are stored relative to it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from zephyr_arrow.execution.stats import TaskStats
from zephyr_arrow.execution.tasks import StageResult, TaskResult
from zephyr_arrow.fs import atomic_output, filesystem
from zephyr_arrow.store.shard_refs import chunk_entry, chunk_from_entry

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One committed task of a stage whose fingerprint is ``fingerprint``."""

    fingerprint: str
    result: TaskResult
    committed_at: float = field(default_factory=time.time)

    def to_json(self, root: str) -> str:
        result = self.result
        return json.dumps(
            {
                "version": FORMAT_VERSION,
                "fingerprint": self.fingerprint,
                "committed_at": self.committed_at,
                "stage_index": result.stage_index,
                "shard_index": result.shard_index,
                "attempt": result.attempt,
                "outputs": [{"shard_index": o.shard_index, "chunk": chunk_entry(o.chunk, root)} for o in result.outputs],
                "stats": asdict(result.stats),
                "counters": result.counters,
                "engine_counts": result.engine_counts,
                "columns_seen": [[list(used), sorted(seen)] for used, seen in result.columns_seen.items()],
                "host": result.host,
                "pid": result.pid,
                "counter_modes": {name: list(mode) for name, mode in result.counter_modes.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str, root: str) -> TaskRecord:
        entry = json.loads(text)
        if entry.get("version") != FORMAT_VERSION:
            raise ValueError(f"task record format {entry.get('version')!r}, expected {FORMAT_VERSION}")
        outputs = tuple(StageResult(o["shard_index"], chunk_from_entry(o["chunk"], root)) for o in entry["outputs"])
        result = TaskResult(
            entry["stage_index"],
            entry["shard_index"],
            entry["attempt"],
            outputs,
            TaskStats(**entry["stats"]),
            entry["counters"],
            entry["engine_counts"],
            {tuple(used): set(seen) for used, seen in entry["columns_seen"]},
            entry["host"],
            entry["pid"],
            {name: (mode[0], mode[1]) for name, mode in entry["counter_modes"].items()},
        )
        return cls(entry["fingerprint"], result, entry["committed_at"])


def write_record(path: str, record: TaskRecord, root: str) -> None:
    """Write ``record`` to ``path`` atomically: readers see the whole record or none."""
    with atomic_output(path) as temp, temp.open() as out:
        out.write(record.to_json(root).encode())


def read_record(path: str, root: str) -> TaskRecord:
    fs, fs_path = filesystem(path)
    with fs.open(fs_path, "rb") as source:
        return TaskRecord.from_json(source.read().decode(), root)
