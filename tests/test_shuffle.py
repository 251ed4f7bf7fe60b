"""Shuffles and joins (group_by, deduplicate, aggregate, join, sorted_merge_join, reduce, count).

Each is checked against plain Python or DuckDB on the same generated input, on every
backend (the ``ctx`` fixture). Tests of bounded memory, merge passes and round
boundaries shrink the shuffle's buffers with monkeypatch, so they run on the sync
backend, where the tasks run in this process.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal

import duckdb
import hypothesis.strategies as st
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings

from zephyr_arrow import Dataset, PlanError, ShardFailedError, ZephyrContext, ZephyrError
from zephyr_arrow.execution.shuffle import exchange, merge
from zephyr_arrow.execution.shuffle.keys import encode_key, encoded_keys, hash_columns, key_table
from zephyr_arrow.planner import StageKind, plan

KEYS = [None, "a", "b", "", "é", 0, 1, 2, -5, 2.5, (1, "x"), (1, None), b"\x00raw"]


def make_rows(num_rows: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"id": i, "k": rng.choice(["a", "b", "c", "d", None]), "n": rng.randrange(100), "x": rng.random()}
        for i in range(num_rows)
    ]


def sums_by_key(rows: list[dict], key) -> dict:
    totals: dict = collections.defaultdict(lambda: [0, 0])
    for row in rows:
        totals[key(row)][0] += 1
        totals[key(row)][1] += row["n"]
    return {k: tuple(v) for k, v in totals.items()}


def shard_sizes(refs) -> list[int]:
    return [sum(c.num_rows for c in shard) for shard in refs.shards]


# group_by -----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_output_shards", [None, 1, 7])
def test_group_by_counts_and_sums_match_python(ctx, num_output_shards):
    rows = make_rows(400)
    ds = Dataset.from_list(rows, num_shards=3).group_by(
        "k", lambda k, rs: {"k": k, "count": sum(1 for _ in rs)}, num_output_shards=num_output_shards
    )
    # a second reducer over the same groups: sum of n
    sums = Dataset.from_list(rows, num_shards=3).group_by(
        lambda r: r["k"], lambda k, rs: (k, sum(r["n"] for r in rs)), num_output_shards=num_output_shards
    )
    refs = ctx.execute(ds)
    assert refs.num_shards == (num_output_shards or 3)
    counts = {r["k"]: r["count"] for r in refs.to_pylist()}
    expected = sums_by_key(rows, lambda r: r["k"])
    assert counts == {k: v[0] for k, v in expected.items()}
    assert dict(ctx.execute(sums).to_pylist()) == {k: v[1] for k, v in expected.items()}


@pytest.mark.parametrize("key", [lambda r: r["key"], "key"])
def test_group_by_keys_of_every_kind(ctx, key):
    # A column of mixed values is stored pickled; its keys still group as Python's dict keys do (1 == 1.0 == True).
    keys = [*KEYS, 1.0, True, (1.0, "x")]
    rows = [{"key": keys[i % len(keys)], "n": i} for i in range(150)]
    ds = Dataset.from_list(rows, num_shards=4).group_by(key, lambda k, rs: (k, [r["n"] for r in rs]))
    out = dict(ctx.execute(ds).to_pylist())
    expected = collections.defaultdict(list)
    for row in rows:
        expected[row["key"]].append(row["n"])
    assert out == expected


def test_group_by_sort_by_orders_each_group_and_keeps_input_order_on_ties(ctx):
    rows = [{"g": i % 3, "t": (i * 7) % 5, "i": i} for i in range(60)]
    ds = Dataset.from_list(rows, num_shards=4).group_by(
        "g", lambda k, rs: {"g": k, "order": [(r["t"], r["i"]) for r in rs]}, sort_by=lambda r: r["t"]
    )
    out = ctx.execute(ds).to_pylist()
    assert sorted(row["g"] for row in out) == [0, 1, 2]
    for row in out:
        expected = sorted(((r["t"], r["i"]) for r in rows if r["g"] == row["g"]), key=lambda pair: pair[0])
        assert row["order"] == expected


def test_group_by_flattens_iterators_but_not_lists(ctx):
    ds = Dataset.from_list(list(range(10)), num_shards=2)
    flat = ctx.execute(ds.group_by(lambda x: x % 2, lambda k, xs: (x * 10 for x in xs), num_output_shards=1))
    assert sorted(flat.to_pylist()) == [x * 10 for x in range(10)]
    lists = ctx.execute(ds.group_by(lambda x: x % 2, lambda k, xs: list(xs), num_output_shards=1))
    assert sorted(lists.to_pylist()) == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]


def test_group_by_combiner_gives_the_reducers_answer(ctx):
    rows = make_rows(300, seed=1)

    def combine(key, rs):
        yield {"k": key, "n": sum(r["n"] for r in rs)}

    ds = Dataset.from_list(rows, num_shards=3).group_by(
        "k", lambda k, rs: {"k": k, "n": sum(r["n"] for r in rs)}, combiner=combine
    )
    out = {r["k"]: r["n"] for r in ctx.execute(ds).to_pylist()}
    assert out == {k: v[1] for k, v in sums_by_key(rows, lambda r: r["k"]).items()}


def test_group_by_output_shards_hold_groups_in_key_order(ctx):
    ds = Dataset.from_list(list(range(200)), num_shards=3).group_by(lambda x: x % 50, lambda k, xs: k, num_output_shards=4)
    refs = ctx.execute(ds)
    for shard in range(4):
        keys = list(refs.iter_shard_rows(shard))
        assert keys == sorted(keys)
    assert sorted(refs.to_pylist()) == list(range(50))


def test_group_by_column_key_of_several_columns_gives_a_tuple(ctx):
    rows = [{"a": i % 2, "b": str(i % 3), "n": i} for i in range(30)]
    out = ctx.execute(Dataset.from_list(rows, num_shards=2).group_by(["a", "b"], lambda k, rs: (k, len(list(rs))))).to_pylist()
    assert sorted(out) == sorted(collections.Counter((r["a"], r["b"]) for r in rows).items())


def test_group_by_user_error_names_the_stage(ctx):
    ds = Dataset.from_list([1, 2, 3]).group_by(lambda x: x, lambda k, xs: 1 / 0)
    with pytest.raises(ShardFailedError, match="group_by.*ZeroDivisionError"):
        ctx.execute(ds)


# deduplicate --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["k", ["k", "n"], lambda r: (r["k"], r["n"] % 3)])
def test_deduplicate_keeps_the_first_row_in_input_order(ctx, key):
    rows = make_rows(500, seed=2)
    key_of = (lambda r: r["k"]) if key == "k" else (lambda r: (r["k"], r["n"])) if isinstance(key, list) else key
    expected = {}
    for row in rows:
        expected.setdefault(key_of(row), row)
    out = ctx.execute(Dataset.from_list(rows, num_shards=5).deduplicate(key, num_output_shards=3)).to_pylist()
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in expected.values())


def test_a_deduplicate_key_that_is_a_column_is_not_copied_into_the_runs(ctx):
    rows = [{"id": i, "text": random.Random(i % 150).randbytes(2000).hex()} for i in range(300)]  # 150 texts, 4 KB each
    ds = Dataset.from_list(rows, num_shards=3)
    megabytes = {}
    for name, key in (("column", "text"), ("function", lambda r: r["text"])):
        assert ctx.execute(ds.deduplicate(key, num_output_shards=2)).num_rows == 150
        megabytes[name] = float(re.search(r"([\d.]+) MB", ctx.last_stage_summaries[0]).group(1))
    assert megabytes["function"] < 1.2 * megabytes["column"]  # not twice the text


def test_deduplicate_function_keys_match_across_batches_of_str_and_mixed_keys(ctx):
    # A batch of only str keys hashes their text; a mixed batch (or one with a lone surrogate,
    # which Arrow cannot hold) hashes each key's own bytes: equal keys must still meet.
    shards = [
        ["a", "b", "c", "d"],
        ["b", 1, None, "a", 1.0, "e"],
        ["c", "e", "f", True],
        ["\ud800", "a", "f", "\ud800", "g"],
    ]
    rows = [{"id": i, "k": k} for i, k in enumerate(k for shard in shards for k in shard)]
    expected: dict = {}
    for row in rows:
        expected.setdefault(row["k"], row["id"])
    ds = Dataset.from_list(rows, num_shards=4).deduplicate(lambda r: r["k"], num_output_shards=3)
    assert sorted(r["id"] for r in ctx.execute(ds).to_pylist()) == sorted(expected.values())


def test_deduplicate_keeps_python_values_exact(ctx):
    rows = [{"key": KEYS[i % len(KEYS)], "payload": (i, frozenset({i}))} for i in range(50)]
    out = ctx.execute(Dataset.from_list(rows, num_shards=3).deduplicate("key")).to_pylist()
    assert sorted(out, key=lambda r: r["payload"][0]) == rows[: len(KEYS)]


# aggregate ----------------------------------------------------------------------------------


def test_aggregate_matches_duckdb(ctx):
    rows = make_rows(600, seed=3)
    ds = Dataset.from_list(rows, num_shards=4).aggregate(
        "k", pl.len().alias("count"), pl.col("n").sum().alias("total"), pl.col("x").mean().alias("mean"), num_output_shards=2
    )
    refs = ctx.execute(ds)
    assert refs.num_shards == 2
    got = refs.sql("select k, count, total, round(mean, 9) from data order by k nulls last").fetchall()
    con = duckdb.connect()
    con.register("input", pa.Table.from_pylist(rows))
    expected = con.sql("select k, count(*), sum(n), round(avg(x), 9) from input group by k order by k nulls last").fetchall()
    assert got == expected


def test_aggregate_of_an_empty_dataset_has_the_columns(ctx):
    ds = Dataset.from_list([{"k": "a", "n": 1}]).filter(pl.col("n") > 5).aggregate("k", pl.col("n").sum())
    refs = ctx.execute(ds)
    assert refs.num_rows == 0 and set(refs.schema.names) == {"k", "n"}


# join -----------------------------------------------------------------------------------------

LEFT = [{"id": i % 9 if i % 11 else None, "lv": i, "tag": f"l{i}"} for i in range(40)]
RIGHT = [{"rid": (i * 5) % 13 if i % 7 else None, "rv": i * 1.5, "tag": f"r{i}"} for i in range(30)]


def duckdb_join(left: list[dict], right: list[dict], how: str) -> list[tuple]:
    con = duckdb.connect()
    con.register("l", pa.Table.from_pylist(left, schema=pa.schema([("id", pa.int64()), ("lv", pa.int64()), ("tag", pa.string())])))
    con.register("r", pa.Table.from_pylist(right, schema=pa.schema([("rid", pa.int64()), ("rv", pa.float64()), ("tag", pa.string())])))
    sql = {"inner": "inner", "left": "left", "right": "right", "outer": "full outer"}[how]
    return con.sql(
        f"select coalesce(l.id, r.rid) as id, l.lv, l.tag, r.rv, r.tag as tag_right from l {sql} join r on l.id = r.rid"
    ).fetchall()


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
def test_join_matches_duckdb(ctx, how):
    ds = Dataset.from_list(LEFT, num_shards=3).join(
        Dataset.from_list(RIGHT, num_shards=2), left_on="id", right_on="rid", how=how, num_output_shards=4
    )
    refs = ctx.execute(ds)
    assert refs.num_shards == 4
    assert refs.schema.names == ["id", "lv", "tag", "rv", "tag_right"]
    key = lambda t: tuple((v is None, v) for v in t)  # noqa: E731
    assert sorted(refs.sql("select * from data").fetchall(), key=key) == sorted(duckdb_join(LEFT, RIGHT, how), key=key)


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
@pytest.mark.parametrize("empty", ["left", "right", "both"])
def test_join_with_an_empty_side(ctx, how, empty):
    left = [] if empty in ("left", "both") else LEFT
    right = [] if empty in ("right", "both") else RIGHT
    side = lambda rows, schema_of: Dataset.from_list(rows or [schema_of], num_shards=2).filter(lambda r: bool(rows))  # noqa: E731
    ds = side(left, LEFT[0]).join(side(right, RIGHT[0]), left_on="id", right_on="rid", how=how)
    got = ctx.execute(ds).to_pylist()
    expected = duckdb_join(left, right, how)
    assert len(got) == len(expected)
    assert sorted(r.get("lv") is not None for r in got) == sorted(t[1] is not None for t in expected)


def test_join_keys_hash_alike_across_int_and_float_columns(ctx):
    left = Dataset.from_list([{"k": i, "a": i} for i in range(20)], num_shards=3)
    right = Dataset.from_list([{"k": float(i), "b": -i} for i in range(0, 20, 2)], num_shards=2)
    out = ctx.execute(left.join(right, on="k")).to_pylist()
    assert sorted((r["a"], r["b"]) for r in out) == [(i, -i) for i in range(0, 20, 2)]


def test_join_errors_are_plan_errors(ctx):
    left = Dataset.from_list([{"k": 1}])
    with pytest.raises(PlanError, match="on= or both left_on= and right_on="):
        left.join(left, left_on="k")
    with pytest.raises(PlanError, match="how must be"):
        left.join(left, on="k", how="cross")
    with pytest.raises(PlanError, match="no column 'missing' on the right side"):
        ctx.execute(left.join(left, left_on="k", right_on="missing"))
    with pytest.raises(PlanError, match="incompatible types"):
        ctx.execute(left.join(Dataset.from_list([{"k": "1"}]), on="k"))


def test_join_does_not_ship_the_right_dataset_to_workers():
    right = Dataset.from_list(list(range(5)))
    stage = plan(Dataset.from_list([1]).join(right, on="item")).stages[-1]
    assert stage.boundary.right is right and stage.boundary.without_right().right is None


# broadcast join -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["inner", "left"])
def test_broadcast_join_matches_duckdb_and_keeps_the_left_shards_in_order(ctx, how):
    ds = Dataset.from_list(LEFT, num_shards=3).join(
        Dataset.from_list(RIGHT, num_shards=2), left_on="id", right_on="rid", how=how, broadcast=True
    )
    assert [stage.kind for stage in plan(ds).stages] == [StageKind.MAP, StageKind.MAP]  # no shuffle
    refs = ctx.execute(ds)
    assert refs.num_shards == 3
    assert refs.schema.names == ["id", "lv", "tag", "rv", "tag_right"]
    key = lambda t: tuple((v is None, v) for v in t)  # noqa: E731
    assert sorted(refs.sql("select * from data").fetchall(), key=key) == sorted(duckdb_join(LEFT, RIGHT, how), key=key)
    shards = [[row["lv"] for row in refs.iter_shard_rows(shard)] for shard in range(3)]
    assert [lv for shard in shards for lv in shard] == sorted(lv for shard in shards for lv in shard)


def test_broadcast_join_gives_what_the_shuffle_join_gives_in_a_row_pipeline(ctx):
    # The left side is rows after a shuffle; the right side's keys are floats; ops follow the join.
    left = Dataset.from_list(LEFT, num_shards=3).group_by(lambda r: r["lv"] % 4, lambda k, rs: ({**r, "g": k} for r in rs))
    right = Dataset.from_list([{"id": float(i), "w": i * 10} for i in range(0, 9, 2)], num_shards=2)
    results = []
    for broadcast in (False, True):
        ds = left.map(lambda r: {**r, "lv": r["lv"] + 1}).join(right, on="id", how="left", broadcast=broadcast).filter(lambda r: r["g"] != 3)
        results.append(sorted(ctx.execute(ds).to_pylist(), key=lambda r: r["lv"]))
    weights = {float(i): i * 10 for i in range(0, 9, 2)}
    expected = [
        {**r, "g": r["lv"] % 4, "lv": r["lv"] + 1, "w": weights.get(r["id"])} for r in LEFT if r["lv"] % 4 != 3
    ]
    assert results[0] == results[1] == sorted(expected, key=lambda r: r["lv"])


def test_broadcast_join_before_a_shuffle_and_before_a_writer(ctx, tmp_path):
    left = Dataset.from_list([{"id": i % 7, "v": i} for i in range(100)], num_shards=4)
    right = Dataset.from_list([{"id": k, "name": f"n{k}"} for k in range(0, 7, 2)], num_shards=2)
    grouped = left.join(right, on="id", broadcast=True).group_by("name", lambda k, rs: {"name": k, "n": sum(1 for _ in rs)})
    assert [stage.kind for stage in plan(grouped).stages] == [StageKind.MAP, StageKind.SCATTER, StageKind.SHUFFLE]
    counts = collections.Counter(f"n{i % 7}" for i in range(100) if i % 7 % 2 == 0)
    assert sorted((r["name"], r["n"]) for r in ctx.execute(grouped).to_pylist()) == sorted(counts.items())
    written = left.join(right, on="id", how="left", broadcast=True).write_parquet(str(tmp_path / "out-{shard:05d}.parquet"))
    assert len(ctx.execute(written).to_pylist()) == 4
    assert duckdb.sql(f"select count(*), count(name) from read_parquet('{tmp_path}/out-*.parquet')").fetchall() == [(100, 57)]


@pytest.mark.parametrize("how", ["inner", "left"])
@pytest.mark.parametrize("empty", ["left", "right", "both"])
def test_broadcast_join_with_an_empty_side(ctx, how, empty):
    left = [] if empty in ("left", "both") else LEFT
    right = [] if empty in ("right", "both") else RIGHT
    side = lambda rows, schema_of: Dataset.from_list(rows or [schema_of], num_shards=2).filter(lambda r: bool(rows))  # noqa: E731
    ds = side(left, LEFT[0]).join(side(right, RIGHT[0]), left_on="id", right_on="rid", how=how, broadcast=True)
    got = ctx.execute(ds).to_pylist()
    expected = duckdb_join(left, right, how)
    assert sorted((r["lv"], r.get("rv")) for r in got) == sorted((t[1], t[3]) for t in expected)


def test_broadcast_join_errors(ctx):
    left = Dataset.from_list([{"k": 1}])
    with pytest.raises(PlanError, match="does inner and left joins, got how='outer'"):
        left.join(left, on="k", how="outer", broadcast=True)
    with pytest.raises(PlanError, match="keeps the left side's shards"):
        left.join(left, on="k", broadcast=True, num_output_shards=2)
    with pytest.raises(ShardFailedError, match="no column 'missing' on the right side"):
        ctx.execute(left.join(left, left_on="k", right_on="missing", broadcast=True))
    with pytest.raises(ShardFailedError, match="incompatible types"):
        ctx.execute(left.join(Dataset.from_list([{"k": "1"}]), on="k", broadcast=True))


@pytest.mark.parametrize("how", ["inner", "left"])
def test_a_broadcast_side_reads_only_its_keys_and_the_columns_used_after_the_join(ctx, tmp_path, how):
    for name, rows in (("left", LEFT), ("right", RIGHT)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    left, right = (Dataset.from_files(str(tmp_path / f"{name}.jsonl")).load_jsonl() for name in ("left", "right"))
    joined = left.join(right, left_on="id", right_on="rid", how=how, broadcast=True)
    expected = duckdb_join(LEFT, RIGHT, how)  # (id, lv, tag, rv, tag_right)
    key = lambda t: tuple((v is None, v) for v in t)  # noqa: E731

    values = joined.map(lambda r: (r["lv"], r["rv"]))
    assert _kept(values, 0) == {"rid", "lv", "rv"} and _kept(values, 1) == {"id", "lv", "rv"}
    assert sorted(ctx.execute(values).to_pylist(), key=key) == sorted([(t[1], t[3]) for t in expected], key=key)
    # The right side's tag is named tag_right because the left side has a tag too: both keep it.
    tags = joined.map(lambda r: (r["lv"], r["tag_right"]))
    assert _kept(tags, 0) == {"rid", "lv", "tag_right", "tag"} and _kept(tags, 1) == {"id", "lv", "tag_right", "tag"}
    assert sorted(ctx.execute(tags).to_pylist(), key=key) == sorted([(t[1], t[4]) for t in expected], key=key)


def test_a_broadcast_side_is_read_once_per_process_and_dropped_when_the_sync_context_closes(tmp_path, monkeypatch):
    from zephyr_arrow.execution.shuffle import join as broadcast

    reads = []
    whole = broadcast._whole
    monkeypatch.setattr(broadcast, "_whole", lambda chunks: reads.append(len(chunks)) or whole(chunks))
    monkeypatch.setattr(broadcast, "LEFT_BATCH_BYTES", 1)  # every left batch joined by itself
    left = Dataset.from_list(LEFT, num_shards=4)
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path)) as ctx:
        for right in (RIGHT, RIGHT[:5]):  # a second join, with another right side, reads that one
            ds = left.join(Dataset.from_list(right, num_shards=2), left_on="id", right_on="rid", broadcast=True)
            assert sorted(ctx.execute(ds).sql("select lv, rv from data").fetchall()) == sorted(
                (t[1], t[3]) for t in duckdb_join(LEFT, right, "inner")
            )
        assert reads == [2, 2] and broadcast._last_side is not None
    assert broadcast._last_side is None


def test_broadcast_join_does_not_ship_the_right_dataset_to_workers():
    right = Dataset.from_list([{"item": 1}])
    stage = plan(Dataset.from_list([1]).join(right, on="item", broadcast=True)).stages[-1]
    assert stage.broadcast == (0,) and stage.ops[-1].right is right
    assert stage.for_worker().ops[-1].right is None


# sorted_merge_join ----------------------------------------------------------------------------


def _by_key(ds: Dataset, name: str) -> Dataset:
    return ds.group_by(lambda r: r["k"], lambda k, rs: ({**r, name: i} for i, r in enumerate(rs)), num_output_shards=3)


@pytest.mark.parametrize("how", ["inner", "left"])
def test_sorted_merge_join_after_group_by_gives_every_pair(ctx, how):
    left = [{"k": i % 6, "l": i} for i in range(18)]
    right = [{"k": k, "r": r} for k in (1, 2, 2, 4, 7) for r in range(2)]
    ds = _by_key(Dataset.from_list(left, num_shards=2), "li").sorted_merge_join(
        _by_key(Dataset.from_list(right, num_shards=2), "ri"), lambda r: r["k"], lambda r: r["k"], how=how
    )
    got = sorted((r["k"], r["l"], r.get("r")) for r in ctx.execute(ds).to_pylist())
    expected = [(a["k"], a["l"], b["r"]) for a in left for b in right if a["k"] == b["k"]]
    if how == "left":
        expected += [(a["k"], a["l"], None) for a in left if a["k"] not in {b["k"] for b in right}]
    assert got == sorted(expected)


def test_sorted_merge_join_needs_equal_shard_counts_and_sorted_input(ctx):
    left = Dataset.from_list([{"k": 1}], num_shards=1)
    with pytest.raises(PlanError, match="requires equal shard counts.*1 shards on the left and 2 on the right"):
        ctx.execute(left.sorted_merge_join(Dataset.from_list([{"k": 1}, {"k": 2}]), lambda r: r["k"], lambda r: r["k"]))
    unsorted = Dataset.from_list([{"k": 2}, {"k": 1}], num_shards=1)
    with pytest.raises(ShardFailedError, match="not sorted by its key"):
        ctx.execute(unsorted.sorted_merge_join(left, lambda r: r["k"], lambda r: r["k"]))
    with pytest.raises(PlanError, match="how='inner' or 'left'"):
        left.sorted_merge_join(left, lambda r: r, lambda r: r, how="outer")


# reduce and count -----------------------------------------------------------------------------


def test_reduce_and_count(ctx):
    ds = Dataset.from_list(list(range(100)), num_shards=7)
    assert ctx.execute(ds.reduce(sum)).to_pylist() == [4950]
    assert ctx.execute(ds.reduce(lambda xs: max(xs), max)).to_pylist() == [99]
    assert ctx.execute(ds.count()).to_pylist() == [100]
    assert ctx.execute(ds.filter(lambda x: x % 3 == 0).count()).to_pylist() == [34]
    assert ctx.execute(ds.filter(pl.col("item") > 1000).count()).to_pylist() == []


def test_reduce_and_count_of_an_empty_dataset_are_empty(ctx):
    assert ctx.execute(Dataset.from_list([]).count()).to_pylist() == []
    assert ctx.execute(Dataset.from_list([1, 2]).filter(lambda x: False).reduce(max)).to_pylist() == []


# plans, files, validation ---------------------------------------------------------------------


def test_shuffles_explain_as_their_own_stages():
    ds = Dataset.from_list([{"k": 1}]).map(lambda r: r).deduplicate("k").map(lambda r: r)
    assert plan(ds).explain().splitlines()[1:] == ["[1] shuffle: deduplicate(k) -> map(<lambda>)  <- 0"]  # the map runs in the reduce tasks
    joined = Dataset.from_list([{"k": 1}]).join(Dataset.from_list([{"k": 1}]), on="k", how="left")
    assert plan(joined).explain().splitlines()[-1] == "[2] join: join(left on k)  <- 0, 1"


def test_shuffles_run_the_ops_before_them_in_their_scatter_stage():
    ds = Dataset.from_files("x/*.jsonl").load_jsonl().map(lambda r: r).deduplicate("k").group_by("k", lambda k, rs: k)
    assert plan(ds).explain().splitlines() == [
        "[0] scatter: from_files('x/*.jsonl') -> load_jsonl -> map(<lambda>) -> scatter by k",
        "[1] shuffle: deduplicate(k)  <- 0",
        "[2] scatter: scatter by k (reads k)  <- 1",  # its reducer reads no field of the rows
        "[3] shuffle: group_by(k, <lambda>)  <- 2",
    ]


def _docs_rows(num_files: int = 3) -> list[list[dict]]:
    return [
        [{"id": index * 100 + i, "k": (i * 7 + index) % 13, "t": f"text {i % 17}", "x": i / 10} for i in range(100)]
        for index in range(num_files)
    ]


def _docs(tmp_path, num_files: int = 3) -> Dataset:
    for index, rows in enumerate(_docs_rows(num_files)):
        (tmp_path / f"docs-{index}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Dataset.from_files(str(tmp_path / "docs-*.jsonl")).load_jsonl()


def _first_per_key(rows: list[dict], key) -> list[dict]:
    first: dict = {}
    for row in rows:
        first.setdefault(key(row), row)
    return list(first.values())


def _groups(rows: list[dict], key) -> dict:
    groups: dict = collections.defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return groups


def _sorted_rows(rows: list[dict]) -> list[dict]:
    """Rows in a canonical order, floats rounded (a sum's last digits depend on the order it adds in)."""
    rounded = [{k: round(v, 9) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
    return sorted(rounded, key=lambda r: json.dumps(r, sort_keys=True))


_HALVES = [{"k": k, "half": k / 2} for k in range(0, 13, 2)]


@pytest.mark.parametrize(
    "shuffle, oracle",
    [
        (lambda ds: ds.deduplicate("t"), lambda rows: _first_per_key(rows, lambda r: r["t"])),
        (lambda ds: ds.deduplicate(lambda r: r["k"] % 5), lambda rows: _first_per_key(rows, lambda r: r["k"] % 5)),
        (
            lambda ds: ds.group_by(lambda r: r["t"], lambda k, rs: {"t": k, "ids": sorted(r["id"] for r in rs)}),
            lambda rows: [{"t": t, "ids": sorted(r["id"] for r in rs)} for t, rs in _groups(rows, lambda r: r["t"]).items()],
        ),
        (
            lambda ds: ds.group_by("k", lambda k, rs: {"k": k, "n": sum(1 for _ in rs)}, combiner=lambda k, rs: iter(list(rs))),
            lambda rows: [{"k": k, "n": len(rs)} for k, rs in _groups(rows, lambda r: r["k"]).items()],
        ),
        (
            lambda ds: ds.aggregate("k", pl.len().alias("n"), pl.col("x").sum().alias("x")),
            lambda rows: [{"k": k, "n": len(rs), "x": math.fsum(r["x"] for r in rs)} for k, rs in _groups(rows, lambda r: r["k"]).items()],
        ),
        (
            lambda ds: ds.join(Dataset.from_list(_HALVES, num_shards=2), on="k", how="left"),
            lambda rows: [{**r, "half": r["k"] / 2 if r["k"] % 2 == 0 else None} for r in rows],
        ),
    ],
)
def test_a_fused_scatter_gives_the_unfused_answer(ctx, tmp_path, shuffle, oracle):
    upstream = _docs(tmp_path).map(lambda r: {**r, "k2": r["k"] * 2}).filter(pl.col("x") > 1)
    fused = shuffle(upstream)
    unfused = shuffle(Dataset.from_refs(ctx.execute(upstream)))  # the upstream written out first, as a map stage would
    assert plan(fused).stages[0].kind is StageKind.SCATTER and plan(fused).stages[0].ops
    rows = lambda ds: _sorted_rows(ctx.execute(ds).to_pylist())  # noqa: E731
    expected = oracle([{**r, "k2": r["k"] * 2} for file_rows in _docs_rows() for r in file_rows if r["x"] > 1])
    assert rows(fused) == _sorted_rows(expected)
    assert rows(unfused) == _sorted_rows(expected)


_SHUFFLED = {
    "deduplicate": lambda ds: ds.deduplicate("k", num_output_shards=2),
    "group_by": lambda ds: ds.group_by("k", lambda k, rs: {"k": k, "n": sum(1 for _ in rs)}, num_output_shards=2),
    "aggregate": lambda ds: ds.aggregate("k", pl.col("n").sum().alias("n"), num_output_shards=2),
    "join": lambda ds: ds.join(Dataset.from_list([{"k": k, "w": i} for i, k in enumerate("abc")], num_shards=2), on="k"),
    "sorted_merge_join": lambda ds: _by_key(ds, "li").sorted_merge_join(
        _by_key(Dataset.from_list([{"k": k, "w": i} for i, k in enumerate("abc")], num_shards=2), "ri"), lambda r: r["k"], lambda r: r["k"]
    ),
}


_WEIGHTS = [{"k": k, "w": i} for i, k in enumerate("abc")]


def _numbered_within_key(rows: list[dict], name: str) -> list[dict]:
    """What ``_by_key`` gives: each row numbered by its place among its key's rows, in input order."""
    seen: collections.Counter = collections.Counter()
    numbered = []
    for row in rows:
        numbered.append({**row, name: seen[row["k"]]})
        seen[row["k"]] += 1
    return numbered


_SHUFFLED_ORACLE = {
    "deduplicate": lambda rows: _first_per_key(rows, lambda r: r["k"]),
    "group_by": lambda rows: [{"k": k, "n": len(rs)} for k, rs in _groups(rows, lambda r: r["k"]).items()],
    "aggregate": lambda rows: [{"k": k, "n": sum(r["n"] for r in rs)} for k, rs in _groups(rows, lambda r: r["k"]).items()],
    "join": lambda rows: [{**r, "w": w["w"]} for r in rows for w in _WEIGHTS if r["k"] == w["k"]],
    "sorted_merge_join": lambda rows: [
        {**r, **w} for r in _numbered_within_key(rows, "li") for w in _numbered_within_key(_WEIGHTS, "ri") if r["k"] == w["k"]
    ],
}


@pytest.mark.parametrize("shuffle", list(_SHUFFLED))
def test_ops_after_a_shuffle_run_in_its_reduce_tasks(ctx, shuffle):
    ds = _SHUFFLED[shuffle](Dataset.from_list(make_rows(300), num_shards=3))
    after = lambda d: d.filter(pl.col("k") != "b").map(lambda r: {**r, "mark": 1}).filter(lambda r: r["k"] != "c")  # noqa: E731
    stages = plan(after(ds)).stages
    assert stages[-1].kind in (StageKind.SHUFFLE, StageKind.JOIN) and len(stages[-1].ops) == 3
    rows = lambda d: _sorted_rows(ctx.execute(d).to_pylist())  # noqa: E731
    expected = [{**r, "mark": 1} for r in _SHUFFLED_ORACLE[shuffle](make_rows(300)) if r["k"] not in (None, "b", "c")]
    assert rows(after(ds)) == _sorted_rows(expected)
    assert rows(after(Dataset.from_refs(ctx.execute(ds)))) == _sorted_rows(expected)


def test_aggregate_scatters_only_the_columns_it_reads(ctx):
    rows = [{"k": i % 3, "n": i, "pad": random.Random(i).randbytes(2000).hex()} for i in range(300)]  # ~1.2 MB of pad
    ds = Dataset.from_list(rows, num_shards=2)
    sums = ctx.execute(ds.aggregate("k", pl.col("n").sum().alias("total")))
    assert dict(sums.sql("select k, total from data").fetchall()) == {k: sum(r["n"] for r in rows if r["k"] == k) for k in range(3)}
    scatter = ctx.last_stage_summaries[0]
    assert float(re.search(r"([\d.]+) MB", scatter).group(1)) < 0.1
    # An expression that picks columns by pattern or type sees every column.
    assert ds.aggregate("k", pl.col("n").sum()).operations[-1].input_columns() == ("k", "n")
    assert ds.aggregate("k", pl.len(), pl.all().max().name.suffix("_max")).operations[-1].input_columns() is None
    widest = ctx.execute(ds.select("k", "n").aggregate("k", pl.all().max().name.suffix("_max"))).to_pylist()
    assert sorted((r["k"], r["n_max"]) for r in widest) == [(0, 297), (1, 298), (2, 299)]


def test_aggregate_over_jsonl_reads_only_the_columns_it_uses(ctx, tmp_path):
    # The planner hands the load the columns the stage uses; the answer is DuckDB's over all fields.
    rows = [{"url": f"https://d{i % 7}.org/p/{i}", "score": (i * 37 % 100) / 100, "text": "w " * (i % 30), "n": i} for i in range(3000)]
    for part in range(3):
        (tmp_path / f"docs-{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[part::3]))
    ds = (
        Dataset.from_files(str(tmp_path / "*.jsonl")).load_jsonl()
        .with_columns(domain=pl.col("url").str.split("/").list.get(2))
        .filter(pl.col("n") % 2 == 0)
        .aggregate("domain", pl.len().alias("count"), pl.col("score").sum().alias("total"))
    )
    got = ctx.execute(ds).sql("select domain, count, round(total, 6) from data order by domain").fetchall()
    expected = duckdb.sql(
        f"select split_part(url, '/', 3) as domain, count(*), round(sum(score), 6) from read_json_auto('{tmp_path}/*.jsonl') "
        "where n % 2 = 0 group by domain order by domain"
    ).fetchall()
    assert got == expected and len(got) == 7


def test_deduplicate_before_count_scatters_only_the_columns_after_it_read(ctx):
    rows = [{"k": i % 100, "n": i, "pad": random.Random(i).randbytes(2000).hex()} for i in range(300)]  # ~1.2 MB of pad
    ds = Dataset.from_list(rows, num_shards=2)
    first = {}
    for row in rows:
        first.setdefault(row["k"], row)
    evens = sum(1 for row in first.values() if row["n"] % 2 == 0)
    scattered_mb = lambda: float(re.search(r"([\d.]+) MB", ctx.last_stage_summaries[0]).group(1))  # noqa: E731
    assert ctx.execute(ds.deduplicate("k").count()).to_pylist() == [100]
    assert scattered_mb() < 0.1
    # The filter after the shuffle sees each key's first row: its column moves too, the pad does not.
    assert ctx.execute(ds.deduplicate("k").filter(pl.col("n") % 2 == 0).count()).to_pylist() == [evens]
    assert scattered_mb() < 0.1
    # So with a row function whose code shows what it reads.
    assert ctx.execute(ds.deduplicate("k").filter(lambda r: r["n"] % 2 == 0).count()).to_pylist() == [evens]
    assert scattered_mb() < 0.1
    # One that may read any column: every column moves, the answer is the same.
    assert ctx.execute(ds.deduplicate("k").filter(lambda r: dict(r)["n"] % 2 == 0).count()).to_pylist() == [evens]
    assert scattered_mb() > 0.5
    # A key function that returns a column of the row: that column moves, as the key.
    texts = Dataset.from_list([{**row, "t": f"text {row['k']}"} for row in rows], num_shards=2)
    assert ctx.execute(texts.deduplicate(lambda r: r["t"]).count()).to_pylist() == [100]
    assert scattered_mb() < 0.1
    # One that computes its key: every column moves (a table of no columns would have no rows).
    assert ctx.execute(ds.deduplicate(lambda r: r["k"] % 30).count()).to_pylist() == [30]
    assert scattered_mb() > 0.1


def test_a_deduplicate_gathers_only_the_columns_read_after_it(ctx):
    rows = [{"k": f"key {i % 50}", "n": i, "x": [i, -i]} for i in range(400)]
    ds = Dataset.from_list(rows, num_shards=4)
    first = list({row["k"]: row for row in reversed(rows)}.values())  # each key's first row
    by_n = lambda found: sorted(found, key=lambda r: r["n"])  # noqa: E731
    # The map reads n only: its rows are made from each key's first n.
    assert by_n(ctx.execute(ds.deduplicate("k").map(lambda r: {"n": r["n"]})).to_pylist()) == by_n({"n": r["n"]} for r in first)
    # As the output, every column is gathered, the key and the list too.
    evens = ctx.execute(ds.deduplicate("k").filter(lambda r: r["n"] % 2 == 0)).to_pylist()
    assert by_n(evens) == by_n(r for r in first if r["n"] % 2 == 0)
    # A key function's column, then a count: nothing is read after the shuffle.
    assert ctx.execute(ds.deduplicate(lambda r: r["k"]).count()).to_pylist() == [50]


def test_deduplicate_count_over_jsonl_matches_duckdb(ctx, tmp_path):
    # 450 texts; the rows of one text alternate languages, so which row is first matters.
    rows = [{"id": i, "text": f"doc {i * 7 % 450}", "lang": ["en", "de"][i // 450 % 2], "score": i / 100} for i in range(3000)]
    for part in range(3):
        (tmp_path / f"docs-{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[part * 1000 : (part + 1) * 1000]))
    docs = Dataset.from_files(str(tmp_path / "*.jsonl")).load_jsonl()
    sql = lambda query: [duckdb.sql(query.format(docs=f"read_json_auto('{tmp_path}/*.jsonl')")).fetchall()[0][0]]  # noqa: E731
    assert ctx.execute(docs.deduplicate("text").count()).to_pylist() == sql("select count(distinct text) from {docs}") == [450]
    # The first row of each text in input order (files in name order, then lines), then the filter.
    english = ctx.execute(docs.deduplicate("text").filter(pl.col("lang") == "en").count()).to_pylist()
    first_lang = "select count(*) from (select text, {pick}(lang, id) as lang from {docs} group by text) where lang = 'en'"
    assert english == sql(first_lang.replace("{pick}", "arg_min")) != sql(first_lang.replace("{pick}", "arg_max"))


def _wide_docs(tmp_path) -> tuple[Dataset, list[dict]]:
    """Documents with a wide field no test function reads (~1.2 MB of ``pad``), in 3 JSONL files."""
    rows = [
        {"id": i, "url": f"https://d{i % 7}.org/p/{i}", "score": (i * 37 % 100) / 100, "lang": ["en", "de", None][i % 3],
         "pad": random.Random(i).randbytes(500).hex()}
        for i in range(1200)
    ]
    for part in range(3):
        (tmp_path / f"docs-{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[part::3]))
    return Dataset.from_files(str(tmp_path / "docs-*.jsonl")).load_jsonl(), rows


def _kept(ds: Dataset, stage: int = 0) -> set[str] | None:
    """The fields the load of ``ds``'s stage ``stage`` reads (None: every field)."""
    (keep,) = [op.keep for op in plan(ds).stages[stage].ops if hasattr(op, "keep")]
    return None if keep is None else set(keep)


def _mean_score(key, rows):
    count = total = 0
    for row in rows:
        count += 1
        total += row["score"]
    return {"domain": key, "n": count, "mean": round(total / count, 9)}


def test_row_functions_that_show_their_reads_move_only_those_fields(ctx, tmp_path):
    docs, rows = _wide_docs(tmp_path)
    expected = collections.defaultdict(list)
    for row in rows:
        if row["lang"] is not None:
            expected[row["url"].split("/")[2]].append(row["score"])
    expected = sorted((d, len(s), round(sum(s) / len(s), 9)) for d, s in expected.items())
    answer = lambda refs: sorted((r["domain"], r["n"], r["mean"]) for r in refs.to_pylist())  # noqa: E731
    scattered_mb = lambda: float(re.search(r"([\d.]+) MB", ctx.last_stage_summaries[0]).group(1))  # noqa: E731

    known = docs.filter(lambda d: d["lang"] is not None).group_by(lambda d: d["url"].split("/")[2], reducer=_mean_score)
    assert _kept(known) == {"lang", "url", "score"}
    assert answer(ctx.execute(known)) == expected
    assert scattered_mb() < 0.2
    # The same functions written so their reads are unknown: every field is read and moved, same answer.
    unknown = docs.filter(lambda d: dict(d)["lang"] is not None).group_by(
        lambda d: dict(d)["url"].split("/")[2], reducer=lambda key, rs: _mean_score(key, list(rs))
    )
    assert _kept(unknown) is None
    assert answer(ctx.execute(unknown)) == expected
    assert scattered_mb() > 0.5
    # A deduplicate by a key function before count reads and moves only what the key reads.
    first_domains = docs.deduplicate(lambda d: d["url"].split("/")[2]).count()
    assert _kept(first_domains) == {"url"}
    assert ctx.execute(first_domains).to_pylist() == [7]
    # A map's input is what it reads.
    ids = docs.map(lambda d: {"id": d["id"], "en": d.get("lang") == "en"}).filter(lambda r: r["en"])
    assert _kept(ids) == {"id", "lang"}
    assert sorted(r["id"] for r in ctx.execute(ids).to_pylist()) == [r["id"] for r in rows if r["lang"] == "en"]


def test_a_group_by_sorts_by_a_field_it_does_not_carry(ctx, tmp_path):
    # The sort key is read on the map side only: the runs carry the key's and the reducer's fields.
    docs, rows = _wide_docs(tmp_path)
    grouped = docs.group_by(
        lambda d: d["url"].split("/")[2], reducer=lambda key, rs: {"domain": key, "ids": [r["id"] for r in rs]}, sort_by=lambda d: -d["score"]
    )
    assert _kept(grouped) == {"url", "id", "score"} and plan(grouped).stages[0].boundary.carried_columns() == ("url", "id")
    expected = collections.defaultdict(list)
    in_input_order = [row for part in range(3) for row in rows[part::3]]  # file by file
    for row in sorted(in_input_order, key=lambda r: -r["score"]):  # stable: input order within a score
        expected[row["url"].split("/")[2]].append(row["id"])
    assert {r["domain"]: r["ids"] for r in ctx.execute(grouped).to_pylist()} == expected


@pytest.mark.parametrize(
    "texts",
    [
        ["b", "a", "b", "c", "a", "é", "b"],  # a string column: its values are the keys, no row decoded
        ["b", None, "b", None, "a", "a", None],  # nulls: the function runs on rows
        ["b", 1, "b", 1.0, True, "a", (1,)],  # mixed types, a pickled column: Python's equality (1 == 1.0 == True)
        [3, 1, 3, 2, 1, 2, 2],  # not strings
    ],
)
def test_a_key_function_returning_a_field_keys_as_python_would(ctx, texts):
    rows = [{"id": i, "t": t, "pad": "x" * i} for i, t in enumerate(texts * 3)]
    first: dict = {}
    for row in rows:
        first.setdefault(row["t"], row)
    ds = Dataset.from_list(rows, num_shards=3)
    kept = ctx.execute(ds.deduplicate(lambda r: r["t"])).to_pylist()
    assert sorted(r["id"] for r in kept) == sorted(r["id"] for r in first.values())
    groups = ctx.execute(ds.group_by(lambda r: r["t"], reducer=lambda key, rs: (key, [r["id"] for r in rs]))).to_pylist()
    expected = collections.defaultdict(list)
    for row in rows:
        expected[first[row["t"]]["t"]].append(row["id"])
    assert sorted(map(tuple, groups), key=repr) == sorted(((k, v) for k, v in expected.items()), key=repr)


def test_a_key_function_reading_a_field_no_file_has_sees_every_row(ctx, tmp_path):
    # The reader has none of the fields the functions read: it reads every field rather than
    # none (a batch of no columns has no rows), so every row reaches the key function.
    docs, rows = _wide_docs(tmp_path)
    grouped = docs.group_by(lambda d: d.get("topic"), reducer=lambda key, rs: {"topic": key, "n": sum(1 for _ in rs)})
    assert ctx.execute(grouped).to_pylist() == [{"topic": None, "n": len(rows)}]
    ctx.execute(docs.write_parquet(str(tmp_path / "docs-{shard}.parquet")))
    grouped = Dataset.from_files(str(tmp_path / "docs-*.parquet")).load_parquet().group_by(lambda d: d.get("topic"), reducer=lambda key, rs: sum(1 for _ in rs))
    assert ctx.execute(grouped).to_pylist() == [len(rows)]


def test_chunks_of_bare_items_are_read_whole_whatever_fields_a_function_reads(ctx):
    # Rows that are not all dicts with str keys are stored as one item column: a projection to
    # the fields the function reads would find none of them.
    items = [{"x": 1}, {2: "two"}, {"x": 3}]
    mapped = Dataset.from_list(items, num_shards=2).map(lambda d: d).reshard(2).map(lambda d: d["x"] if "x" in d else None)
    assert plan(mapped).stages[-1].input_columns == ("x",)
    assert ctx.execute(mapped).to_pylist() == [1, None, 3]


def test_one_file_per_scatter_task(ctx):
    ds = Dataset.from_list(make_rows(200), num_shards=3).group_by("k", lambda k, rs: k, num_output_shards=5)
    refs = ctx.execute(ds)
    # 3 scatter files (one per input shard, holding a row range per output shard) + 5 outputs
    assert refs.stats["shuffle/files_written"] == 3 + 5


def test_shuffle_summaries_count_the_rows_and_bytes_of_both_passes(ctx):
    rows = [{"k": i % 5, "blob": random.Random(i).randbytes(4000).hex()} for i in range(300)]  # ~2.4 MB, incompressible
    ctx.execute(Dataset.from_list(rows, num_shards=3).group_by("k", lambda k, rs: {"k": k, "blobs": [r["blob"] for r in rs]}, num_output_shards=2))
    scatter, reduce = ctx.last_stage_summaries[-2:]
    assert "300 rows in, 300 rows out" in scatter  # every row is written to a run
    assert "300 rows in, 5 rows out" in reduce  # every run row is merged
    megabytes = [float(re.search(r"([\d.]+) MB", line).group(1)) for line in (scatter, reduce)]
    assert megabytes[0] > 2 and megabytes[1] > 2


def test_arguments_are_checked_when_the_pipeline_is_built():
    ds = Dataset.from_list([1])
    with pytest.raises(PlanError, match="reducer"):
        ds.group_by(lambda x: x, "not callable")
    with pytest.raises(PlanError, match="key to be a function of the row or column name"):
        ds.deduplicate(3)
    with pytest.raises(PlanError, match="num_output_shards.*got 0"):
        ds.group_by(lambda x: x, lambda k, xs: k, num_output_shards=0)
    with pytest.raises(PlanError, match="Polars aggregation"):
        ds.aggregate("k", "n")


def test_column_keys_on_plain_values_are_a_plan_error(ctx):
    with pytest.raises(PlanError, match="need dict rows"):
        ctx.execute(Dataset.from_list([1, 2]).deduplicate("item"))


# bounded memory (sync: the buffers are shrunk in this process) --------------------------------


@pytest.fixture
def small_buffers(monkeypatch, tmp_path):
    """A sync context whose shuffles sort 64 KB at a time and merge 2 runs at once, 16 KB of each at a time, one round at a time."""
    monkeypatch.setattr(exchange, "SORT_BUFFER_BYTES", 64 * 1024)
    monkeypatch.setattr(merge, "MERGE_FAN_IN", 2)
    monkeypatch.setattr(merge, "RUN_ROW_GROUP_BYTES", 16 * 1024)
    monkeypatch.setattr(merge, "ROUND_BYTES", 1)
    rounds: list[int] = []
    merge_runs = merge.merge_runs

    def recording_merge_runs(runs, order, schema, sort=True):
        for table in merge_runs(runs, order, schema, sort):
            rounds.append(table.num_rows)
            yield table

    monkeypatch.setattr(merge, "merge_runs", recording_merge_runs)
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path)) as ctx:
        ctx.rounds = rounds
        yield ctx


def test_a_group_larger_than_the_buffers_streams_to_the_reducer(small_buffers):
    num_rows, payload = 20_000, "x" * 200  # ~4 MB of rows in one group, 60x the buffers
    seen = {}

    def reducer(key, rows):
        assert isinstance(rows, Iterator) and not isinstance(rows, (list, tuple))
        count = peak = 0
        for row in rows:
            count += 1
            assert row["p"] == payload
            if count % 100 == 0:
                peak = max(peak, pa.total_allocated_bytes())
        seen[key] = (count, peak)
        return {"key": key, "count": count}

    ds = Dataset.from_iterable(({"g": i % 2 if i < 100 else 0, "p": payload} for i in range(num_rows)), num_shards=4)
    out = small_buffers.execute(ds.group_by("g", reducer, num_output_shards=1)).to_pylist()
    assert sorted((r["key"], r["count"]) for r in out) == [(0, num_rows - 50), (1, 50)]
    # Rounds of the merge hold at most a batch of each of the 2 merged runs, never the group.
    assert max(small_buffers.rounds) < 2_000
    assert seen[0][1] < 1_000_000  # all Arrow memory of this process while the 4 MB group streamed


def test_many_runs_merge_in_passes_with_the_right_answer(small_buffers):
    rows = make_rows(6_000, seed=4)
    for row in rows:
        row["pad"] = "p" * 50
    ds = Dataset.from_list(rows, num_shards=5)
    counts = small_buffers.execute(ds.group_by(lambda r: r["n"] % 17, lambda k, rs: (k, sum(1 for _ in rs)), num_output_shards=2))
    assert dict(counts.to_pylist()) == collections.Counter(r["n"] % 17 for r in rows)
    assert counts.stats["shuffle/files_written"] > 5 + 2  # runs spilled in merge passes


def test_a_merge_pass_keeps_the_file_it_carries_to_the_next(small_buffers):
    # 6 runs merged 2 at a time: 6 -> 3 merged files -> 2, the last of the 3 carried over as it is.
    ds = Dataset.from_list([{"k": i % 3, "n": i} for i in range(50)], num_shards=6)
    counts = small_buffers.execute(ds.group_by("k", lambda k, rs: (k, sum(1 for _ in rs)), num_output_shards=1)).to_pylist()
    assert sorted(counts) == [(0, 17), (1, 17), (2, 16)]


def test_dedup_aggregate_and_join_across_many_merge_rounds(small_buffers):
    rows = make_rows(4_000, seed=5)
    for row in rows:
        row["pad"] = "p" * 50
    ds = Dataset.from_list(rows, num_shards=3)
    first = {}
    for row in rows:
        first.setdefault((row["k"], row["n"] % 40), row["id"])
    deduped = small_buffers.execute(ds.deduplicate(["k", "n"], num_output_shards=2).filter(lambda r: True)).to_pylist()
    assert len(small_buffers.rounds) > 20
    expected_first = {}
    for row in rows:
        expected_first.setdefault((row["k"], row["n"]), row["id"])
    assert sorted(r["id"] for r in deduped) == sorted(expected_first.values())
    sums = small_buffers.execute(ds.aggregate("n", pl.col("id").sum().alias("ids"), num_output_shards=2))
    assert dict(sums.sql("select n, ids from data").fetchall()) == {
        n: sum(r["id"] for r in rows if r["n"] == n) for n in {r["n"] for r in rows}
    }
    right = Dataset.from_list([{"n": n, "half": n / 2} for n in range(0, 100, 3)], num_shards=2)
    joined = small_buffers.execute(ds.join(right, on="n", how="left")).to_pylist()
    assert len(joined) == len(rows)
    assert all(r["half"] == (r["n"] / 2 if r["n"] % 3 == 0 else None) for r in joined)


def test_deduplicate_function_keys_in_a_column_meet_encoded_keys_across_rounds(small_buffers):
    # Shards whose keys are all str leave them in their column (compared as text); a shard with
    # None keys encodes its strs. Each run holds one row per key, and each merge round one
    # row, so keys kept and carried from a round in one form meet the next round's in the other.
    texts = [f"text {i % 7} " + "x" * (i % 7) * 40 for i in range(600)]
    with_none = [t if i % 3 else None for i, t in enumerate(texts)]
    rows = [{"id": i, "k": k} for i, k in enumerate(texts + with_none + texts[::-1])]
    first: dict = {}
    for row in rows:
        first.setdefault(row["k"], row["id"])
    ds = Dataset.from_list(rows, num_shards=3).deduplicate(lambda r: r["k"], num_output_shards=2)
    out = small_buffers.execute(ds).to_pylist()
    assert len(small_buffers.rounds) > 20
    assert sorted(r["id"] for r in out) == sorted(first.values())


def test_deduplicate_a_key_function_that_returns_a_column_in_some_shards_only(ctx):
    # Shards 0-1's keys are their column "a" (left there); shards 2-3's are a prefix of it
    # (encoded). Rounds hold rows of all four: 2-3's keys must be compared as keys, not as "a".
    rows = [{"id": i, "a": f"k{i % 20:02d}-{i}"} for i in range(600)]
    first: dict = {}
    key = lambda r: r["a"] if r["id"] < 300 else r["a"][:3]  # noqa: E731
    for row in rows:
        first.setdefault(key(row), row["id"])
    ds = Dataset.from_list(rows, num_shards=4).deduplicate(key, num_output_shards=2)
    assert sorted(r["id"] for r in ctx.execute(ds).to_pylist()) == sorted(first.values())


def _interleaved_runs(directory, num_runs: int, rows_per_run: int) -> tuple[list, pa.Schema]:
    """``num_runs`` sorted runs of ~250-byte rows whose keys interleave, each one row group."""
    schema = pa.schema([("h", pa.uint64()), ("pad", pa.string())])
    runs = []
    for run in range(num_runs):
        keys = range(run, num_runs * rows_per_run, num_runs)
        table = pa.table({"h": pa.array(keys, pa.uint64()), "pad": [f"{k:0250d}" for k in keys]}, schema=schema)
        written = merge.SortedFile(str(directory / f"run-{run}.parquet"), schema)
        written.write(table)
        runs.append(written.close())
    return runs, schema


def test_a_merge_round_takes_about_round_bytes_however_large_the_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(merge, "RUN_ROW_GROUP_BYTES", 4 << 20)  # each run is one row group of ~500 KB
    monkeypatch.setattr(merge, "ROUND_BYTES", 64 << 10)
    runs, schema = _interleaved_runs(tmp_path, num_runs=8, rows_per_run=2_000)
    rounds = list(merge.merge_runs(runs, ["h"], schema, sort=False))
    merged = pa.concat_tables(rounds)
    assert sorted(merged.column("h").to_pylist()) == list(range(8 * 2_000))
    assert all(pc.max(a["h"]).as_py() < pc.min(b["h"]).as_py() for a, b in itertools.pairwise(rounds))
    # A round up to the smallest last key of the runs' row groups would take nearly all 4 MB.
    assert max(table.nbytes for table in rounds) <= 2 * (64 << 10)


def test_an_open_run_holds_its_row_group_once(tmp_path):
    runs, schema = _interleaved_runs(tmp_path, num_runs=8, rows_per_run=1_000)
    before = pa.total_allocated_bytes()
    readers = [merge.read_run(run, schema) for run in runs]
    heads = [next(reader) for reader in readers]
    # pyarrow's ParquetFile pre-buffers by default and keeps the bytes it read: twice the heads.
    assert pa.total_allocated_bytes() - before < 1.25 * sum(head.nbytes for head in heads)


def test_keys_that_share_a_hash_stay_apart(small_buffers, monkeypatch):
    # Four hash values for all keys: every round holds keys of one hash that must be told apart.
    from zephyr_arrow.execution.shuffle import keys

    hash_columns_ = keys.hash_columns

    def colliding(table, num_shards):
        hashes = pl.from_arrow(hash_columns_(table, num_shards)[0]) & 3
        return hashes.to_arrow(), (hashes % num_shards).cast(pl.UInt32).to_arrow()

    monkeypatch.setattr(keys, "hash_columns", colliding)
    rows = make_rows(3_000, seed=6)
    for row in rows:
        row["pad"] = "p" * 50
    ds = Dataset.from_list(rows, num_shards=3)
    with_keys = ds.map(lambda r: {**r, "n7": r["n"] % 7, "kn": f"{r['k']}-{r['n'] % 7}"})
    keys_of = {
        "columns": (["k", "n7"], lambda r: (r["k"], r["n"] % 7)),
        "tuple": (lambda r: (r["k"], r["n7"]), lambda r: (r["k"], r["n"] % 7)),
        # a key that is a column of the row: the runs name the column instead of copying it
        "column value": (lambda r: r["kn"], lambda r: f"{r['k']}-{r['n'] % 7}"),
        # the same, except on some rows: batches of both kinds meet in the reduce
        "mixed": (lambda r: r["kn"] if r["id"] % 2 else r["kn"].upper(), lambda r: f"{r['k']}-{r['n'] % 7}" if r["id"] % 2 else f"{r['k']}-{r['n'] % 7}".upper()),
    }
    for key, oracle in keys_of.values():
        first: dict = {}
        for row in rows:
            first.setdefault(oracle(row), row["id"])
        deduped = small_buffers.execute(with_keys.deduplicate(key, num_output_shards=2)).to_pylist()
        assert sorted(r["id"] for r in deduped) == sorted(first.values())
    sums = small_buffers.execute(ds.aggregate("n", pl.len().alias("count"), num_output_shards=2)).sql("select n, count from data").fetchall()
    assert dict(sums) == collections.Counter(r["n"] for r in rows)
    joined = small_buffers.execute(ds.join(Dataset.from_list([{"n": n, "half": n / 2} for n in range(0, 100, 3)]), on="n"))
    assert joined.num_rows == sum(1 for r in rows if r["n"] % 3 == 0)


# keys: the stable hash and the order-preserving encoding ---------------------------------------

_HASH_PROBE = """
import json, sys
import pyarrow as pa
from zephyr_arrow.execution.shuffle.keys import encode_key, encoded_keys, hash_columns
table = pa.table({"s": ["a", None, "héllo"], "i": [1, None, -7]})
hashes, targets = hash_columns(table, 13)
keys = hash_columns(pa.table({"k": [encode_key(v) for v in [None, "a", 1, 2.5, (1, "x"), b"z"]]}), 7)[0]
print(json.dumps([hashes.to_pylist(), targets.to_pylist(), keys.to_pylist()]))
"""


def test_hash_is_stable_across_processes():
    table = pa.table({"s": ["a", None, "héllo"], "i": [1, None, -7]})
    hashes, targets = hash_columns(table, 13)
    keys = hash_columns(pa.table({"k": [encode_key(v) for v in [None, "a", 1, 2.5, (1, "x"), b"z"]]}), 7)[0]
    here = [hashes.to_pylist(), targets.to_pylist(), keys.to_pylist()]
    for seed in ("0", "12345"):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", _HASH_PROBE], capture_output=True, text=True, check=True, env=env)
        assert json.loads(out.stdout) == here


def _key_hashes(*columns: pa.Array) -> list[list[int]]:
    return [hash_columns(pa.table({"k": column}), 1000)[0].to_pylist() for column in columns]


def test_equal_column_keys_hash_alike_whatever_type_holds_them():
    # Batches are hashed one at a time, so 1 must hash alike from every type the runs may unify to.
    numbers = [pa.array([1, 0, None], t) for t in (pa.int8(), pa.int32(), pa.uint64(), pa.float32(), pa.float64())]
    numbers += [pa.array([True, False, None]), pa.array([Decimal("1.00"), Decimal("0"), None], pa.decimal128(10, 2))]
    assert len({tuple(h) for h in _key_hashes(*numbers)}) == 1
    texts = [pa.array(["a", None], t) for t in (pa.string(), pa.large_string(), pa.string_view())]
    texts.append(pa.array(["a", None], pa.string()).dictionary_encode())
    assert len({tuple(h) for h in _key_hashes(*texts)}) == 1
    instant = dt.datetime(2024, 5, 6, 7, 8, 9)
    times = [pa.array([instant], pa.timestamp(unit)) for unit in ("s", "ms", "us", "ns")]
    assert len({tuple(h) for h in _key_hashes(*times)}) == 1
    assert len({tuple(h) for h in _key_hashes(pa.array([dt.date(2024, 5, 6)], pa.date32()), pa.array([dt.date(2024, 5, 6)], pa.date64()))}) == 1
    nested = [
        pa.array([{"a": 1, "b": None}], pa.struct([("a", pa.int64()), ("b", pa.string())])),
        pa.array([{"a": 1.0}], pa.struct([("a", pa.float64())])),
    ]
    assert len({tuple(h) for h in _key_hashes(*nested)}) == 1
    assert len({tuple(h) for h in _key_hashes(pa.array([[1, 2]], pa.list_(pa.int64())), pa.array([[1.0, 2.0]], pa.list_(pa.float64())))}) == 1
    # A null key hashes alike in every type, and like a column the batch lacks.
    nulls = [pa.nulls(1), pa.nulls(1, pa.string()), pa.nulls(1, pa.int64()), pa.nulls(1, pa.struct([("a", pa.int64())]))]
    assert len({tuple(h) for h in _key_hashes(*nulls)}) == 1
    two = pa.table({"a": [1, None], "b": ["x", "y"]})
    assert hash_columns(key_table(two, ("a", "b")), 7)[0] == hash_columns(key_table(pa.table({"b": ["x", "y"], "a": [1.0, None]}), ("a", "b")), 7)[0]
    assert hash_columns(key_table(pa.table({"b": ["x"]}), ("a", "b")), 7)[0] == hash_columns(pa.table({"a": pa.nulls(1), "b": ["x"]}), 7)[0]


def test_shards_whose_key_columns_differ_in_type_agree_on_every_key(ctx):
    # Each shard is scattered on its own: ints in one, floats in another, the column missing in a third.
    rows = [{"k": 1, "v": "int"}, {"k": 2, "v": "int"}, {"k": 1.0, "v": "float"}, {"k": 2.5, "v": "float"}, {"v": "none"}, {"k": None, "v": "null"}]
    ds = Dataset.from_list(rows, num_shards=3)
    deduped = ctx.execute(ds.deduplicate("k", num_output_shards=4)).to_pylist()
    assert sorted(r["v"] for r in deduped) == ["float", "int", "int", "none"]
    sums = ctx.execute(ds.aggregate("k", pl.len().alias("n"), num_output_shards=4)).sql("select k, n from data order by k nulls last").fetchall()
    assert sums == [(1.0, 2), (2.0, 1), (2.5, 1), (None, 2)]
    right = Dataset.from_list([{"k": 1, "r": "one"}, {"k": 2.5, "r": "two and a half"}], num_shards=2)
    joined = ctx.execute(ds.join(right, on="k", num_output_shards=4)).to_pylist()
    assert sorted((r["v"], r["r"]) for r in joined) == [("float", "one"), ("float", "two and a half"), ("int", "one")]


def test_equal_keys_encode_alike():
    assert encode_key(1) == encode_key(1.0) == encode_key(True)
    assert encode_key(0.0) == encode_key(-0.0)
    assert encode_key(float("nan")) == encode_key(math.nan)
    assert encode_key((1, "a")) == encode_key((1.0, "a")) != encode_key([1, "a"])
    assert encode_key({"a": 1, "b": 2}) == encode_key({"b": 2, "a": 1})
    assert encode_key(2**60) != encode_key(2**60 + 1)
    assert encode_key(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)) == encode_key(
        dt.datetime(2020, 1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    )


_SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False)), min_size=2, max_size=2))
def test_encoding_keeps_the_order_of_numbers(pair):
    a, b = pair
    if max(abs(a), abs(b)) < 1e300:  # past that, ints beyond float range order among the infinities
        assert (encode_key(a) < encode_key(b)) == (a < b)
        assert (encode_key(a) == encode_key(b)) == (a == b)


@settings(max_examples=300, deadline=None)
@given(st.tuples(_SCALARS, _SCALARS).filter(lambda p: type(p[0]) is type(p[1]) or all(isinstance(v, (int, float)) for v in p)))
def test_encoding_keeps_the_order_of_strings_bytes_and_tuples(pair):
    a, b = pair
    if isinstance(a, (int, float)) and max(abs(a), abs(b)) >= 1e300:
        return
    assert (encode_key(a) < encode_key(b)) == (a < b)
    assert (encode_key((a, 1)) < encode_key((b, 0))) == ((a, 1) < (b, 0))
    assert (encode_key((a,)) < encode_key((a, b))) is True


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text()), min_size=1, max_size=20))
def test_vectorised_encoding_of_str_and_bytes_columns_matches_encode_key(values):
    table = pa.table({"s": pa.array(values, pa.string()), "b": pa.array([v if v is None else v.encode() for v in values], pa.binary())})
    for column in ("s", "b"):
        assert encoded_keys(table, (column,)).to_pylist() == [encode_key(row[column]) for row in table.to_pylist()]


@pytest.mark.parametrize(
    "build",
    [
        lambda ds: ds.deduplicate("k"),
        lambda ds: ds.group_by(lambda r: r["k"], reducer=lambda key, rows: {"k": key}),
        lambda ds: ds.join(Dataset.from_list([{"k": 1, "v": 2}]), on="k"),
    ],
    ids=["deduplicate", "group_by", "join"],
)
def test_runs_hashed_by_different_polars_fail_before_the_reduce(tmp_path, monkeypatch, build):
    from zephyr_arrow.execution.shuffle import keys

    # As on a cluster whose workers have different Polars: the scatter tasks' run files disagree.
    versions = itertools.cycle([b"polars 1.0.0, seed 0x5a3f2c71", b"polars 2.0.0, seed 0x5a3f2c71"])
    monkeypatch.setattr(keys, "hashed_by", lambda: next(versions))
    ds = build(Dataset.from_list([{"k": i % 3} for i in range(12)], num_shards=4))
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path)) as ctx:
        with pytest.raises(ZephyrError, match=r"workers hashed keys differently \('polars 1.0.0.*', 'polars 2.0.0.*'\)"):
            ctx.execute(ds)
    assert os.listdir(tmp_path) == []  # nothing of the run is left behind


@pytest.mark.parametrize("shuffle", ["group_by", "deduplicate"])
def test_a_key_function_that_only_returns_a_string_field_is_never_called(shuffle):
    # The sync backend runs tasks in this thread, where a profiler sees every call of the key's code.
    import sys

    rows = [{"text": f"t{i % 7}", "n": i} for i in range(200)]
    getter, computed = (lambda d: d["text"]), (lambda d: d["text"].upper())
    calls = collections.Counter()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in (getter.__code__, computed.__code__):
            calls[frame.f_code] += 1

    def run(key):
        ds = Dataset.from_list(rows, num_shards=3)
        if shuffle == "group_by":
            ds = ds.group_by(key, lambda k, rs: {"key": k, "n": sorted(r["n"] for r in rs)})
        else:
            ds = ds.deduplicate(key).map(lambda r: {"key": key(r), "n": [r["n"]]})
        with ZephyrContext(backend="sync") as ctx:
            sys.setprofile(profile)
            try:
                return sorted(ctx.execute(ds).to_pylist(), key=lambda r: r["key"])
            finally:
                sys.setprofile(None)

    groups = _groups(rows, lambda r: r["text"])
    expected = [
        {"key": k, "n": [r["n"] for r in rs] if shuffle == "group_by" else [rs[0]["n"]]} for k, rs in sorted(groups.items())
    ]
    assert run(getter) == expected
    assert run(computed) == [{**r, "key": r["key"].upper()} for r in expected]
    assert calls[computed.__code__] >= len(rows)  # the profiler does see a key function that is called
    assert calls[getter.__code__] == (0 if shuffle == "group_by" else len(groups))  # (the map after deduplicate calls it)
