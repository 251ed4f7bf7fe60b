"""A chunk changed after it was written is an error naming its file, never a wrong answer.

Chunks are written with Parquet page checksums, and every read zephyr_arrow makes of a chunk
(between stages, in a shuffle's merge, ``to_pylist``) checks them. The damage is what a
flipped disk block or a clobbering writer leaves: 64 bytes overwritten inside a column's
data, the file's size unchanged; or a file cut short.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zephyr_arrow import ChunkRef, Dataset, InputFileError, ShardFailedError, ZephyrContext, read_parquet
from zephyr_arrow.errors import ChunkCorruptError

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
