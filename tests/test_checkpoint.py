"""Resumable runs (``execute(..., checkpoint=KEY)``): a killed or failed driver's committed tasks are
kept, and the rerun runs exactly the tasks that were not committed.

The driver is a real subprocess. Its user functions append ``step:shard`` to a log the test owns
(the side channel that says which tasks ran), and one of them, named in the file ``pause`` (read
where the task runs: a Ray worker has not the driver's environment), stops there: it writes to a
FIFO the test reads, then blocks on a second FIFO nobody writes, until the test SIGKILLs the
driver. No sleeps.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from zephyr_arrow import Dataset, ZephyrContext, counters
from zephyr_arrow.errors import CheckpointLockedError, ShardFailedError, ZephyrError
from zephyr_arrow.store import layout

KEY = "resume-test"
NUM_FILES = 4
USERS = [f"u{i}" for i in range(10)]

DRIVER = textwrap.dedent(
    """
    import json, logging, os, sys
    from zephyr_arrow import Dataset, ZephyrContext, counters

    prefix, work, backend = sys.argv[1:4]
    logging.basicConfig(level=logging.INFO)  # the checkpoint's reuse lines, which the tests read
    BROKEN = {broken}  # the write step raises on user u7 while this is True

    def mark(step, shard):
        with open(os.path.join(work, "log"), "a") as log:
            log.write(f"{{step}}:{{shard}}\\n")
        # Read at call time, not captured: the pause point is no part of the functions' code.
        if f"{{step}}:{{shard}}" == open(os.path.join(work, "pause")).read():
            with open(os.path.join(work, "paused"), "w") as out:
                out.write("paused\\n")
            open(os.path.join(work, "hold")).read()  # blocks: nobody writes it; the test kills us

    def step_map(rows, info):
        mark("map", info.shard_idx)
        for row in rows:
            counters.increment("mapped")
            yield {{"user": row["user"], "amount": row["amount"] * 2}}

    def step_reducer(user, rows):
        mark("reducer", user)
        amounts = [r["amount"] for r in rows]
        return {{"user": user, "total": sum(amounts), "num": len(amounts)}}

    def step_reduce(rows, info):
        mark("reduce", info.shard_idx)
        yield from rows

    def step_names(rows, info):
        mark("names", info.shard_idx)
        yield from rows

    def step_write(rows, info):
        mark("write", info.shard_idx)
        for row in rows:
            if BROKEN and row["user"] == "u7":
                raise ValueError("cannot write u7")
            counters.increment("written")
            yield row

    left = Dataset.from_files(os.path.join(work, "in", "*.jsonl")).load_jsonl().map_shard(step_map)
    totals = left.group_by(lambda r: r["user"], step_reducer, num_output_shards=3).map_shard(step_reduce)
    names = Dataset.from_files(os.path.join(work, "names.jsonl")).load_jsonl().map_shard(step_names)
    pipeline = (
        totals.join(names, on="user", num_output_shards=3)
        .map_shard(step_write)
        .write_jsonl(os.path.join(work, "out", "part-{{shard:05d}}.jsonl"))
    )
    options = {{"num_cpus_per_worker": 0.5}} if backend == "ray" else {{}}  # the test session's Ray has 2 CPUs
    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=prefix, progress=False, **options) as ctx:
        refs = ctx.execute(pipeline, checkpoint="{key}")
        print("COUNTERS", json.dumps(refs.counters), flush=True)
    """
)

STEP_STAGES = {"map": 0, "reduce": 2, "names": 3, "write": 4}  # the stage each logged step runs in (the write runs in the join's reduce)


@pytest.fixture
def work(tmp_path):
    """Inputs (four files of (user, amount) rows and a names file), the FIFOs and the output directory."""
    (tmp_path / "in").mkdir()
    for file_index in range(NUM_FILES):
        rows = [{"user": USERS[(file_index * 7 + i) % len(USERS)], "amount": file_index * 100 + i} for i in range(25)]
        (tmp_path / "in" / f"part-{file_index}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "names.jsonl").write_text("".join(json.dumps({"user": u, "name": u.upper()}) + "\n" for u in USERS[:8]))
    os.mkfifo(tmp_path / "paused")
    os.mkfifo(tmp_path / "hold")
    return tmp_path


def oracle(work) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for path in sorted(glob.glob(str(work / "in" / "*.jsonl"))) for line in open(path)]
    names = {r["user"]: r["name"] for r in map(json.loads, open(work / "names.jsonl"))}
    totals: dict[str, list[int]] = collections.defaultdict(list)
    for row in rows:
        totals[row["user"]].append(row["amount"] * 2)
    out = [{"user": u, "total": sum(v), "num": len(v), "name": names[u]} for u, v in totals.items() if u in names]
    return sorted(out, key=lambda r: r["user"]), {"mapped": len(rows), "written": len(out)}


def write_driver(work, broken: bool = False) -> str:
    script = work / "driver.py"
    script.write_text(DRIVER.format(broken=broken, key=KEY))
    return str(script)


def run_driver(work, prefix: str, backend: str, pause: str = "-", broken: bool = False) -> subprocess.CompletedProcess:
    """Run the driver to its end (completion or failure)."""
    (work / "pause").write_text(pause)
    return subprocess.run([sys.executable, write_driver(work, broken), prefix, str(work), backend], capture_output=True, text=True, timeout=300)


def kill_driver_at(work, prefix: str, backend: str, pause: str) -> None:
    """Start the driver, wait until the task ``pause`` is running, and SIGKILL the driver."""
    driver = start_driver(work, prefix, backend, pause)
    try:
        wait_for_line(work / "paused", driver)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)


def start_driver(work, prefix: str, backend: str, pause: str) -> subprocess.Popen:
    (work / "pause").write_text(pause)
    return subprocess.Popen(
        [sys.executable, write_driver(work), prefix, str(work), backend], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_line(fifo, driver: subprocess.Popen) -> None:
    """Block until the driver writes a line to ``fifo``; fail (never hang) if it exits first."""
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keep_open = os.open(fifo, os.O_WRONLY)  # no EOF before the driver opens it
    try:
        deadline = time.monotonic() + 240
        data = b""
        while b"\n" not in data:
            assert driver.poll() is None, f"the driver exited before pausing: {driver.stderr.read()}"
            assert time.monotonic() < deadline, "the driver did not reach its pause point within 240 s"
            if select.select([reader], [], [], 1.0)[0]:
                data += os.read(reader, 4096)
    finally:
        os.close(keep_open)
        os.close(reader)


def logged(work) -> list[str]:
    path = work / "log"
    lines = path.read_text().split() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def tasks_of(lines: list[str]) -> set[tuple[str, int]]:
    """The (step, shard) tasks of the steps that know their shard."""
    return {(step, int(shard)) for step, shard in (line.split(":") for line in lines) if step in STEP_STAGES}


def committed_tasks(prefix: str) -> set[tuple[str, int]]:
    """The (step, shard) tasks whose records exist under the checkpoint, by the stages' current fingerprints."""
    execution_id = layout.checkpoint_execution_id(KEY)
    run = json.loads(open(layout.checkpoint_path(prefix, execution_id, "run.json")).read())
    done = set()
    for step, stage_index in STEP_STAGES.items():
        records = layout.task_records_dir(prefix, execution_id, stage_index, run["stages"][str(stage_index)]["fingerprint"])
        for name in os.listdir(records) if os.path.isdir(records) else []:
            if name.startswith("."):
                continue  # a record being written when the driver was killed: not committed
            done.add((step, int(name.removeprefix("shard-").removesuffix(".json"))))
    return done


ALL_TASKS = {("map", i) for i in range(NUM_FILES)} | {("names", 0)} | {(s, i) for s in ("reduce", "write") for i in range(3)}


def read_output(work) -> list[dict]:
    rows = [json.loads(line) for path in glob.glob(str(work / "out" / "*.jsonl")) for line in open(path)]
    return sorted(rows, key=lambda r: r["user"])


def check_completed(work, result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    expected_rows, expected_counters = oracle(work)
    assert read_output(work) == expected_rows
    counters = json.loads(result.stdout.split("COUNTERS ", 1)[1])
    assert counters == expected_counters
    assert not [p for p in os.listdir(work / "out") if p.startswith(".")], "a half-written output file was left"


@pytest.mark.parametrize("pause", ["map:1", "reducer:u3", "reduce:0", "names:0", "write:1"])
@pytest.mark.parametrize("backend", ["sync", "local"])
def test_a_killed_driver_resumes_with_only_the_uncommitted_tasks(work, tmp_path, backend, pause):
    prefix = str(tmp_path / "chunks")
    kill_driver_at(work, prefix, backend, pause)
    first = tasks_of(logged(work))
    committed = committed_tasks(prefix)
    assert committed <= first, "a task was committed that never ran"
    assert committed < ALL_TASKS

    result = run_driver(work, prefix, backend)
    check_completed(work, result)
    assert tasks_of(logged(work)) == ALL_TASKS - committed


def test_a_killed_driver_resumes_on_ray(work, tmp_path, ray_session, monkeypatch):
    """Both drivers join the test session's Ray; the first is SIGKILLed inside the shuffle's
    reduce (its worker actors die with it), the second runs only what was not committed."""
    monkeypatch.setenv("RAY_ADDRESS", ray_session.get_runtime_context().gcs_address)
    prefix = str(tmp_path / "chunks")
    kill_driver_at(work, prefix, "ray", "reduce:1")
    first = tasks_of(logged(work))
    committed = committed_tasks(prefix)
    assert committed <= first and {("map", i) for i in range(NUM_FILES)} <= committed
    assert ("reduce", 1) not in committed

    result = run_driver(work, prefix, "ray")
    check_completed(work, result)
    assert tasks_of(logged(work)) == ALL_TASKS - committed


def test_sigterm_keeps_the_committed_work_and_says_how_to_resume(work, tmp_path):
    prefix = str(tmp_path / "chunks")
    driver = start_driver(work, prefix, "local", "reduce:1")
    try:
        wait_for_line(work / "paused", driver)
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        driver.kill()
    assert f"checkpoint={KEY!r} to resume it" in driver.stderr.read()
    committed = committed_tasks(prefix)
    assert {("map", i) for i in range(NUM_FILES)} <= committed
    logged(work)

    result = run_driver(work, prefix, "local")
    check_completed(work, result)
    assert tasks_of(logged(work)) == ALL_TASKS - committed


def test_a_killed_driver_resumes_with_the_prefix_on_s3(work, s3_prefix):
    kill_driver_at(work, s3_prefix, "sync", "reduce:1")
    committed = {task for task in tasks_of(logged(work)) if task != ("reduce", 1)}  # sync: in order, all before it
    result = run_driver(work, s3_prefix, "sync")
    check_completed(work, result)
    assert tasks_of(logged(work)) == ALL_TASKS - committed


def test_a_fixed_user_error_in_a_late_stage_reruns_only_that_stage(work, tmp_path):
    prefix = str(tmp_path / "chunks")
    failed = run_driver(work, prefix, "local", broken=True)
    assert failed.returncode != 0
    assert "cannot write u7" in failed.stderr
    assert f"checkpoint='{KEY}' to resume" in failed.stderr
    logged(work)

    result = run_driver(work, prefix, "local", broken=False)
    check_completed(work, result)
    assert tasks_of(logged(work)) == {("write", i) for i in range(3)}, "stages before the fixed one ran again"
    assert "rerun (its code or arguments changed)" in result.stderr


def test_a_changed_input_file_reruns_only_what_depends_on_it(work, tmp_path):
    prefix = str(tmp_path / "chunks")
    assert run_driver(work, prefix, "sync", broken=True).returncode != 0
    logged(work)
    with open(work / "names.jsonl", "a") as names:
        names.write(json.dumps({"user": "u8", "name": "EIGHT"}) + "\n")

    result = run_driver(work, prefix, "sync", broken=False)
    check_completed(work, result)
    assert tasks_of(logged(work)) == {("names", 0)} | {("write", i) for i in range(3)}
    assert "rerun (its input files changed)" in result.stderr


def test_a_deleted_chunk_reruns_the_task_that_wrote_it(work, tmp_path):
    prefix = str(tmp_path / "chunks")
    assert run_driver(work, prefix, "sync", broken=True).returncode != 0
    logged(work)
    reduce_chunks = sorted(glob.glob(os.path.join(prefix, "ckpt-*", "stage-02-*", "shard=00001", "*.parquet")))
    assert reduce_chunks
    os.remove(reduce_chunks[0])

    result = run_driver(work, prefix, "sync", broken=False)
    check_completed(work, result)
    assert tasks_of(logged(work)) == {("reduce", 1)} | {("write", i) for i in range(3)}


def test_a_completed_run_is_returned_at_once_while_its_output_is_readable(tmp_path):
    calls = str(tmp_path / "calls")

    def times_ten(x):
        with open(calls, "a") as out:
            out.write(f"{x}\n")
        return x * 10

    dataset = Dataset.from_list(list(range(6)), num_shards=3).map(times_ten)
    prefix = str(tmp_path / "chunks")
    with ZephyrContext(backend="sync", chunk_storage_prefix=prefix, progress=False) as ctx:
        first = ctx.execute(dataset, checkpoint="done")
        again = ctx.execute(dataset, checkpoint="done")
        assert again.to_pylist() == first.to_pylist() == [x * 10 for x in range(6)]
    assert open(calls).read().split() == [str(x) for x in range(6)], "the completed run ran again"
    run_dir = layout.execution_dir(prefix, layout.checkpoint_execution_id("done"))
    kept = sorted(os.path.relpath(os.path.join(d, f), run_dir) for d, _, files in os.walk(run_dir) for f in files)
    assert kept == ["_checkpoint/complete.json", "_checkpoint/run.json"], "a completed run keeps only its small record"


def test_a_second_driver_fails_at_once_naming_the_holder(work, tmp_path):
    prefix = str(tmp_path / "chunks")
    driver = start_driver(work, prefix, "sync", "map:0")
    try:
        wait_for_line(work / "paused", driver)
        result = run_driver(work, prefix, "sync")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    assert result.returncode != 0
    assert "CheckpointLockedError" in result.stderr
    assert f"host {socket.gethostname()}, pid {driver.pid}, since " in result.stderr


def test_a_stale_holder_does_not_block(tmp_path):
    prefix = str(tmp_path)
    lock = layout.checkpoint_path(prefix, layout.checkpoint_execution_id("stale"), "lock.json")
    os.makedirs(os.path.dirname(lock))
    old = time.time() - 3600
    with open(lock, "w") as out:  # a driver on another host, silent for an hour
        json.dump({"host": "elsewhere", "pid": 1, "since": old, "heartbeat": old, "session": 1}, out)
    with ZephyrContext(backend="sync", chunk_storage_prefix=prefix, progress=False) as ctx:
        assert ctx.execute(Dataset.from_list([1, 2]).map(lambda x: x + 1), checkpoint="stale").to_pylist() == [2, 3]
        with open(lock, "w") as out:  # a live holder elsewhere blocks
            json.dump({"host": "elsewhere", "pid": 1, "since": time.time(), "heartbeat": time.time(), "session": 2}, out)
        with pytest.raises(CheckpointLockedError, match="host elsewhere, pid 1, since"):
            ctx.execute(Dataset.from_list([1, 2]).map(lambda x: x + 2), checkpoint="stale")


def test_a_fixed_reducer_resumes_on_every_backend(backend, backend_options, tmp_path):
    """In-process on sync, local and ray: stage 2's reducer raises on one key; fixed, only its stage reruns."""
    seen = tmp_path / "seen"

    def source(x):
        with open(seen, "a") as out:
            out.write(f"{x}\n")
        counters.pipeline.set_aggregation("largest", counters.Aggregation.MAX)
        counters.pipeline.update_counter("largest", x)
        return {"k": x % 4, "v": x}

    def broken(key, rows):
        if key == 3:
            raise ValueError("bad key 3")
        return {"k": key, "total": sum(r["v"] for r in rows)}

    def fixed(key, rows):
        return {"k": key, "total": sum(r["v"] for r in rows)}

    def pipeline(reducer):
        return Dataset.from_list(list(range(40)), num_shards=4).map(source).group_by("k", reducer, num_output_shards=2)

    with ZephyrContext(backend=backend, max_workers=2, chunk_storage_prefix=str(tmp_path / "chunks"), progress=False, **backend_options) as ctx:
        with pytest.raises(ShardFailedError) as failure:
            ctx.execute(pipeline(broken), checkpoint="reducer")
        assert any("checkpoint='reducer' to resume" in note for note in failure.value.__notes__)
        assert sorted(map(int, seen.read_text().split())) == list(range(40))
        seen.unlink()
        refs = ctx.execute(pipeline(fixed), checkpoint="reducer")
        assert sorted(refs.to_pylist(), key=lambda r: r["k"]) == [{"k": k, "total": sum(range(k, 40, 4))} for k in range(4)]
        assert refs.counters["largest"] == 39  # the committed tasks' maxima combine as a maximum, not a sum
    assert not seen.exists(), "the map stage ran again"


def _failing_run(prefix: str) -> ZephyrContext:
    """A sync context whose run kept under "inspect" failed in stage 1 (the reducer raises on key 2)."""

    def reducer(key, rows):
        values = [r["v"] for r in rows]
        if key == 2:
            raise ValueError("bad key 2")
        return {"k": key, "total": sum(values)}

    dataset = Dataset.from_list(list(range(30)), num_shards=3).map(lambda x: {"k": x % 3, "v": x}).group_by("k", reducer, num_output_shards=3)
    ctx = ZephyrContext(backend="sync", chunk_storage_prefix=prefix, progress=False)
    with pytest.raises(ShardFailedError):
        ctx.execute(dataset, checkpoint="inspect")
    return ctx


def test_a_kept_runs_stages_and_tasks_can_be_read_and_replayed(tmp_path):
    with _failing_run(str(tmp_path)) as ctx:
        mapped = ctx.checkpoint_refs("inspect", stage=0)
        assert sorted(mapped.to_polars().select("v").collect()["v"].to_list()) == list(range(30))
        with pytest.raises(ZephyrError, match="stage 1 of checkpoint 'inspect' .* is not all there: shards .* were not committed"):
            ctx.checkpoint_refs("inspect", stage=1)
        failed_shard = next(s for s in range(3) if not os.path.exists(layout.task_record_path(
            str(tmp_path), layout.checkpoint_execution_id("inspect"), 1,
            json.load(open(layout.checkpoint_path(str(tmp_path), layout.checkpoint_execution_id("inspect"), "run.json")))["stages"]["1"]["fingerprint"], s)))
        with pytest.raises(ValueError, match="bad key 2"):  # the user's own exception, raised here
            ctx.replay("inspect", stage=1, shard=failed_shard)
        replayed = [row for s in range(3) if s != failed_shard for row in ctx.replay("inspect", stage=1, shard=s).to_pylist()]
        assert sorted(replayed, key=lambda r: r["k"]) == [{"k": k, "total": sum(range(k, 30, 3))} for k in (0, 1)]


def test_runs_lists_kept_runs_and_gc_deletes_only_dead_runs(tmp_path):
    prefix = str(tmp_path)
    _failing_run(prefix).close()
    with ZephyrContext(backend="sync", chunk_storage_prefix=prefix, progress=False) as ctx:
        ctx.execute(Dataset.from_list([1, 2, 3], num_shards=3).map(lambda x: x), checkpoint="finished")
    listed = subprocess.run([sys.executable, "-m", "zephyr_arrow.cli", "runs", prefix], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split("|")[0].strip(): [cell.strip() for cell in line.split("|")] for line in listed.stdout.splitlines()[2:-1]}
    assert lines["inspect"][1:4] == ["failed", "1/2", "3/3 2/3"]
    assert lines["finished"][1:4] == ["complete", "1/1", "3/3"]

    old, fresh = tmp_path / "run-0123456789ab", tmp_path / "run-ba9876543210"
    for directory in (old, fresh):
        (directory / "stage-00-map").mkdir(parents=True)
        (directory / "stage-00-map" / "chunk.parquet").write_bytes(b"x")
    long_ago = time.time() - 3 * 86400
    os.utime(old / "stage-00-map" / "chunk.parquet", (long_ago, long_ago))
    (tmp_path / "notes-of-mine").mkdir()
    gc = subprocess.run([sys.executable, "-m", "zephyr_arrow.cli", "gc", prefix, "--older-than", "1d"], capture_output=True, text=True)
    assert gc.returncode == 0, gc.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["notes-of-mine", "run-ba9876543210", layout.checkpoint_execution_id("inspect"), layout.checkpoint_execution_id("finished")]
    )
    deleted = subprocess.run([sys.executable, "-m", "zephyr_arrow.cli", "runs", prefix, "--delete", "inspect"], capture_output=True, text=True)
    assert deleted.returncode == 0, deleted.stderr
    assert layout.checkpoint_execution_id("inspect") not in os.listdir(tmp_path)
