"""The HTML report opened in a real headless Chromium and checked through its DOM (.ci/run installs Chromium)."""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from zephyr_arrow import Dataset, ShardFailedError, ZephyrContext
from zephyr_arrow.execution.report import render_report
from zephyr_arrow.execution.run_record import REPORT_FILE, RecordTable, RunRecord, TaskAttempt


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no Chromium on PATH: install it (apt-get install -y chromium), as .ci/run does")


def browse(page: Path, *args: str) -> str:
    """Run headless Chromium on ``page`` with ``args``; its stdout (``--dump-dom``: the DOM it built)."""
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return done.stdout


def _kill_worker_once(marker_dir: str):
    def run(x):
        marker = os.path.join(marker_dir, "killed")
        if x == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return {"key": x % 3, "value": x}

    return run


def _sum_values(key, rows):
    if key == 1:
        raise RuntimeError("reduce of key 1 refuses")
    return {"key": key, "total": sum(row["value"] for row in rows)}


def test_report_of_a_failed_run_with_a_retry_in_chromium(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    pipeline = (
        Dataset.from_list(list(range(30)), num_shards=5)
        .map(_kill_worker_once(str(markers)))
        .group_by(lambda row: row["key"], _sum_values, num_output_shards=3)
    )
    with ZephyrContext(backend="local", max_workers=2, run_dir=str(tmp_path / "runs")) as ctx:
        with pytest.raises(ShardFailedError):
            ctx.execute(pipeline)
    run = RunRecord.open(str(tmp_path / "runs" / os.listdir(tmp_path / "runs")[0]))
    page = Path(run.path) / REPORT_FILE
    dom = browse(page, "--dump-dom")
    shot = tmp_path / "report.png"
    browse(page, f"--screenshot={shot}", "--window-size=1200,2200", "--hide-scrollbars")
    assert shot.stat().st_size > 10_000  # the screenshot, a test artifact under tmp_path

    assert re.search(r'id="status"[^>]*>failed<', dom)
    for stage in run.stages:
        assert html.escape(stage["name"], quote=False) in dom
    # The stage table's task counts: 5 map tasks (one retried), 3 reduce tasks of which one failed.
    assert re.findall(r'class="num-tasks">(\d+)<', dom) == ["5", "3"]
    assert re.search(r'id="num-attempts">(\d+)<', dom).group(1) == str(run.tasks.num_rows)
    # Each attempt is a bar of the timeline; the lost ones (the killed worker's, the reduce that raised) are marked.
    assert len(re.findall(r'<rect class="attempt ', dom)) == run.tasks.num_rows
    assert len(re.findall(r'<rect class="attempt died"', dom)) == 1
    assert len(re.findall(r'<rect class="attempt failed"', dom)) >= 1
    failures = dom[dom.index('id="failures"') : dom.index('id="environment"')]
    assert "killed by SIGKILL" in failures
    assert "RuntimeError: reduce of key 1 refuses" in failures and "_sum_values" in failures  # the traceback
    assert "edge" in dom and "30 rows" in dom  # the plan graph's edge carries the map side's rows


def test_report_of_20000_tasks_stays_small_and_loads(tmp_path):
    num_tasks, workers = 20_000, 64
    rows = [
        TaskAttempt(
            i % 2, f"stage {i % 2}", i // 2, 1 if i % 997 == 0 else 0, "failed" if i == 12_345 else "ok", i % workers, "host", 1000 + i % workers,
            1_000.0 + (i // workers) * 0.5, 1_000.4 + (i // workers) * 0.5, rows_in=100, rows_out=100, seconds=0.4 + (i % 13) / 10,
            error="ValueError: x" if i == 12_345 else "",
        )
        for i in range(num_tasks)
    ]
    table = pa.Table.from_pylist([{f: getattr(r, f) for f in r.__slots__} for r in rows])
    stages = [
        {"index": s, "name": f"stage {s}", "kind": "map", "inputs": [s - 1] if s else [], "broadcast": [], "status": "ok",
         "num_tasks": num_tasks // 2, "num_attempts": num_tasks // 2, "num_retries": 0, "rows_in": 10**6, "rows_out": 10**6,
         "chunks_out": 1, "bytes_out": 1, "bytes_in": 1, "cpu_seconds": 1.0, "peak_rss_bytes": 1, "task_seconds": 1.0,
         "started_at": 1000.0, "ended_at": 1200.0, "wall_seconds": 200.0, "skew": 2.0}
        for s in range(2)
    ]
    samples = [{"seconds": t, "counters": {"rows": t * 10}} for t in range(0, 160)]
    record = RunRecord("run-big", "failed", "ValueError: x", RecordTable(table), stages, {"rows": 1590}, samples, "plan", {}, 1000.0, 1160.0)
    page = tmp_path / "big.html"
    page.write_text(render_report(record))
    assert page.stat().st_size < 10 * 2**20
    dom = browse(page, "--dump-dom")
    assert re.findall(r'class="num-tasks">(\d+)<', dom) == ["10000", "10000"]
    assert '<path class="stage-0"' in dom and "ValueError: x" in dom
