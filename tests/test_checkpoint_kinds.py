"""Resuming at task granularity in the stages whose tasks are not one per shard: a stage whose
input files are cut into pieces (a task per piece, then a write task per shard), and a
PIPELINES stage (fuzzy_deduplicate), whose pipelines are checkpointed runs of their own.

A first run fails partway (a map raises while a marker file exists, a directory stands where
a write goes, or the scheduler stops mid-stage as a killed driver would); the rerun with the
same key must run exactly the tasks that were not committed, and give the oracle's answer.
"""

from __future__ import annotations

import json
import logging
import os
import re

import pytest

from zephyr_arrow import Dataset, ZephyrContext, counters, io
from zephyr_arrow.errors import ShardFailedError
from zephyr_arrow.execution import executor, sources
from zephyr_arrow.execution.checkpoint import record_names
from zephyr_arrow.execution.kept_runs import list_runs
from zephyr_arrow.fs import filesystem
from zephyr_arrow.store import layout

FAIL_ID = 1200  # a row of a later piece of a.jsonl


@pytest.fixture
def cut_files(tmp_path, monkeypatch):
    """a.jsonl, big enough to be cut into pieces of 1-4 kB for 2 workers, and b.jsonl, small."""
    monkeypatch.setattr(sources, "MIN_PIECE_BYTES", 1024)
    monkeypatch.setattr(sources, "MAX_PIECE_BYTES", 4096)
    (tmp_path / "in").mkdir()
    rows = {"a": [{"id": i, "user": f"u{i % 7}"} for i in range(1500)], "b": [{"id": 5000 + i, "user": f"u{i % 3}"} for i in range(20)]}
    for name, file_rows in rows.items():
        with open(tmp_path / "in" / f"{name}.jsonl", "w") as out:
            out.writelines(json.dumps(row) + "\n" for row in file_rows)
    return tmp_path


def logging_map(work):
    """A map that logs each row's id (the side channel that says which tasks ran) and raises on
    FAIL_ID while the file ``broken`` exists in ``work``."""
    log, broken = str(work / "log"), str(work / "broken")

    def tag(row):
        with open(log, "a") as out:
            out.write(f"{row['id']}\n")
        if row["id"] == FAIL_ID and os.path.exists(broken):
            raise ValueError(f"cannot tag row {FAIL_ID}")
        counters.increment("tagged")
        return {**row, "tag": row["id"] * 3}

    return tag


def logged_ids(work) -> list[int]:
    path = work / "log"
    ids = [int(line) for line in path.read_text().split()] if path.exists() else []
    path.unlink(missing_ok=True)
    return ids


def piece_ids(work, dataset: Dataset, num_workers: int = 2) -> list[list[int]]:
    """The row ids of each piece the files are cut into (as the driver cuts them)."""
    pieces = sources.split_inputs(sources.source_inputs(dataset.source), dataset.operations[0], num_workers)
    assert pieces is not None and len(pieces.inputs) > 2, "a.jsonl is cut"
    ids = []
    for shard_input in pieces.inputs:
        item = shard_input.items[0]
        span = (item.start, item.stop) if hasattr(item, "start") else None
        ids.append([row["id"] for table in io.read_file(getattr(item, "path", item), span=span) for row in table.to_pylist()])
    return ids


def committed(prefix: str, key: str, stage_index: int, pieces: bool = False) -> set[int]:
    """The tasks (shards, or pieces) of ``stage_index`` whose records exist under its current fingerprint."""
    execution_id = layout.checkpoint_execution_id(key)
    run = json.loads(open(layout.checkpoint_path(prefix, execution_id, "run.json")).read())
    records = layout.task_records_dir(prefix, execution_id, stage_index, run["stages"][str(stage_index)]["fingerprint"], pieces)
    return {int(name.removeprefix("shard-").removesuffix(".json")) for name in record_names(*filesystem(records))}


def expected_rows(work, name: str) -> list[dict]:
    return [{**row, "tag": row["id"] * 3} for row in map(json.loads, open(work / "in" / f"{name}.jsonl"))]


@pytest.mark.parametrize("backend_name", ["sync", "local"])  # the driver's side is what differs: Ray adds time, not cover
def test_a_stage_of_cut_files_that_writes_resumes_its_pieces_then_its_writes(cut_files, backend_name):
    work, prefix = cut_files, str(cut_files / "chunks")
    out = work / "out"
    source = Dataset.from_files(str(work / "in" / "*.jsonl")).load_jsonl()
    dataset = source.map(logging_map(work)).write_jsonl(str(out / "p-{shard:05d}.jsonl"))
    pieces = piece_ids(work, source)
    failing = next(index for index, ids in enumerate(pieces) if FAIL_ID in ids)
    (work / "broken").touch()
    os.makedirs(out / "p-00001.jsonl")  # in the way of shard 1's write
    with ZephyrContext(backend=backend_name, max_workers=2, chunk_storage_prefix=prefix, progress=False) as ctx:
        with pytest.raises(ShardFailedError, match=f"cannot tag row {FAIL_ID}"):
            ctx.execute(dataset, checkpoint="cut")
        first = committed(prefix, "cut", 0, pieces=True)
        assert failing not in first and set(logged_ids(work)) >= {i for p in first for i in pieces[p]}
        if backend_name == "sync":  # one task at a time, in order
            assert first == set(range(failing))

        (work / "broken").unlink()
        with pytest.raises(ShardFailedError, match="p-00001.jsonl"):
            ctx.execute(dataset, checkpoint="cut")
        assert sorted(logged_ids(work)) == sorted(i for p in range(len(pieces)) if p not in first for i in pieces[p])
        assert committed(prefix, "cut", 0, pieces=True) == set(range(len(pieces)))
        written = committed(prefix, "cut", 0)
        assert 1 not in written
        if backend_name == "sync":
            assert written == {0}
        kept = {shard: os.stat(out / f"p-{shard:05d}.jsonl").st_ino for shard in written}

        os.rmdir(out / "p-00001.jsonl")
        refs = ctx.execute(dataset, checkpoint="cut")
    assert logged_ids(work) == [], "a committed piece ran again"
    assert {shard: os.stat(out / f"p-{shard:05d}.jsonl").st_ino for shard in written} == kept, "a committed write ran again"
    assert [list(map(json.loads, open(out / f"p-{shard:05d}.jsonl"))) for shard in (0, 1)] == [expected_rows(work, "a"), expected_rows(work, "b")]
    assert refs.counters["tagged"] == 1520  # the committed pieces' and the new ones', each once
    assert sorted(os.listdir(out)) == ["_SUCCESS", "p-00000.jsonl", "p-00001.jsonl"]  # no temporary file left; the run complete


@pytest.mark.parametrize("shape", ["map", "group_by"])
@pytest.mark.parametrize("backend_name", ["sync", "local"])
def test_a_stage_of_cut_files_resumes_its_uncommitted_pieces(cut_files, backend_name, shape):
    work, prefix = cut_files, str(cut_files / "chunks")
    source = Dataset.from_files(str(work / "in" / "*.jsonl")).load_jsonl()
    dataset = source.map(logging_map(work))
    if shape == "group_by":
        dataset = dataset.group_by("user", lambda user, rows: {"user": user, "ids": sorted(r["id"] for r in rows)}, num_output_shards=3)
    pieces = piece_ids(work, source)
    (work / "broken").touch()
    with ZephyrContext(backend=backend_name, max_workers=2, chunk_storage_prefix=prefix, progress=False) as ctx:
        with pytest.raises(ShardFailedError):
            ctx.execute(dataset, checkpoint="pieces")
        first = committed(prefix, "pieces", 0)
        assert first and len(first) < len(pieces)
        assert list_runs(prefix)[0].shards[0] == (len(first), len(pieces)), "zephyr-arrow runs counts the stage's pieces"
        logged_ids(work)
        (work / "broken").unlink()
        refs = ctx.execute(dataset, checkpoint="pieces")
        shards = [list(refs.iter_shard_rows(shard)) for shard in range(refs.num_shards)]
    assert sorted(logged_ids(work)) == sorted(i for p in range(len(pieces)) if p not in first for i in pieces[p])
    assert refs.counters["tagged"] == 1520
    if shape == "map":  # each shard is its file's rows, in order
        assert shards == [expected_rows(work, "a"), expected_rows(work, "b")]
    else:
        every = [row for name in "ab" for row in map(json.loads, open(work / "in" / f"{name}.jsonl"))]
        users = sorted({row["user"] for row in every})
        assert sorted((row for shard in shards for row in shard), key=lambda r: r["user"]) == [
            {"user": user, "ids": sorted(row["id"] for row in every if row["user"] == user)} for user in users
        ]


def test_files_cut_for_another_max_workers_rerun_their_stage_and_say_why(cut_files, caplog, monkeypatch):
    monkeypatch.setattr(sources, "MAX_PIECE_BYTES", 1 << 20)  # pieces of a fair share: a.jsonl in 2 pieces for 2 workers, 3 for 3
    work, prefix = cut_files, str(cut_files / "chunks")
    source = Dataset.from_files(str(work / "in" / "*.jsonl")).load_jsonl()
    dataset = source.map(logging_map(work))
    assert piece_ids(work, source, 2) != piece_ids(work, source, 3)
    (work / "broken").touch()
    with ZephyrContext(backend="sync", max_workers=2, chunk_storage_prefix=prefix, progress=False) as ctx:
        with pytest.raises(ShardFailedError):
            ctx.execute(dataset, checkpoint="workers")
    logged_ids(work)
    (work / "broken").unlink()
    with ZephyrContext(backend="sync", max_workers=3, chunk_storage_prefix=prefix, progress=False) as ctx:
        with caplog.at_level(logging.INFO, logger="zephyr_arrow"):
            refs = ctx.execute(dataset, checkpoint="workers")
        shards = [list(refs.iter_shard_rows(shard)) for shard in range(refs.num_shards)]
    assert "rerun (its files are cut into other pieces (max_workers changed))" in caplog.text
    assert sorted(logged_ids(work)) == sorted([*range(1500), *range(5000, 5020)])
    assert shards == [expected_rows(work, "a"), expected_rows(work, "b")]
    assert refs.counters["tagged"] == 1520


# PIPELINES ------------------------------------------------------------------------------------


def chain_docs() -> list[dict]:
    """Documents in chains (each close to the next, far from the one after): label propagation
    needs several rounds to give a chain its first row id. Interleaved, so chains cross shards."""
    words = [f"w{i}" for i in range(400)]
    chains = [[" ".join(words[start + step : start + step + 24]) for step in range(0, 24, 2)] for start in (0, 100, 200, 300)]
    docs = [{"id": f"c{c}-{i}", "text": text} for i, texts in enumerate(zip(*chains)) for c, text in enumerate(texts)]
    return docs + [{"id": f"solo-{i}", "text": f"lonely{i} text{i} only{i} here{i}"} for i in range(6)]


class TaskLog:
    """Wraps the executor's ``run_stage``: records every task it hands to the scheduler (as the
    pipeline run, stage and shard it belongs to) and, when told, runs only the first task of the
    first stage of pipeline ``stop_in`` and raises, as a driver killed mid-stage would stop."""

    def __init__(self, monkeypatch, stop_in: str | None = None) -> None:
        self.tasks: set[tuple[str, str, int]] = set()
        self.stop_in = stop_in
        real = executor.run_stage

        def run_stage(backend, stage, tasks, *args, **kwargs):
            if self.stop_in is not None and tasks and tasks[0].execution.execution_id.endswith(self.stop_in):
                self.stop_in, tasks = None, tasks[:1]
                self.tasks |= {self.name(task) for task in tasks}
                real(backend, stage, tasks, *args, **kwargs)
                raise RuntimeError("the driver stopped here")
            self.tasks |= {self.name(task) for task in tasks}
            return real(backend, stage, tasks, *args, **kwargs)

        monkeypatch.setattr(executor, "run_stage", run_stage)

    @staticmethod
    def name(task) -> tuple[str, str, int]:
        """(pipeline run, stage without its fingerprint, shard): the same in runs under different keys."""
        execution_id = task.execution.execution_id
        pipeline = execution_id.rsplit("/", 1)[1] if "/" in execution_id else ""
        return pipeline, re.sub(r"-[0-9a-f]{12}$", "", task.stage_dir), task.shard_index

    def take(self) -> set[tuple[str, str, int]]:
        tasks, self.tasks = self.tasks, set()
        return tasks


@pytest.mark.parametrize("backend_name", ["sync", "local"])  # the driver's side is what differs: Ray adds time, not cover
def test_a_pipelines_stage_resumes_in_the_round_it_stopped(tmp_path, monkeypatch, backend_name):
    docs = chain_docs()
    fail_marker = tmp_path / "broken"

    def count(doc):
        counters.increment("docs")
        return doc

    def after(doc):
        if doc["id"] == "solo-5" and fail_marker.exists():
            raise ValueError("cannot finish solo-5")
        return doc

    dataset = Dataset.from_list(docs, num_shards=3).map(count).fuzzy_deduplicate("text", threshold=0.7, ngram_size=2).map(after)
    prefix = str(tmp_path / "chunks")
    log = TaskLog(monkeypatch)
    with ZephyrContext(backend=backend_name, max_workers=2, chunk_storage_prefix=prefix, progress=False) as ctx:
        expected = ctx.execute(dataset)  # no checkpoint: the answer to match
        everything = log.take()
        rounds = sorted({pipeline for pipeline, _, _ in everything if "-round-" in pipeline})
        assert len(rounds) >= 3, rounds
        kept = [row["id"] for row in expected.to_pylist()]
        assert kept[:4] == ["c0-0", "c1-0", "c2-0", "c3-0"] and len(kept) < len(docs) / 2 and kept[-6:] == [f"solo-{i}" for i in range(6)]

        log.stop_in = rounds[2]
        with pytest.raises(RuntimeError, match="the driver stopped here"):
            ctx.execute(dataset, checkpoint="fuzzy")
        first = log.take()
        assert first < everything

        fail_marker.touch()  # the stage after the pipelines fails on one document
        with pytest.raises(ShardFailedError, match="cannot finish solo-5"):
            ctx.execute(dataset, checkpoint="fuzzy")
        second = log.take()
        run_dir = layout.execution_dir(prefix, layout.checkpoint_execution_id("fuzzy"))
        (stage_dir,) = [name for name in os.listdir(run_dir) if name.startswith("stage-01-pipelines-")]
        assert [name.split("-", 1)[1] for name in os.listdir(os.path.join(run_dir, stage_dir))] == ["output"], "the stage is done"
        assert {pipeline for pipeline, _, _ in second if pipeline} == {pipeline for pipeline, _, _ in everything if pipeline >= rounds[2]}
        assert second == {task for task in everything if task not in first and task[0] >= rounds[2]} | {
            task for task in everything if not task[0] and task not in first
        }, "a committed task ran again, or a pipeline before the one stopped"

        fail_marker.unlink()
        refs = ctx.execute(dataset, checkpoint="fuzzy")
        third = log.take()
        assert third and all(not pipeline and stage.startswith("stage-02") for pipeline, stage, _ in third), third
        assert refs.to_pylist() == expected.to_pylist()
        assert refs.counters == expected.counters == {"docs": len(docs)}
