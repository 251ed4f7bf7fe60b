"""A big input file cut into pieces that several tasks read (io/pieces.py, execution/sources.py).

The pieces must give exactly the file's records, in order, whatever the cut; a pipeline
whose files were cut must give the output of the same pipeline run a task per file.
"""

from __future__ import annotations

import gzip
import json
import logging
import os

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zephyr_arrow import Dataset, io
from zephyr_arrow.arrow.rows import without_absent
from zephyr_arrow.errors import InputFileError, ShardFailedError
from zephyr_arrow.execution import executor, sources
from zephyr_arrow.io.pieces import FilePiece, split_file
from zephyr_arrow.planner import plan


def rows(tables) -> list[dict]:
    """The rows of ``tables`` as a reader of the output sees them: their schemas unified, the keys
    rows lack null (a piece without a column and the whole file's lines that lack it read alike)."""
    return pa.concat_tables([without_absent(table) for table in tables], promote_options="permissive").to_pylist()


def read_pieces(pieces: list[FilePiece]) -> list[dict]:
    return rows(table for piece in pieces for table in io.read_file(piece.path, span=(piece.start, piece.stop)))


def whole(path: str) -> list[dict]:
    return rows(io.read_file(path))


def write_bytes(tmp_path, name: str, data: bytes) -> str:
    path = str(tmp_path / name)
    with open(path, "wb") as out:
        out.write(data)
    return path


JSONL_CASES = {
    "plain": b"".join(json.dumps({"i": i, "s": "x" * (i * 7 % 23)}).encode() + b"\n" for i in range(60)),
    "crlf": b"".join(json.dumps({"i": i}).encode() + b"\r\n" for i in range(40)),
    "no trailing newline": b"\n".join(json.dumps({"i": i, "s": "ab" * i}).encode() for i in range(30)),
    "empty lines": b"".join(json.dumps({"i": i}).encode() + (b"\n\n" if i % 3 else b"\n") for i in range(40)),
    "one long line": json.dumps({"i": 0, "s": "y" * 5000}).encode() + b"\n" + b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(1, 20)),
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_jsonl_pieces_give_every_line_once_in_order(tmp_path, case):
    data = JSONL_CASES[case]
    path = write_bytes(tmp_path, "data.jsonl", data)
    expected = whole(path)
    assert len(expected) > 10
    for piece_bytes in (1, 7, 13, 64, 333, len(data) // 2, len(data)):
        pieces = split_file(path, None, len(data), piece_bytes)
        assert pieces[0].start == 0 and pieces[-1].stop == len(data)
        assert all(a.stop == b.start for a, b in zip(pieces, pieces[1:]))
        # Every piece starts where a line starts: lines straddling a target offset go to one piece whole.
        assert all(data[p.start - 1 : p.start] == b"\n" for p in pieces[1:])
        assert read_pieces(pieces) == expected, piece_bytes
    assert len(split_file(path, None, len(data), 13)) > 5


def test_csv_pieces_respect_quoted_newlines_and_repeat_the_header(tmp_path):
    lines = ['id,text,n']
    for i in range(50):
        text = f'"line {i}\nwith a newline, a comma and ""quotes"""' if i % 4 == 0 else f"plain {i}"
        lines.append(f"{i},{text},{i * 3}")
    data = ("\r\n".join(lines[:10]) + "\r\n" + "\n".join(lines[10:])).encode()  # CRLF, then LF, no trailing newline
    path = write_bytes(tmp_path, "data.csv", data)
    expected = whole(path)
    assert [row["id"] for row in expected] == list(range(50))
    assert expected[4]["text"] == 'line 4\nwith a newline, a comma and "quotes"'
    for piece_bytes in (1, 9, 40, 101, len(data) // 3):
        pieces = split_file(path, None, len(data), piece_bytes)
        assert read_pieces(pieces) == expected, piece_bytes
    assert len(split_file(path, None, len(data), 40)) > 5


def test_csv_pieces_found_across_scan_blocks(tmp_path, monkeypatch):
    from zephyr_arrow.io import pieces as pieces_module

    monkeypatch.setattr(pieces_module, "_SCAN_BYTES", 16)  # a quoted field spans several blocks read
    data = b'a,b\n1,"x\n' + b"y" * 100 + b'\nz"\n' + b"".join(f"{i},w\n".encode() for i in range(2, 30))
    path = write_bytes(tmp_path, "data.csv", data)
    for piece_bytes in (5, 17, 60):
        assert read_pieces(split_file(path, None, len(data), piece_bytes)) == whole(path)


def test_parquet_pieces_are_whole_row_groups_in_order(tmp_path):
    path = str(tmp_path / "data.parquet")
    pq.write_table(pa.table({"i": list(range(1000)), "s": [f"v{i}" for i in range(1000)]}), path, row_group_size=100)
    pieces = split_file(path, None, os.path.getsize(path), 1)
    assert [(p.start, p.stop) for p in pieces] == [(i, i + 100) for i in range(0, 1000, 100)]
    assert [row["i"] for row in read_pieces(pieces)] == list(range(1000))
    coarse = split_file(path, None, os.path.getsize(path), os.path.getsize(path) // 3)
    assert 2 <= len(coarse) <= 4 and all(p.start % 100 == 0 for p in coarse)
    assert read_pieces(coarse) == whole(path)


@pytest.mark.parametrize("workers", [2, 3])
def test_a_file_is_cut_into_pieces_the_workers_share_evenly(tmp_path, monkeypatch, workers):
    """32 equal row groups, at most a 7.7th of the file a piece: 8 pieces of 4 groups for 2 workers
    (cutting at the first group past the bound made 6 of 5 and one of 2), 9 of 3-4 for 3."""
    path = str(tmp_path / "data.parquet")
    pq.write_table(pa.table({"i": list(range(320_000))}), path, row_group_size=10_000, compression="none", use_dictionary=False)
    groups = pq.ParquetFile(path).metadata
    group_bytes = groups.row_group(0).column(0).total_compressed_size
    assert {groups.row_group(g).column(0).total_compressed_size for g in range(32)} == {group_bytes}
    monkeypatch.setattr(sources, "MIN_PIECE_BYTES", group_bytes)
    monkeypatch.setattr(sources, "MAX_PIECE_BYTES", int(32 * group_bytes / 7.7))
    pieces = sources.split_inputs([sources.ItemsInput((path,))], plan(Dataset.from_files(path).load_file()).stages[0].ops[0], workers)
    groups_per_piece = [(piece.items[0].stop - piece.items[0].start) // 10_000 for piece in pieces.inputs]
    assert groups_per_piece == ([4] * 8 if workers == 2 else [4, 3, 4, 3, 4, 3, 4, 3, 4])
    assert pieces.shards == [0] * len(groups_per_piece)


def test_a_malformed_line_in_a_later_piece_names_the_file_and_its_line(tmp_path):
    lines = [json.dumps({"i": i}) for i in range(100)]
    lines[76] = '{"i": 76, oops'
    path = write_bytes(tmp_path, "bad.jsonl", ("\n".join(lines) + "\n").encode())
    pieces = split_file(path, None, os.path.getsize(path), 200)
    bad = next(p for p in pieces if p.start > 0 and b"oops" in open(path, "rb").read()[p.start : p.stop])
    with pytest.raises(InputFileError, match=r"bad\.jsonl: line 77: malformed JSON"):
        list(io.read_file(path, span=(bad.start, bad.stop)))


def test_compressed_text_is_never_cut_and_a_log_line_says_so(tmp_path, caplog):
    path = str(tmp_path / "big.jsonl.gz")
    with gzip.open(path, "wt") as out:
        out.writelines(json.dumps({"i": i}) + "\n" for i in range(100))
    small = str(tmp_path / "small.jsonl")
    with open(small, "w") as out:
        out.write('{"i": -1}\n')
    inputs = sources.source_inputs(Dataset.from_files(str(tmp_path / "*")).source)
    load = Dataset.from_files(path).load_jsonl().operations[0]
    with caplog.at_level(logging.WARNING, logger="zephyr_arrow"):
        assert sources.split_inputs(inputs, load, num_workers=4) is None
    assert "big.jsonl.gz" in caplog.text and "compressed text file cannot be cut" in caplog.text


def test_only_stages_of_row_and_batch_ops_read_pieces():
    docs = Dataset.from_files("in/*.jsonl").load_jsonl()

    def first_stage(dataset):
        return plan(dataset).stages[0].reads_pieces

    assert first_stage(docs.map(lambda r: r).filter(lambda r: True).flat_map(lambda r: [r]))
    assert first_stage(docs.filter(pl.col("i") > 1).with_columns(j=pl.col("i")).select("j").map_batches(lambda t: t))
    assert first_stage(docs.map(lambda r: r).write_parquet("out/p-{shard:05d}.parquet"))
    assert first_stage(docs.deduplicate("i"))  # the scatter side of a shuffle
    assert not first_stage(docs.map_shard(lambda rows, shard: rows))
    assert not first_stage(docs.window(3))
    assert not first_stage(docs.take_per_shard(2))
    assert not first_stage(docs.map_batches(lambda t: t, batch_size=10))
    assert not first_stage(docs.write_parquet("out/p-{shard:05d}.parquet", skip_existing=True))
    assert not first_stage(Dataset.from_list(["in/a.jsonl"]).load_jsonl())  # paths as items: no files to size up front
    assert not first_stage(Dataset.from_files("in/*.jsonl").map(lambda path: path))


@pytest.fixture
def big_inputs(tmp_path, monkeypatch):
    """Two JSONL files and a Parquet file, the first JSONL file and the Parquet file big enough
    (with pieces of 1-8 kB) to be cut for 2 workers."""
    monkeypatch.setattr(sources, "MIN_PIECE_BYTES", 1024)
    monkeypatch.setattr(sources, "MAX_PIECE_BYTES", 8192)
    directory = tmp_path / "in"
    directory.mkdir()
    with open(directory / "a.jsonl", "w") as out:
        out.writelines(json.dumps({"id": i, "text": f"doc {i % 97} " * (i % 5 + 1)}) + "\n" for i in range(2000))
    with open(directory / "b.jsonl", "w") as out:
        out.writelines(json.dumps({"id": 10_000 + i, "text": f"doc {i}"}) + "\n" for i in range(20))
    pq.write_table(
        pa.table({"id": list(range(3000)), "text": [f"doc {i % 89}" for i in range(3000)]}), str(tmp_path / "rows.parquet"), row_group_size=250
    )
    return tmp_path


def run(ctx, dataset) -> tuple[int, list[list]]:
    refs = ctx.execute(dataset)
    return refs.num_shards, [list(refs.iter_shard_rows(shard)) for shard in range(refs.num_shards)]


def run_unsplit(ctx, dataset, monkeypatch) -> tuple[int, list[list]]:
    """The output of a task per file, from the same context (2 workers)."""
    with monkeypatch.context() as patch:
        patch.setattr(executor, "split_inputs", lambda *args: None)
        return run(ctx, dataset)


def sorted_shards(output: tuple[int, list[list[dict]]]) -> tuple[int, list[list[str]]]:
    return output[0], [sorted(json.dumps(row, sort_keys=True) for row in shard) for shard in output[1]]


def add_length(row: dict) -> dict:
    return {**row, "n": len(row["text"])}


def test_cut_files_give_the_unsplit_output_on_every_backend(big_inputs, ctx, monkeypatch):
    jsonl = Dataset.from_files(str(big_inputs / "in" / "*.jsonl")).load_jsonl()
    parquet = Dataset.from_files(str(big_inputs / "rows.parquet")).load_parquet()
    pipelines = {
        "map": jsonl.map(add_length).filter(lambda row: row["id"] % 3 != 0),
        "columnar": jsonl.filter(pl.col("id") % 3 != 0).with_columns(n=pl.col("text").str.len_chars()),
        "parquet": parquet.map(add_length),
        "dedup": jsonl.deduplicate("text"),  # keeps the first of each text: input order across pieces
        "group": jsonl.group_by(lambda row: row["text"], reducer=lambda key, rows: {"text": key, "ids": [r["id"] for r in rows]}),
    }
    for dataset, files in ((jsonl, 2), (parquet, 1)):  # the files are cut indeed
        pieces = sources.split_inputs(sources.source_inputs(dataset.source), dataset.operations[0], num_workers=2)
        assert len(pieces.inputs) >= files + 2 and pieces.shards == sorted(pieces.shards)
    for name, dataset in pipelines.items():
        unsplit = run_unsplit(ctx, dataset, monkeypatch)
        split = run(ctx, dataset)
        if name in ("dedup", "group"):
            # A shuffle's output shard has the same rows; their order within it follows its merge
            # rounds, which even unsplit depends on buffer sizes, so it is no promise.
            unsplit, split = (sorted_shards(output) for output in (unsplit, split))
        assert split == unsplit, name
    assert unsplit[0] == 2 and len(run(ctx, pipelines["map"])[1][0]) == 1333


def test_cut_files_are_written_one_file_per_shard(big_inputs, ctx, monkeypatch):
    dataset = Dataset.from_files(str(big_inputs / "in" / "*.jsonl")).load_jsonl().map(add_length)
    assert run_unsplit(ctx, dataset.write_parquet(str(big_inputs / "unsplit" / "p-{shard:05d}.parquet")), monkeypatch)[0] == 2
    assert run(ctx, dataset.write_parquet(str(big_inputs / "split" / "p-{shard:05d}.parquet")))[0] == 2
    assert sorted(os.listdir(big_inputs / "split")) == ["_SUCCESS", "p-00000.parquet", "p-00001.parquet"]  # written once both shards are
    for name in ("p-00000.parquet", "p-00001.parquet"):
        assert pq.read_table(big_inputs / "split" / name).equals(pq.read_table(big_inputs / "unsplit" / name))
    assert pq.read_table(big_inputs / "split" / "p-00000.parquet").column("id").to_pylist() == list(range(2000))


def test_whole_shard_ops_see_the_whole_file(big_inputs, ctx):
    dataset = Dataset.from_files(str(big_inputs / "in" / "*.jsonl")).load_jsonl().map_shard(lambda rows, shard: [sum(1 for _ in rows)])
    assert run(ctx, dataset) == (2, [[2000], [20]])


def test_an_error_in_a_piece_names_the_file_and_line(big_inputs, ctx):
    path = big_inputs / "in" / "a.jsonl"
    lines = path.read_text().splitlines()
    lines[1500] = "not json"
    path.write_text("\n".join(lines) + "\n")
    dataset = Dataset.from_files(str(big_inputs / "in" / "*.jsonl")).load_jsonl().map(add_length)
    with pytest.raises(ShardFailedError, match=r"a\.jsonl: line 1501: malformed JSON"):
        run(ctx, dataset)
