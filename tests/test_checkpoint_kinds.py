"""Resuming at task granularity in the stages whose tasks are not one per shard: a stage whose
input files are cut into pieces (a task per piece, then a write task per shard).

A first run fails partway (a map raises while a marker file exists, or a directory stands where
a write goes); the rerun with the same key must run exactly the tasks that were not committed,
and give the oracle's answer.
"""

from __future__ import annotations

import json
import logging
import os

import pytest

from zephyr_arrow import Dataset, ZephyrContext, counters, io
from zephyr_arrow.errors import ShardFailedError
from zephyr_arrow.execution import sources
from zephyr_arrow.execution.checkpoint import record_names
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


def test_a_stage_of_cut_files_that_writes_resumes_its_pieces_then_its_writes(cut_files, backend, backend_options):
    work, prefix = cut_files, str(cut_files / "chunks")
    out = work / "out"
    source = Dataset.from_files(str(work / "in" / "*.jsonl")).load_jsonl()
    dataset = source.map(logging_map(work)).write_jsonl(str(out / "p-{shard:05d}.jsonl"))
    pieces = piece_ids(work, source)
    failing = next(index for index, ids in enumerate(pieces) if FAIL_ID in ids)
    (work / "broken").touch()
    os.makedirs(out / "p-00001.jsonl")  # in the way of shard 1's write
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=prefix, progress=False, **backend_options) as ctx:
        with pytest.raises(ShardFailedError, match=f"cannot tag row {FAIL_ID}"):
            ctx.execute(dataset, checkpoint="cut")
        first = committed(prefix, "cut", 0, pieces=True)
        assert failing not in first and set(logged_ids(work)) >= {i for p in first for i in pieces[p]}
        if backend == "sync":  # one task at a time, in order
            assert first == set(range(failing))

        (work / "broken").unlink()
        with pytest.raises(ShardFailedError, match="p-00001.jsonl"):
            ctx.execute(dataset, checkpoint="cut")
        assert sorted(logged_ids(work)) == sorted(i for p in range(len(pieces)) if p not in first for i in pieces[p])
        assert committed(prefix, "cut", 0, pieces=True) == set(range(len(pieces)))
        written = committed(prefix, "cut", 0)
        assert 1 not in written
        if backend == "sync":
            assert written == {0}
        kept = {shard: os.stat(out / f"p-{shard:05d}.jsonl").st_ino for shard in written}

        os.rmdir(out / "p-00001.jsonl")
        refs = ctx.execute(dataset, checkpoint="cut")
    assert logged_ids(work) == [], "a committed piece ran again"
    assert {shard: os.stat(out / f"p-{shard:05d}.jsonl").st_ino for shard in written} == kept, "a committed write ran again"
    assert [list(map(json.loads, open(out / f"p-{shard:05d}.jsonl"))) for shard in (0, 1)] == [expected_rows(work, "a"), expected_rows(work, "b")]
    assert refs.counters["tagged"] == 1520  # the committed pieces' and the new ones', each once
    assert sorted(os.listdir(out)) == ["p-00000.jsonl", "p-00001.jsonl"]


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

