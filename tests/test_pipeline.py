"""End-to-end pipelines on every backend, each checked against plain Python on the same input."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zephyr_arrow import (
    ChunkMissingError,
    Dataset,
    InputFileError,
    PlanError,
    ShardFailedError,
    ShardInfo,
    ShardRefs,
    ZephyrContext,
    counters,
    read_parquet,
    worker_ctx,
)

DOCS = [
    {"id": i, "lang": ["en", "de", None][i % 3], "score": (i * 37 % 100) / 100, "text": "w " * (i % 7)}
    for i in range(60)
]


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


def test_from_list_makes_one_shard_per_item(ctx):
    refs = ctx.execute(Dataset.from_list(["a", "b", "c"]))
    assert refs.num_shards == 3
    assert [list(refs.iter_shard_rows(i)) for i in range(3)] == [["a"], ["b"], ["c"]]


def test_from_list_num_shards_groups_contiguously(ctx):
    refs = ctx.execute(Dataset.from_list(list(range(10)), num_shards=3))
    assert [list(refs.iter_shard_rows(i)) for i in range(3)] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_map_filter_flat_map_match_python(ctx):
    ds = (
        Dataset.from_list(DOCS, num_shards=4)
        .filter(lambda d: d["lang"] == "en")
        .map(lambda d: {**d, "n_words": len(d["text"].split())})
        .flat_map(lambda d: [d, {**d, "id": -d["id"]}] if d["score"] > 0.5 else [d])
    )
    expected = []
    for d in DOCS:
        if d["lang"] == "en":
            d = {**d, "n_words": len(d["text"].split())}
            expected.extend([d, {**d, "id": -d["id"]}] if d["score"] > 0.5 else [d])
    assert ctx.execute(ds).to_pylist() == expected


def test_rows_of_every_kind_round_trip(ctx):
    items = [Point(1, 2), (1, "a"), {"nested": {"a": [1, 2]}}, None, 3.5, b"raw", frozenset({1})]
    assert ctx.execute(Dataset.from_list(items, num_shards=2).map(lambda x: x)).to_pylist() == items


def test_missing_keys_stay_missing_in_rows_and_are_null_in_views(ctx):
    rows = [{"a": 1}, {"b": "x"}, {"a": None, "b": "y"}]
    out = ctx.execute(Dataset.from_list(rows, num_shards=1).map(lambda r: r))
    assert out.to_pylist() == rows
    assert out.sql("select * from data").fetchall() == [(1, None), (None, "x"), (None, "y")]
    assert out.to_polars().collect().rows() == [(1, None), (None, "x"), (None, "y")]
    assert out.load().column_names == ["a", "b"]


def test_select_keeps_argument_order(ctx):
    rows = [{"a": 1, "b": 2, "c": 3}, {"a": 4, "c": 6}]
    out = ctx.execute(Dataset.from_list(rows, num_shards=1).map(lambda r: r).select("c", "a")).to_pylist()
    assert [list(r) for r in out] == [["c", "a"], ["c", "a"]]
    assert out == [{"c": 3, "a": 1}, {"c": 6, "a": 4}]


def test_take_per_shard_takes_from_each_shard(ctx):
    refs = ctx.execute(Dataset.from_list(list(range(20)), num_shards=4).take_per_shard(2))
    assert refs.to_pylist() == [0, 1, 5, 6, 10, 11, 15, 16]


def test_window_is_tumbling_per_shard(ctx):
    refs = ctx.execute(Dataset.from_list(list(range(7)), num_shards=2).window(3))
    assert refs.to_pylist() == [[0, 1, 2], [3], [4, 5, 6]]


def test_window_by_starts_next_window_with_closing_row(ctx):
    sizes = [4, 3, 5, 1, 1, 9, 2]

    def fold(total, size):
        return total + size <= 8, total + size

    refs = ctx.execute(Dataset.from_list(sizes, num_shards=1).window_by(fold, 0))
    expected, window, total = [], [], 0
    for size in sizes:
        if total + size > 8 and window:
            expected.append(window)
            window, total = [], 0
        window.append(size)
        total += size
    expected.append(window)
    assert refs.to_pylist() == expected == [[4, 3], [5, 1, 1], [9], [2]]


def test_map_shard_sees_shard_info(ctx):
    def tag(rows, info: ShardInfo):
        for row in rows:
            yield {"row": row, "shard": info.shard_idx, "total": info.total_shards}

    out = ctx.execute(Dataset.from_list(list(range(5)), num_shards=2).map_shard(tag)).to_pylist()
    assert out == [{"row": r, "shard": 0 if r < 3 else 1, "total": 2} for r in range(5)]


def test_reshard_balances_rows_and_keeps_order(ctx):
    ds = Dataset.from_list([10], num_shards=1).flat_map(lambda n: range(n * 5)).reshard(7)
    refs = ctx.execute(ds)
    sizes = [sum(c.num_rows for c in shard) for shard in refs.shards]
    assert refs.num_shards == 7 and max(sizes) - min(sizes) <= 1
    assert refs.to_pylist() == list(range(50))
    after = ctx.execute(ds.map(lambda x: x * 2)).to_pylist()
    assert after == [x * 2 for x in range(50)]


def test_reshard_none_is_a_no_op_and_zero_is_an_error():
    ds = Dataset.from_list([1, 2])
    assert ds.reshard(None) is ds
    with pytest.raises(PlanError, match="reshard.*num_shards.*got 0"):
        ds.reshard(0)


def test_columnar_ops_match_python(ctx):
    ds = (
        Dataset.from_list(DOCS, num_shards=3)
        .filter(pl.col("score") > 0.5)
        .with_columns((pl.col("id") * 2).alias("id2"))
        .map_batches(lambda t: t.append_column("one", pa.array([1] * t.num_rows)), batch_size=4)
        .map_batches(lambda f: f.with_columns(pl.col("one") + 1), batch_format="polars")
        .select("id", "id2", "one")
    )
    expected = [{"id": d["id"], "id2": d["id"] * 2, "one": 2} for d in DOCS if d["score"] > 0.5]
    assert ctx.execute(ds).to_pylist() == expected


def test_expression_filter_after_row_function(ctx):
    ds = Dataset.from_list(DOCS, num_shards=2).map(lambda d: {"id": d["id"], "s": d["score"]}).filter(pl.col("s") >= 0.9)
    assert ctx.execute(ds).to_pylist() == [{"id": d["id"], "s": d["score"]} for d in DOCS if d["score"] >= 0.9]


@pytest.mark.parametrize(
    "build",
    [
        lambda ds: ds.map(lambda x: x),
        lambda ds: ds.filter(lambda x: True),
        lambda ds: ds.flat_map(lambda x: [x]),
        lambda ds: ds.select("a"),
        lambda ds: ds.window(2),
        lambda ds: ds.take_per_shard(3),
        lambda ds: ds.reshard(3),
        lambda ds: ds.filter(pl.col("a") > 0),
        lambda ds: ds.map_batches(lambda t: t),
    ],
)
def test_empty_dataset_through_every_op(ctx, build):
    empty = Dataset.from_list([{"a": 1}], num_shards=1).filter(lambda r: False)
    refs = ctx.execute(build(empty))
    assert refs.num_rows == 0 and refs.to_pylist() == []
    assert refs.sql("select count(*) from data").fetchall() == [(0,)]


def test_from_list_of_nothing(ctx):
    refs = ctx.execute(Dataset.from_list([]).map(lambda x: x))
    assert refs.to_pylist() == [] and refs.load().num_rows == 0


# Files --------------------------------------------------------------------------------------


def test_load_jsonl_with_file_paths_matches_json(ctx, write_jsonl, tmp_path):
    first = write_jsonl("in/a.jsonl", DOCS[:25])
    second = write_jsonl("in/b.jsonl.gz", DOCS[25:])
    ds = Dataset.from_files(str(tmp_path / "in" / "*")).load_jsonl(include_file_paths=True)
    refs = ctx.execute(ds)
    assert refs.num_shards == 2
    expected = [{**d, "__file_path": first} for d in DOCS[:25]] + [{**d, "__file_path": second} for d in DOCS[25:]]
    assert refs.to_pylist() == expected


def test_from_files_braces_and_recursive_glob(ctx, write_jsonl, tmp_path):
    for name in ["x/1.jsonl", "x/deep/2.jsonl", "y/3.jsonl", "z/4.jsonl"]:
        write_jsonl(name, [{"name": name}])
    names = ctx.execute(Dataset.from_files(str(tmp_path / "{x,y}/**/*.jsonl")).load_jsonl()).to_pylist()
    assert sorted(r["name"] for r in names) == ["x/1.jsonl", "x/deep/2.jsonl", "y/3.jsonl"]


def test_from_files_without_match_names_the_pattern(ctx, tmp_path):
    pattern = str(tmp_path / "nothing-*.jsonl")
    with pytest.raises(InputFileError, match="no files match.*nothing-"):
        ctx.execute(Dataset.from_files(pattern).load_jsonl())
    assert ctx.execute(Dataset.from_files(pattern, empty_glob_ok=True).load_jsonl()).to_pylist() == []


def test_from_files_rejects_pattern_passed_as_empty_glob_ok():
    with pytest.raises(PlanError, match="empty_glob_ok"):
        Dataset.from_files("dir", "**/*.jsonl")


@pytest.mark.parametrize("build", [
    lambda files: files.map(lambda doc: {**doc, "n": len(doc["text"])}),
    lambda files: files.filter(lambda doc: doc.get("lang") == "en"),
    lambda files: files.select("text"),
    lambda files: files.filter(pl.col("lang") == "en"),
    lambda files: files.group_by("lang", reducer=lambda lang, docs: lang),
    lambda files: files.aggregate("lang", pl.len()),
], ids=["map", "filter-get", "select", "filter-expr", "group_by", "aggregate"])
def test_records_ops_on_from_files_paths_say_to_load_them(build):
    files = Dataset.from_files("docs/*.jsonl")
    with pytest.raises(PlanError) as error:
        build(files)
    assert str(error.value).endswith(
        "but the rows of from_files('docs/*.jsonl') are file paths; add .load_jsonl() / .load_parquet() / .load_csv() to read them"
    )


def test_path_functions_on_from_files_still_run(ctx, write_jsonl, tmp_path):
    write_jsonl("a.jsonl", [{"n": 1}])
    write_jsonl("b.jsonl", [{"n": 2}])
    paths = Dataset.from_files(str(tmp_path / "*.jsonl")).filter(lambda path: "b" not in os.path.basename(path))
    assert ctx.execute(paths.map(os.path.basename)).to_pylist() == ["a.jsonl"]


def test_malformed_jsonl_names_file_and_line(ctx, write_jsonl):
    path = write_jsonl("bad.jsonl", [], raw_lines=['{"a": 1}', '{"a": 2}', '{"a": oops}'])
    with pytest.raises(ShardFailedError) as error:
        ctx.execute(Dataset.from_list([path]).load_jsonl())
    assert "bad.jsonl" in str(error.value) and "line 3" in str(error.value)


def test_missing_input_file_names_the_path(ctx, tmp_path):
    missing = str(tmp_path / "missing.parquet")
    with pytest.raises(ShardFailedError, match="missing.parquet"):
        ctx.execute(Dataset.from_list([missing]).load_parquet())


def test_unknown_extension_is_an_error(ctx, tmp_path):
    path = tmp_path / "data.xml"
    path.write_text("<a/>")
    with pytest.raises(ShardFailedError, match=r"data\.xml"):
        ctx.execute(Dataset.from_list([str(path)]).load_file())


def test_parquet_pushdown_gives_the_same_answer(ctx, tmp_path):
    pq.write_table(pa.Table.from_pylist(DOCS), tmp_path / "docs.parquet", row_group_size=10)
    ds = Dataset.from_files(str(tmp_path / "*.parquet")).load_parquet().filter(pl.col("score") > 0.5).select("id", "score")
    plan = ds_plan(ds)
    assert "load_parquet(keep=['id', 'score'], filter=" in plan
    expected = [{"id": d["id"], "score": d["score"]} for d in DOCS if d["score"] > 0.5]
    assert ctx.execute(ds).to_pylist() == expected


def test_load_csv(ctx, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,x\n2,y\n")
    assert ctx.execute(Dataset.from_list([str(path)]).load_csv()).to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]


def ds_plan(ds) -> str:
    from zephyr_arrow import plan

    return plan(ds).explain()


# Writers ------------------------------------------------------------------------------------


def test_write_parquet_outputs_paths_and_data(ctx, tmp_path):
    out = str(tmp_path / "out" / "part-{shard:03d}-of-{total}.parquet")
    refs = ctx.execute(Dataset.from_list(DOCS, num_shards=3).map(lambda d: d).write_parquet(out))
    paths = refs.to_pylist()
    assert paths == [str(tmp_path / "out" / f"part-{i:03d}-of-3.parquet") for i in range(3)]
    assert read_parquet(paths).to_pylist() == DOCS
    total = duckdb.sql(f"select count(*), sum(id) from read_parquet('{tmp_path}/out/*.parquet')").fetchall()
    assert total == [(len(DOCS), sum(d["id"] for d in DOCS))]


def test_write_jsonl_gz_round_trips(ctx, tmp_path):
    out = str(tmp_path / "j" / "{basename}.jsonl.gz")
    paths = ctx.execute(Dataset.from_list(DOCS, num_shards=2).write_jsonl(out)).to_pylist()
    import gzip

    lines = [json.loads(line) for p in paths for line in gzip.open(p, "rt")]
    assert lines == DOCS


def test_write_csv(ctx, tmp_path):
    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    (path,) = ctx.execute(Dataset.from_list(rows, num_shards=1).write_csv(str(tmp_path / "o.csv"))).to_pylist()
    assert open(path).read().replace('"', "").splitlines() == ["a,b", "1,x", "2,y"]


def test_many_shards_without_shard_placeholder_is_a_plan_error(ctx, tmp_path):
    with pytest.raises(PlanError, match=r"\{shard\}"):
        ctx.execute(Dataset.from_list([1, 2]).write_parquet(str(tmp_path / "one.parquet")))
    assert not os.path.exists(tmp_path / "one.parquet")


def test_unknown_placeholder_fails_when_built():
    with pytest.raises(PlanError, match="unknown placeholder"):
        Dataset.from_list([1]).write_jsonl("out/{part}.jsonl")


def test_skip_existing_skips_upstream_work(ctx, tmp_path):
    marker_dir = tmp_path / "ran"
    marker_dir.mkdir()

    def record(x):
        (marker_dir / str(x)).touch()
        return {"x": x}

    out = str(tmp_path / "skip" / "{shard}.parquet")
    ds = Dataset.from_list([0, 1, 2]).map(record).write_parquet(out, skip_existing=True)
    os.makedirs(tmp_path / "skip")
    pq.write_table(pa.table({"x": [100]}), tmp_path / "skip" / "1.parquet")
    refs = ctx.execute(ds)
    assert sorted(os.listdir(marker_dir)) == ["0", "2"]
    assert refs.counters["zephyr/partitions_skipped"] == 1
    assert pq.read_table(tmp_path / "skip" / "1.parquet").to_pylist() == [{"x": 100}]


# Counters, shared data, errors, lifecycle ------------------------------------------------------


def test_counters_are_summed_over_tasks(ctx):
    def count(x):
        counters.increment("seen")
        counters.increment("total", x)
        return x

    refs = ctx.execute(Dataset.from_list(list(range(10)), num_shards=4).map(count))
    assert refs.counters == {"seen": 10, "total": 45}


def test_counters_hold_the_users_and_stats_the_engines(ctx, tmp_path):
    def count(x):
        counters.increment("seen")
        return {"k": x % 3}

    ds = Dataset.from_list(list(range(10)), num_shards=4).map(count).group_by("k", lambda k, rows: k, num_output_shards=2)
    refs = ctx.execute(ds)
    assert refs.counters == {"seen": 10}
    # 4 scatter files (one per input shard) + an output chunk per output shard that got a key
    # (the 3 keys may all hash to one shard; a shard of no rows and no schema writes no file)
    assert refs.stats == {"shuffle/files_written": 4 + len(refs.chunks)}
    assert 1 <= len(refs.chunks) <= 2
    refs.save(str(tmp_path / "saved"))
    reopened = ShardRefs.open(str(tmp_path / "saved"))
    assert (reopened.counters, reopened.stats) == (refs.counters, refs.stats)


def test_put_reaches_workers(backend, tmp_path):
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=str(tmp_path)) as ctx:
        ctx.put("vocab", {"a": 1, "b": 2})
        ds = Dataset.from_list(["a", "b", "a"]).map(lambda w: worker_ctx().get_shared("vocab")[w])
        assert ctx.execute(ds).to_pylist() == [1, 2, 1]


def _explode(x):
    if x == 3:
        raise ValueError(f"bad row {x}")
    return x


def test_user_exception_names_stage_and_shard_and_chains(ctx):
    with pytest.raises(ShardFailedError) as error:
        ctx.execute(Dataset.from_list(list(range(5)), num_shards=5).map(_explode))
    message = str(error.value)
    assert "shard 3 of 5" in message and "map(_explode)" in message and "ValueError: bad row 3" in message
    assert isinstance(error.value.__cause__, ValueError)
    assert "test_pipeline.py" in message  # the user's own file and line, from the worker's traceback


def test_unpicklable_function_is_a_clear_error(tmp_path):
    import threading

    lock = threading.Lock()
    with ZephyrContext(backend="local", max_workers=1, chunk_storage_prefix=str(tmp_path)) as ctx:
        with pytest.raises(PlanError, match="cannot be sent to worker processes"):
            ctx.execute(Dataset.from_list([1]).map(lambda x: (lock, x)[1]))


def test_chunks_are_deleted_on_close_and_reading_them_says_why(backend, tmp_path):
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=str(tmp_path)) as ctx:
        refs = ctx.execute(Dataset.from_list(list(range(6)), num_shards=2).map(lambda x: x + 1).reshard(3).map(lambda x: x))
        stage_dirs = os.listdir(tmp_path / os.listdir(tmp_path)[0])
        assert len(stage_dirs) == 1, f"intermediate stages should be gone, found {stage_dirs}"
        assert refs.to_pylist() == [1, 2, 3, 4, 5, 6]
    assert os.listdir(tmp_path) == []
    with pytest.raises(ChunkMissingError, match="ZephyrContext closes"):
        refs.to_pylist()


def test_preserve_chunks_keeps_output(backend, tmp_path):
    with ZephyrContext(backend=backend, chunk_storage_prefix=str(tmp_path), preserve_chunks=True) as ctx:
        refs = ctx.execute(Dataset.from_list([1, 2]).map(lambda x: x))
    assert refs.to_pylist() == [1, 2]


def test_failed_run_leaves_no_chunks(backend, tmp_path):
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=str(tmp_path)) as ctx:
        with pytest.raises(ShardFailedError):
            ctx.execute(Dataset.from_list(list(range(5))).map(lambda x: x).reshard(2).map(_explode))
        assert os.listdir(tmp_path) == []


def test_workers_are_long_lived_across_stages_and_runs(tmp_path):
    def pid(_):
        return os.getpid()

    # Which worker takes which task is up to the scheduler (a worker that starts late may get none),
    # so the test asserts on the pool: the same two processes before and after, and every task in one.
    with ZephyrContext(backend="local", max_workers=2, chunk_storage_prefix=str(tmp_path)) as ctx:
        first = set(ctx.execute(Dataset.from_list(list(range(8))).map(pid)).to_pylist())
        workers = set(ctx._get_backend().pids)
        second = set(ctx.execute(Dataset.from_list(list(range(8))).map(pid).reshard(4).map(lambda p: p)).to_pylist())
        assert set(ctx._get_backend().pids) == workers
    assert len(workers) == 2 and os.getpid() not in workers
    assert first and second and first | second <= workers


def _allocator(_):
    return pa.default_memory_pool().backend_name


def test_worker_processes_allocate_with_jemalloc(ctx, backend):
    if backend == "sync":
        pytest.skip("sync runs tasks in the user's process, whose allocator is the user's")
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ or "jemalloc" not in pa.supported_memory_backends():
        pytest.skip("the user chose an allocator, or this pyarrow has no jemalloc")
    assert set(ctx.execute(Dataset.from_list([0, 1]).map(_allocator)).to_pylist()) == {"jemalloc"}


def test_dry_run_shows_plan_and_runs_nothing(ctx, capsys):
    refs = ctx.execute(Dataset.from_list([1, 2]).map(lambda x: x).reshard(1), dry_run=True)
    assert refs.num_shards == 0
    out = capsys.readouterr().out
    assert "[0] map: from_list(2 items, 2 shards) -> map(<lambda>)" in out and "[1] reshard: reshard(1)" in out


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Dataset.from_list([1]).map(3), r"map\(\) needs a callable fn, got 3"),
        (lambda: Dataset.from_list([1]).window(0), r"window\(\) needs size to be an int >= 1, got 0"),
        (lambda: Dataset.from_list([1]).take_per_shard(-1), "got -1"),
        (lambda: Dataset.from_list("abc"), "needs a list of items, got str"),
        (lambda: Dataset.from_list([1]).select(), "one or more column names"),
        (lambda: Dataset.from_list([1]).map_batches(len, batch_format="pandas"), "'pandas'"),
        (lambda: Dataset.from_list([1]).filter("x > 1"), "callable predicate"),
        (lambda: Dataset.from_list([1]).write_parquet(""), "output pattern"),
        (lambda: ZephyrContext(backend="spark"), "unknown backend 'spark'"),
    ],
)
def test_wrong_arguments_fail_when_built(build, message):
    with pytest.raises(PlanError, match=message):
        build()


def test_results_property_is_zephyr_compatible(ctx):
    assert ctx.execute(Dataset.from_list([1, 2, 3]).map(lambda x: x * 2)).results == [2, 4, 6]


def test_functools_partial_and_closures(ctx):
    def scale(factor, x):
        return x * factor

    offset = 100
    ds = Dataset.from_list([1, 2], num_shards=1).map(functools.partial(scale, 3)).map(lambda x: x + offset)
    assert ctx.execute(ds).to_pylist() == [103, 106]
    assert "map(partial(scale))" in repr(ds)


def test_outputs_read_identically_through_every_view(ctx):
    refs = ctx.execute(Dataset.from_list(DOCS, num_shards=4).map(lambda d: d))
    expected = sorted(DOCS, key=lambda d: d["id"])
    assert sorted(refs.to_polars().collect().to_dicts(), key=lambda d: d["id"]) == expected
    assert sorted(refs.to_arrow_dataset().to_table().to_pylist(), key=lambda d: d["id"]) == expected
    rel = refs.sql("select * from data order by id")
    assert [dict(zip(rel.columns, row)) for row in rel.fetchall()] == expected
    assert list(itertools.chain.from_iterable(b.to_pylist() for b in refs.iter_batches())) == DOCS


def test_script_without_main_guard_runs_on_local_workers(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "pipeline.py"
    script.write_text(
        "from zephyr_arrow import Dataset, ZephyrContext\n"
        "def double(x):\n"
        "    print('doubling', x)\n"
        "    return x * 2\n"
        f"with ZephyrContext(backend='local', max_workers=2, chunk_storage_prefix={str(tmp_path / 'c')!r}) as ctx:\n"
        "    print(ctx.execute(Dataset.from_list([1, 2, 3]).map(double)).to_pylist())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    # What the workers printed (buffered: stdout is a pipe) is flushed before they exit.
    lines = out.stdout.splitlines()
    assert lines[-1] == "[2, 4, 6]" and sorted(lines[:-1]) == ["doubling 1", "doubling 2", "doubling 3"]


def test_columnar_ops_keep_pickled_columns_and_bare_items(ctx):
    rows = [{"p": (1, 2), "s": 0.7}, {"p": {3}, "s": 0.1}, {"p": Point(1, 1), "s": 0.9}]
    kept = ctx.execute(Dataset.from_list(rows, num_shards=2).map(lambda r: r).filter(pl.col("s") > 0.5))
    assert kept.to_pylist() == [r for r in rows if r["s"] > 0.5]
    items = Dataset.from_list([3, 1, 2], num_shards=1).map(lambda x: x)
    assert ctx.execute(items.filter(pl.col("item") > 1)).to_pylist() == [3, 2]
    assert ctx.execute(items.with_columns(d=pl.col("item") * 2)).to_pylist() == [{"item": x, "d": 2 * x} for x in (3, 1, 2)]
    tuples = Dataset.from_list([(1, "a"), (2, "b")], num_shards=1).map_batches(lambda t: t.slice(1))
    assert ctx.execute(tuples).to_pylist() == [(2, "b")]


def test_columnar_stage_over_chunks_reads_only_its_columns(ctx):
    # Two chunks per shard whose schemas differ (a column that appears late, an int that widens
    # to float), a pickled column and a wide unused one; the answer is the plain-Python one.
    rows = [{"k": i, "x": i if i < 50 else i + 0.5, "p": (i, "t"), "pad": "w" * 500} for i in range(100)]
    rows = [{**r, "late": f"l{r['k']}"} if r["k"] >= 75 else r for r in rows]
    # Four map chunks of 25 rows (x int in two, float in two), re-cut into three shards.
    ds = Dataset.from_list(rows, num_shards=4).map(lambda r: r).reshard(3)
    got = ctx.execute(ds.filter(pl.col("k") % 3 == 0).with_columns(y=pl.col("x") * 2).select("k", "y", "p"))
    expected = [{"k": r["k"], "y": r["x"] * 2, "p": r["p"]} for r in rows if r["k"] % 3 == 0]
    key = lambda r: (r["k"], r["y"])  # noqa: E731
    assert sorted(got.to_pylist(), key=key) == sorted(expected, key=key)


def test_chunk_reads_are_projected(tmp_path, monkeypatch):
    from zephyr_arrow.store.chunk_ref import ChunkRef

    read = ChunkRef.iter_batches
    projections = []

    def recording(self, columns=None):
        projections.append(columns)
        return read(self, columns)

    refs = ShardRefs([[ChunkRef.write(str(tmp_path / "c.parquet"), pa.table({"a": [1, 2, 3], "b": ["x"] * 3, "c": [0.5] * 3}))]])
    monkeypatch.setattr(ChunkRef, "iter_batches", recording)
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path / "chunks")) as ctx:
        out = ctx.execute(Dataset.from_refs(refs).filter(pl.col("a") > 1).select("b"))
        assert out.to_pylist() == [{"b": "x"}, {"b": "x"}]
    assert projections[0] == ["a", "b"]


def test_a_column_plain_in_one_shard_and_pickled_in_another_reads_back_exactly(ctx):
    # Shard 0 holds only str (a string column); shard 1 mixes str and int (a pickled column).
    rows = [{"k": "a", "n": 0}, {"k": "b", "n": 1}, {"k": "c", "n": 2}, {"k": 1, "n": 3}]
    refs = ctx.execute(Dataset.from_list(rows, num_shards=2).map(lambda r: r))
    assert refs.to_pylist() == rows
    assert sorted(ctx.execute(Dataset.from_refs(refs).group_by(lambda r: r["k"], lambda k, rs: [r["n"] for r in rs])).to_pylist()) == [[0], [1], [2], [3]]
