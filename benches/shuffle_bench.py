"""Shuffle memory is bounded by buffers, not data: group_by and deduplicate at 1x and 4x data.

    python benches/shuffle_bench.py [--rows 600000] [--shards 4] [--workers 2]

The input is ``--shards`` Parquet files (the same count at both scales, so each shard,
each map task and each reduce task gets 4x the rows): an id, a skewed ``key`` (its
biggest group is a few percent of all rows) and a ~300-byte ``text`` of which about a
third are duplicates. Two pipelines run on the local backend, each in a fresh process:

- group_by: ``group_by("key", reducer)`` with a Python reducer that streams each group;
- dedup: ``deduplicate("text")``, columnar.

Reported per run: wall time, the largest worker's peak RSS (``ru_maxrss`` of the reaped
workers), and the files the shuffle wrote (one per scatter task, merge-pass files, the
output chunks; ``refs.stats["shuffle/files_written"]``). Goal: worker RSS at 4x within
1.3x of 1x.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

CHILD = r"""
import json, resource, sys, time
from zephyr_arrow import Dataset, ZephyrContext, read_parquet

op, inputs, workers, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def count_group(key, rows):
    num_rows = num_bytes = 0
    for row in rows:
        num_rows += 1
        num_bytes += len(row["text"])
    return {"key": key, "rows": num_rows, "bytes": num_bytes}

started = time.perf_counter()
with ZephyrContext(backend="local", max_workers=workers, chunk_storage_prefix=out) as ctx:
    ds = Dataset.from_refs(read_parquet(inputs + "/*.parquet"))
    ds = ds.group_by("key", count_group) if op == "group_by" else ds.deduplicate("text")
    refs = ctx.execute(ds)
    rows_out, files = refs.num_rows, refs.stats["shuffle/files_written"]
    largest_group = refs.sql("select max(rows) from data").fetchall()[0][0] if op == "group_by" else None
seconds = time.perf_counter() - started
print(json.dumps({"rows_out": rows_out, "files": files, "largest_group": largest_group, "seconds": seconds,
                  "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def generate(directory: str, rows: int, shards: int, seed: int = 0) -> int:
    """Write ``shards`` Parquet files of ``rows`` rows in all; return their total bytes on disk."""
    rng = random.Random(seed)
    filler = "".join(rng.choice("abcdefghij klmnopqrstuvwxyz") for _ in range(4096))
    num_keys = max(rows // 20, 1)
    num_texts = int(rows * 0.7)
    per_shard = rows // shards
    for shard in range(shards):
        ids = range(shard * per_shard, (shard + 1) * per_shard)
        keys = [f"key-{int(num_keys * rng.random() ** 3):07d}" for _ in ids]
        texts = []
        for _ in ids:
            text_id = rng.randrange(num_texts)
            start = text_id % 3000
            texts.append(f"{text_id:09d} {filler[start : start + 250 + text_id % 100]}")
        table = pa.table({"id": pa.array(ids, pa.int64()), "key": keys, "text": texts})
        pq.write_table(table, os.path.join(directory, f"part-{shard:05d}.parquet"), row_group_size=64 * 1024)
    return sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))


def measure(op: str, inputs: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-c", CHILD, op, inputs, str(workers), out], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600_000, help="rows at 1x")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as root:
        for scale in (1, 4):
            inputs = os.path.join(root, f"x{scale}")
            os.makedirs(inputs)
            size = generate(inputs, args.rows * scale, args.shards, seed=scale)
            print(f"{scale}x: {args.rows * scale:,} rows in {args.shards} files, {size / 1e6:.0f} MB on disk", flush=True)
            for op in ("group_by", "dedup"):
                results[op, scale] = measure(op, inputs, args.workers)
    print(f"\n{'op':>9} {'scale':>5} {'rows out':>10} {'seconds':>8} {'worker peak MB':>15} {'files':>6} {'largest group':>14}")
    for (op, scale), run in results.items():
        group = f"{run['largest_group']:,}" if run["largest_group"] else "-"
        print(f"{op:>9} {scale:>4}x {run['rows_out']:>10,} {run['seconds']:>8.1f} {run['worker_mb']:>15.0f} {run['files']:>6} {group:>14}")
    for op in ("group_by", "dedup"):
        ratio = results[op, 4]["worker_mb"] / results[op, 1]["worker_mb"]
        print(f"{op}: worker RSS 4x/1x = {ratio:.2f} (goal <= 1.30)")


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"({time.time() - started:.0f}s, peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
