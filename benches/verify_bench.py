"""What checking chunks' page checksums costs the views (store/verify.py), against the query itself.

    .venv/bin/python benches/verify_bench.py [--corpus benches/data/medium] [--repeat 5]

Two outputs of chunks: the corpus's 16 attribute files, and its first 8 document files (about
half a GB of chunks). For each, interleaved, medians of ``--repeat`` (CPU seconds of this
process, all threads, and wall seconds):

- ``duckdb alone``: DuckDB's own ``read_parquet`` of the chunk files, no check;
- ``walk``: the page walk of ``verify`` (every file, threads), the way the views check;
- ``pyarrow read``: every chunk read and decoded with ``page_checksum_verification`` (threads);
- ``dataset scan +crc`` / ``dataset scan``: a pyarrow dataset scanned with and without
  ``ParquetFragmentScanOptions(page_checksum_verification=True)``;
- ``refs.sql`` unchecked / first / again: the view without the check (each file's existence
  only, as before it), the view as a user calls it (checking, then querying), and the same
  query once the files are remembered as checked.

The files are in the page cache (just written), as chunks usually are when they are read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pyarrow.dataset as ds

from zephyr_arrow import Dataset, ZephyrContext
from zephyr_arrow.store import verify, views

QUERIES = {
    "count": "select count(*) from data",
    "scan": "select count(*), sum(length({text})), max({number}) from data",
}


def timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(refs, text: str, number: str, repeat: int) -> dict[str, list[tuple[float, float]]]:
    paths = sorted({chunk.path for chunk in refs.chunks})
    file_list = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    cases = {}
    for name, query in QUERIES.items():
        sql = query.format(text=text, number=number)
        cases[f"duckdb alone, {name}"] = lambda sql=sql: duckdb.sql(sql.replace("data", f"read_parquet({file_list})")).fetchall()

        def first(sql=sql):
            verify._checked.clear()
            refs.sql(sql).fetchall()

        def unchecked(sql=sql):  # the view as it was before the check: each file's existence only
            real = views.verify
            views.verify = lambda chunks: [os.path.exists(chunk.path) for chunk in chunks]
            try:
                refs.sql(sql).fetchall()
            finally:
                views.verify = real

        cases[f"refs.sql unchecked, {name}"] = unchecked
        cases[f"refs.sql first, {name}"] = first
        cases[f"refs.sql again, {name}"] = lambda sql=sql: refs.sql(sql).fetchall()

    def walk():
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda p: verify._problem(p, [c for c in refs.chunks if c.path == p]), paths))

    def pyarrow_read():
        def read(chunk):
            for _ in chunk.iter_batches():
                pass

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(read, refs.chunks))

    checked = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True))
    cases["walk"] = walk
    cases["pyarrow read"] = pyarrow_read
    cases["dataset scan +crc"] = lambda: sum(b.num_rows for b in ds.dataset(paths, format=checked).to_batches())
    cases["dataset scan"] = lambda: sum(b.num_rows for b in ds.dataset(paths, format="parquet").to_batches())
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for name, case in cases.items():  # warm up: imports, page cache
        case()
    for _ in range(repeat):
        for name, case in cases.items():
            results[name].append(timed(case))
    return results


def report(title: str, refs, results) -> None:
    size = sum(os.path.getsize(p) for p in {c.path for c in refs.chunks})
    print(f"\n{title}: {len({c.path for c in refs.chunks})} chunk files, {size / 1e6:.0f} MB, {refs.num_rows:,} rows")
    print(f"{'case':<28} {'cpu s':>8} {'wall s':>8}")
    for name, runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"{name:<28} {cpu:8.3f} {wall:8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default=os.path.join(os.path.dirname(__file__), "data", "medium"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as prefix, ZephyrContext(max_workers=2, chunk_storage_prefix=prefix, progress=False) as ctx:
        attributes = ctx.execute(Dataset.from_files(f"{args.corpus}/attributes/*.parquet").load_parquet().select("id", "quality", "toxic", "source"))
        report("attributes", attributes, measure(attributes, "source", "quality", args.repeat))
        docs = ctx.execute(Dataset.from_files(f"{args.corpus}/docs/docs-0000[0-7].jsonl.gz").load_jsonl().select("id", "lang", "text"))
        report("documents", docs, measure(docs, "text", "id", args.repeat))


if __name__ == "__main__":
    main()
