"""Chunks on an object store: ``chunk_storage_prefix="s3://..."`` against the session's S3 server.

Every backend's workers write and read the chunks through s3fs; the driver reads the
output through pyarrow, Polars, DuckDB and rows; nothing is left behind after a
failed write, a failed run or a closed context.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import fsspec
import pyarrow as pa
import pytest

from zephyr_arrow import (
    ChunkMissingError,
    ChunkRef,
    Dataset,
    ShardFailedError,
    ShardRefs,
    ZephyrContext,
    read_parquet,
    worker_ctx,
)
from zephyr_arrow.fs import atomic_output
from zephyr_arrow.store.chunk_writer import ChunkWriter

# Chunks disagree on schema: "score" is missing from some rows, and from the last shard's chunks altogether.
ROWS = [{"id": i, "lang": ["en", "de", None][i % 3], **({"score": i / 2} if i % 5 and i < 30 else {})} for i in range(40)]


def listing(url: str) -> list[str]:
    """Every object under ``url``, asked of the server (not of this process's listing cache)."""
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    return sorted(fs.find(url.removeprefix("s3://")))


@pytest.fixture
def s3_ctx(backend, backend_options, s3_prefix):
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=s3_prefix, **backend_options) as ctx:
        yield ctx
    assert listing(s3_prefix) == []  # the context's chunks are gone once it closes


def _tag(row):
    return {**row, "tag": worker_ctx().get_shared("tags")[row["lang"]]}


def test_pipeline_on_s3_matches_python_through_every_reader(s3_ctx, s3_prefix):
    s3_ctx.put("tags", {"en": "E", "de": "D", None: "-"})
    ds = Dataset.from_list(ROWS, num_shards=4).map(_tag).filter(lambda r: r["id"] % 4 != 3).reshard(3)
    refs = s3_ctx.execute(ds.map(lambda r: r))
    expected = [{**r, "score": r.get("score"), "tag": {"en": "E", "de": "D", None: "-"}[r["lang"]]} for r in ROWS if r["id"] % 4 != 3]

    assert all(chunk.path.startswith(s3_prefix + "/") for chunk in refs.chunks)
    run_dir = refs.chunks[0].path.removeprefix(s3_prefix + "/").split("/")[0]
    stage_dirs = {path.split("/")[3] for path in listing(f"{s3_prefix}/{run_dir}") if "/shared/" not in path}
    assert len(stage_dirs) == 1, f"intermediate stages should be gone, found {stage_dirs}"

    def by_id(rows):
        return sorted(rows, key=lambda r: r["id"])

    # Rows lack the keys they lacked; every view shows the column, null there.
    assert refs.to_pylist() == [{k: v for k, v in row.items() if k != "score" or "score" in source} for row, source in zip(expected, (r for r in ROWS if r["id"] % 4 != 3))]
    assert by_id(refs.to_arrow_dataset().to_table().to_pylist()) == expected
    assert by_id(refs.to_polars().collect().to_dicts()) == expected
    relation = refs.sql("select * from data order by id")
    assert [dict(zip(relation.columns, row)) for row in relation.fetchall()] == expected
    assert refs.sql("select count(*), sum(score) from data").fetchall() == [
        (len(expected), sum(r["score"] or 0 for r in expected))
    ]


def test_row_range_chunks_on_s3_read_the_same_everywhere(s3_prefix):
    # Reading is the driver's work: one backend is enough.
    with ZephyrContext(backend="sync", chunk_storage_prefix=s3_prefix) as ctx:
        _check_row_ranges(ctx)
    assert listing(s3_prefix) == []


def _check_row_ranges(ctx):
    refs = ctx.execute(Dataset.from_list(ROWS, num_shards=2).map(lambda r: r).reshard(5))
    assert any(chunk.row_range is not None for chunk in refs.chunks)
    expected = [{**r, "score": r.get("score")} for r in ROWS]
    assert refs.to_pylist() == ROWS  # rows lack the keys they lacked; the views show nulls
    assert sorted(refs.to_arrow_dataset().to_table().to_pylist(), key=lambda r: r["id"]) == expected
    assert sorted(refs.to_polars().collect().to_dicts(), key=lambda r: r["id"]) == expected
    assert refs.sql("select sum(id) from data").fetchall() == [(sum(r["id"] for r in ROWS),)]


def _fail_late(x):
    if x == 69_999:
        raise ValueError("row 69999")
    return x


def test_failed_run_leaves_nothing_on_s3(s3_ctx, s3_prefix):
    # 70k rows in one shard: a full row group reaches S3 before the task fails.
    with pytest.raises(ShardFailedError, match="row 69999"):
        s3_ctx.execute(Dataset.from_list(list(range(70_000)), num_shards=1).map(_fail_late))
    assert listing(s3_prefix) == []
    assert s3_ctx.execute(Dataset.from_list([1, 2]).map(lambda x: -x)).to_pylist() == [-1, -2]


def test_closed_context_refs_say_why_they_are_gone(s3_prefix):
    with ZephyrContext(backend="sync", chunk_storage_prefix=s3_prefix) as ctx:
        refs = ctx.execute(Dataset.from_list([1, 2, 3]).map(lambda x: x * 2))
    with pytest.raises(ChunkMissingError, match="ZephyrContext closes"):
        refs.to_pylist()
    with pytest.raises(ChunkMissingError):
        refs.sql("select * from data")


def test_atomic_output_on_s3_leaves_nothing_when_the_write_fails(s3_prefix):
    path = f"{s3_prefix}/x/file.bin"
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_output(path) as tmp:
            with tmp.open() as out:
                out.write(b"half a file")
            raise RuntimeError("disk on fire")
    assert listing(s3_prefix) == []
    with atomic_output(path) as tmp:
        with tmp.open() as out:
            out.write(b"whole")
    assert listing(s3_prefix) == [path.removeprefix("s3://")]


def test_chunk_writer_on_s3_removes_its_open_file_when_the_stream_fails(s3_prefix):
    def tables():
        yield pa.table({"n": list(range(70_000))})  # fills a row group: the chunk file is opened on S3
        raise ValueError("upstream failed")

    writer = ChunkWriter(lambda index: f"{s3_prefix}/chunk-{index}.parquet")
    with pytest.raises(ValueError, match="upstream failed"):
        writer.write_all(tables())
    assert listing(s3_prefix) == []


def test_chunk_ref_write_and_read_on_s3(s3_prefix):
    ref = ChunkRef.write(f"{s3_prefix}/one.parquet", [{"a": 1}, {"a": 2}, {"a": 3}])
    assert listing(s3_prefix) == [f"{s3_prefix}/one.parquet".removeprefix("s3://")]
    assert ref.read().to_pylist() == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert ref.slice(1, 3).scan().collect().to_dicts() == [{"a": 2}, {"a": 3}]


OPEN_SAVED = "import sys; from zephyr_arrow import ShardRefs; print(ShardRefs.open(sys.argv[1]).to_pylist())"


def test_save_to_s3_and_open_in_another_process(tmp_path, s3_prefix):
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path / "chunks")) as ctx:
        refs = ctx.execute(Dataset.from_list(list(range(10)), num_shards=3).map(lambda x: x * 3).reshard(2))
        saved = refs.save(f"{s3_prefix}/saved")  # local chunks copied to S3
    assert all(chunk.path.startswith(f"{s3_prefix}/saved/") for chunk in saved.chunks)
    reopened = ShardRefs.open(f"{s3_prefix}/saved")
    assert reopened == saved and reopened.to_pylist() == [x * 3 for x in range(10)]
    # Another process finds the server through the environment alone.
    out = subprocess.run([sys.executable, "-c", OPEN_SAVED, f"{s3_prefix}/saved"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([x * 3 for x in range(10)])
    # S3 -> S3 (a copy on the server) and S3 -> local.
    reopened.save(f"{s3_prefix}/again")
    assert ShardRefs.open(f"{s3_prefix}/again").to_pylist() == [x * 3 for x in range(10)]
    local = reopened.save(str(tmp_path / "local"))
    assert ShardRefs.open(str(tmp_path / "local")).to_pylist() == [x * 3 for x in range(10)]
    assert all(chunk.path.startswith(str(tmp_path)) for chunk in local.chunks)


def test_inputs_and_outputs_on_s3(tmp_path, s3_prefix):
    fs = fsspec.filesystem("s3")
    for index in range(2):
        with fs.open(f"{s3_prefix}/in/{index}.jsonl", "w") as out:
            out.write("".join(json.dumps({"file": index, "n": n}) + "\n" for n in range(3)))
    with ZephyrContext(backend="local", max_workers=2, chunk_storage_prefix=str(tmp_path)) as ctx:
        ds = Dataset.from_files(f"{s3_prefix}/in/*.jsonl").load_jsonl().write_parquet(f"{s3_prefix}/out/{{shard}}.parquet")
        assert ctx.execute(ds).to_pylist() == [f"{s3_prefix}/out/{index}.parquet" for index in range(2)]
    assert read_parquet(f"{s3_prefix}/out/*.parquet").to_pylist() == [{"file": i, "n": n} for i in range(2) for n in range(3)]


def _fsspec_options(_):
    import fsspec.config

    return {"options": json.dumps(fsspec.config.conf.get("zephyr-test"))}


def test_workers_use_the_drivers_fsspec_config_of_each_run(ctx, monkeypatch):
    ds = Dataset.from_list([0, 1], num_shards=2).map(_fsspec_options)
    monkeypatch.setitem(fsspec.config.conf, "zephyr-test", {"endpoint_url": "http://one"})
    assert ctx.execute(ds).to_pylist() == [{"options": '{"endpoint_url": "http://one"}'}] * 2
    monkeypatch.setitem(fsspec.config.conf, "zephyr-test", {"region": "two"})
    assert ctx.execute(ds).to_pylist() == [{"options": '{"region": "two"}'}] * 2  # the first run's option is gone
    monkeypatch.delitem(fsspec.config.conf, "zephyr-test")
    assert ctx.execute(ds).to_pylist() == [{"options": "null"}] * 2


# The endpoint is set in code, as with MinIO; the environment the workers inherit points elsewhere.
ENDPOINT_IN_CODE = """
import sys
import fsspec
fsspec.config.conf["s3"] = {"endpoint_url": sys.argv[1]}
from zephyr_arrow import Dataset, ZephyrContext
with ZephyrContext(backend="local", max_workers=2, chunk_storage_prefix=sys.argv[2]) as ctx:
    refs = ctx.execute(Dataset.from_list(list(range(10)), num_shards=2).map(lambda x: {"x": x * 2}).reshard(3))
    print(sorted(row["x"] for row in refs.iter_rows()))
"""


def test_an_endpoint_set_in_code_reaches_local_workers(s3_server, s3_prefix):
    env = {**os.environ, "FSSPEC_S3_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens there
    out = subprocess.run(
        [sys.executable, "-c", ENDPOINT_IN_CODE, s3_server, s3_prefix], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([x * 2 for x in range(10)])


def _zephyrtest_options(x):
    import fsspec.config

    return {"x": x, "options": json.dumps(fsspec.config.conf.get("zephyrtest"), sort_keys=True)}


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_the_drivers_fsspec_options_win_over_a_workers_own(backend, s3_prefix, monkeypatch, request):
    # The workers' own environment points S3 at a port nothing listens on and sets two options
    # of a made-up protocol; the driver's config names the right endpoint and one of the two.
    worker_env = {"FSSPEC_S3_ENDPOINT_URL": "http://127.0.0.1:9", "FSSPEC_ZEPHYRTEST_A": "worker", "FSSPEC_ZEPHYRTEST_C": "worker"}
    monkeypatch.setitem(fsspec.config.conf, "zephyrtest", {"b": "driver", "c": "driver"})
    if backend == "ray":
        request.getfixturevalue("ray_session")
        options = {"num_cpus_per_worker": 0.5, "runtime_env": {"env_vars": worker_env}}
    else:
        for name, value in worker_env.items():
            monkeypatch.setenv(name, value)  # local workers inherit the driver's environment
        options = {}
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=s3_prefix, **options) as ctx:
        refs = ctx.execute(Dataset.from_list([0, 1, 2], num_shards=3).map(_zephyrtest_options).reshard(2).map(lambda r: r))
        merged = json.dumps({"a": "worker", "b": "driver", "c": "driver"}, sort_keys=True)
        assert refs.to_pylist() == [{"x": x, "options": merged} for x in range(3)]
