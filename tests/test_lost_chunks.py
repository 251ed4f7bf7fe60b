"""A chunk of a run damaged or deleted between stages is written again, never a failed run or a wrong answer.

The damage is made by the pipeline itself, at a fixed point: with one worker a stage's tasks run in
shard order, so a function of shard 1's task can damage the chunk shard 0's task wrote before the
next stage reads it; and a task reads its chunks in order, so a function can damage a chunk the
task has yet to read. The answers are checked against plain Python, the counters counted once.
"""

from __future__ import annotations

import glob
import logging
import os
import re

import duckdb
import pytest
from test_chunk_integrity import cut_short, overwrite_inside

from zephyr_arrow import Dataset, ShardFailedError, ZephyrContext, counters
from zephyr_arrow.errors import ChunkCorruptError
from zephyr_arrow.execution import lineage
from zephyr_arrow.execution.coordinator import RetryPolicy, StageCoordinator, TaskFailed
from zephyr_arrow.execution.tasks import ExecutionInfo, ItemsInput, ShardTask, TaskError

ROWS = [{"id": i, "text": f"document {i} " + "word " * (i % 7)} for i in range(6_000)]


def remove(path: str) -> None:
    os.remove(path)


def newest(pattern: str) -> str | None:
    """The chunk matching ``pattern`` written by the latest attempt (chunk files end ``-attempt-N.parquet``)."""
    paths = glob.glob(pattern)
    return max(paths, key=lambda path: int(re.search(r"attempt-(\d+)\.parquet$", path).group(1))) if paths else None


def damaging(pattern: str, marker_dir: str, damage=overwrite_inside, every_attempt: bool = False):
    """A map function that counts its rows in "seen" and damages the newest chunk matching
    ``pattern`` once it is there: only the first such chunk, or (``every_attempt``) each one a
    rerun writes again (a marker file per damage remembers, whichever process runs it)."""

    def run(row):
        counters.increment("seen")
        if every_attempt or not os.path.exists(os.path.join(marker_dir, "damaged")):
            path = newest(pattern)
            marker = os.path.join(marker_dir, f"damaged-{os.path.basename(path)}" if every_attempt else "damaged")
            if path is not None and not os.path.exists(marker):
                damage(path)
                open(marker, "w").close()
        return row

    return run


def counting(name: str):
    def run(row):
        counters.increment(name)
        return {**row, "n": len(row["text"])}

    return run


@pytest.fixture
def one_worker(backend, backend_options, tmp_path):
    """A context with one worker, so that a stage's tasks run in shard order; and its chunk prefix."""
    prefix = str(tmp_path / "chunks")
    with ZephyrContext(backend=backend, max_workers=1, chunk_storage_prefix=prefix, **backend_options) as ctx:
        yield ctx, prefix


def expected_rows():
    return [{**row, "n": len(row["text"])} for row in ROWS]


def by_id(rows):
    return sorted(rows, key=lambda row: row["id"])


@pytest.mark.parametrize("damage", [overwrite_inside, cut_short, remove])
def test_a_chunk_lost_between_two_maps_is_written_again(one_worker, tmp_path, caplog, damage):
    ctx, prefix = one_worker
    # Stage 0's shard 1 damages shard 0's chunk; stage 2 (after a reshard) reads it.
    shard_0_chunk = f"{prefix}/*/stage-00-*/shard=00000/*.parquet"
    ds = (
        Dataset.from_list(ROWS, num_shards=2)
        .map(counting("mapped"))
        .map(damaging(shard_0_chunk, str(tmp_path), damage))
        .reshard(3)
        .map(counting("read"))
    )
    with caplog.at_level(logging.WARNING, logger="zephyr_arrow"):
        refs = ctx.execute(ds)
    assert by_id(refs.to_pylist()) == expected_rows()
    assert refs.counters == {"mapped": len(ROWS), "seen": len(ROWS), "read": len(ROWS)}  # the rerun's not counted again
    # Stage 2's shards 0 and 1 both read rows of the chunk: both are set aside, its task reruns once.
    lost = [r.getMessage() for r in caplog.records if "is lost" in r.getMessage()]
    assert [message.split(":")[0] for message in lost] == ["stage 2, shard 0", "stage 2, shard 1"]
    assert all("/stage-00-map/shard=00000/chunk-00000-attempt-0.parquet" in message for message in lost)
    assert "rerunning the task that wrote it, stage 0" in lost[0] and "shard 0 (rerun 1 of at most 3)" in lost[0]
    assert refs.run.stages[2]["num_reruns"] == 1
    failed = refs.run.tasks.sql("select stage_index, shard_index, error from data where status = 'failed' order by 2").fetchall()
    assert [(stage, shard) for stage, shard, _ in failed] == [(2, 0), (2, 1)]
    assert all(error.startswith(("ChunkCorruptError", "ChunkMissingError")) for _, _, error in failed)


def test_a_lost_run_of_a_group_by_is_written_again(one_worker, tmp_path):
    ctx, prefix = one_worker
    # The scatter stage's shard 1 damages the runs shard 0's task wrote; the reduce reads them.
    ds = (
        Dataset.from_list(ROWS, num_shards=2)
        .map(counting("mapped"))
        .map(damaging(f"{prefix}/*/stage-00-*/shard=00000/*.parquet", str(tmp_path)))
        .group_by(lambda row: row["id"] % 97, lambda key, rows: {"key": key, "num_rows": sum(1 for _ in rows)}, num_output_shards=2)
    )
    refs = ctx.execute(ds)
    expected = duckdb.sql("select id % 97 as key, count(*) as num_rows from range(6000) t(id) group by 1 order by 1").fetchall()
    assert sorted((row["key"], row["num_rows"]) for row in refs.to_pylist()) == expected
    assert refs.counters == {"mapped": len(ROWS), "seen": len(ROWS)}
    assert refs.run.stages[1]["num_reruns"] == 1


@pytest.mark.parametrize("broadcast", [False, True])
def test_a_lost_chunk_of_a_join_side_is_written_again(one_worker, tmp_path, broadcast):
    ctx, prefix = one_worker
    left = Dataset.from_list([{"id": i, "left": i * 2} for i in range(3_000)], num_shards=2)
    right_rows = [{"id": i, "right": f"r{i}"} for i in range(0, 6_000, 2)]
    # The right side's stage: its shard 1 damages what its shard 0 wrote (runs, or a broadcast side's chunks).
    right_stage = 0 if broadcast else 1  # a broadcast side's stages come before the stage reading it
    damage = damaging(f"{prefix}/*/stage-0{right_stage}-*/shard=00000/*.parquet", str(tmp_path))
    right = Dataset.from_list(right_rows, num_shards=2).map(damage)
    refs = ctx.execute(left.join(right, on="id", broadcast=broadcast))
    expected = [{"id": i, "left": i * 2, "right": f"r{i}"} for i in range(0, 3_000, 2)]
    assert by_id(refs.to_pylist()) == expected
    assert refs.counters == {"seen": len(right_rows)}
    assert sum(stage["num_reruns"] for stage in refs.run.stages) == 1


def test_a_lost_chunk_whose_writer_read_deleted_chunks_is_written_again_from_the_sources(one_worker, tmp_path, caplog):
    """Stage 3 reads stage 1's output, which was read from stage 0's: deleted once stage 1 was
    done. A reduce's inputs are runs of every scatter task: all are written again, then deleted."""
    ctx, prefix = one_worker
    ds = (
        Dataset.from_list(ROWS, num_shards=2)
        .map(counting("mapped"))
        .group_by(lambda row: row["id"] % 10, lambda key, rows: {"key": key, "ids": sorted(row["id"] for row in rows)}, num_output_shards=2)
        .map(damaging(f"{prefix}/*/stage-01-*/shard=00000/*.parquet", str(tmp_path)))
        .reshard(1)
        .map(lambda row: {"key": row["key"], "num_ids": len(row["ids"]), "first": row["ids"][0]})
    )
    with caplog.at_level(logging.WARNING, logger="zephyr_arrow"):
        refs = ctx.execute(ds)
    assert sorted(refs.to_pylist(), key=lambda row: row["key"]) == [{"key": k, "num_ids": 600, "first": k} for k in range(10)]
    assert refs.counters == {"mapped": len(ROWS), "seen": 10}
    assert refs.run.stages[-1]["num_reruns"] == 3  # the reduce task, and both scatter tasks for its runs
    assert glob.glob(f"{prefix}/*/stage-00-*") == []  # the scatter runs written again are deleted again
    assert [r.getMessage().split(":")[0] for r in caplog.records if "is lost" in r.getMessage()] == ["stage 3, shard 0"]


def test_under_a_checkpoint_a_rerun_task_replaces_its_committed_record(backend, backend_options, tmp_path):
    from zephyr_arrow.execution.task_record import read_record

    prefix = str(tmp_path / "chunks")
    stop = tmp_path / "stop"
    stop.touch()

    def fail_while_stop_exists(row):
        counters.increment("read")
        if os.path.exists(stop):
            raise ValueError("stopped")
        return row

    ds = (
        Dataset.from_list(ROWS, num_shards=2)
        .map(counting("mapped"))
        .map(damaging(f"{prefix}/*/stage-00-*/shard=00000/*.parquet", str(tmp_path)))
        .reshard(1)
        .map(fail_while_stop_exists)
    )
    with ZephyrContext(backend=backend, max_workers=1, chunk_storage_prefix=prefix, **backend_options) as ctx:
        with pytest.raises(ShardFailedError, match="stopped"):
            ctx.execute(ds, checkpoint="lost")
        (record_path,) = glob.glob(f"{prefix}/*/*/tasks/stage-00-*/*00000*")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(record_path))))
        record = read_record(record_path, root)
        (chunk,) = [output.chunk.path for output in record.result.outputs]
        assert chunk.endswith("shard=00000/chunk-00000-attempt-1.parquet") and os.path.exists(chunk)
        stop.unlink()
        refs = ctx.execute(ds, checkpoint="lost")
        assert by_id(refs.to_pylist()) == expected_rows()
        assert refs.counters == {"mapped": len(ROWS), "seen": len(ROWS), "read": len(ROWS)}


def test_a_chunk_that_keeps_being_damaged_fails_the_stage_naming_it(backend, backend_options, tmp_path, caplog):
    """The reading task damages, each time it runs, the chunk it has yet to read: its writer is
    rerun MAX_RERUNS times, then the damage is the reading task's error."""
    prefix = str(tmp_path / "chunks")
    ds = (
        Dataset.from_list(ROWS[:600], num_shards=2)
        .map(counting("mapped"))
        .reshard(1)
        .map(damaging(f"{prefix}/*/stage-00-*/shard=00001/*.parquet", str(tmp_path), every_attempt=True))
    )
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=prefix, **backend_options) as ctx:
        with pytest.raises(ShardFailedError) as failed, caplog.at_level(logging.WARNING, logger="zephyr_arrow"):
            ctx.execute(ds)
    last = f"stage-00-map/shard=00001/chunk-00000-attempt-{lineage.MAX_RERUNS}.parquet"
    assert [r.getMessage() for r in caplog.records if "lost again" in r.getMessage()] == [
        f"chunk {failed.value.__cause__.path}, of stage 0 (from_list(600 items, 2 shards) -> map(run)), shard 1, is lost again "
        f"after {lineage.MAX_RERUNS} reruns of its task: the stage reading it fails"
    ]
    assert re.match(rf"stage 2 \(.*\), shard 0 of 1: raised ChunkCorruptError: chunk \S+/{last} cannot be read", str(failed.value))
    assert isinstance(failed.value.__cause__, ChunkCorruptError) and failed.value.__cause__.path.endswith(last)
    assert failed.value.run.stages[-1]["num_reruns"] == lineage.MAX_RERUNS


def test_a_rerun_that_writes_other_rows_cannot_replace_a_lost_chunk(tmp_path):
    prefix = str(tmp_path / "chunks")
    marker = tmp_path / "damaged"

    def more_rows_after_the_damage(row):
        return [row, row] if marker.exists() and row["id"] == 0 else [row]

    ds = (
        Dataset.from_list(ROWS, num_shards=2)
        .flat_map(more_rows_after_the_damage)
        .map(damaging(f"{prefix}/*/stage-00-*/shard=00000/*.parquet", str(tmp_path)))
        .reshard(1)
        .map(lambda row: row)
    )
    with ZephyrContext(backend="sync", chunk_storage_prefix=prefix) as ctx:
        with pytest.raises(ShardFailedError, match=r"stage 0 \(.*\), shard 0: rerun to write its lost chunks again, it wrote "
                           r"other chunks than its first run \(1 chunks of 3000 rows, then 1 of 3001\)"):
            ctx.execute(ds)


def _task(shard_index: int) -> ShardTask:
    return ShardTask(0, "stage-00-map", shard_index, 2, 0, ItemsInput((shard_index,)), ExecutionInfo("/tmp/x", "run"))


def _lost(task: ShardTask, path: str) -> TaskFailed:
    return TaskFailed(0, TaskError(0, task.shard_index, task.attempt, None, f"ChunkCorruptError: chunk {path}", "", lost_chunk=path))


def test_the_coordinator_sets_aside_a_task_whose_input_chunk_is_lost_without_spending_its_retries():
    recoverable = {"/a.parquet"}
    coordinator = StageCoordinator("map", [_task(0), _task(1)], RetryPolicy(max_task_retries=0), recoverable.__contains__)
    [(worker, task)] = coordinator.assign([0], 0.0)
    coordinator.handle(_lost(task, "/a.parquet"), 0.0)
    assert not coordinator.stalled and not coordinator.finished and coordinator.failure is None  # shard 1 is still to run
    [(worker, other)] = coordinator.assign([0], 0.0)
    assert other.shard_index == 1
    coordinator.handle(_lost(other, "/elsewhere.parquet"), 0.0)  # not a chunk the run can write again: the task's error
    assert coordinator.failure is not None and "ChunkCorruptError: chunk /elsewhere.parquet" in str(coordinator.failure)


def test_the_coordinator_gives_a_set_aside_task_back_as_a_new_attempt():
    coordinator = StageCoordinator("map", [_task(0)], RetryPolicy(), {"/a.parquet"}.__contains__)
    [(_, task)] = coordinator.assign([0], 0.0)
    coordinator.handle(_lost(task, "/a.parquet"), 0.0)
    assert coordinator.stalled and not coordinator.finished
    [(aside, error)] = coordinator.take_lost()
    assert (aside, error.lost_chunk) == (task, "/a.parquet") and not coordinator.stalled
    coordinator.requeue([aside])
    [(_, again)] = coordinator.assign([0], 0.0)
    assert (again.shard_index, again.attempt) == (0, 1)


def test_a_lost_run_of_a_sort_is_written_again(tmp_path):
    prefix = str(tmp_path / "chunks")
    ds = (
        Dataset.from_list(list(reversed(ROWS)), num_shards=2)
        .map(damaging(f"{prefix}/*/stage-00-*/shard=00000/*.parquet", str(tmp_path)))
        .sort("id", num_output_shards=3)
    )
    with ZephyrContext(backend="sync", chunk_storage_prefix=prefix) as ctx:
        refs = ctx.execute(ds)
        assert [row["id"] for row in refs.to_pylist()] == list(range(len(ROWS)))
        assert refs.run.stages[1]["num_reruns"] == 1


def test_a_lost_chunk_of_a_file_read_in_pieces_is_written_again(tmp_path, monkeypatch):
    """A big input file is read by a task per piece: a lost chunk of a piece has that piece's task rerun."""
    import json

    from zephyr_arrow.execution import sources

    monkeypatch.setattr(sources, "MIN_PIECE_BYTES", 1024)
    monkeypatch.setattr(sources, "MAX_PIECE_BYTES", 8192)
    (tmp_path / "in").mkdir()
    for name, rows in [("a.jsonl", ROWS[:2000]), ("b.jsonl", ROWS[2000:2020])]:
        (tmp_path / "in" / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    prefix = str(tmp_path / "chunks")
    ds = (
        Dataset.from_files(str(tmp_path / "in" / "*.jsonl"))
        .load_jsonl()
        .map(damaging(f"{prefix}/*/stage-00-*/shard=00000/*.parquet", str(tmp_path)))  # the first piece's
        .reshard(1)
        .map(counting("read"))
    )
    with ZephyrContext(backend="sync", max_workers=2, chunk_storage_prefix=prefix) as ctx:
        refs = ctx.execute(ds)
        assert by_id(refs.to_pylist()) == [{**row, "n": len(row["text"])} for row in ROWS[:2020]]
        assert refs.counters == {"seen": 2020, "read": 2020}
        assert refs.run.stages[-1]["num_reruns"] == 1
