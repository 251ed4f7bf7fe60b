"""A chunk changed after it was written is an error naming its file, never a wrong answer.

Chunks are written with Parquet page checksums, and every read zephyr_arrow makes of a chunk
(between stages, in a shuffle's merge, ``to_pylist``) checks them; the views that hand chunks
to DuckDB, Polars and pyarrow.dataset check each file first (``store/verify.py``). The damage is what a
flipped disk block or a clobbering writer leaves: 64 bytes overwritten inside a column's
data, the file's size unchanged; or a file cut short.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zephyr_arrow import ChunkRef, Dataset, InputFileError, ShardFailedError, ShardRefs, ZephyrContext, read_parquet
from zephyr_arrow.errors import ChunkCorruptError
from zephyr_arrow.store import verify

ROWS = [{"id": i, "text": f"document {i} " + "word " * (i % 7)} for i in range(20_000)]


def overwrite_inside(path: str) -> None:
    """64 bytes of the first column's values overwritten (past its first page's header), the
    file's size unchanged: without checksums, the file still decodes, to other numbers."""
    size = os.path.getsize(path)
    start = pq.ParquetFile(path).metadata.row_group(0).column(0).data_page_offset
    with open(path, "r+b") as f:
        f.seek(start + 256)
        f.write(b"\xa5" * 64)
    assert os.path.getsize(path) == size


def cut_short(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.fixture
def written(tmp_path):
    """A two-shard output of a map stage, kept (preserve_chunks) so it can be damaged and read again."""
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path), preserve_chunks=True) as ctx:
        refs = ctx.execute(Dataset.from_list(ROWS, num_shards=2).map(lambda row: {**row, "n": len(row["text"])}))
    assert refs.num_rows == len(ROWS)
    return refs


@pytest.mark.parametrize("damage", [overwrite_inside, cut_short])
def test_a_damaged_chunk_fails_to_read_naming_its_file(written, damage):
    chunk = written.shards[0][0]
    damage(chunk.path)
    with pytest.raises(ChunkCorruptError, match=f"chunk {chunk.path} cannot be read as it was written"):
        written.to_pylist()
    with pytest.raises(ChunkCorruptError, match=chunk.path):
        chunk.read()


@pytest.mark.parametrize("next_stage", ["map", "group_by"])
def test_a_chunk_damaged_between_stages_fails_the_stage_reading_it(ctx, written, next_stage):
    chunk = written.shards[1][0]
    overwrite_inside(chunk.path)
    ds = Dataset.from_refs(written)
    ds = ds.map(lambda row: (row["id"], row["text"], row["n"])) if next_stage == "map" else ds.group_by("id", lambda key, rows: list(rows))
    with pytest.raises(ShardFailedError, match=f"ChunkCorruptError: chunk {chunk.path}"):
        ctx.execute(ds)


def test_undamaged_chunks_read_back_exactly(written):
    assert sorted(written.to_pylist(), key=lambda row: row["id"]) == [{**row, "n": len(row["text"])} for row in ROWS]


def test_chunks_are_written_with_page_checksums(tmp_path):
    ref = ChunkRef.write(str(tmp_path / "chunk.parquet"), pa.table({"a": list(range(1000))}))
    # A file without checksums is read unchecked; one with them fails on a flipped byte.
    pq.write_table(pa.table({"a": list(range(1000))}), tmp_path / "plain.parquet", compression="none")
    overwrite_inside(ref.path)
    overwrite_inside(str(tmp_path / "plain.parquet"))
    with pytest.raises(ChunkCorruptError):
        ref.read()
    assert pq.read_table(tmp_path / "plain.parquet").num_rows == 1000  # silently wrong: what checksums prevent


def test_read_parquet_of_a_file_that_is_not_parquet_names_it(tmp_path):
    path = tmp_path / "notes.parquet"
    path.write_text("id,text\n1,hello\n")
    with pytest.raises(InputFileError, match=f"{path} is not a readable Parquet file"):
        read_parquet(str(path))


def test_a_chunk_deleted_while_its_context_is_open_is_not_blamed_on_the_context_closing(tmp_path):
    from zephyr_arrow import ChunkMissingError

    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path)) as ctx:
        refs = ctx.execute(Dataset.from_list(ROWS[:10], num_shards=2).map(lambda row: row))
        os.remove(refs.shards[0][0].path)
        with pytest.raises(ChunkMissingError, match="though its directory does: no ZephyrContext deleted it"):
            refs.to_pylist()
    with pytest.raises(ChunkMissingError, match="deleted when its ZephyrContext closes"):
        refs.to_pylist()


def overwrite_page_header(path: str) -> None:
    """The first page's header (where its size and checksum are) overwritten."""
    start = pq.ParquetFile(path).metadata.row_group(0).column(0).data_page_offset
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\xa5" * 16)


# Each view, read to the end: DuckDB, Polars and pyarrow.dataset scan the files with their own readers.
VIEWS = {
    "sql": lambda refs: refs.sql("select count(*), sum(id) from data").fetchall(),
    "to_polars": lambda refs: refs.to_polars().collect(),
    "to_arrow_dataset": lambda refs: refs.to_arrow_dataset().to_table(),
    "to_pylist": lambda refs: refs.to_pylist(),
    "iter_batches": lambda refs: list(refs.iter_batches()),
    "load": lambda refs: refs.load(),
}


@pytest.mark.parametrize("damage", [overwrite_inside, overwrite_page_header, cut_short])
def test_every_view_of_a_damaged_chunk_fails_naming_it(written, damage):
    chunk = written.shards[1][0]
    damage(chunk.path)
    ranged = ShardRefs([[chunk.slice(100, 5_000)]])  # a row range of the file, read as such by each view
    for name, view in VIEWS.items():
        for refs in (written, ranged):
            with pytest.raises(ChunkCorruptError, match=f"chunk {chunk.path} cannot be read as it was written"):
                view(refs)
                pytest.fail(f"{name} read a damaged chunk")
    with pytest.raises(ChunkCorruptError, match=chunk.path):
        chunk.scan()


def test_every_view_of_undamaged_chunks_gives_the_oracles_values(written):
    expected = sorted(([row["id"], row["text"], len(row["text"])] for row in ROWS))
    assert VIEWS["sql"](written) == [(len(ROWS), sum(row["id"] for row in ROWS))]
    assert sorted(written.sql("select id, text, n from data").fetchall()) == [tuple(row) for row in expected]
    assert sorted(written.to_polars().collect().rows()) == [tuple(row) for row in expected]
    assert sorted(map(list, zip(*written.to_arrow_dataset().to_table().to_pydict().values()))) == expected
    chunk = written.shards[0][0]
    assert chunk.slice(10, 20).scan().collect()["id"].to_list() == chunk.read().column("id").to_pylist()[10:20]


def test_a_file_checked_once_is_not_checked_again_until_it_changes(written, monkeypatch):
    checked = []
    real = verify._problem
    monkeypatch.setattr(verify, "_problem", lambda path, refs: checked.append(path) or real(path, refs))
    written.sql("select count(*) from data")
    written.to_polars()
    assert sorted(checked) == sorted(chunk.path for chunk in written.chunks)  # each file once
    chunk = written.shards[0][0]
    ChunkRef.write(chunk.path, chunk.read())  # written again: another file at the same path
    checked.clear()
    written.to_arrow_dataset()
    assert checked == [chunk.path]


def test_a_users_parquet_file_without_checksums_reads_through_every_view(tmp_path):
    path = str(tmp_path / "plain.parquet")
    pq.write_table(pa.table({"id": list(range(1000)), "text": [f"t{i}" for i in range(1000)]}), path, row_group_size=300)
    refs = read_parquet(path)
    assert VIEWS["sql"](refs) == [(1000, sum(range(1000)))]
    assert refs.to_polars().collect()["id"].to_list() == list(range(1000))
    assert refs.to_arrow_dataset().to_table().column("text").to_pylist() == [f"t{i}" for i in range(1000)]
    assert refs.to_pylist()[999] == {"id": 999, "text": "t999"}
    # A chunk is written with checksums: a file claimed as one but without them is not taken as one.
    as_chunk = ShardRefs([[ChunkRef(path, 1000, refs.schema)]])
    with pytest.raises(ChunkCorruptError, match="has no checksum"):
        as_chunk.sql("select count(*) from data")


def test_a_damaged_chunk_on_an_object_store_fails_every_view(s3_prefix):
    import fsspec

    with ZephyrContext(backend="sync", chunk_storage_prefix=s3_prefix, preserve_chunks=True) as ctx:
        refs = ctx.execute(Dataset.from_list(ROWS, num_shards=2).map(lambda row: row))
    assert sorted(refs.sql("select id from data").fetchall()) == [(row["id"],) for row in ROWS]
    chunk = refs.shards[0][0]
    fs = fsspec.filesystem("s3")
    data = bytearray(fs.cat_file(chunk.path))
    start = pq.ParquetFile(pa.BufferReader(bytes(data))).metadata.row_group(0).column(1).data_page_offset
    data[start + 256 : start + 320] = b"\xa5" * 64
    fs.pipe_file(chunk.path, bytes(data))
    for name, view in VIEWS.items():
        with pytest.raises(ChunkCorruptError, match=f"chunk {chunk.path} cannot be read as it was written"):
            view(refs)
            pytest.fail(f"{name} read a damaged chunk")
