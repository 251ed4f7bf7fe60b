"""The run record (``refs.run``, ``error.run``, ``run_dir``) of real pipelines, checked against what happened."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from helpers import kill_own_worker_once
from zephyr_arrow import Dataset, ShardFailedError, ZephyrContext, counters
from zephyr_arrow.cli.main import main as cli_main
from zephyr_arrow.execution.run_record import REPORT_FILE, RUN_FILE, TASKS_FILE, RunRecord


def _stage(run: RunRecord, index: int) -> dict:
    return next(stage for stage in run.stages if stage["index"] == index)


def _check_adds_up(run: RunRecord) -> None:
    """Each stage's totals are the sums over its accepted attempts; every shard has one."""
    for stage in run.stages:
        ok = run.tasks.sql(
            f"select count(*), count(distinct shard_index), coalesce(sum(rows_in), 0), coalesce(sum(rows_out), 0), "
            f"coalesce(sum(bytes_out), 0), coalesce(sum(chunks_out), 0) from data where stage_index = {stage['index']} and status = 'ok'"
        ).fetchall()[0]
        if stage["kind"] == "reshard":
            assert ok[0] == 0
            continue
        assert ok == (stage["num_tasks"], stage["num_tasks"], stage["rows_in"], stage["rows_out"], stage["bytes_out"], stage["chunks_out"])


def _count(x):
    counters.increment("rows_seen")
    counters.pipeline.set_aggregation("largest", counters.Aggregation.MAX)
    counters.pipeline.update_counter("largest", x)
    return {"key": x % 4, "value": x}


def test_map_record(ctx):
    refs = ctx.execute(Dataset.from_list(list(range(50)), num_shards=5).map(_count))
    run = refs.run
    assert run.status == "succeeded" and run.error == ""
    assert [stage["kind"] for stage in run.stages] == ["map"]
    stage = run.stages[0]
    assert (stage["num_tasks"], stage["num_attempts"], stage["rows_in"], stage["rows_out"]) == (5, 5, 50, 50)
    tasks = run.tasks.to_pylist()
    assert sorted(t["shard_index"] for t in tasks) == [0, 1, 2, 3, 4]
    assert {t["status"] for t in tasks} == {"ok"} and {t["rows_out"] for t in tasks} == {10}
    assert all(t["host"] and t["pid"] > 0 and t["ended_at"] >= t["started_at"] and t["peak_rss_bytes"] > 0 for t in tasks)
    assert sum(t["bytes_out"] for t in tasks) == sum(os.path.getsize(path) for path in {c.path for c in refs.chunks})
    assert run.counters == refs.counters == {"rows_seen": 50, "largest": 49}
    assert run.counter_samples[-1]["counters"] == {"rows_seen": 50, "largest": 49}  # tasks' maxima make a maximum
    assert "map(_count)" in run.plan and stage["name"] in run.plan
    assert run.environment["backend"] == ctx.backend_name
    _check_adds_up(run)
    # Polars sees the same rows.
    assert refs.run.tasks.to_polars().collect()["rows_out"].sum() == 50


def _group(key, rows):
    return {"key": key, "n": sum(1 for _ in rows)}


def test_shuffle_record(ctx):
    data = list(range(120))
    refs = ctx.execute(Dataset.from_list(data, num_shards=4).map(_count).group_by(lambda r: r["key"], _group, num_output_shards=3))
    assert sorted(row["n"] for row in refs.to_pylist()) == [30, 30, 30, 30]
    run = refs.run
    scatter, reduce = run.stages
    assert (scatter["kind"], scatter["num_tasks"], scatter["rows_in"], scatter["rows_out"]) == ("scatter", 4, 120, 120)
    assert (reduce["kind"], reduce["num_tasks"], reduce["rows_in"], reduce["rows_out"], reduce["inputs"]) == ("shuffle", 3, 120, 4, [0])
    assert reduce["bytes_in"] > 0 and scatter["skew"] >= 1.0
    assert run.tasks.sql("select stage_index, count(*) from data group by 1 order by 1").fetchall() == [(0, 4), (1, 3)]
    _check_adds_up(run)


def test_join_record(ctx):
    left = Dataset.from_list([{"id": i, "a": i * 2} for i in range(40)], num_shards=4)
    right = Dataset.from_list([{"id": i, "b": -i} for i in range(0, 40, 2)], num_shards=2)
    refs = ctx.execute(left.join(right, on="id", num_output_shards=3))
    assert refs.num_rows == 20
    run = refs.run
    kinds = Counter(stage["kind"] for stage in run.stages)
    assert kinds == {"scatter": 2, "join": 1}
    join = next(stage for stage in run.stages if stage["kind"] == "join")
    sides = [_stage(run, index) for index in join["inputs"]]
    assert sorted((side["num_tasks"], side["rows_out"]) for side in sides) == [(2, 20), (4, 40)]
    assert (join["num_tasks"], join["rows_in"], join["rows_out"]) == (3, 60, 20)
    _check_adds_up(run)


def test_retry_after_a_killed_worker_is_recorded(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with ZephyrContext(backend="local", max_workers=2, chunk_storage_prefix=str(tmp_path / "chunks")) as ctx:
        refs = ctx.execute(Dataset.from_list(list(range(6)), num_shards=6).map(kill_own_worker_once(str(markers))))
        assert refs.to_pylist() == [x * 10 for x in range(6)]
    run = refs.run
    attempts = run.tasks.sql("select shard_index, attempt, status, error from data where shard_index = 2 order by attempt").fetchall()
    assert attempts == [(2, 0, "died", "killed by SIGKILL"), (2, 1, "ok", "")]
    assert run.stages[0]["num_tasks"] == 6 and run.stages[0]["num_attempts"] == 7 and run.stages[0]["num_retries"] == 1
    assert run.tasks.sql("select count(*) from data where status = 'ok'").fetchall()[0] == (6,)
    _check_adds_up(run)


def _fail_on_three(x):
    if x == 3:
        raise ValueError(f"bad row {x}")
    return x


@pytest.mark.parametrize("backend_name", ["sync", "local"])
def test_failed_run_record_is_on_the_error_and_in_run_dir(tmp_path, backend_name):
    with ZephyrContext(backend=backend_name, max_workers=2, max_task_retries=1, run_dir=str(tmp_path / "runs")) as ctx:
        with pytest.raises(ShardFailedError) as raised:
            ctx.execute(Dataset.from_list(list(range(8)), num_shards=4).map(_fail_on_three))
    run = raised.value.run
    assert run.status == "failed" and "bad row 3" in run.error
    failed = run.tasks.sql("select shard_index, attempt, error, traceback from data where status = 'failed' order by attempt").fetchall()
    assert [(shard, attempt, error) for shard, attempt, error, _ in failed] == [(1, 0, "ValueError: bad row 3"), (1, 1, "ValueError: bad row 3")]
    assert all("_fail_on_three" in traceback for *_, traceback in failed)
    assert run.stages[0]["status"] == "failed"
    # Written under run_dir, and readable after the context closed.
    assert run.path == str(tmp_path / "runs" / run.run_id)
    assert sorted(os.listdir(run.path)) == sorted([REPORT_FILE, RUN_FILE, TASKS_FILE])
    reopened = RunRecord.open(run.path)
    assert (reopened.status, reopened.stages, reopened.error) == (run.status, run.stages, run.error)
    assert reopened.tasks.table.equals(run.tasks.table)


def test_run_dir_from_the_environment_outlives_the_context(tmp_path, monkeypatch):
    monkeypatch.setenv("ZEPHYR_ARROW_RUN_DIR", str(tmp_path / "runs"))
    with ZephyrContext(backend="sync") as ctx:
        first = ctx.execute(Dataset.from_list([1, 2, 3]).map(lambda x: x + 1)).run
        second = ctx.execute(Dataset.from_list([4, 5]).map(lambda x: x + 1)).run
    assert first.run_id != second.run_id
    assert sorted(os.listdir(tmp_path / "runs")) == sorted([first.run_id, second.run_id])
    assert RunRecord.open(first.path).tasks.sql("select sum(rows_out) from data").fetchall()[0] == (3,)


def test_run_dir_on_s3(s3_prefix):
    with ZephyrContext(backend="sync", run_dir=f"{s3_prefix}/runs") as ctx:
        run = ctx.execute(Dataset.from_list(list(range(10)), num_shards=2).map(lambda x: x * 2)).run
    assert run.path == f"{s3_prefix}/runs/{run.run_id}"
    reopened = RunRecord.open(run.path)
    assert reopened.stages == run.stages and reopened.tasks.num_rows == 2


def test_cli_run_dir_and_report(tmp_path, capsys):
    script = tmp_path / "pipeline.py"
    script.write_text(
        "from zephyr_arrow import Dataset\n"
        "def main(ctx):\n"
        "    ctx.execute(Dataset.from_list(list(range(20)), num_shards=4).map(lambda x: x + 1))\n"
    )
    runs = tmp_path / "runs"
    assert cli_main(["run", str(script), "--backend", "sync", "--run-dir", str(runs)]) == 0
    (run_id,) = os.listdir(runs)
    out = tmp_path / "out.html"
    capsys.readouterr()
    assert cli_main(["report", str(runs / run_id), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    text = out.read_text()
    assert run_id in text and "from_list(20 items, 4 shards)" in text
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "is not a run's directory" in capsys.readouterr().err
