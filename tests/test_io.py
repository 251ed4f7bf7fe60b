"""Tests for zephyr_arrow.io: readers against json.loads / pyarrow oracles, writers' atomicity."""

from __future__ import annotations

import datetime
import gzip
import json
import lzma
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from zephyr_arrow import io as zio
from zephyr_arrow.arrow.rows import ABSENT_COLUMN, table_to_rows
from zephyr_arrow.errors import InputFileError, PlanError, SchemaConflictError
from zephyr_arrow.io import parquet as zparquet
from zephyr_arrow.io import text as ztext
from zephyr_arrow.io import writers as zwriters
from zephyr_arrow.store.chunk_ref import row_groups_covering


@pytest.fixture(params=["local", "memory"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A directory URL on the local disk or in fsspec's in-memory filesystem."""
    if request.param == "local":
        yield str(tmp_path)
        return
    root = f"memory://test-io-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut text files into 64 KB pieces (and batches) so that small test files span many of them."""
    monkeypatch.setattr(ztext, "PIECE_BYTES", 64 * 1024)
    monkeypatch.setattr(ztext, "BATCH_BYTES", 64 * 1024)


def write_bytes(url: str, data: bytes) -> None:
    with fsspec.open(url, "wb") as f:
        f.write(data)


def read_bytes(url: str) -> bytes:
    with fsspec.open(url, "rb") as f:
        return f.read()


def listing(url: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(url)
    return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))


def without_nulls(value: object) -> object:
    """JSON value with null members dropped: a missing key and a null read the same."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def rows(tables: Iterator[pa.Table]) -> list[dict]:
    return [row for table in tables for row in table_to_rows(table)]


def assert_same_keys(got: list[dict], text: str) -> None:
    """A line's record has the keys the line has: a key it lacks stays absent, a null is None."""
    assert [set(row) for row in got] == [set(json.loads(line)) for line in text.splitlines() if line.strip()]


def json_oracle(text: str) -> list[object]:
    return [without_nulls(json.loads(line)) for line in text.splitlines() if line.strip()]


# --- format_of, read_file dispatch ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.jsonl", "jsonl"),
        ("s3://b/a.json.gz", "jsonl"),
        ("a.ndjson.zst", "jsonl"),
        ("a.JSONL.ZSTD", "jsonl"),
        ("memory://x/a.jsonl.xz", "jsonl"),
        ("a.jsonl.bz2", "jsonl"),
        ("a.parquet", "parquet"),
        ("a.csv", "csv"),
        ("a.csv.gz", "csv"),
    ],
)
def test_format_of(path: str, expected: str) -> None:
    assert zio.format_of(path) == expected


@pytest.mark.parametrize("path", ["data/a.txt", "a.gz", "a", "a.parquet.gz"])
def test_unknown_extension_is_a_plan_error_naming_path_and_supported(path: str) -> None:
    with pytest.raises(PlanError) as error:
        zio.read_file(path)  # raises on the call, before any iteration
    assert path in str(error.value)
    assert ".jsonl" in str(error.value) and ".parquet" in str(error.value)


def test_read_file_dispatches_and_filters_each_format(base: str) -> None:
    table = pa.table({"id": [1, 2, 3, 4], "name": ["a", "b", "c", "d"]})
    for name, write in [
        ("t.parquet", zio.write_parquet_file),
        ("t.jsonl.gz", zio.write_jsonl_file),
        ("t.csv", zio.write_csv_file),
    ]:
        write([table], f"{base}/{name}")
        got = rows(zio.read_file(f"{base}/{name}", columns=["name"], filter=pl.col("id") >= 3))
        assert got == [{"name": "c"}, {"name": "d"}], name


# --- JSONL reading -------------------------------------------------------------------------------

VARIED_JSONL = "\n".join(
    [
        '{"id": 1, "text": "héllo \\"w\\"", "meta": {"lang": "en", "score": 0.5}, "tags": ["a", "b"]}',
        '{"id": 2, "text": null, "meta": {"lang": "fr"}, "tags": [], "when": "2024-01-02T03:04:05"}',
        "",
        '{"id": 3, "extra": true, "meta": null, "num": 1}\r',
        '{"id": 4, "text": "🙂", "num": 2.5, "when": "yesterday", "deep": {"a": [{"b": 1}]}}',
    ]
)


def test_read_jsonl_matches_json_loads(base: str) -> None:
    write_bytes(f"{base}/varied.jsonl", VARIED_JSONL.encode())
    tables = list(zio.read_jsonl(f"{base}/varied.jsonl"))
    assert [without_nulls(row) for row in rows(iter(tables))] == json_oracle(VARIED_JSONL)
    assert_same_keys(rows(iter(tables)), VARIED_JSONL)
    schema = tables[0].schema
    assert pa.types.is_struct(schema.field("meta").type)
    assert pa.types.is_list(schema.field("tags").type)
    assert schema.field("when").type == pa.string()  # an ISO-looking string is not a timestamp


def test_read_jsonl_projection_fills_absent_columns_with_nulls(base: str) -> None:
    write_bytes(f"{base}/varied.jsonl", VARIED_JSONL.encode())
    tables = list(zio.read_jsonl(f"{base}/varied.jsonl", columns=["num", "id", "absent"]))
    assert [row for t in tables for row in t.select(["num", "id", "absent"]).to_pylist()] == [
        {"num": n, "id": i, "absent": None} for i, n in [(1, None), (2, None), (3, 1), (4, 2.5)]
    ]
    # As rows, a line lacking a key lacks it (as json.loads and Zephyr's reader give it).
    assert rows(iter(tables)) == [{"id": 1}, {"id": 2}, {"num": 1, "id": 3}, {"num": 2.5, "id": 4}]


record = st.fixed_dictionaries(
    {},
    optional={
        "a": st.none() | st.integers(-(2**62), 2**62),
        "b": st.none() | st.text(),
        "c": st.lists(st.booleans(), max_size=3),
        "d": st.fixed_dictionaries({}, optional={"x": st.floats(allow_nan=False, allow_infinity=False)}),
    },
)


@settings(max_examples=40, deadline=None)
@given(st.lists(record, max_size=30))
def test_read_jsonl_property_matches_json_loads(records: list[dict]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    url = f"memory://prop-{uuid.uuid4().hex}/p.jsonl"
    write_bytes(url, text.encode())
    try:
        decoded = rows(zio.read_jsonl(url))
    finally:
        fsspec.filesystem("memory").rm(url)
    assert [without_nulls(row) for row in decoded] == json_oracle(text)
    assert_same_keys(decoded, text)


def test_read_jsonl_schema_drift_across_pieces(tmp_path: Path, small_pieces: None) -> None:
    # 'late' is null for the first 100k lines then a string; 'appears' shows up at line 120k;
    # 'num' is an int and becomes a float near the end.
    lines = []
    for i in range(150_000):
        doc = {"id": i, "late": None if i < 100_000 else f"s{i}", "num": i if i < 140_000 else i + 0.5}
        if i >= 120_000:
            doc["appears"] = {"k": i}
        lines.append(json.dumps(doc))
    text = "\n".join(lines) + "\n"
    path = tmp_path / "drift.jsonl"
    path.write_text(text)

    tables = list(zio.read_jsonl(str(path)))
    assert len(tables) > 2 and all(t.num_rows <= zio.BATCH_ROWS for t in tables)
    assert tables[0].schema.field("late").type == pa.null()
    assert tables[-1].schema.field("late").type == pa.string()
    assert tables[-1].schema.field("num").type == pa.float64()
    combined = pa.concat_tables(tables, promote_options="permissive")
    assert [without_nulls(row) for row in table_to_rows(combined)] == json_oracle(text)


@pytest.mark.parametrize("keep", [["num", "late"], ["num", "late", "absent"]])
def test_read_jsonl_keep_reads_only_those_columns_and_still_widens(
    tmp_path: Path, small_pieces: None, monkeypatch: pytest.MonkeyPatch, keep: list[str]
) -> None:
    # 'num' is an int, then a float; 'late' appears only after the first pieces; 'pad' is never kept.
    lines = []
    for i in range(60_000):
        doc = {"id": i, "num": i if i < 50_000 else i + 0.5, "pad": "x" * (i % 50)}
        if i >= 30_000:
            doc["late"] = f"s{i}"
        lines.append(json.dumps(doc))
    text = "\n".join(lines) + "\n"
    path = tmp_path / "keep.jsonl"
    path.write_text(text)

    parse, skipping = ztext._parse_json, []

    def spy(text, schema, block_bytes, others="infer"):
        skipping.append(others == "ignore")
        return parse(text, schema, block_bytes, others)

    monkeypatch.setattr(ztext, "_parse_json", spy)
    tables = list(zio.read_jsonl(str(path), keep=keep))
    assert len(tables) > 2 and all(set(t.column_names) <= {"num", "late", ABSENT_COLUMN} for t in tables)
    # Once every kept column has a type, pieces skip the other fields; never while one is unseen.
    assert any(skipping) == ("absent" not in keep)
    combined = pa.concat_tables(tables, promote_options="permissive")
    assert combined.schema.field("num").type == pa.float64()
    expected = [{k: v for k, v in row.items() if k in ("num", "late")} for row in json_oracle(text)]
    assert [without_nulls(row) for row in table_to_rows(combined)] == expected


@pytest.mark.parametrize("suffix", ["jsonl", "parquet", "csv"])
def test_read_file_keep_with_a_filter(tmp_path: Path, suffix: str) -> None:
    table = pa.table({"a": list(range(10)), "b": [i * 10 for i in range(10)], "c": ["z"] * 10})
    path = tmp_path / f"t.{suffix}"
    if suffix == "parquet":
        pq.write_table(table, path)
    elif suffix == "csv":
        pcsv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))
    tables = list(zio.read_file(str(path), filter=pl.col("a") > 6, keep=["b", "missing"]))
    assert pa.concat_tables(tables).to_pylist() == [{"b": 70}, {"b": 80}, {"b": 90}]


def test_narrow_pieces_are_gathered_into_batches(tmp_path: Path) -> None:
    path = tmp_path / "narrow.jsonl"
    path.write_text("".join(json.dumps({"id": i, "pad": "x" * 200}) + "\n" for i in range(100_000)))
    tables = list(zio.read_jsonl(str(path), keep=["id"]))
    # 22 MB of text is 6 pieces of 4 MB; their kept column (0.8 MB) comes in 3 batches: two
    # cut from the pieces gathered past BATCH_ROWS, then the rest.
    assert [t.num_rows for t in tables] == [zio.BATCH_ROWS, 9078, 25386]
    assert pa.concat_tables(tables).column("id").to_pylist() == list(range(100_000))


def test_jsonl_lines_longer_than_a_piece_and_an_arrow_block(tmp_path: Path, small_pieces: None) -> None:
    docs = [{"id": 0, "text": "x" * (3 << 20)}, {"id": 1, "text": "short"}]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    assert rows(zio.read_jsonl(str(path))) == docs


def test_bad_line_number_in_message(base: str) -> None:
    url = f"{base}/bad.jsonl"
    write_bytes(url, b'{"a": 1}\n{"a": 2}\n\n{"a": 3, }\n{"a": 4}\n')
    with pytest.raises(InputFileError) as error:
        list(zio.read_jsonl(url))
    assert url in str(error.value) and "line 4:" in str(error.value)


def test_bad_line_number_in_a_later_piece(tmp_path: Path, small_pieces: None) -> None:
    lines = [json.dumps({"id": i, "text": "abc" * 10}) for i in range(20_000)]
    lines[15_432] = "[1, 2]"  # valid JSON, but not an object
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(InputFileError, match=r"bad\.jsonl\.gz: line 15433: expected a JSON object"):
        list(zio.read_jsonl(str(path)))


def test_type_conflict_across_pieces_names_file_and_line(tmp_path: Path, small_pieces: None) -> None:
    # Lines of 15 bytes: the first 64 KB piece holds 4,369 of them, all ints; then strings.
    lines = ['{"a": 1000000}' if i < 4_369 else '{"a": "abcde"}' for i in range(6_000)]
    path = tmp_path / "conflict.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(InputFileError, match=r"conflict\.jsonl: lines from 4370 on .*int64 vs string"):
        list(zio.read_jsonl(str(path)))


def test_type_conflict_within_a_piece_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "conflict.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": "x"}\n')
    with pytest.raises(InputFileError, match=r"conflict\.jsonl: line 3: .*changed from number to string"):
        list(zio.read_jsonl(str(path)))


def test_malformed_csv_names_file_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(InputFileError, match=r"bad\.csv: lines 1-3: .*Expected 2 columns"):
        list(zio.read_csv(str(path)))


@pytest.mark.parametrize("reader", [zio.read_jsonl, zio.read_csv, zio.read_parquet])
def test_missing_file_is_an_input_file_error(base: str, reader) -> None:
    url = f"{base}/nope/missing.file"
    with pytest.raises(InputFileError, match="missing.file") as error:
        list(reader(url))
    assert isinstance(error.value.__cause__, FileNotFoundError)


def truncated_gzip() -> bytes:
    data = gzip.compress(b'{"a": 1}\n' * 10_000)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("cut.jsonl.gz", truncated_gzip()),
        ("bad-deflate.jsonl.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"\xff" * 100),
        ("not-gzip.jsonl.gz", b"plain text"),
        ("not-zstd.csv.zst", b"plain text"),
        ("not-xz.jsonl.xz", b"plain text"),
    ],
)
def test_damaged_compressed_input_is_an_input_file_error(tmp_path: Path, name: str, data: bytes) -> None:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(InputFileError, match=f"cannot read .*{name}") as error:
        list(zio.read_file(str(tmp_path / name)))
    assert error.value.__cause__ is not None


@pytest.mark.parametrize("name", ["e.jsonl", "e.jsonl.gz", "e.csv", "e.csv.zst"])
def test_empty_text_file_yields_nothing(tmp_path: Path, name: str) -> None:
    zio.write_jsonl_file([], str(tmp_path / name))  # writes an empty (possibly compressed) file
    assert list(zio.read_file(str(tmp_path / name))) == []


def test_batches_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "tiny.jsonl"
    path.write_text('{"a":1}\n' * 200_000)
    sizes = [t.num_rows for t in zio.read_jsonl(str(path))]
    assert sum(sizes) == 200_000 and max(sizes) <= zio.BATCH_ROWS


@pytest.mark.parametrize("name", ["many.jsonl", "many.jsonl.gz", "many.csv"])
def test_stopping_early_closes_the_file(tmp_path: Path, small_pieces: None, name: str) -> None:
    import threading

    import psutil

    path = str(tmp_path / name)
    write = zio.write_jsonl_file if ".jsonl" in name else zio.write_csv_file
    write([pa.table({"a": [1] * 100_000})], path)
    open_paths = lambda: [f.path for f in psutil.Process().open_files() if f.path == path]  # noqa: E731
    batches = zio.read_file(path)
    first = next(batches)
    assert first.num_rows > 0 and first.num_rows < 100_000  # stopped part way through the file
    assert open_paths() == [path]
    batches.close()
    assert open_paths() == []
    assert not [t for t in threading.enumerate() if t.name.startswith("zephyr-read-ahead")]  # its reader thread is gone


# --- compression -------------------------------------------------------------------------------

MAGIC = {".gz": b"\x1f\x8b", ".zst": b"\x28\xb5\x2f\xfd", ".zstd": b"\x28\xb5\x2f\xfd", ".xz": b"\xfd7zXZ", ".bz2": b"BZh"}


@pytest.mark.parametrize("extension", ["", *MAGIC])
def test_jsonl_compression_round_trip(base: str, extension: str) -> None:
    table = pa.table({"id": list(range(1000)), "text": [f"doc {i} ü" for i in range(1000)]})
    url = f"{base}/docs.jsonl{extension}"
    assert zio.write_jsonl_file([table.slice(0, 600), table.slice(600)], url) == 1000
    raw = read_bytes(url)
    if extension:
        assert raw.startswith(MAGIC[extension])
    assert pa.concat_tables(zio.read_jsonl(url)).equals(table)


def test_reads_files_compressed_by_standard_tools(tmp_path: Path) -> None:
    text = "".join(json.dumps({"i": i}) + "\n" for i in range(100))
    # Two concatenated zstd frames, as `cat a.zst b.zst` makes.
    half = len(text) // 2 // 8 * 8
    zstd_data = zstandard.compress(text[:half].encode()) + zstandard.compress(text[half:].encode())
    (tmp_path / "a.jsonl.zst").write_bytes(zstd_data)
    (tmp_path / "a.jsonl.xz").write_bytes(lzma.compress(text.encode()))
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(text[:half].encode()) + gzip.compress(text[half:].encode()))
    for name in ["a.jsonl.zst", "a.jsonl.xz", "a.jsonl.gz"]:
        assert rows(zio.read_jsonl(str(tmp_path / name))) == [{"i": i} for i in range(100)], name


# --- JSONL and CSV writing -----------------------------------------------------------------------


def test_write_jsonl_values_round_trip_json_wise(tmp_path: Path) -> None:
    table = pa.table(
        {
            "s": ["a", None],
            "n": [1, 2**62],
            "f": [0.25, None],
            "nested": [{"k": [1, 2], "m": "x"}, None],
            "when": [datetime.datetime(2024, 1, 2, 3, 4, 5), None],
            "day": [datetime.date(2024, 1, 2), None],
        }
    )
    path = tmp_path / "out.jsonl"
    assert zio.write_jsonl_file([table], str(path)) == 2
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert written[0]["nested"] == {"k": [1, 2], "m": "x"} and written[0]["n"] == 1
    assert datetime.datetime.fromisoformat(written[0]["when"]) == datetime.datetime(2024, 1, 2, 3, 4, 5)
    assert written[0]["day"] == "2024-01-02"
    assert [without_nulls(w) for w in written][1] == {"n": 2**62}


def test_write_jsonl_binary_column_is_a_plan_error(base: str) -> None:
    table = pa.table({"ok": [1], "payload": pa.array([{"raw": b"\x00"}])})
    with pytest.raises(PlanError, match="'payload'"):
        zio.write_jsonl_file([table], f"{base}/b.jsonl")
    assert listing(base) == []


def test_csv_round_trip_against_pyarrow(tmp_path: Path, small_pieces: None) -> None:
    n = 20_000
    table = pa.table(
        {
            "id": list(range(n)),
            "text": [f'line {i}\nwith "quotes", commas' if i % 7 == 0 else f"plain {i}" for i in range(n)],
            "score": [i / 4 for i in range(n)],
            "late": [None] * 15_000 + list(range(5_000)),  # empty first, ints later
        }
    )
    path = tmp_path / "t.csv.gz"
    assert zio.write_csv_file([table.slice(0, 9_000), table.slice(9_000)], str(path)) == n
    tables = list(zio.read_csv(str(path)))
    assert len(tables) > 2
    combined = pa.concat_tables(tables, promote_options="permissive")
    oracle = pcsv.read_csv(str(path), parse_options=pcsv.ParseOptions(newlines_in_values=True))
    assert combined.to_pylist() == oracle.to_pylist()
    assert combined.column("late").to_pylist() == table.column("late").to_pylist()


def test_csv_quoted_field_longer_than_a_piece(tmp_path: Path, small_pieces: None) -> None:
    table = pa.table({"id": [1, 2], "text": ['big\n"quoted"\n' * 20_000, "small"]})
    path = tmp_path / "big.csv"
    zio.write_csv_file([table], str(path))
    assert pa.concat_tables(zio.read_csv(str(path))).equals(table)


def test_write_csv_columns_fixed_by_first_batch(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    first, second = pa.table({"a": [1], "b": ["x"]}), pa.table({"a": [2]})
    assert zio.write_csv_file([first, second], str(path)) == 2
    assert path.read_text() == '"a","b"\n1,"x"\n2,\n'
    with pytest.raises(SchemaConflictError, match="'c'"):
        zio.write_csv_file([first, pa.table({"a": [1], "c": [2]})], str(path))
    with pytest.raises(PlanError, match="'s'"):
        zio.write_csv_file([pa.table({"s": [{"k": 1}]})], str(tmp_path / "nested.csv"))


# --- atomic writes --------------------------------------------------------------------------------


def failing_batches() -> Iterator[pa.Table]:
    yield pa.table({"a": list(range(1000))})
    raise RuntimeError("boom mid-way")


WRITERS = {
    "parquet": zio.write_parquet_file,
    "jsonl.gz": zio.write_jsonl_file,
    "jsonl": zio.write_jsonl_file,
    "csv": zio.write_csv_file,
}


@pytest.mark.parametrize("extension", WRITERS)
def test_failed_write_leaves_nothing(base: str, extension: str) -> None:
    url = f"{base}/sub/out.{extension}"
    with pytest.raises(RuntimeError, match="boom mid-way"):
        WRITERS[extension](failing_batches(), url)
    assert listing(f"{base}/sub") == []


@pytest.mark.parametrize("extension", WRITERS)
def test_failed_overwrite_keeps_the_old_file(base: str, extension: str) -> None:
    url = f"{base}/out.{extension}"
    WRITERS[extension]([pa.table({"a": [1, 2]})], url)
    before = read_bytes(url)
    with pytest.raises(RuntimeError):
        WRITERS[extension](failing_batches(), url)
    assert read_bytes(url) == before
    assert listing(base) == [f"out.{extension}"]


# --- Parquet writing ---------------------------------------------------------------------------


def test_write_parquet_widens_null_then_string_and_late_columns(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zwriters, "ROW_GROUP_ROWS", 100)  # so widening happens after row groups were written
    batches = [
        pa.table({"id": list(range(100)), "late": pa.nulls(100)}),
        pa.table({"id": list(range(100, 200)), "late": pa.nulls(100)}),
        pa.table({"id": list(range(200, 300)), "late": [f"s{i}" for i in range(100)]}),
        pa.table({"extra": [1.5] * 50, "id": list(range(300, 350))}),
    ]
    url = f"{base}/wide.parquet"
    assert zio.write_parquet_file(iter(batches), url) == 350
    fs, path = fsspec.core.url_to_fs(url)
    written = pq.read_table(path, filesystem=fs)
    assert written.schema == pa.schema([("id", pa.int64()), ("late", pa.string()), ("extra", pa.float64())])
    assert written.to_pylist() == pa.concat_tables(batches, promote_options="permissive").select(
        written.column_names
    ).to_pylist()
    assert pq.ParquetFile(path, filesystem=fs).num_row_groups == 4
    assert listing(base) == ["wide.parquet"]


def test_write_parquet_buffers_small_batches_into_large_row_groups(tmp_path: Path) -> None:
    batches = (pa.table({"i": list(range(k * 10_000, (k + 1) * 10_000))}) for k in range(30))
    path = tmp_path / "big.parquet"
    assert zio.write_parquet_file(batches, str(path)) == 300_000
    metadata = pq.ParquetFile(path).metadata
    assert metadata.row_group(0).num_rows >= zwriters.ROW_GROUP_ROWS
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_table(path).column("i").to_pylist() == list(range(300_000))


def test_write_parquet_incompatible_batches_raise_schema_conflict(tmp_path: Path) -> None:
    batches = [pa.table({"x": [1]}), pa.table({"x": ["one"]})]
    with pytest.raises(SchemaConflictError, match="x"):
        zio.write_parquet_file(batches, str(tmp_path / "c.parquet"))
    assert list(tmp_path.iterdir()) == []


def test_write_parquet_explicit_schema_is_a_contract(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int64()), ("score", pa.float64()), ("note", pa.string())])
    path = str(tmp_path / "s.parquet")
    assert zio.write_parquet_file([pa.table({"score": [1, 2], "id": [3, 4]})], path, schema=schema) == 2
    assert pq.read_table(path).to_pylist() == [
        {"id": 3, "score": 1.0, "note": None},
        {"id": 4, "score": 2.0, "note": None},
    ]
    with pytest.raises(SchemaConflictError, match="'id'"):
        zio.write_parquet_file([pa.table({"id": ["three"]})], path, schema=schema)
    with pytest.raises(SchemaConflictError, match="'other'"):
        zio.write_parquet_file([pa.table({"id": [1], "other": [1]})], path, schema=schema)


def test_write_parquet_empty_input_writes_a_valid_file(base: str) -> None:
    schema = pa.schema([("a", pa.string())])
    fs = fsspec.core.url_to_fs(base)[0]
    assert zio.write_parquet_file([], f"{base}/typed.parquet", schema=schema) == 0
    assert zio.write_parquet_file([], f"{base}/untyped.parquet") == 0
    assert zio.write_parquet_file([pa.table({"b": pa.array([], pa.int32())})], f"{base}/from-batch.parquet") == 0
    typed = pq.read_table(fsspec.core.url_to_fs(f"{base}/typed.parquet")[1], filesystem=fs)
    assert typed.schema == schema and typed.num_rows == 0
    untyped = pq.read_table(fsspec.core.url_to_fs(f"{base}/untyped.parquet")[1], filesystem=fs)
    assert untyped.num_columns == 0
    assert pq.read_schema(fsspec.core.url_to_fs(f"{base}/from-batch.parquet")[1], filesystem=fs).names == ["b"]
    assert list(zio.read_parquet(f"{base}/typed.parquet")) == []


# --- Parquet reading -----------------------------------------------------------------------------


@pytest.fixture
def ten_groups(base: str) -> str:
    """A Parquet file of 10 row groups of 1,000 rows: a = row number, b = a % 7, c = text."""
    table = pa.table({"a": list(range(10_000)), "b": [i % 7 for i in range(10_000)], "c": [f"t{i}" for i in range(10_000)]})
    url = f"{base}/ten.parquet"
    fs, path = fsspec.core.url_to_fs(url)
    pq.write_table(table, path, filesystem=fs, row_group_size=1_000)
    return url


@pytest.mark.parametrize(
    ("columns", "use_filter", "row_range"),
    [
        (None, False, None),
        (["c"], True, None),
        (["a", "c"], False, (1_500, 4_200)),
        (["c"], True, (999, 1_001)),
        (["a"], True, (0, 10_000)),
        (None, True, (9_990, 20_000)),
        (None, False, (5_000, 5_000)),
    ],
)
@pytest.mark.parametrize("batch_rows", [300, 64 * 1024])
def test_read_parquet_filter_projection_row_range(
    ten_groups: str, monkeypatch: pytest.MonkeyPatch, batch_rows: int, columns, use_filter, row_range
) -> None:
    monkeypatch.setattr(zparquet, "BATCH_ROWS", batch_rows)  # batches within and across row groups
    fs, path = fsspec.core.url_to_fs(ten_groups)
    oracle = pq.read_table(path, filesystem=fs).to_pylist()
    start, stop = row_range or (0, len(oracle))
    expected = [r for r in oracle[start:stop] if not use_filter or r["b"] == 3]
    expected = [{k: r[k] for k in columns or r} for r in expected]
    filter = pl.col("b") == 3 if use_filter else None
    tables = list(zio.read_parquet(ten_groups, columns=columns, filter=filter, row_range=row_range))
    assert rows(iter(tables)) == expected
    assert all(t.column_names == (columns or ["a", "b", "c"]) for t in tables)
    assert all(0 < t.num_rows <= batch_rows for t in tables)


def test_row_range_reads_only_overlapping_row_groups(ten_groups: str) -> None:
    fs, path = fsspec.core.url_to_fs(ten_groups)
    metadata = pq.ParquetFile(path, filesystem=fs).metadata
    assert row_groups_covering(metadata, 1_500, 4_200) == ([1, 2, 3, 4], 1_000)
    assert row_groups_covering(metadata, 1_000, 2_000) == ([1], 1_000)
    assert row_groups_covering(metadata, 3_000, 3_000) == ([], 0)


def test_read_parquet_argument_and_file_errors(ten_groups: str, base: str) -> None:
    with pytest.raises(PlanError, match=r"\(5, 2\)"):
        zio.read_parquet(ten_groups, row_range=(5, 2))
    with pytest.raises(InputFileError, match="'nope'"):
        list(zio.read_parquet(ten_groups, columns=["a", "nope"]))
    write_bytes(f"{base}/fake.parquet", b"not parquet at all")
    with pytest.raises(InputFileError, match="fake.parquet is not a valid Parquet file"):
        list(zio.read_parquet(f"{base}/fake.parquet"))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=40), max_size=30),
    st.booleans(),
    st.integers(min_value=1, max_value=50),
)
def test_jsonl_pieces_cover_the_file_and_end_at_line_ends(lengths, trailing_newline, piece_bytes):
    import io

    data = b"\n".join(b"x" * n for n in lengths) + (b"\n" if trailing_newline and lengths else b"")
    original = ztext.PIECE_BYTES
    ztext.PIECE_BYTES = piece_bytes
    try:
        pieces = [bytes(piece) for piece in ztext._line_pieces(io.BytesIO(data))]
    finally:
        ztext.PIECE_BYTES = original
    assert b"".join(pieces) == data
    assert all(pieces) and all(piece.endswith(b"\n") for piece in pieces[:-1])


@pytest.mark.parametrize("keep", [None, ["id", "k"]])
def test_read_jsonl_tells_a_missing_key_from_a_null_one(tmp_path: Path, keep: list[str] | None) -> None:
    # A null, a missing key, the key's name as a value, the name nested, a space before the colon.
    lines = [
        '{"id": 1, "k": null}',
        '{"id": 2}',
        '{"id": 3, "note": "k"}',
        '{"id": 4, "m": {"k": 1}}',
        '{"id": 5, "k" : null}',
        '{"id": 6, "k": 7}',
        '{"id": 7, "m": {"k": null}, "k": null}',
    ]
    path = tmp_path / "keys.jsonl"
    path.write_text("\n".join(lines) + "\n")
    got = rows(zio.read_jsonl(str(path), keep=keep))
    want = [json.loads(line) for line in lines]
    if keep is not None:
        want = [{key: value for key, value in row.items() if key in keep} for row in want]
    assert [set(row) for row in got] == [set(row) for row in want]
    assert [row.get("k") for row in got] == [None, None, None, None, None, 7, None]
