"""An aggregate whose expressions split into partials folds each run on the map side; the
answer must be what Polars gives over all the rows at once, types included."""

import datetime
import decimal
import math
import re

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zephyr_arrow import Dataset
from zephyr_arrow.execution.shuffle.partial_aggregate import split

SCHEMA = pa.schema(
    [
        ("k", pa.string()),
        ("i32", pa.int32()),
        ("f32", pa.float32()),
        ("f64", pa.float64()),
        ("flag", pa.bool_()),
        ("ts", pa.timestamp("us")),
        ("word", pa.string()),
    ]
)


def _rows(shard: int, n: int) -> list[dict]:
    base = datetime.datetime(2020, 1, 1)
    return [
        {
            "k": None if i % 11 == 0 else f"k{(i * 7 + shard) % 9}",
            "i32": 2**31 - 1 - i % 3,  # a sum in int32 would wrap: the mean must not
            "f32": None if i % 5 == 0 else i / 8,
            "f64": None if (i + shard) % 4 == 0 else (i * 37 % 101) / 7,
            "flag": i % 3 == 0,
            "ts": base + datetime.timedelta(seconds=i * 977 + shard),
            "word": f"w{(i * 13) % 50:02d}",
        }
        for i in range(n)
    ]


@pytest.fixture
def parquet_shards(tmp_path):
    paths = []
    for shard, n in enumerate([700, 0, 450, 300]):
        table = pa.Table.from_pylist(_rows(shard, n), schema=SCHEMA)
        if shard == 3:  # a file where one column is all null, typed null (as JSON readers give)
            table = table.set_column(table.schema.get_field_index("f64"), "f64", pa.nulls(n))
        path = tmp_path / f"part-{shard}.parquet"
        pq.write_table(table, path)
        paths.append(str(path))
    return str(tmp_path / "part-*.parquet"), paths


EXPRS = (
    pl.len().alias("n"),
    pl.col("f64").count().alias("f64_count"),
    pl.col("f32").len().alias("f32_len"),
    pl.col("i32").sum().alias("i32_sum"),
    pl.col("flag").sum().alias("flags"),
    pl.col("f64").sum(),
    pl.col("i32").mean().alias("i32_mean"),
    pl.col("f32").mean().alias("f32_mean"),
    pl.col("f64").mean().alias("f64_mean"),
    pl.col("flag").mean().alias("flag_mean"),
    pl.col("ts").mean().alias("ts_mean"),
    pl.col("ts").min().alias("ts_min"),
    pl.col("word").max().alias("word_max"),
    pl.col("f32").min().alias("f32_min"),
)


def _same(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert got.schema == expected.schema
    got, expected = got.sort("k", nulls_last=True), expected.sort("k", nulls_last=True)
    for name in expected.columns:
        for a, b in zip(got[name].to_list(), expected[name].to_list(), strict=True):
            if isinstance(b, float):
                assert a == pytest.approx(b, rel=1e-6) or (math.isnan(a) and math.isnan(b)), name
            elif isinstance(b, datetime.datetime):
                assert abs(a - b) <= datetime.timedelta(microseconds=1), name
            else:
                assert a == b, name


def test_split_recognises_only_the_forms_it_can_finish():
    parts = split((pl.len(), pl.col("a").mean().alias("m"), pl.max("b"), pl.col("c").count()))
    assert [(p.name, p.kind, p.column) for p in parts] == [("len", "len", None), ("m", "mean", "a"), ("b", "max", "b"), ("c", "count", "c")]
    for other in (
        pl.col("a").first(),
        pl.col("a").n_unique(),
        (pl.col("a") * 2).sum(),
        pl.col("a").sum() + 1,
        pl.col("a").sum().over("b"),
        pl.col("a").median(),
        pl.all().max(),
        pl.col("a", "b").sum(),
    ):
        assert split((pl.len(), other)) is None, other


@pytest.mark.parametrize(
    "exprs, scattered",
    [
        (EXPRS, "30"),  # each run folded to one row per key: 9 keys and null in each of the three files with rows
        ((*EXPRS, pl.col("word").n_unique().alias("words")), "1,450"),  # n_unique needs every row on the reduce side
    ],
    ids=["folded", "not folded"],
)
def test_aggregate_is_polars_over_every_row(ctx, parquet_shards, exprs, scattered):
    pattern, paths = parquet_shards
    ds = Dataset.from_files(pattern).load_parquet().aggregate("k", *exprs)
    got = pl.from_arrow(ctx.execute(ds).load())
    expected = pl.concat([pl.read_parquet(p) for p in paths], how="vertical_relaxed").group_by("k").agg(*exprs)
    _same(got, expected)
    assert re.search(rf"scatter by k: 4 shards, [\d,]+ rows in, {scattered} rows out", ctx.last_stage_summaries[0])


def test_folded_aggregate_over_shards_without_rows(ctx):
    # Only the last of four shards keeps rows; the others' runs are empty and keep the input's columns.
    rows = [{"k": i % 4, "x": float(i), "n": i} for i in range(400)]
    ds = Dataset.from_list(rows, num_shards=4).filter(pl.col("n") >= 300).aggregate("k", pl.col("x").mean().alias("m"), pl.len())
    got = sorted(ctx.execute(ds).to_pylist(), key=lambda r: r["k"])
    assert got == [{"k": k, "m": sum(range(300 + k, 400, 4)) / 25, "len": 25} for k in range(4)]
    nothing = Dataset.from_list(rows, num_shards=4).filter(pl.col("n") < 0).aggregate("k", pl.col("x").mean().alias("m"))
    assert ctx.execute(nothing).load().num_rows == 0


def test_folded_means_and_sums_keep_polars_types_for_dates_times_durations_decimals(ctx, tmp_path):
    n = 40
    table = pa.table(
        {
            "k": [i % 3 for i in range(n)],
            "d": pa.array([datetime.date(2020, 1, 1) + datetime.timedelta(days=i * 37) for i in range(n)]),
            "du": pa.array([datetime.timedelta(seconds=i * 1001) for i in range(n)]),
            "tm": pa.array([datetime.time(i % 24, i % 60) for i in range(n)]),
            "dec": pa.array([decimal.Decimal(i * 10000 // 7) / 10000 for i in range(n)], pa.decimal128(12, 4)),
            "tz": pa.array(
                [datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(hours=i * 5) for i in range(n)],
                pa.timestamp("ms", "UTC"),
            ),
        }
    )
    for index, (start, length) in enumerate([(0, 13), (13, 14), (27, 13)]):
        pq.write_table(table.slice(start, length), tmp_path / f"part-{index}.parquet")
    exprs = [
        *(pl.col(name).mean().alias(f"{name}_mean") for name in ["d", "du", "tm", "dec", "tz"]),
        *(pl.col(name).sum().alias(f"{name}_sum") for name in ["du", "dec"]),
        *(pl.col(name).min().alias(f"{name}_min") for name in ["d", "tm", "tz"]),
    ]
    ds = Dataset.from_files(str(tmp_path / "*.parquet")).load_parquet().aggregate("k", *exprs)
    got = pl.from_arrow(ctx.execute(ds).load()).sort("k")
    assert re.search(r"scatter by k: 3 shards, [\d,]+ rows in, 9 rows out", ctx.last_stage_summaries[0])
    expected = pl.from_arrow(table).group_by("k").agg(*exprs).sort("k")
    assert got.schema == expected.schema
    assert got.to_dicts() == expected.to_dicts()
