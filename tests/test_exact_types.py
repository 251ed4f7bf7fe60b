"""Promotion never loses a value: integers meet floats only where each fits a float exactly.

An int column in one chunk and a float column in another promote to float, which holds every
integer up to 2**53 exactly. Beyond that the answer would be wrong (2**60 + 1 read back as
2**60, as DuckDB did), so every reader raises SchemaConflictError naming the column and the
types instead, as does a stage that has to put such values into one file.
"""

from __future__ import annotations

import pytest

from zephyr_arrow import Dataset, SchemaConflictError, ShardFailedError

BIG = 2**60


def int_or_half(i: int) -> dict:
    return {"v": BIG + i} if i % 2 == 0 else {"v": 0.5}


def small_int_or_half(i: int) -> dict:
    return {"v": 2**52 + i} if i % 2 == 0 else {"v": 0.5}


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(lambda refs: refs.sql("select v from data").fetchall(), id="sql"),
        pytest.param(lambda refs: refs.to_pylist(), id="to_pylist"),
        pytest.param(lambda refs: refs.to_polars().collect(), id="polars"),
        pytest.param(lambda refs: refs.to_arrow_dataset().to_table(), id="pyarrow"),
    ],
)
def test_ints_beyond_a_float_meeting_floats_are_refused_by_every_reader(ctx, read):
    refs = ctx.execute(Dataset.from_list(list(range(4)), num_shards=4).map(int_or_half))
    with pytest.raises(SchemaConflictError, match=r"column 'v' holds int64 values in .*\(such as 11529215046068469(76|78)\) and double"):
        read(refs)


def test_ints_a_float_holds_exactly_promote_to_floats(ctx):
    refs = ctx.execute(Dataset.from_list(list(range(6)), num_shards=6).map(small_int_or_half))
    expected = sorted(float(row["v"]) for row in map(small_int_or_half, range(6)))
    assert sorted(row["v"] for row in refs.to_pylist()) == expected
    assert sorted(v for (v,) in refs.sql("select v from data").fetchall()) == expected
    assert all(float(int(v)) == v for v in expected if v != 0.5)  # the oracle itself is exact


def test_a_shuffle_refuses_them_naming_the_column(ctx):
    ds = Dataset.from_list(list(range(4)), num_shards=4).map(lambda i: {**int_or_half(i), "k": i % 2}).group_by("k", lambda k, rows: [r["v"] for r in rows])
    with pytest.raises(ShardFailedError, match=r"SchemaConflictError: column 'v': int64 values meet double ones"):
        ctx.execute(ds)


def test_within_one_shard_batches_of_ints_then_floats_are_refused_naming_the_column(ctx):
    # 1024 rows are encoded at a time: the first batch is all ints, the second all floats,
    # and the shard's chunk writer starts a chunk of its own for the second.
    rows = [{"v": BIG + i} for i in range(1024)] + [{"v": 0.5}] * 10
    refs = ctx.execute(Dataset.from_list(rows, num_shards=1).map(lambda row: row))
    assert refs.num_shards == 1
    with pytest.raises(SchemaConflictError, match=r"column 'v' holds int64 values"):
        refs.to_pylist()


def test_ints_and_floats_in_one_batch_stay_exact(ctx):
    rows = [{"v": BIG + 1}, {"v": 0.5}]
    assert ctx.execute(Dataset.from_list(rows, num_shards=1).map(lambda row: row)).to_pylist() == rows
