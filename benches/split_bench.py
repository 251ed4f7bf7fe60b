"""One big file, a row-function map, on 1 and 2 workers: how much cutting the file into pieces gains.

    .venv/bin/python benches/split_bench.py --file /tmp/big/docs.jsonl --file /tmp/big/docs.parquet [--repeat 3]

Each (file, output, workers) runs in a fresh process; rounds interleave them so that a busy
machine slows every configuration alike. Outputs: ``chunks`` (the map's output left as chunks:
a shard's piece chunks are listed in order in its refs) and ``write`` (``write_parquet`` of one
file per shard: the pieces' chunks are written into it in a second step). Each output is
checked against the 1-worker run's: row count and sum of n_words, and for ``write`` how often
an id does not ascend in the file (once: where the second copy of the corpus starts, see ``make``). Make the files with --make DIR (2 GB of JSONL from benches/data/medium twice, and
the same rows as an uncompressed Parquet file in row groups of 50,000 rows, about 61 MB).
Between runs it measures what a second process gains on the machine at all (``ceiling``):
on a machine other work keeps busy, that, not 2.0, bounds the speedup.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def add_n_words(doc: dict) -> dict:
    return {**doc, "n_words": len(doc["text"].split())}


def run_one(path: str, output: str, workers: int, out: str) -> dict:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from zephyr_arrow import Dataset, ZephyrContext

    started = time.perf_counter()
    docs = Dataset.from_files(path).load_file().map(add_n_words)
    with ZephyrContext(backend="local", max_workers=workers, chunk_storage_prefix=os.path.join(out, "chunks"), progress=False) as ctx:
        if output == "write":
            ctx.execute(docs.write_parquet(os.path.join(out, "w", "part-{shard:05d}.parquet")))
            table = pq.read_table(os.path.join(out, "w", "part-00000.parquet"), columns=["id", "n_words"])
            ids = table.column("id")
            answer = [table.num_rows, pc.sum(table.column("n_words")).as_py(), pc.sum(pc.less_equal(ids[1:], ids[:-1])).as_py()]
        else:
            refs = ctx.execute(docs)
            answer = list(refs.sql("select count(*), sum(n_words) from data").fetchall()[0])
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "answer": answer}


def ceiling() -> float:
    """What 2 processes gain over 1 on this machine right now: 2 x (one process's time for a
    pure-Python loop) / (the time for two processes running it at once); 2.0 on 2 idle cores."""
    command = [sys.executable, "-c", "sum(range(3 * 10**7))"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    one = time.perf_counter() - started
    started = time.perf_counter()
    for process in [subprocess.Popen(command) for _ in range(2)]:
        process.wait()
    return 2 * one / (time.perf_counter() - started)


def make(directory: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    jsonl, parquet = os.path.join(directory, "docs.jsonl"), os.path.join(directory, "docs.parquet")
    with open(jsonl, "wb") as out:
        for _ in range(2):
            for source in sorted(glob.glob(os.path.join(HERE, "data", "medium", "docs", "*.jsonl.gz"))):
                with gzip.open(source, "rb") as lines:
                    shutil.copyfileobj(lines, out)
    from zephyr_arrow import io

    rows = 50_000
    writer, pending = None, []
    for table in io.read_file(jsonl):
        writer = writer or pq.ParquetWriter(parquet, table.schema, compression="none")
        pending.append(table)
        if sum(t.num_rows for t in pending) >= rows:
            combined = pa.concat_tables(pending)
            writer.write_table(combined.slice(0, rows), row_group_size=rows)
            pending = [combined.slice(rows)]
    writer.write_table(pa.concat_tables(pending), row_group_size=rows)
    writer.close()
    return [jsonl, parquet]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", action="append", default=[])
    parser.add_argument("--make", help="write the two 2 GB files to this directory first")
    parser.add_argument("--outputs", default="chunks,write")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", nargs=4, metavar=("FILE", "OUTPUT", "WORKERS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        path, output, workers, out = args.one
        print(json.dumps(run_one(path, output, int(workers), out)))
        return
    files = args.file + (make(args.make) if args.make else [])
    configs = [(path, output, workers) for path in files for output in args.outputs.split(",") for workers in (1, 2)]
    results: dict[tuple, list[dict]] = {}
    ceilings: list[float] = []  # measured between runs: how busy the machine was
    for repeat in range(args.repeat):
        for config in configs[repeat % len(configs) :] + configs[: repeat % len(configs)]:
            with tempfile.TemporaryDirectory(prefix="split-bench-", dir="/tmp") as out:
                process = subprocess.run([sys.executable, __file__, "--one", *map(str, config), out], capture_output=True, text=True)
            if process.returncode:
                sys.exit(f"{config}: {process.stderr.strip().splitlines()[-1]}")
            result = json.loads(process.stdout.strip().splitlines()[-1])
            results.setdefault(config, []).append(result)
            print(f"  [{repeat + 1}/{args.repeat}] {config}: {result['seconds']:.2f}s {result['answer']}", file=sys.stderr)
            ceilings.append(ceiling())
    print(f"2 processes against 1 on this machine meanwhile (a CPU-bound loop): median {statistics.median(ceilings):.2f}x, "
          f"range {min(ceilings):.2f}-{max(ceilings):.2f}x (2.00x on 2 idle cores)\n")
    print("| file | output | 1 worker s | 2 workers s | speedup | same answer |")
    print("|---|---|---|---|---|---|")
    for path in files:
        for output in args.outputs.split(","):
            one, two = (results[(path, output, workers)] for workers in (1, 2))
            median_one, median_two = (statistics.median(r["seconds"] for r in runs) for runs in (one, two))
            same = all(r["answer"] == one[0]["answer"] for r in one + two)
            print(f"| {os.path.basename(path)} | {output} | {median_one:.2f} | {median_two:.2f} | {median_one / median_two:.2f}x | {same} |")


if __name__ == "__main__":
    main()
