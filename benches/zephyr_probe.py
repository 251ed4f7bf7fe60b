"""Probe of the reference Zephyr (PyPI ``marin-zephyr``) on a tiny input.

Run with the reference environment, not the project venv::

    python3 -m venv /work/zephyr-venv && /work/zephyr-venv/bin/pip install marin-zephyr
    /work/zephyr-venv/bin/python benches/zephyr_probe.py [--corpus DIR] [--workers 2] [--subprocess] [--verbose]

It generates the ``tiny`` corpus with benches/corpus.py (needs only pyarrow, which
marin-zephyr pulls in) unless --corpus points at one, then runs, timing each:
a trivial map, from_files().load_jsonl(), write_parquet, group_by, deduplicate,
and sorted_merge_join, printing a short result for each.

Findings with marin-zephyr 0.2.20.dev202606180959 (the only version PyPI serves
here) are recorded in benches/README.md.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _quiet() -> None:
    # Zephyr's shard loop calls rigging.configure_logging(INFO) on the root logger
    # for every shard, so quieten the package loggers themselves.
    for name in ("zephyr", "fray", "iris", "rigging", "finelog"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", help="existing corpus dir (default: generate tiny in a temp dir)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--subprocess", action="store_true",
                    help="use SubprocessRunner (one python per shard) instead of the local default InlineRunner")
    ap.add_argument("--verbose", action="store_true", help="keep Zephyr's INFO logs")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    import zephyr
    from zephyr import Dataset, ZephyrContext, ZephyrExecutionResult
    import pyarrow.parquet as pq
    t_import = time.perf_counter() - t
    if not args.verbose:
        _quiet()

    try:
        from importlib.metadata import version
        zver = version("marin-zephyr")
    except Exception:  # pragma: no cover
        zver = "?"
    print(f"marin-zephyr {zver} from {os.path.dirname(zephyr.__file__)}; import {t_import:.2f}s")

    work = tempfile.mkdtemp(prefix="zephyr-probe-")
    try:
        corpus = args.corpus
        if corpus is None:
            sys.path.insert(0, HERE)
            from corpus import generate
            corpus = os.path.join(work, "corpus")
            info = generate(corpus, "tiny")
            print(f"tiny corpus: {info['n_docs']} docs, {info['n_unique_texts']} unique texts, "
                  f"{info['n_attribute_matches']} attribute rows matching a doc")

        kwargs = dict(max_workers=args.workers, chunk_storage_prefix=os.path.join(work, "chunks"))
        if args.subprocess:
            from zephyr.runners import SubprocessRunner
            kwargs["stage_runner_factory"] = lambda n: SubprocessRunner(num_workers=n)
        t = time.perf_counter()
        ctx = ZephyrContext(**kwargs)  # a plain dataclass: not a context manager
        print(f"ZephyrContext({', '.join(f'{k}=...' for k in kwargs)}) -> client={type(ctx.client).__name__}, "
              f"max_workers={ctx.max_workers}, has __enter__: {hasattr(ctx, '__enter__')}, "
              f"{time.perf_counter() - t:.3f}s")

        def run(label: str, ds):
            t0 = time.perf_counter()
            res = ctx.execute(ds)
            dt = time.perf_counter() - t0
            assert isinstance(res, ZephyrExecutionResult), type(res)
            print(f"[{dt:6.2f}s] {label}: {len(res.results)} results")
            return res.results

        try:
            # 1. trivial map
            r = run("from_list([1,2,3]).map(x*2)", Dataset.from_list([1, 2, 3]).map(lambda x: x * 2))
            print("   ->", r)
            r = run("same again (warm)", Dataset.from_list([1, 2, 3]).map(lambda x: x * 2))

            # 2. load_jsonl of gzip shards
            docs_glob = os.path.join(corpus, "docs", "*.jsonl.gz")
            r = run("from_files(docs).load_jsonl().count()", Dataset.from_files(docs_glob).load_jsonl().count())
            print("   ->", r)
            r = run("from_files(docs).load_jsonl().take_per_shard(1)",
                    Dataset.from_files(docs_glob).load_jsonl().take_per_shard(1))
            print("   ->", [{k: (v[:40] + "...") if isinstance(v, str) and len(v) > 40 else v for k, v in d.items()}
                             for d in r])

            # 3. write_parquet: results are the written paths
            out = os.path.join(work, "out")
            r = run("load_jsonl().filter(score>0.5).write_parquet(...)",
                    Dataset.from_files(docs_glob).load_jsonl()
                    .filter(lambda d: d["score"] > 0.5)
                    .write_parquet(os.path.join(out, "docs-{shard:05d}.parquet")))
            print("   ->", r)
            tab = pq.read_table(r)
            print(f"   -> read back {tab.num_rows} rows, schema {tab.schema.names} "
                  f"{[str(f.type) for f in tab.schema]}")

            # 4. group_by: count per lang
            r = run("group_by(lang, reducer=count)",
                    Dataset.from_files(docs_glob).load_jsonl().group_by(
                        key=lambda d: d["lang"],
                        reducer=lambda k, items: {"lang": k, "n": sum(1 for _ in items)}))
            print("   ->", sorted(r, key=lambda x: -x["n"]))

            # 5. deduplicate on exact text
            r = run("deduplicate(key=text).count()",
                    Dataset.from_files(docs_glob).load_jsonl().deduplicate(key=lambda d: d["text"]).count())
            print("   ->", r)

            # 6. sorted_merge_join docs x attributes on id (both co-partitioned via group_by)
            attrs_glob = os.path.join(corpus, "attributes", "*.parquet")
            n = 4

            def keep_first(k, items):
                return next(iter(items))

            docs = Dataset.from_files(docs_glob).load_jsonl().map(
                lambda d: {"id": d["id"], "lang": d["lang"], "score": d["score"]}).group_by(
                key=lambda d: d["id"], reducer=keep_first, num_output_shards=n)
            attrs = Dataset.from_files(attrs_glob).load_parquet().group_by(
                key=lambda d: d["id"], reducer=keep_first, num_output_shards=n)
            r = run("group_by(id) x2 + sorted_merge_join(inner)",
                    docs.sorted_merge_join(attrs, left_key=lambda d: d["id"], right_key=lambda d: d["id"]))
            print("   -> first", sorted(r, key=lambda d: d["id"])[:2])
            r = run("sorted_merge_join(how=left, combiner)",
                    docs.sorted_merge_join(attrs, left_key=lambda d: d["id"], right_key=lambda d: d["id"],
                                           combiner=lambda left, right: {**left, "quality": right and right["quality"]},
                                           how="left").count())
            print("   ->", r)
            # The corpus files are already sorted by id and co-partitioned (doc shard k and
            # attribute shard k cover the same id range), so they can be joined directly:
            try:
                r = run("sorted_merge_join on the raw co-partitioned files",
                        Dataset.from_files(docs_glob).load_jsonl().sorted_merge_join(
                            Dataset.from_files(attrs_glob).load_parquet(),
                            left_key=lambda d: d["id"], right_key=lambda d: d["id"]).count())
                print("   ->", r)
            except Exception as e:  # noqa: BLE001
                print(f"   -> raises {type(e).__name__}: {str(e)[:200]}")
            # ... but mismatched shard counts are rejected:
            try:
                run("sorted_merge_join with 2 vs 1 shards",
                    Dataset.from_files(docs_glob).load_jsonl().sorted_merge_join(
                        Dataset.from_files(attrs_glob).load_parquet().reshard(1),
                        left_key=lambda d: d["id"], right_key=lambda d: d["id"]).count())
            except Exception as e:  # noqa: BLE001
                print(f"   -> raises {type(e).__name__}: {str(e)[:200]}")
        finally:
            ctx.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    leftovers = glob.glob(os.path.join(work, "*"))
    assert not leftovers
    return 0


if __name__ == "__main__":
    sys.exit(main())
