"""Coordinator memory stays flat as data grows; worker memory is bounded by chunk size.

Runs the same pipeline at 1x and 8x rows, each in a fresh process, and prints the
driver's peak RSS and the largest worker's peak RSS for both:

    python benches/memory_bench.py [--rows 200000] [--shards 16]

The pipeline generates documents inside the workers (flat_map from a seed per shard),
so the driver never sees a row: whatever memory it gains with more data is the cost of
holding references.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, random, resource, sys, time
from zephyr_arrow import Dataset, ZephyrContext

rows, shards, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
per_shard = rows // shards
WORDS = [f"w{i}" for i in range(5000)]

def documents(seed):
    rng = random.Random(seed)
    for i in range(per_shard):
        yield {"id": seed * per_shard + i, "score": rng.random(),
               "text": " ".join(rng.choices(WORDS, k=rng.randint(50, 400)))}

def enrich(doc):
    return {**doc, "n_words": doc["text"].count(" ") + 1}

started = time.perf_counter()
with ZephyrContext(backend="local", max_workers=2, chunk_storage_prefix=out) as ctx:
    refs = ctx.execute(
        Dataset.from_list(list(range(shards)))
        .flat_map(documents)
        .filter(lambda d: d["score"] > 0.2)
        .map(enrich)
        .reshard(shards)
        .map(lambda d: {"id": d["id"], "n_words": d["n_words"]})
    )
    num_rows = refs.num_rows
    seconds = time.perf_counter() - started
driver_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
workers_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rows": num_rows, "seconds": seconds, "driver_mb": driver_kb / 1024, "worker_mb": workers_kb / 1024}))
"""


def measure(rows: int, shards: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-c", CHILD, str(rows), str(shards), out], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=16)
    args = parser.parse_args()
    one = measure(args.rows, args.shards)
    eight = measure(args.rows * 8, args.shards)
    print(f"{'scale':>6} {'rows out':>10} {'seconds':>8} {'driver peak MB':>15} {'worker peak MB':>15}")
    for name, run in (("1x", one), ("8x", eight)):
        print(f"{name:>6} {run['rows']:>10,} {run['seconds']:>8.1f} {run['driver_mb']:>15.0f} {run['worker_mb']:>15.0f}")
    print(f"driver 8x/1x = {eight['driver_mb'] / one['driver_mb']:.2f} (goal <= 1.10); "
          f"worker 8x/1x = {eight['worker_mb'] / one['worker_mb']:.2f}")


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"({time.time() - started:.0f}s, peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
