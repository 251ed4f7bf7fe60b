"""What a write leaves in an output directory: only whole files, nothing of killed writers, and an
empty ``_SUCCESS`` once every task of the write succeeded (never after a failed or partial run)."""

from __future__ import annotations

import os

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from zephyr_arrow import Dataset, ShardFailedError, ZephyrContext

ROWS = [{"id": i, "name": f"n{i}"} for i in range(20)]


@pytest.mark.parametrize("extension", ["parquet", "jsonl"])
def test_a_rerun_removes_what_a_killed_writer_left_and_readers_see_only_whole_files(ctx, tmp_path, extension):
    out = tmp_path / "out"
    out.mkdir()
    # What a writer killed mid-write leaves: its hidden temporary file, half written.
    stale = out / f".part-00001.{extension}.tmp-0badf00d"
    stale.write_bytes(b"PAR1 half a row group")
    write = getattr(Dataset.from_list(ROWS, num_shards=2).map(lambda row: row), f"write_{extension}")
    written = ctx.execute(write(str(out / f"part-{{shard:05d}}.{extension}")))
    assert sorted(written.to_pylist()) == [str(out / f"part-{shard:05d}.{extension}") for shard in range(2)]
    assert sorted(os.listdir(out)) == ["_SUCCESS", f"part-00000.{extension}", f"part-00001.{extension}"]
    if extension == "parquet":
        expected = sorted((row["id"], row["name"]) for row in ROWS)
        assert sorted(zip(*ds.dataset(str(out)).to_table().to_pydict().values())) == expected
        assert sorted(pl.scan_parquet(str(out) + "/").collect().rows()) == expected
        assert sorted(duckdb.sql(f"select id, name from '{out}/*.parquet'").fetchall()) == expected


def test_a_temporary_file_is_hidden_from_readers_while_it_is_written(tmp_path):
    from zephyr_arrow.fs import atomic_output

    target = tmp_path / "part-00000.parquet"
    with atomic_output(str(target)) as tmp:
        name = os.path.basename(tmp.path)
        assert name.startswith(".") and not name.endswith(".parquet"), name
        with tmp.open() as out:
            out.write(b"whole")
        assert not target.exists()
    assert os.listdir(tmp_path) == ["part-00000.parquet"] and target.read_bytes() == b"whole"


def _expected(rows):
    return sorted((row["id"], row["name"]) for row in rows)


def _readers_agree(out, rows):
    """pyarrow's dataset, Polars and DuckDB read the directory (marker and all) as the rows."""
    assert sorted(zip(*ds.dataset(str(out)).to_table().to_pydict().values())) == _expected(rows)
    assert sorted(pl.scan_parquet(str(out)).collect().rows()) == _expected(rows)
    assert sorted(duckdb.sql(f"select id, name from read_parquet('{out}')").fetchall()) == _expected(rows)


def test_a_finished_write_marks_each_directory_it_wrote(ctx, tmp_path):
    pattern = str(tmp_path / "out" / "{shard}" / "part.parquet")  # a directory per shard
    ctx.execute(Dataset.from_list(ROWS, num_shards=3).write_parquet(pattern))
    read = []
    for shard in range(3):
        marker = tmp_path / "out" / str(shard) / "_SUCCESS"
        assert marker.read_bytes() == b""
        rows = pq.read_table(marker.parent / "part.parquet").to_pylist()
        _readers_agree(marker.parent, rows)
        read += rows
    assert _expected(read) == _expected(ROWS)
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def _fail_on(id_):
    def row(row):
        if row["id"] == id_:
            raise ValueError(f"row {id_}")
        return row

    return row


def test_a_failed_write_leaves_no_marker_and_removes_a_stale_one(tmp_path):
    out = tmp_path / "out"
    pattern = str(out / "part-{shard:05d}.parquet")
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path / "chunks")) as ctx:
        ctx.execute(Dataset.from_list(ROWS, num_shards=2).write_parquet(pattern))
        assert (out / "_SUCCESS").exists()
        _readers_agree(out, ROWS)
        with pytest.raises(ShardFailedError, match="row 15"):  # the second shard's writer raises
            ctx.execute(Dataset.from_list(ROWS, num_shards=2).map(_fail_on(15)).write_parquet(pattern))
        assert not (out / "_SUCCESS").exists()
        with pytest.raises(ShardFailedError, match="row 3"):  # the first time into a fresh directory
            ctx.execute(Dataset.from_list(ROWS, num_shards=2).map(_fail_on(3)).write_jsonl(str(tmp_path / "new" / "{shard}.jsonl")))
        assert not (tmp_path / "new" / "_SUCCESS").exists()


def test_a_write_after_a_shuffle_marks_its_directory(tmp_path):
    out = tmp_path / "out"
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path / "chunks")) as ctx:
        grouped = Dataset.from_list(ROWS, num_shards=3).group_by("id", lambda key, rows: next(rows), num_output_shards=2)
        ctx.execute(grouped.write_parquet(str(out / "part-{shard}.parquet")))  # written by the reduce tasks
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-0.parquet", "part-1.parquet"]
    _readers_agree(out, ROWS)


def _fail_while_flagged(flag):
    def row(row):
        if row["id"] == 15 and os.path.exists(flag):  # a file read at run time: not in the fingerprint
            raise ValueError("flagged")
        return row

    return row


def test_a_resumed_write_keeps_its_committed_files_and_marks_the_directory_when_done(tmp_path):
    out = tmp_path / "out"
    flag = tmp_path / "flag"
    flag.touch()
    ds = Dataset.from_list(ROWS, num_shards=2).map(_fail_while_flagged(str(flag))).write_parquet(str(out / "part-{shard}.parquet"))
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path / "chunks")) as ctx:
        with pytest.raises(ShardFailedError, match="flagged"):
            ctx.execute(ds, checkpoint="write")
        committed = os.stat(out / "part-0.parquet").st_mtime_ns
        assert sorted(os.listdir(out)) == ["part-0.parquet"]
        flag.unlink()
        ctx.execute(ds, checkpoint="write")
    assert os.stat(out / "part-0.parquet").st_mtime_ns == committed  # the committed task did not run again
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-0.parquet", "part-1.parquet"]
    _readers_agree(out, ROWS)


def test_a_write_to_an_object_store_marks_its_directory(s3_prefix, tmp_path):
    import fsspec

    fs = fsspec.filesystem("s3")
    out = f"{s3_prefix}/out"
    fs.pipe_file(f"{out}/_SUCCESS", b"")  # a stale marker, from an earlier run
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path)) as ctx:
        with pytest.raises(ShardFailedError, match="row 15"):
            ctx.execute(Dataset.from_list(ROWS, num_shards=2).map(_fail_on(15)).write_parquet(f"{out}/part-{{shard}}.parquet"))
        fs.invalidate_cache()
        assert not fs.exists(f"{out}/_SUCCESS")
        ctx.execute(Dataset.from_list(ROWS, num_shards=2).write_parquet(f"{out}/part-{{shard}}.parquet"))
    fs.invalidate_cache()
    assert sorted(fs.ls(out)) == [f"{out}/{name}".removeprefix("s3://") for name in ["_SUCCESS", "part-0.parquet", "part-1.parquet"]]
    assert fs.size(f"{out}/_SUCCESS") == 0
    assert sorted(zip(*ds.dataset(out.removeprefix("s3://"), filesystem=fs).to_table().to_pydict().values())) == _expected(ROWS)
