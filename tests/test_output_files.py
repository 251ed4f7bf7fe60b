"""What a write leaves in an output directory: only whole files, and nothing of killed writers."""

from __future__ import annotations

import os

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pytest

from zephyr_arrow import Dataset

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
    assert sorted(os.listdir(out)) == [f"part-00000.{extension}", f"part-00001.{extension}"]
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
