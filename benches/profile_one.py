"""cProfile of one columnar workload in one process (sync backend) on the first 4 medium files:
where the time goes when there is no second process to hide it.

    .venv/bin/python benches/profile_one.py W3|W6|W8 [--corpus benches/data/medium] [--top 25]

The workload runs once to warm up (imports, the OS's file cache), then under the profiler;
prints the CPU seconds of the profiled run and the functions by own time, then by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time

SECONDS_PER_YEAR = 31_557_600


def workload(name: str, corpus: str):
    import polars as pl

    from zephyr_arrow import Dataset

    docs = Dataset.from_files(os.path.join(corpus, "docs", "docs-0000[0-3].jsonl.gz")).load_jsonl()
    if name == "W3":
        return docs.deduplicate("text").count()
    if name == "W6":
        attrs = Dataset.from_files(os.path.join(corpus, "attributes", "attributes-0000[0-3].parquet")).load_parquet()
        return docs.select("id", "score").join(attrs, on="id").filter((pl.col("quality") > 0.5) & ~pl.col("toxic"))
    if name == "W8":
        return docs.with_columns(year=pl.col("ts") // SECONDS_PER_YEAR + 1970).aggregate(
            ["lang", "year"], pl.len().alias("n"), pl.col("score").mean().alias("mean")
        )
    raise SystemExit(f"unknown workload {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["W3", "W6", "W8"])
    parser.add_argument("--corpus", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "medium"))
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    from zephyr_arrow import ZephyrContext

    pipeline = workload(args.workload, args.corpus)
    with tempfile.TemporaryDirectory() as prefix, ZephyrContext(backend="sync", chunk_storage_prefix=prefix, progress=False) as ctx:
        ctx.execute(pipeline)
        profile = cProfile.Profile()
        started = time.process_time()
        profile.runcall(ctx.execute, pipeline)
        print(f"{args.workload}: {time.process_time() - started:.2f} CPU s")
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
