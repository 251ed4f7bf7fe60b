"""The live dashboard: the run report served while the context is open, checked in a real headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import urllib.error
import urllib.request

import pytest
from test_report_browser import chromium

from zephyr_arrow import Dataset, PlanError, ZephyrContext


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def _dump_dom(url: str, *args: str) -> str:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True).stdout


def test_live_page_shows_the_running_stage_then_the_finished_run(tmp_path, capsys):
    started, release = threading.Event(), threading.Event()

    def wait_on_shard_2(x):
        if x == 2:
            started.set()
            assert release.wait(120), "the test never released the task"
        return x + 1

    outcome: list = []
    with ZephyrContext(backend="sync", dashboard=True) as ctx:
        url = ctx.dashboard_url
        assert capsys.readouterr().err.count(url) == 1  # printed once
        pipeline = Dataset.from_list([0, 1, 2, 3], num_shards=4).map(wait_on_shard_2)
        runner = threading.Thread(target=lambda: outcome.append(ctx.execute(pipeline).to_pylist()))
        runner.start()
        try:
            assert started.wait(120)
            dom = _dump_dom(url, "--dump-dom")
            _dump_dom(url, f"--screenshot={tmp_path / 'live.png'}", "--window-size=1200,1400")
        finally:
            release.set()
            runner.join()
        assert outcome == [[1, 2, 3, 4]]
        assert re.search(r'id="status"[^>]*>running<', dom)
        assert re.search(r'id="live-done">2<', dom) and re.search(r'id="live-total">4<', dom)
        assert "from_list(4 items, 4 shards) -&gt; map(wait_on_shard_2)" in dom
        # The worker (here the driver itself, on sync) with its memory and CPU read live from /proc.
        workers = re.findall(r'<tr><td>0</td><td>[^<]*:(\d+)</td><td>([\d.,]+ [KMG]?B)</td><td>([\d.]+)</td></tr>', dom)
        assert [int(pid) for pid, _, _ in workers] == [os.getpid()]
        assert (tmp_path / "live.png").stat().st_size > 5_000
        after = _dump_dom(url, "--dump-dom")
        assert re.search(r'id="status"[^>]*>succeeded<', after) and 'id="live"' not in after
        assert re.findall(r'class="num-tasks">(\d+)<', after) == ["4"]
    with pytest.raises(urllib.error.URLError):
        _get(url)


def test_a_second_dashboard_takes_another_port_and_each_stops_with_its_context():
    with ZephyrContext(backend="sync", dashboard=True) as first:
        first_url = first.dashboard_url
        port = int(first_url.rsplit(":", 1)[1].strip("/"))
        with ZephyrContext(backend="sync", dashboard=port) as second:
            second_url = second.dashboard_url
            assert second_url != first_url and second_url.startswith("http://127.0.0.1:")
            assert "No run yet." in _get(second_url)
            second.execute(Dataset.from_list([1, 2]).map(str))
            assert "map(str)" in _get(second_url) and "No run yet." in _get(first_url)
        assert second.dashboard_url is None
        with pytest.raises(urllib.error.URLError):
            _get(second_url)
        assert "No run yet." in _get(first_url)
    with pytest.raises(urllib.error.URLError):
        _get(first_url)


def test_no_dashboard_unless_asked_and_a_wrong_one_is_refused():
    with ZephyrContext(backend="sync") as ctx:
        assert ctx.dashboard_url is None
    with pytest.raises(PlanError, match="dashboard must be True, a port or 'host:port', got 'yes'"):
        ZephyrContext(backend="sync", dashboard="yes")
