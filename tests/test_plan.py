"""The planner: a pure function from a Dataset to stages (no files read, no user code run)."""

from __future__ import annotations

import os

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zephyr_arrow import Dataset, PlanError, plan
from zephyr_arrow.ops import FilterExprOp, LoadOp, SelectOp
from zephyr_arrow.planner import StageKind


def _never(*_):
    raise AssertionError("the planner must not call user functions")


def test_row_and_columnar_ops_fuse_into_one_stage():
    ds = Dataset.from_list([1, 2]).map(_never).filter(_never).flat_map(_never).filter(pl.col("a") > 1).select("a")
    (stage,) = plan(ds).stages
    assert stage.kind is StageKind.MAP and len(stage.ops) == 5


def test_boundaries_and_sinks_cut_stages():
    ds = Dataset.from_list([1]).map(_never).reshard(2).map(_never).write_parquet("out/{shard}.parquet").map(_never)
    stages = plan(ds).stages
    assert [s.kind for s in stages] == [StageKind.MAP, StageKind.RESHARD, StageKind.MAP, StageKind.MAP]
    assert stages[2].sink is not None and stages[3].inputs == (2,)


def test_a_write_after_a_shuffle_runs_in_its_reduce_tasks(ctx, tmp_path):
    rows = [{"k": i % 5, "v": i} for i in range(50)]
    written = Dataset.from_list(rows, num_shards=3).deduplicate("k").write_parquet(str(tmp_path / "out" / "p-{shard:05d}.parquet"))
    stages = plan(written).stages
    assert [s.kind for s in stages] == [StageKind.SCATTER, StageKind.SHUFFLE] and stages[1].sink is not None
    paths = ctx.execute(written).to_pylist()
    assert len(paths) == 3 and sorted(os.listdir(tmp_path / "out")) == ["_SUCCESS", *(os.path.basename(path) for path in paths)]
    assert sorted(r["v"] for path in paths for r in pq.read_table(path).to_pylist()) == [0, 1, 2, 3, 4]


def test_explain_reads_in_data_flow_order():
    ds = Dataset.from_files("nowhere/*.jsonl").load_jsonl().map(_never).reshard(3).write_jsonl("o/{shard}.jsonl")
    assert plan(ds).explain().splitlines() == [
        "[0] map: from_files('nowhere/*.jsonl') -> load_jsonl -> map(_never)",
        "[1] reshard: reshard(3)  <- 0",
        "[2] map: write_jsonl(o/{shard}.jsonl)  <- 1",
    ]


def test_reshard_right_after_items_recuts_the_items():
    stages = plan(Dataset.from_list(list(range(10))).reshard(3).map(_never)).stages
    assert len(stages) == 1 and stages[0].source.num_shards == 3


def test_a_filter_after_a_load_is_pushed_down_and_a_select_narrows_the_read():
    ds = Dataset.from_files("x/*.parquet").load_parquet().filter(pl.col("score") > 0.5).select("id", "score")
    (stage,) = plan(ds).stages
    load, select = stage.ops
    assert isinstance(load, LoadOp) and load.filter is not None and load.keep == ("id", "score")
    assert isinstance(select, SelectOp)  # stays, to check that some row has each column


@pytest.mark.parametrize(
    "build",
    [
        lambda ds: ds.load_parquet().map(_never).filter(pl.col("a") > 0),  # a row function in between
        lambda ds: ds.load_parquet(include_file_paths=True).filter(pl.col("__file_path") == "x"),  # added after reading
        lambda ds: ds.load_parquet().select("a").filter(pl.col("b") > 0),  # the filter needs a dropped column
    ],
)
def test_filter_is_not_pushed_down_where_it_would_change_the_answer(build):
    (stage,) = plan(build(Dataset.from_files("x/*.parquet"))).stages
    assert any(isinstance(op, FilterExprOp) for op in stage.ops)
    assert all(op.filter is None for op in stage.ops if isinstance(op, LoadOp))


def test_select_is_not_pushed_into_a_load_that_adds_the_path_column():
    (stage,) = plan(Dataset.from_files("x/*").load_file(include_file_paths=True).select("a")).stages
    assert any(isinstance(op, SelectOp) for op in stage.ops)


def _load_of(ds: Dataset) -> LoadOp:
    (load,) = [op for stage in plan(ds).stages for op in stage.ops if isinstance(op, LoadOp)]
    return load


def test_the_columns_a_stage_uses_are_pushed_into_its_load():
    docs = Dataset.from_files("x/*.jsonl").load_jsonl()
    domain = pl.col("url").str.split("/").list.get(2).alias("domain")
    aggregated = docs.with_columns(domain).aggregate("domain", pl.len(), pl.col("score").mean())
    assert set(_load_of(aggregated).keep) == {"url", "score"}
    assert "load_jsonl(keep=" in plan(aggregated).explain()
    # A filter adds what it reads; a with_columns output is not read from the file.
    selected = docs.with_columns(n=pl.col("text").str.len_chars()).filter(pl.col("lang") == "en").select("id", "n")
    assert set(_load_of(selected).keep) == {"id", "text", "lang"}


@pytest.mark.parametrize(
    "build",
    [
        lambda ds: ds.map(_never).select("a"),  # a row function may read any column
        lambda ds: ds.map_batches(_never).select("a"),
        lambda ds: ds.with_columns(pl.struct(pl.all()).alias("s")).select("s"),  # picks columns by pattern
        lambda ds: ds.with_columns(b=pl.first()).select("b"),  # by position
        lambda ds: ds.filter(pl.col("a") > 0),  # the output is every column
        lambda ds: ds.deduplicate("a"),  # a shuffle other than aggregate moves every column
    ],
)
def test_no_columns_are_pushed_where_any_column_may_be_used(build):
    assert _load_of(build(Dataset.from_files("x/*.jsonl").load_jsonl())).keep is None


def test_a_deduplicate_carries_only_its_key_and_the_columns_read_after_it():
    docs = Dataset.from_files("x/*.jsonl").load_jsonl()
    stages = plan(docs.deduplicate("text").count()).stages
    assert stages[0].boundary.carries == stages[1].boundary.carries == ("text",)
    assert stages[1].boundary.read_after == ()  # count() reads no column: the reduce gathers none
    assert _load_of(docs.deduplicate("text").count()).keep == ("text",)
    filtered = docs.deduplicate("text").filter(pl.col("lang") == "en").select("id")
    assert set(_load_of(filtered).keep) == {"text", "lang", "id"}
    assert set(plan(filtered).stages[1].boundary.read_after) == {"lang", "id"}
    # A key function may read any column: every column is read (its runs keep what is carried).
    keyed = docs.filter(pl.col("score") > 0).deduplicate(_never).count()
    assert plan(keyed).stages[0].boundary.carries == () and _load_of(keyed).keep is None
    # From chunks: the scatter stage reads only those columns.
    after_reshard = Dataset.from_list([{"a": 1}]).map(_never).reshard(2).deduplicate(["a", "b"]).select("c")
    assert plan(after_reshard).stages[2].input_columns == ("a", "b", "c")


@pytest.mark.parametrize(
    "build",
    [
        lambda ds: ds.deduplicate("a").map(_never).count(),  # a row function after it may read any column
        lambda ds: ds.deduplicate("a").write_parquet("o/{shard}.parquet"),  # the output is every column
        lambda ds: ds.deduplicate("a").reshard(2).count(),  # the ops after it are in another stage
    ],
)
def test_a_deduplicate_carries_every_column_where_any_may_be_read(build):
    stages = plan(build(Dataset.from_files("x/*.jsonl").load_jsonl())).stages
    assert stages[0].boundary.carries is None and _load_of(build(Dataset.from_files("x/*.jsonl").load_jsonl())).keep is None
    assert stages[1].boundary.read_after is None


def test_a_stage_reading_chunks_reads_only_the_columns_it_uses():
    after_reshard = Dataset.from_list([{"a": 1}]).map(_never).reshard(2).with_columns(c=pl.col("a") + 1).select("c")
    stages = plan(after_reshard).stages
    assert stages[-1].input_columns == ("a",) and stages[0].input_columns is None  # items have no columns
    assert "(reads a)" in plan(after_reshard).explain()
    assert plan(Dataset.from_list([{"a": 1}]).reshard(2).map(_never).select("a")).stages[-1].input_columns is None


def test_plan_needs_a_dataset():
    with pytest.raises(PlanError, match="needs a Dataset, got list"):
        plan([1, 2])


def test_fused_plan_gives_the_unfused_answer_with_fewer_stages(ctx, tmp_path):
    table = pa.table({"id": list(range(200)), "score": [(i * 7 % 100) / 100 for i in range(200)]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=32)
    source = Dataset.from_files(str(tmp_path / "*.parquet"))
    fused = source.load_parquet().filter(pl.col("score") > 0.5).select("id", "score").map(lambda r: {**r, "d": r["id"] * 2})
    # The same ops with stage boundaries forced between them (reshard(1) keeps the row order).
    unfused = (
        source.load_parquet().reshard(1).filter(pl.col("score") > 0.5).reshard(1).select("id", "score").reshard(1)
        .map(lambda r: {**r, "d": r["id"] * 2})
    )
    assert len(plan(fused).stages) == 1 < len(plan(unfused).stages)
    expected = [{"id": i, "score": s, "d": i * 2} for i, s in zip(table["id"].to_pylist(), table["score"].to_pylist()) if s > 0.5]
    assert ctx.execute(fused).to_pylist() == ctx.execute(unfused).to_pylist() == expected
