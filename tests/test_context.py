"""ZephyrContext's lifetime: a closed context runs nothing, and one never closed still releases
its workers and chunks (when garbage-collected, or at exit) with a ResourceWarning."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap

import psutil
import pytest

from zephyr_arrow import Dataset, ZephyrContext, ZephyrError


def test_a_closed_context_runs_nothing(backend, backend_options, tmp_path):
    ctx = ZephyrContext(backend=backend, max_workers=1, chunk_storage_prefix=str(tmp_path / "chunks"), **backend_options)
    with ctx:
        assert ctx.execute(Dataset.from_list([1, 2]).map(lambda x: x * 10)).to_pylist() == [10, 20]
    ctx.close()  # closing again does nothing
    with pytest.raises(ZephyrError, match=r"execute\(\) on a closed ZephyrContext"):
        ctx.execute(Dataset.from_list([1]))
    with pytest.raises(ZephyrError, match=r"put\(\) on a closed ZephyrContext"):
        ctx.put("model", object())
    assert not os.listdir(tmp_path / "chunks"), "closing deletes the runs' chunks, and running again made none"


@pytest.mark.parametrize("backend_name", ["sync", "local"])
def test_a_context_dropped_unclosed_warns_and_releases_its_workers_and_chunks(backend_name):
    ctx = ZephyrContext(backend=backend_name, max_workers=1)
    refs = ctx.execute(Dataset.from_list([1, 2, 3]).map(lambda x: x + 1))
    assert refs.to_pylist() == [2, 3, 4]
    prefix = ctx.chunk_storage_prefix
    workers = [psutil.Process(pid) for pid in getattr(ctx._get_backend(), "pids", [])]
    assert os.path.isdir(prefix) and (backend_name == "sync" or workers)
    with pytest.warns(ResourceWarning, match="never closed"):
        del ctx, refs
        gc.collect()
    assert not os.path.exists(prefix)
    for worker in workers:
        worker.wait(timeout=30)  # returns once the process is gone; raises if it is still running


def test_a_context_left_open_at_exit_releases_its_workers_and_chunks(tmp_path):
    script = tmp_path / "left_open.py"
    script.write_text(
        textwrap.dedent(
            """
            import json
            from zephyr_arrow import Dataset, ZephyrContext

            ctx = ZephyrContext(backend="local", max_workers=2)
            assert ctx.execute(Dataset.from_list([1, 2, 3, 4]).map(lambda x: -x)).to_pylist() == [-1, -2, -3, -4]
            print(json.dumps({"prefix": ctx.chunk_storage_prefix, "pids": sorted(ctx._get_backend().pids)}))
            """
        )
    )
    result = subprocess.run([sys.executable, "-W", "always::ResourceWarning", str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    left = json.loads(result.stdout)
    assert left["pids"] and not os.path.exists(left["prefix"])
    assert not [pid for pid in left["pids"] if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert "never closed" in result.stderr


def _slow_double(x: int) -> int:
    return x * 2


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def test_concurrent_executes_on_one_context_are_refused_never_mixed(ctx):
    """20 rounds of two threads calling execute() at once, one pipeline failing: each call either
    returns its own pipeline's rows, fails with its own error, or is refused; none hangs."""
    import threading

    good, bad = list(range(40)), list(range(8))
    for _ in range(20):
        results: dict[str, object] = {}
        start = threading.Barrier(2)

        def run(name, ds):
            start.wait()
            try:
                results[name] = ctx.execute(ds).to_pylist()
            except Exception as error:  # noqa: BLE001 - each outcome is checked below
                results[name] = error

        threads = [
            threading.Thread(target=run, args=("good", Dataset.from_list(good, num_shards=4).map(_slow_double))),
            threading.Thread(target=run, args=("bad", Dataset.from_list(bad, num_shards=4).map(_fails_on_three))),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads), "a concurrent execute() hung"
        refused = [name for name, result in results.items() if isinstance(result, ZephyrError) and "already running" in str(result)]
        if "good" not in refused:
            assert sorted(results["good"]) == [x * 2 for x in good]
        if "bad" not in refused:
            assert isinstance(results["bad"], ZephyrError) and "three" in str(results["bad"]) and "already running" not in str(results["bad"])
    assert ctx.execute(Dataset.from_list(good, num_shards=4).map(_slow_double)).to_pylist() == [x * 2 for x in good]
