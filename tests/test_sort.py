"""Dataset.sort: a global sort whose output shards are key ranges, in order.

Each output is checked against Polars (``sort(..., nulls_last=True, maintain_order=True)``)
on the same input, row for row in shard order, on every backend (the ``ctx`` fixture).
The promises checked: within a shard rows are sorted, shard i's last key is at most shard
i+1's first, ties keep input order, nulls come last in both directions, and on a skewed key
no shard holds more than 1.5x the mean rows per shard unless one key alone is larger.
"""

from __future__ import annotations

import collections
import functools
import os
import random

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zephyr_arrow import Dataset, ZephyrError

FLIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zephyr_arrow", "datasets", "nycflights13", "flights_2013_01_07.parquet")
NUM_FLIGHT_FILES = 3
BALANCE_LIMIT = 1.5  # times the mean rows per output shard


@pytest.fixture(scope="module")
def flights() -> pa.Table:
    """Every 20th flight of January and July 2013: 2,822 rows, 70 of them with a null dep_delay."""
    table = pq.read_table(FLIGHTS)
    return table.take(list(range(0, table.num_rows, 20)))


@pytest.fixture(scope="module")
def flights_pattern(flights, tmp_path_factory) -> str:
    """The flights as NUM_FLIGHT_FILES Parquet files (input shards), in row order."""
    directory = tmp_path_factory.mktemp("flights")
    step = -(-flights.num_rows // NUM_FLIGHT_FILES)
    for file_index in range(NUM_FLIGHT_FILES):
        pq.write_table(flights.slice(file_index * step, step), directory / f"part-{file_index}.parquet")
    return str(directory / "part-*.parquet")


@functools.total_ordering
class _Descending:
    """Wraps a value so that it sorts in reverse."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    def __eq__(self, other) -> bool:
        return self.value == other.value

    def __lt__(self, other) -> bool:
        return other.value < self.value


def column_order(by: str | list[str], descending: bool | list[bool]):
    """The sort's order as a Python key: per column its direction, nulls last either way."""
    columns = [by] if isinstance(by, str) else by
    directions = descending if isinstance(descending, list) else [descending] * len(columns)

    def key(row):
        return tuple(
            (True, None) if row[c] is None else (False, _Descending(row[c]) if d else row[c])
            for c, d in zip(columns, directions)
        )

    return key


def function_order(fn, descending: bool):
    return lambda row: _Descending(fn(row)) if descending else fn(row)


def shard_rows(refs) -> list[list[dict]]:
    return [[row for chunk in shard for row in chunk.read().to_pylist()] for shard in refs.shards]


def assert_shards_are_ordered_key_ranges(refs, key, fields: list[str]) -> None:
    """Each shard sorted by ``key``, and each shard's first row not before the previous shard's last;
    a failure shows the rows' ``fields``."""

    def show(row) -> dict:
        return {f: row[f] for f in fields}

    shards = shard_rows(refs)
    for shard_index, rows in enumerate(shards):
        for row_index in range(1, len(rows)):
            assert not key(rows[row_index]) < key(rows[row_index - 1]), (
                f"shard {shard_index} is not sorted: row {row_index} {show(rows[row_index])} "
                f"sorts before row {row_index - 1} {show(rows[row_index - 1])}"
            )
    nonempty = [(i, rows) for i, rows in enumerate(shards) if rows]
    for (before, before_rows), (after, after_rows) in zip(nonempty, nonempty[1:]):
        assert not key(after_rows[0]) < key(before_rows[-1]), (
            f"shard {after}'s first row {show(after_rows[0])} sorts before shard {before}'s last row {show(before_rows[-1])}"
        )


def assert_same_rows(actual: list[dict], expected: list[dict]) -> None:
    """The same rows in the same order; a failure names the first row that differs."""
    first_difference = next((i for i, (a, e) in enumerate(zip(actual, expected)) if a != e), None)
    assert first_difference is None, f"row {first_difference} is {actual[first_difference]}, expected {expected[first_difference]}"
    assert len(actual) == len(expected), f"{len(actual)} rows, expected {len(expected)}"


def assert_balanced(refs, key_of) -> None:
    """No shard holds more than BALANCE_LIMIT x the mean rows per shard, counting only keys
    that are not alone larger than that (a shard holding such a key may be bigger by it)."""
    shards = shard_rows(refs)
    sizes = [len(rows) for rows in shards]
    limit = BALANCE_LIMIT * sum(sizes) / len(sizes)
    key_counts = collections.Counter(key_of(row) for rows in shards for row in rows)
    heavy = {k for k, n in key_counts.items() if n > limit}
    for shard_index, rows in enumerate(shards):
        light = sum(1 for row in rows if key_of(row) not in heavy)
        assert light <= limit, (
            f"shard {shard_index} holds {light} rows of keys each at most {limit:.0f} rows "
            f"(1.5x the mean); shard sizes {sizes}, keys larger than that: {sorted(heavy)}"
        )


def polars_sorted(rows_or_table, by, descending) -> list[dict]:
    """The oracle: Polars' stable sort with nulls last; ``by`` may be an expression."""
    if isinstance(rows_or_table, pa.Table):
        frame = pl.from_arrow(rows_or_table)
    else:
        frame = pl.from_dicts(rows_or_table, infer_schema_length=None)
    return frame.sort(by, descending=descending, nulls_last=True, maintain_order=True).to_dicts()


def zipf_rows(num_rows: int, exponent: float, seed: int, first_key: int = 0, num_keys: int = 1000) -> list[dict]:
    """Rows ``{"k", "i"}``, i the input position, k Zipf-distributed over range(num_keys): the most
    frequent key is ``first_key``, the next ``first_key + 1`` and so on, wrapping around."""
    rng = random.Random(seed)
    ranks = rng.choices(range(num_keys), weights=[1 / (rank + 1) ** exponent for rank in range(num_keys)], k=num_rows)
    return [{"k": (first_key + rank) % num_keys, "i": i} for i, rank in enumerate(ranks)]


# Real data: nycflights13 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("by", "descending", "num_output_shards"),
    [
        pytest.param("dep_delay", False, None, id="dep_delay"),
        pytest.param("dep_delay", True, 4, id="dep_delay desc"),
        pytest.param(["carrier", "distance"], [False, True], 4, id="carrier, distance desc"),
        pytest.param(["carrier", "distance"], True, 2, id="carrier desc, distance desc"),
        pytest.param(["tailnum", "dep_delay"], [True, False], 5, id="tailnum desc, dep_delay"),
    ],
)
def test_flights_match_polars(ctx, flights, flights_pattern, by, descending, num_output_shards):
    ds = Dataset.from_files(flights_pattern).load_parquet().sort(by, descending=descending, num_output_shards=num_output_shards)
    refs = ctx.execute(ds)
    assert refs.num_shards == (num_output_shards or NUM_FLIGHT_FILES)
    assert_shards_are_ordered_key_ranges(refs, column_order(by, descending), [by] if isinstance(by, str) else by)
    assert_same_rows(refs.to_pylist(), polars_sorted(flights, by, descending))


# Generated keys ------------------------------------------------------------------------------------


def test_zipf_keys_are_sorted_and_balanced(ctx):
    rows = zipf_rows(20_000, exponent=1.0, seed=0)
    assert max(collections.Counter(r["k"] for r in rows).values()) < BALANCE_LIMIT * len(rows) / 4  # no key alone is too big
    refs = ctx.execute(Dataset.from_list(rows, num_shards=5).sort("k", num_output_shards=4))
    assert refs.num_shards == 4
    assert_shards_are_ordered_key_ranges(refs, column_order("k", False), ["k", "i"])
    assert_balanced(refs, lambda row: row["k"])
    assert_same_rows(refs.to_pylist(), polars_sorted(rows, "k", False))


def test_one_key_larger_than_a_shard_leaves_the_others_balanced(ctx):
    rows = zipf_rows(20_000, exponent=1.6, seed=1, first_key=500)  # the big key amid the others
    top_key_rows = collections.Counter(r["k"] for r in rows).most_common(1)[0][1]
    assert top_key_rows > BALANCE_LIMIT * len(rows) / 4 and len(rows) - top_key_rows > BALANCE_LIMIT * len(rows) / 4
    refs = ctx.execute(Dataset.from_list(rows, num_shards=5).sort("k", descending=True, num_output_shards=4))
    assert refs.num_shards == 4
    assert_shards_are_ordered_key_ranges(refs, column_order("k", True), ["k", "i"])
    assert_balanced(refs, lambda row: row["k"])
    assert_same_rows(refs.to_pylist(), polars_sorted(rows, "k", True))


def _mod_7(row):
    return row["a"] % 7


@pytest.mark.parametrize("descending", [False, True])
def test_key_function_matches_polars(ctx, descending):
    rng = random.Random(2)
    rows = [{"a": rng.randrange(-1000, 1000), "i": i} for i in range(3000)]
    refs = ctx.execute(Dataset.from_list(rows, num_shards=3).sort(key=_mod_7, descending=descending, num_output_shards=4))
    assert refs.num_shards == 4
    assert_shards_are_ordered_key_ranges(refs, function_order(_mod_7, descending), ["a", "i"])
    assert_same_rows(refs.to_pylist(), polars_sorted(rows, pl.col("a") % 7, descending))


@pytest.mark.parametrize("descending", [False, True])
def test_ties_keep_input_order(ctx, descending):
    rng = random.Random(3)
    rows = [{"k": rng.randrange(5), "i": i} for i in range(3000)]
    refs = ctx.execute(Dataset.from_list(rows, num_shards=6).sort("k", descending=descending))
    assert refs.num_shards == 6
    out = refs.to_pylist()
    for k in range(5):
        positions = [row["i"] for row in out if row["k"] == k]
        assert positions == sorted(positions), f"rows with key {k} are not in input order"
    assert_same_rows(out, polars_sorted(rows, "k", descending))


def test_one_key_for_every_row_keeps_input_order(ctx):
    rows = [{"k": "same", "i": i} for i in range(500)]
    refs = ctx.execute(Dataset.from_list(rows, num_shards=4).sort("k", num_output_shards=3))
    assert refs.num_shards == 3
    assert_same_rows(refs.to_pylist(), rows)


@pytest.mark.parametrize("num_output_shards", [None, 3])
def test_empty_input(ctx, num_output_shards):
    empty = Dataset.from_list([{"k": 1}, {"k": 2}], num_shards=2).filter(lambda row: False)
    refs = ctx.execute(empty.sort("k", num_output_shards=num_output_shards))
    assert refs.num_shards == (num_output_shards or 2)
    assert refs.to_pylist() == []


# Errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda ds: ds.sort(), id="neither by nor key"),
        pytest.param(lambda ds: ds.sort("k", key=_mod_7), id="both by and key"),
        pytest.param(lambda ds: ds.sort(by="k", key=_mod_7), id="both by= and key="),
        pytest.param(lambda ds: ds.sort([]), id="no columns"),
        pytest.param(lambda ds: ds.sort(["k", "a"], descending=[True]), id="fewer descending flags than columns"),
        pytest.param(lambda ds: ds.sort(["k", "a"], descending=[True, False, True]), id="more descending flags than columns"),
        pytest.param(lambda ds: ds.sort("k", descending=[True, False]), id="two descending flags for one column"),
        pytest.param(lambda ds: ds.sort("k", num_output_shards=0), id="zero output shards"),
    ],
)
def test_bad_arguments_fail_when_the_pipeline_is_built(build):
    with pytest.raises((ValueError, TypeError)):
        build(Dataset.from_list([{"k": 1, "a": 2}]))


@pytest.mark.parametrize("by", ["no_such_column", ["carrier", "no_such_column"]])
def test_missing_column_names_the_column(ctx, flights_pattern, by):
    with pytest.raises(ZephyrError, match="no_such_column"):
        ctx.execute(Dataset.from_files(flights_pattern).load_parquet().sort(by))
