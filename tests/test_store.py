"""ChunkRef, ShardRefs, schema unification and the lazy views."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from zephyr_arrow.arrow.tables import take_by_batch
from zephyr_arrow.errors import ChunkMissingError, SchemaConflictError
from zephyr_arrow.store import ChunkRef, ShardRefs, layout


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    return f"memory://zephyr-test-{uuid.uuid4().hex[:8]}"


def test_write_read_round_trip(root):
    table = pa.table({"a": [1, 2, 3], "b": ["x", None, "z"]})
    ref = ChunkRef.write(f"{root}/c.parquet", table)
    assert (ref.num_rows, ref.schema) == (3, table.schema)
    assert ref.read().equals(table)
    assert ref.read(columns=["b"]).column("b").to_pylist() == ["x", None, "z"]
    assert pa.Table.from_batches(list(ref.iter_batches())).equals(table)
    assert ref.scan().collect().to_dict(as_series=False) == {"a": [1, 2, 3], "b": ["x", None, "z"]}


def test_local_chunks_are_uncompressed_and_remote_ones_lz4(root):
    import fsspec
    import pyarrow.parquet as pq

    from zephyr_arrow.store.chunk_writer import ChunkWriter

    table = pa.table({"a": list(range(100))})
    refs = [ChunkRef.write(f"{root}/c.parquet", table), *ChunkWriter(lambda i: f"{root}/w-{i}.parquet").write_all([table])]
    expected = "UNCOMPRESSED" if root.startswith("/") else "LZ4"
    for ref in refs:
        fs, path = fsspec.core.url_to_fs(ref.path)
        with fs.open(path, "rb") as source:
            assert pq.ParquetFile(source).metadata.row_group(0).column(0).compression == expected


def test_write_accepts_batches_polars_and_rows(tmp_path):
    batch = pa.RecordBatch.from_pydict({"a": [1]})
    assert ChunkRef.write(str(tmp_path / "b.parquet"), batch).read().to_pylist() == [{"a": 1}]
    frame = pl.DataFrame({"a": [2]})
    assert ChunkRef.write(str(tmp_path / "p.parquet"), frame).read().to_pylist() == [{"a": 2}]
    with pytest.raises(TypeError, match="cannot write a chunk from dict"):
        ChunkRef.write(str(tmp_path / "d.parquet"), {"a": 1})


@pytest.mark.parametrize("store", ["local", "memory", "s3"])
def test_a_write_that_fails_part_way_leaves_nothing(store, tmp_path, monkeypatch, request):
    # A real write: half the rows reach the file Parquet is writing, then the disk "fills up".
    import fsspec
    import pyarrow.parquet as pq

    root = {"local": str(tmp_path), "memory": f"memory://zephyr-test-{uuid.uuid4().hex[:8]}"}.get(store)
    root = root or request.getfixturevalue("s3_prefix")
    fs, directory = fsspec.core.url_to_fs(f"{root}/dir")
    write_table, written = pq.write_table, []

    def write_half_then_fail(table, where, **kwargs):
        write_table(table.slice(0, table.num_rows // 2), where, **kwargs)
        fs.invalidate_cache()
        # (bytes written, whether a reader would find a file at the final path now)
        written.append((os.path.getsize(where) if isinstance(where, str) else where.tell(), fs.exists(f"{directory}/c.parquet")))
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        ChunkRef.write(f"{root}/dir/c.parquet", pa.table({"a": list(range(10_000))}))
    assert len(written) == 1 and written[0][0] > 1000 and written[0][1] is False
    fs.invalidate_cache()
    assert fs.find(directory) == []


def test_row_ranges_read_only_their_rows(tmp_path, monkeypatch):
    from zephyr_arrow.store import chunk_ref

    monkeypatch.setattr(chunk_ref, "ROW_GROUP_ROWS", 10)
    table = pa.table({"i": list(range(95))})
    ref = ChunkRef.write(str(tmp_path / "c.parquet"), table)
    for start, stop in [(0, 95), (0, 0), (3, 17), (10, 20), (9, 11), (90, 95), (47, 48)]:
        part = ref.slice(start, stop)
        assert part.num_rows == stop - start
        assert part.read().column("i").to_pylist() == list(range(start, stop))
        assert part.scan().collect()["i"].to_list() == list(range(start, stop))
    nested = ref.slice(10, 50).slice(5, 7)
    assert nested.read().column("i").to_pylist() == [15, 16]
    with pytest.raises(ValueError, match="outside chunk"):
        ref.slice(90, 96)


def _drifting_refs(tmp_path) -> ShardRefs:
    first = ChunkRef.write(
        str(tmp_path / "a.parquet"),
        pa.table({"x": [1, 2], "n": pa.nulls(2), "s": [{"a": 1}, {"a": 2}]}),
    )
    second = ChunkRef.write(
        str(tmp_path / "b.parquet"),
        pa.table({"x": [1.5], "n": ["z"], "s": [{"a": 3, "b": "q"}], "y": ["w"]}),
    )
    return ShardRefs([[first], [second]])


EXPECTED_DRIFT = [
    {"x": 1.0, "n": None, "s": {"a": 1, "b": None}, "y": None},
    {"x": 2.0, "n": None, "s": {"a": 2, "b": None}, "y": None},
    {"x": 1.5, "n": "z", "s": {"a": 3, "b": "q"}, "y": "w"},
]


DRIFT_ROWS = [{k: v for k, v in row.items() if k != "y"} for row in EXPECTED_DRIFT[:2]] + EXPECTED_DRIFT[2:]


def test_unified_schema_is_what_every_reader_sees(tmp_path):
    refs = _drifting_refs(tmp_path)
    assert refs.schema == pa.schema(
        [("x", pa.float64()), ("n", pa.string()), ("s", pa.struct([("a", pa.int64()), ("b", pa.string())])), ("y", pa.string())]
    )
    assert refs.load().to_pylist() == EXPECTED_DRIFT
    assert refs.to_arrow_dataset().to_table().to_pylist() == EXPECTED_DRIFT
    assert refs.to_polars().collect().to_dicts() == EXPECTED_DRIFT
    relation = refs.sql("select * from data order by x")
    assert [dict(zip(relation.columns, row)) for row in relation.fetchall()] == sorted(EXPECTED_DRIFT, key=lambda r: r["x"])
    # Rows of the chunk that had no column y lack the key, as the rows written did.
    assert list(refs.iter_rows()) == DRIFT_ROWS
    assert [list(refs.iter_shard_rows(shard)) for shard in range(2)] == [DRIFT_ROWS[:2], DRIFT_ROWS[2:]]


def test_shard_rows_stream_a_batch_at_a_time(tmp_path, monkeypatch):
    import zephyr_arrow.store.chunk_ref as chunk_ref

    monkeypatch.setattr(chunk_ref, "READ_BATCH_ROWS", 100)
    ref = ChunkRef.write(str(tmp_path / "big.parquet"), pa.table({"i": list(range(1000))}))
    refs = ShardRefs([[ref.slice(50, 950)]])
    monkeypatch.setattr(ChunkRef, "read", lambda *_, **__: pytest.fail("a whole chunk was read at once"))
    rows = refs.iter_shard_rows(0)
    assert next(rows) == {"i": 50}
    assert list(rows) == [{"i": i} for i in range(51, 950)]


def test_ranged_and_whole_chunks_mix_in_every_view(tmp_path):
    whole = ChunkRef.write(str(tmp_path / "w.parquet"), pa.table({"i": [100, 101]}))
    big = ChunkRef.write(str(tmp_path / "r.parquet"), pa.table({"i": list(range(10)), "extra": ["e"] * 10}))
    refs = ShardRefs([[whole, big.slice(2, 4)], [big.slice(7, 9)]])
    expected = [100, 101, 2, 3, 7, 8]
    assert refs.num_rows == 6
    assert refs.load().column("i").to_pylist() == expected
    assert sorted(refs.to_arrow_dataset().to_table().column("i").to_pylist()) == sorted(expected)
    assert sorted(refs.to_polars().collect()["i"].to_list()) == sorted(expected)
    assert sorted(r[0] for r in refs.sql("select i from data").fetchall()) == sorted(expected)
    assert refs.sql("select count(extra) from data").fetchall() == [(4,)]


def test_conflicting_types_name_column_types_and_files(tmp_path):
    a = ChunkRef.write(str(tmp_path / "a.parquet"), pa.table({"k": [1], "v": ["text"]}))
    b = ChunkRef.write(str(tmp_path / "b.parquet"), pa.table({"k": [2], "v": [{"f": 1}]}))
    with pytest.raises(SchemaConflictError) as error:
        ShardRefs([[a], [b]]).schema
    message = str(error.value)
    assert "'v'" in message and "string" in message and "struct<f: int64>" in message
    assert a.path in message and b.path in message


def test_empty_output_is_a_valid_empty_table(tmp_path):
    empty = ChunkRef.write(str(tmp_path / "e.parquet"), pa.table({"a": pa.array([], pa.int64())}))
    refs = ShardRefs([[empty], []])
    assert refs.num_rows == 0 and refs.num_shards == 2
    assert refs.load().num_rows == 0 and refs.load().schema.names == ["a"]
    assert refs.sql("select count(*) from data").fetchall() == [(0,)]
    assert refs.to_polars().collect().height == 0
    assert refs.to_pylist() == []
    assert ShardRefs([]).load().num_rows == 0


def test_a_shard_that_saw_no_batch_writes_no_file_and_one_that_did_keeps_its_schema(tmp_path):
    from zephyr_arrow.store.chunk_writer import ChunkWriter

    assert ChunkWriter(lambda i: str(tmp_path / f"none-{i}.parquet")).write_all([]) == []
    assert not list(tmp_path.iterdir())
    (empty,) = ChunkWriter(lambda i: str(tmp_path / f"empty-{i}.parquet")).write_all([pa.table({"a": pa.array([], pa.int64())})])
    assert empty.num_rows == 0 and empty.read().schema.names == ["a"]


def test_missing_chunk_raises_chunk_missing_in_every_reader(tmp_path):
    ref = ChunkRef.write(str(tmp_path / "gone.parquet"), pa.table({"a": [1]}))
    os.remove(ref.path)
    refs = ShardRefs([[ref]])
    for read in (ref.read, ref.scan, refs.load, refs.to_polars, refs.to_arrow_dataset, lambda: refs.sql("select 1")):
        with pytest.raises(ChunkMissingError, match="gone.parquet.*no longer exists"):
            read()


def test_manifest_reopens_in_a_fresh_process(tmp_path):
    refs = _drifting_refs(tmp_path / "run")
    refs = ShardRefs(refs.shards, counters={"docs": 3})
    saved = refs.save(str(tmp_path / "saved"))
    assert all(c.path.startswith(str(tmp_path / "saved")) for c in saved.chunks)
    code = (
        "import json, sys; from zephyr_arrow.store import ShardRefs; "
        f"r = ShardRefs.open({str(tmp_path / 'saved')!r}); "
        "print(json.dumps({'rows': r.to_pylist(), 'shards': r.num_shards, 'counters': r.counters}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"rows": DRIFT_ROWS, "shards": 2, "counters": {"docs": 3}}


def test_manifest_on_memory_filesystem():
    root = f"memory://zephyr-test-{uuid.uuid4().hex[:8]}"
    ref = ChunkRef.write(f"{root}/run/c.parquet", pa.table({"a": [1, 2]}))
    ShardRefs([[ref.slice(1, 2)]]).save(f"{root}/saved")
    reopened = ShardRefs.open(f"{root}/saved")
    assert reopened.to_pylist() == [{"a": 2}]
    assert reopened.sql("select a from data").fetchall() == [(2,)]


def test_hive_layout_reads_with_plain_duckdb(tmp_path):
    prefix = str(tmp_path)
    for shard in range(3):
        path = layout.chunk_path(prefix, "run-1", "stage-00-map", shard, 0, attempt=0)
        ChunkRef.write(path, pa.table({"v": [shard * 10]}))
    assert path.endswith("run-1/stage-00-map/shard=00002/chunk-00000-attempt-0.parquet")
    rows = duckdb.sql(
        f"select shard, v from read_parquet('{prefix}/run-1/stage-00-map/**/*.parquet', hive_partitioning=1) order by shard"
    ).fetchall()
    assert rows == [("00000", 0), ("00001", 10), ("00002", 20)]


def test_sql_over_hive_layout_chunks_shows_only_their_columns(tmp_path):
    # Chunk paths hold shard=NNNNN; DuckDB would otherwise add a `shard` column from them.
    chunks = [
        ChunkRef.write(layout.chunk_path(str(tmp_path), "run-1", "stage-00-map", shard, 0, attempt=0), pa.table({"v": [shard]}))
        for shard in range(2)
    ]
    relation = ShardRefs([[c] for c in chunks]).sql("select * from data order by v")
    assert relation.columns == ["v"]
    assert relation.fetchall() == [(0,), (1,)]


def test_saving_to_another_filesystem_streams_and_leaves_nothing_half_copied(tmp_path, monkeypatch):
    import shutil

    import fsspec

    refs = ShardRefs([[ChunkRef.write(str(tmp_path / "a.parquet"), pa.table({"i": list(range(100))}))]])
    target = f"memory://saved-{uuid.uuid4().hex[:8]}"
    assert refs.save(target).to_pylist() == ShardRefs.open(target).to_pylist() == [{"i": i} for i in range(100)]

    def copy_part_then_fail(source, destination, length):
        destination.write(source.read(100))
        raise OSError("connection lost")

    monkeypatch.setattr(shutil, "copyfileobj", copy_part_then_fail)
    broken = f"memory://saved-{uuid.uuid4().hex[:8]}"
    with pytest.raises(OSError, match="connection lost"):
        refs.save(broken)
    assert fsspec.filesystem("memory").find(broken.removeprefix("memory://")) == []


@pytest.mark.parametrize("rows", [1, 7, 250, 10_000])
def test_take_by_batch_equals_a_take_in_slices_of_the_combined_table(rows):
    rng = random.Random(rows)
    def batch(size):
        text = [None if rng.random() < 0.1 else "x" * rng.randint(0, 90) + str(i) for i in range(size)]
        return pa.table({"text": pa.array(text, pa.string()), "n": pa.array(range(size), pa.int32())})

    batches = [batch(size) for size in (300, 1, 0, 450, 250)]
    table = pa.concat_tables(batches)
    table = table.set_column(1, "n", pa.chunked_array([table.column("n").combine_chunks()]))  # chunked unlike "text"
    indices = pa.array(rng.sample(range(table.num_rows), table.num_rows - 100) + [5, 5, 0], pa.int64())
    pieces = list(take_by_batch(table, indices, rows))
    assert [piece.num_rows for piece in pieces[:-1]] == [rows] * (len(pieces) - 1)
    assert pa.concat_tables(pieces).equals(table.combine_chunks().take(indices))
