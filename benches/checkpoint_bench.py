"""What checkpointing costs, and what resuming saves.

    .venv/bin/python benches/checkpoint_bench.py --corpus benches/data/medium [--repeat 3] [--workloads W1,W2]

1. Overhead: W1-W4 (za_rows, as benches/systems.py runs them) without and with
   ``checkpoint=`` (a fresh key each run, so the run starts from nothing and pays every commit),
   interleaved, each run in a fresh process; the median seconds of each and their ratio.
   ``--profile``: the driver's seconds inside the checkpoint code in one run of each (a bound
   on its cost that load from other processes hardly moves).
2. Resume: W2 with a map_shard after its group_by reducer (so the last stage is the reduce).
   A run is SIGKILLed (by a worker's user function, when the last stage's last shard starts)
   and then resumed; the resume's seconds against a run from scratch, interleaved.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))


def child(workload: str, mode: str, corpus: str, out: str) -> None:
    """One run in this process; prints its seconds."""
    sys.path.insert(0, HERE)
    import systems

    from zephyr_arrow import ZephyrContext

    spent = [0.0]
    if mode in ("checkpoint", "profile"):
        execute = ZephyrContext.execute
        key = f"bench-{uuid.uuid4().hex[:8]}"
        ZephyrContext.execute = lambda self, dataset, **kw: execute(self, dataset, checkpoint=key, **kw)
    if mode == "profile":  # the driver's time inside the checkpoint's own code, which load on the machine hardly skews
        from zephyr_arrow.execution import checkpoint, executor

        def timed(function):
            def run(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    spent[0] += time.perf_counter() - started

            return run

        for name in ("open", "close", "begin", "committed", "record_stage", "commit", "completed_output", "complete"):
            setattr(checkpoint.Checkpoint, name, timed(getattr(checkpoint.Checkpoint, name)))
        executor.stage_fingerprints = timed(executor.stage_fingerprints)
    started = time.perf_counter()
    systems.za_rows(workload, corpus, out)
    print(time.perf_counter() - started, spent[0], flush=True)


def resume_child(corpus: str, prefix: str, mode: str) -> None:
    """W2 with a last-stage map_shard; ``mode`` kill: the last shard's task kills the driver."""
    sys.path.insert(0, HERE)
    import systems

    from zephyr_arrow import Dataset, ZephyrContext

    def last(rows, info):
        # Read at call time (not captured), so the killed run and its resume have one fingerprint.
        if os.environ.get("BENCH_KILL") == "1" and info.shard_idx == info.total_shards - 1:
            os.kill(int(os.environ["BENCH_DRIVER"]), signal.SIGKILL)
        yield from rows

    os.environ["BENCH_DRIVER"] = str(os.getpid())
    docs = Dataset.from_files(systems.docs_glob(corpus)).load_jsonl()
    pipeline = docs.group_by(lambda d: systems.domain(d["url"]), reducer=systems.reduce_domain, num_output_shards=16).map_shard(last)
    started = time.perf_counter()
    with ZephyrContext(backend="local", max_workers=systems.WORKERS, chunk_storage_prefix=prefix, progress=False) as ctx:
        refs = ctx.execute(pipeline, checkpoint="resume" if mode != "scratch" else None)
        rows = refs.num_rows
    print(time.perf_counter() - started, rows, flush=True)


def run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workloads", default="W1,W2,W3,W4")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-resume", action="store_true")
    parser.add_argument("--profile", action="store_true", help="also time the driver's checkpoint code inside one run of each")
    args = parser.parse_args()
    corpus = os.path.abspath(args.corpus)

    if not args.skip_overhead:
        times: dict[tuple[str, str], list[float]] = {}
        for repeat in range(args.repeat):
            for workload in args.workloads.split(","):
                modes = ["plain", "checkpoint"] if repeat % 2 == 0 else ["checkpoint", "plain"]
                for mode in modes:
                    with tempfile.TemporaryDirectory(prefix="ckpt-bench-") as out:
                        result = run(["child", workload, mode, corpus, out])
                    if result.returncode != 0:
                        raise SystemExit(result.stderr)
                    times.setdefault((workload, mode), []).append(float(result.stdout.split()[-2]))
        print("| workload | plain s | checkpoint s | ratio |")
        print("| --- | --- | --- | --- |")
        for workload in args.workloads.split(","):
            plain, ckpt = statistics.median(times[(workload, "plain")]), statistics.median(times[(workload, "checkpoint")])
            print(f"| {workload} | {plain:.2f} | {ckpt:.2f} | {ckpt / plain:.3f} |", flush=True)

    if args.profile:
        print("| workload | total s | in checkpoint code s | share |")
        print("| --- | --- | --- | --- |")
        for workload in args.workloads.split(","):
            with tempfile.TemporaryDirectory(prefix="ckpt-profile-") as out:
                result = run(["child", workload, "profile", corpus, out])
            total, spent = map(float, result.stdout.split()[-2:])
            print(f"| {workload} | {total:.2f} | {spent:.3f} | {spent / total:.2%} |", flush=True)
    if args.skip_resume:
        return
    scratch, resumed = [], []
    for repeat in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="ckpt-resume-") as prefix:
            killed = run(["resume", corpus, prefix, "kill"], {"BENCH_KILL": "1"})
            assert killed.returncode == -signal.SIGKILL, killed.stderr
            again = run(["resume", corpus, prefix, "resume"])
            assert again.returncode == 0, again.stderr
            resumed.append(float(again.stdout.split()[0]))
        with tempfile.TemporaryDirectory(prefix="ckpt-scratch-") as prefix:
            fresh = run(["resume", corpus, prefix, "scratch"])
            assert fresh.returncode == 0, fresh.stderr
            scratch.append(float(fresh.stdout.split()[0]))
            assert fresh.stdout.split()[1] == again.stdout.split()[1], "the resumed run's output differs"
    print(f"resume after a kill in the last stage: {statistics.median(resumed):.2f} s; from scratch: "
          f"{statistics.median(scratch):.2f} s; ratio {statistics.median(resumed) / statistics.median(scratch):.3f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(*sys.argv[2:6])
    elif sys.argv[1:2] == ["resume"]:
        resume_child(*sys.argv[2:5])
    else:
        main()
