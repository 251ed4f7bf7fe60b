"""Input that no reader of the output would accept is refused where it is read, naming the file and line."""

from __future__ import annotations

import gzip
import json

import duckdb
import polars as pl
import pytest

from zephyr_arrow import Dataset, InputFileError, PlanError, SchemaConflictError, ShardFailedError, load_jsonl

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


DOCS = [{"id": i, "text": f"doc {i}", "lang": "en" if i % 3 else "de"} for i in range(30)]


def write_jsonl(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_a_selected_column_no_row_has_is_an_error_listing_the_columns(ctx, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    message = r"select\(id, txet\) in stage 0: no row has column 'txet'; the rows have \['id', 'lang', 'text'\]"
    with pytest.raises(PlanError, match=message):
        ctx.execute(Dataset.from_files(path).load_jsonl().select("id", "txet"))  # the load reads only id and txet
    with pytest.raises(PlanError, match=message):
        ctx.execute(Dataset.from_list(DOCS, num_shards=3).select("id", "txet"))
    with pytest.raises(PlanError, match=r"select\(txet\) in stage 1: no row has column 'txet'"):
        ctx.execute(Dataset.from_list(DOCS, num_shards=3).map(lambda row: row).deduplicate("lang").select("txet"))


def test_a_column_some_rows_lack_is_selected_where_they_have_it(ctx, tmp_path):
    # Zephyr's rule: a selected column a row lacks is left out of that row; one shard has no "extra" at all.
    rows = [{"id": i, **({"extra": i * 10} if i >= 20 else {})} for i in range(30)]
    refs = ctx.execute(Dataset.from_list(rows, num_shards=3).select("id", "extra"))
    assert [(row["id"], row.get("extra")) for row in refs.to_pylist()] == [(row["id"], row.get("extra")) for row in rows]
    paths = [write_jsonl(tmp_path / "a.jsonl", rows[:20]), write_jsonl(tmp_path / "b.jsonl", rows[20:])]
    refs = ctx.execute(Dataset.from_list(paths).load_jsonl().select("extra", "id"))
    assert refs.sql("select sum(extra), count(extra), count(*) from data").fetchall() == [(sum(range(200, 300, 10)), 10, 30)]


def test_an_aggregated_column_no_row_has_is_an_error_naming_the_users_columns(ctx, tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    for ds in (Dataset.from_files(path).load_jsonl(), Dataset.from_list(DOCS, num_shards=3)):
        with pytest.raises(PlanError, match=r"no row has column 'txet'; the rows have \['id', 'lang', 'text'\]") as caught:
            ctx.execute(ds.aggregate("lang", pl.col("txet").max()))
        assert "__zephyr" not in str(caught.value)
        with pytest.raises(PlanError, match=r"aggregate\(lnag: len\(\)\) in stage 0: no row has column 'lnag'"):
            ctx.execute(ds.aggregate("lnag", pl.len()))


def test_an_aggregated_column_one_file_lacks_is_null_there_as_duckdb_reads_it(ctx, tmp_path):
    rows = [{"id": i, "lang": "en" if i % 2 else "de", **({"score": i} if i >= 12 else {})} for i in range(30)]
    paths = [write_jsonl(tmp_path / "a.jsonl", rows[:12]), write_jsonl(tmp_path / "b.jsonl", rows[12:])]
    refs = ctx.execute(
        Dataset.from_list(paths).load_jsonl().aggregate("lang", pl.col("score").max().alias("top"), pl.col("score").count().alias("n"))
    )
    expected = duckdb.sql(
        f"select lang, max(score), count(score) from read_json_auto({paths!r}, union_by_name=true) group by lang order by lang"
    ).fetchall()
    assert refs.sql("select lang, top, n from data order by lang").fetchall() == expected


@pytest.mark.parametrize("blank_lines", [0, 2])
def test_a_value_of_another_type_is_named_by_its_line_not_arrows_row(ctx, tmp_path, blank_lines):
    lines = [json.dumps({"id": i, "v": i}).encode() for i in range(40_000)]
    lines[30_000] = json.dumps({"id": 30_000, "v": "text"}).encode()  # line 30001
    lines[10:10] = [b""] * blank_lines
    path = write_lines(tmp_path / "docs.jsonl", lines)
    line = 30_001 + blank_lines
    with pytest.raises(InputFileError, match=rf"{path}: line {line}: JSON parse error: Column\(/v\) changed from number to string$"):
        list(load_jsonl(path))
    with pytest.raises(ShardFailedError, match=rf"{path}: line {line}: JSON parse error"):
        ctx.execute(Dataset.from_files(path).load_jsonl())


@pytest.mark.parametrize(
    "build",
    [lambda ds: ds, lambda ds: ds.map(lambda row: row), lambda ds: ds.deduplicate("id"), lambda ds: ds.sort("id")],
    ids=["load", "map", "deduplicate", "sort"],
)
def test_a_schema_conflict_between_input_files_names_the_files(ctx, tmp_path, build):
    ints = write_jsonl(tmp_path / "ints.jsonl", [{"id": i, "v": i} for i in range(10)])
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"id": i, "v": f"s{i}"} for i in range(10)])
    message = rf"column 'v' has incompatible types across chunks: int64 in rows from {ints} \(chunk .*\) but string in rows from {texts}"
    with pytest.raises(SchemaConflictError, match=message):
        ctx.execute(build(Dataset.from_list([ints, texts]).load_jsonl())).to_pylist()
