"""What a task costs the scheduler: N tasks that do nothing, on zephyr_arrow, Zephyr and Ray Data.

    .venv/bin/python benches/task_overhead.py [--tasks 20000] [--repeat 3] [--systems za,zephyr,ray_data]

Each system runs in a fresh process: it starts its workers (2), runs a warm-up of 100 tasks,
then times N tasks that do nothing. zephyr_arrow: ``Dataset.from_list(range(N), num_shards=N)
.map_shard(lambda rows, shard: [])`` on the local backend. Zephyr (``--zephyr-python``, a venv
with marin-zephyr): ``Dataset.from_list(range(N))`` (each item its own shard) with the same
``map_shard``. Ray Data: ``ray.data.range(N, override_num_blocks=N).map_batches(...)`` returning
nothing, on a local Ray of 2 CPUs, consumed by ``count()``. A system that runs past
``--timeout`` seconds is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

WORKERS = 2


def nothing(rows, shard):
    return []


def run_za(n: int, prefix: str) -> float:
    from zephyr_arrow import Dataset, ZephyrContext

    with ZephyrContext(backend="local", max_workers=WORKERS, chunk_storage_prefix=prefix, progress=False) as ctx:
        ctx.execute(Dataset.from_list(list(range(100)), num_shards=100).map_shard(nothing))
        started = time.perf_counter()
        ctx.execute(Dataset.from_list(list(range(n)), num_shards=n).map_shard(nothing))
        return time.perf_counter() - started


def run_zephyr(n: int, prefix: str) -> float:
    import logging

    from zephyr import Dataset, ZephyrContext

    for name in ("zephyr", "fray", "iris", "rigging"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = ZephyrContext(max_workers=WORKERS, chunk_storage_prefix=prefix)
    try:
        ctx.execute(Dataset.from_list(list(range(100))).map_shard(nothing))
        started = time.perf_counter()
        ctx.execute(Dataset.from_list(list(range(n))).map_shard(nothing))
        return time.perf_counter() - started
    finally:
        ctx.shutdown()


def run_ray_data(n: int, prefix: str) -> float:
    import ray

    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    try:
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False

        def drop(batch):
            return {"id": batch["id"][:0]}

        ray.data.range(100, override_num_blocks=100).map_batches(drop).count()
        started = time.perf_counter()
        ray.data.range(n, override_num_blocks=n).map_batches(drop).count()
        return time.perf_counter() - started
    finally:
        ray.shutdown()


RUNS = {"za": run_za, "zephyr": run_zephyr, "ray_data": run_ray_data}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--systems", default="za,zephyr,ray_data")
    parser.add_argument("--zephyr-python", default="/work/zephyr-venv/bin/python")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--one", nargs=2, metavar=("SYSTEM", "TASKS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        system, n = args.one
        with tempfile.TemporaryDirectory(prefix="task-overhead-", dir="/tmp") as prefix:
            print(json.dumps({"seconds": RUNS[system](int(n), prefix)}))
        return
    systems = args.systems.split(",")
    seconds: dict[str, list[float | None]] = {system: [] for system in systems}
    for repeat in range(args.repeat):
        for system in systems[repeat % len(systems) :] + systems[: repeat % len(systems)]:
            python = args.zephyr_python if system == "zephyr" else sys.executable
            env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}
            try:
                process = subprocess.run([python, os.path.abspath(__file__), "--one", system, str(args.tasks)],
                                         capture_output=True, text=True, timeout=args.timeout, env=env)
            except subprocess.TimeoutExpired:
                seconds[system].append(None)
                print(f"  [{repeat + 1}/{args.repeat}] {system}: over {args.timeout:.0f} s", file=sys.stderr)
                continue
            if process.returncode:
                sys.exit(f"{system}: {process.stderr.strip().splitlines()[-1]}")
            seconds[system].append(json.loads(process.stdout.strip().splitlines()[-1])["seconds"])
            print(f"  [{repeat + 1}/{args.repeat}] {system}: {seconds[system][-1]:.2f} s", file=sys.stderr)
    print(f"\n{args.tasks:,} tasks that do nothing, {WORKERS} workers, medians of {args.repeat}\n")
    print("| system | seconds | tasks / s | runs |")
    print("|---|---|---|---|")
    for system in systems:
        done = [s for s in seconds[system] if s is not None]
        if len(done) < len(seconds[system]):
            print(f"| {system} | over {args.timeout:.0f} | | {', '.join('-' if s is None else f'{s:.2f}' for s in seconds[system])} |")
            continue
        median = statistics.median(done)
        print(f"| {system} | {median:.2f} | {args.tasks / median:,.0f} | {', '.join(f'{s:.2f}' for s in done)} |")


if __name__ == "__main__":
    main()
