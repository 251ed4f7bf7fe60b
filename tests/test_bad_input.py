"""Input that no reader of the output would accept is refused where it is read, naming the file and line."""

from __future__ import annotations

import gzip
import json

import pytest

from zephyr_arrow import Dataset, InputFileError, ShardFailedError, load_jsonl

GOOD = [{"id": i, "text": f"naïve café {i} — ok"} for i in range(5)]


def write_lines(path, lines: list[bytes]) -> str:
    data = b"".join(line + b"\n" for line in lines)
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz"])
def test_invalid_utf8_in_jsonl_is_refused_at_load_naming_file_and_line(ctx, tmp_path, name):
    lines = [json.dumps(row, ensure_ascii=False).encode() for row in GOOD]
    lines.insert(3, b'{"id": 99, "text": "bad \xff\xfe bytes"}')  # line 4
    path = write_lines(tmp_path / name, lines)
    with pytest.raises(ShardFailedError, match=rf"InputFileError: {path}: line 4: not valid UTF-8"):
        ctx.execute(Dataset.from_files(path).load_jsonl().map(lambda row: row["text"].upper()))
    with pytest.raises(InputFileError, match=rf"{path}: line 4: not valid UTF-8"):
        list(load_jsonl(path))


def test_valid_utf8_reads_back_exactly(ctx, tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [json.dumps(row, ensure_ascii=False).encode() for row in GOOD])
    assert ctx.execute(Dataset.from_files(path).load_jsonl()).to_pylist() == GOOD


def nested(depth: int, leaf: object) -> object:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize("depth", [3, 50])
def test_rows_nested_deeper_than_readers_accept_round_trip_exactly(ctx, depth):
    rows = [{"id": i, "deep": nested(depth, i)} for i in range(4)]
    refs = ctx.execute(Dataset.from_list(rows, num_shards=2).map(lambda row: row))
    assert refs.to_pylist() == rows
    assert [row["id"] for row in refs.to_polars().collect().to_dicts()] == [0, 1, 2, 3]  # every reader opens the output
    assert refs.sql("select count(*) from data").fetchall() == [(4,)]
