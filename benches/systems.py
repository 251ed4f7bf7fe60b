"""The benchmark workloads, written idiomatically for each system.

Run one (system, workload) in this process and print a JSON line with the answer and
the in-process seconds:

    python benches/systems.py SYSTEM WORKLOAD CORPUS_DIR OUT_DIR

Systems: za_rows (zephyr_arrow with row functions, what a Zephyr user writes),
za_columnar (zephyr_arrow with Polars expressions), zephyr (marin-zephyr, run with its
own venv), python (one process: json + gzip + pyarrow), polars, duckdb.

Workloads (answers are compared across systems by benches/run.py):
  W1 keep score > 0.5 and lang == "en", add n_words, write Parquet -> (rows, sum n_words)
  W2 group by url domain -> count and mean score               -> digest over domains
  W3 exact dedup on text                                       -> surviving rows
  W4 join docs with attributes on id, keep quality > 0.5 and not toxic -> (rows, sum score)
  W5 read W1's output back, count rows with n_words > 100       -> count
Columnar only (za_columnar, polars, duckdb), written as a newcomer writes them, without hints:
  W6 W4 as a hash join that shuffles both sides (no broadcast)  -> (rows, sum score)
  W7 exact dedup on text, the surviving documents written        -> rows written
  W8 group by a derived key (lang, year of ts): count, mean score -> digest over groups
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time

WORKERS = 2


def domain(url: str) -> str:
    return url.split("/", 3)[2]


def keep_w1(doc: dict) -> bool:
    return doc["score"] > 0.5 and doc["lang"] == "en"


def add_n_words(doc: dict) -> dict:
    return {**doc, "n_words": len(doc["text"].split())}


def reduce_domain(key: str, rows) -> dict:
    count = total = 0
    for row in rows:
        count += 1
        total += row["score"]
    return {"domain": key, "n": count, "mean": total / count}


def docs_glob(corpus: str) -> str:
    return os.path.join(corpus, "docs", "*.jsonl.gz")


def attrs_glob(corpus: str) -> str:
    return os.path.join(corpus, "attributes", "*.parquet")


def w1_answer(out: str) -> list:
    import pyarrow.dataset as ds

    table = ds.dataset(out, format="parquet").to_table(columns=["n_words"])
    return [table.num_rows, int(sum(v for v in table.column("n_words").to_pylist()))]


def w2_digest(rows: list[tuple[str, int, float]]) -> list:
    rows = sorted(rows)
    return [len(rows), sum(r[1] for r in rows), round(sum(r[2] * r[1] for r in rows), 2), rows[0][0], rows[0][1]]


def w4_answer(count: int, total: float) -> list:
    return [int(count), round(float(total), 2)]


def w7_answer(out: str) -> int:
    import pyarrow.dataset as ds

    return ds.dataset(os.path.join(out, "w7"), format="parquet").count_rows()


def w8_digest(rows: list[tuple[str, int, int, float]]) -> list:
    rows = sorted(rows)
    return [len(rows), sum(r[2] for r in rows), round(sum(r[3] * r[2] for r in rows), 2), list(rows[0][:3])]


SECONDS_PER_YEAR = 365 * 24 * 3600  # the year of ts, derived without a calendar (same in every system)


# zephyr_arrow ---------------------------------------------------------------------------


def za_rows(workload: str, corpus: str, out: str):
    if workload == "W5":  # a process that only reads an output imports only what reading needs
        from zephyr_arrow import read_parquet

        return sum(1 for row in read_parquet(os.path.join(out, "w1", "*.parquet")).iter_rows() if row["n_words"] > 100)
    from zephyr_arrow import Dataset, ZephyrContext

    docs = Dataset.from_files(docs_glob(corpus)).load_jsonl()
    with ZephyrContext(backend="local", max_workers=WORKERS, chunk_storage_prefix=os.path.join(out, "chunks")) as ctx:
        if workload == "W1":
            ctx.execute(docs.filter(keep_w1).map(add_n_words).write_parquet(os.path.join(out, "w1", "part-{shard:05d}.parquet")))
            return w1_answer(os.path.join(out, "w1"))
        if workload == "W2":
            refs = ctx.execute(docs.group_by(lambda d: domain(d["url"]), reducer=reduce_domain))
            return w2_digest([(r["domain"], r["n"], r["mean"]) for r in refs.iter_rows()])
        if workload == "W3":  # Zephyr's W3 exactly: the surviving rows are counted, not written
            return ctx.execute(docs.deduplicate(lambda d: d["text"]).count()).results[0]
        if workload == "W4":
            attrs = Dataset.from_files(attrs_glob(corpus)).load_parquet()
            # The same row functions as Zephyr's W4: keep id and score, then join (600k attribute
            # rows: small enough to broadcast to every docs task).
            docs = docs.map(lambda d: {"id": d["id"], "score": d["score"]})
            joined = docs.join(attrs, on="id", broadcast=True).filter(lambda r: r["quality"] > 0.5 and not r["toxic"])
            refs = ctx.execute(joined.map(lambda r: {"score": r["score"]}))
            return w4_answer(*refs.sql("select count(*), coalesce(sum(score), 0) from data").fetchall()[0])
    raise KeyError(workload)


def za_columnar(workload: str, corpus: str, out: str):
    if workload == "W5":
        from zephyr_arrow import read_parquet

        return read_parquet(os.path.join(out, "w1", "*.parquet")).sql("select count(*) from data where n_words > 100").fetchall()[0][0]
    import polars as pl

    from zephyr_arrow import Dataset, ZephyrContext

    docs = Dataset.from_files(docs_glob(corpus)).load_jsonl()
    with ZephyrContext(backend="local", max_workers=WORKERS, chunk_storage_prefix=os.path.join(out, "chunks")) as ctx:
        if workload == "W1":
            ds = docs.filter((pl.col("score") > 0.5) & (pl.col("lang") == "en")).with_columns(
                n_words=pl.col("text").str.split(" ").list.len()
            )
            ctx.execute(ds.write_parquet(os.path.join(out, "w1", "part-{shard:05d}.parquet")))
            return w1_answer(os.path.join(out, "w1"))
        if workload == "W2":
            ds = docs.with_columns(domain=pl.col("url").str.split("/").list.get(2)).aggregate(
                "domain", pl.len().alias("n"), pl.col("score").mean().alias("mean")
            )
            rows = ctx.execute(ds).load().to_pylist()
            return w2_digest([(r["domain"], r["n"], r["mean"]) for r in rows])
        if workload == "W3":
            return ctx.execute(docs.deduplicate("text").count()).results[0]
        if workload == "W4":
            attrs = Dataset.from_files(attrs_glob(corpus)).load_parquet()
            ds = docs.select("id", "score").join(attrs, on="id", broadcast=True).filter((pl.col("quality") > 0.5) & ~pl.col("toxic"))
            return w4_answer(*ctx.execute(ds).sql("select count(*), coalesce(sum(score), 0) from data").fetchall()[0])
        if workload == "W6":
            attrs = Dataset.from_files(attrs_glob(corpus)).load_parquet()
            ds = docs.select("id", "score").join(attrs, on="id").filter((pl.col("quality") > 0.5) & ~pl.col("toxic"))
            return w4_answer(*ctx.execute(ds).sql("select count(*), coalesce(sum(score), 0) from data").fetchall()[0])
        if workload == "W7":
            ctx.execute(docs.deduplicate("text").write_parquet(os.path.join(out, "w7", "part-{shard:05d}.parquet")))
            return w7_answer(out)
        if workload == "W8":
            ds = docs.with_columns(year=pl.col("ts") // SECONDS_PER_YEAR + 1970).aggregate(
                ["lang", "year"], pl.len().alias("n"), pl.col("score").mean().alias("mean")
            )
            return w8_digest(ctx.execute(ds).sql("select lang, year, n, mean from data").fetchall())
    raise KeyError(workload)


# Zephyr itself (run with /work/zephyr-venv/bin/python) ----------------------------------------


def zephyr(workload: str, corpus: str, out: str):
    import logging

    from zephyr import Dataset, ZephyrContext

    for name in ("zephyr", "fray", "iris", "rigging", "finelog"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = ZephyrContext(max_workers=WORKERS, chunk_storage_prefix=os.path.join(out, "chunks"))
    docs = Dataset.from_files(docs_glob(corpus)).load_jsonl()
    try:
        if workload == "W1":
            ctx.execute(docs.filter(keep_w1).map(add_n_words).write_parquet(os.path.join(out, "w1", "part-{shard:05d}.parquet")))
            return w1_answer(os.path.join(out, "w1"))
        if workload == "W2":
            rows = ctx.execute(docs.group_by(lambda d: domain(d["url"]), reducer=reduce_domain)).results
            return w2_digest([(r["domain"], r["n"], r["mean"]) for r in rows])
        if workload == "W3":
            return ctx.execute(docs.deduplicate(lambda d: d["text"]).count()).results[0]
        if workload == "W4":
            def first(key, rows):
                return next(iter(rows))

            left = docs.map(lambda d: {"id": d["id"], "score": d["score"]}).group_by(lambda d: d["id"], reducer=first, num_output_shards=WORKERS * 4)
            right = Dataset.from_files(attrs_glob(corpus)).load_parquet().group_by(lambda d: d["id"], reducer=first, num_output_shards=WORKERS * 4)
            joined = left.sorted_merge_join(right, left_key=lambda d: d["id"], right_key=lambda d: d["id"])
            rows = ctx.execute(joined.filter(lambda r: r["quality"] > 0.5 and not r["toxic"])).results
            return w4_answer(len(rows), sum(r["score"] for r in rows))
        if workload == "W5":
            return ctx.execute(Dataset.from_files(os.path.join(out, "w1", "*.parquet")).load_parquet().filter(lambda r: r["n_words"] > 100).count()).results[0]
    finally:
        ctx.shutdown()
    raise KeyError(workload)


# A plain one-process script -----------------------------------------------------------------


def _json_docs(corpus: str):
    import gzip

    for path in sorted(glob.glob(docs_glob(corpus))):
        with gzip.open(path, "rt") as lines:
            for line in lines:
                yield json.loads(line)


def python(workload: str, corpus: str, out: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if workload == "W1":
        os.makedirs(os.path.join(out, "w1"), exist_ok=True)
        import gzip

        for index, path in enumerate(sorted(glob.glob(docs_glob(corpus)))):
            with gzip.open(path, "rt") as lines:
                rows = [add_n_words(d) for d in map(json.loads, lines) if keep_w1(d)]
            pq.write_table(pa.Table.from_pylist(rows), os.path.join(out, "w1", f"part-{index:05d}.parquet"))
        return w1_answer(os.path.join(out, "w1"))
    if workload == "W2":
        stats: dict[str, list] = {}
        for doc in _json_docs(corpus):
            entry = stats.setdefault(domain(doc["url"]), [0, 0.0])
            entry[0] += 1
            entry[1] += doc["score"]
        return w2_digest([(k, n, total / n) for k, (n, total) in stats.items()])
    if workload == "W3":
        return len({doc["text"] for doc in _json_docs(corpus)})
    if workload == "W4":
        attrs = {}
        for path in sorted(glob.glob(attrs_glob(corpus))):
            for row in pq.read_table(path, columns=["id", "quality", "toxic"]).to_pylist():
                attrs[row["id"]] = row
        count, total = 0, 0.0
        for doc in _json_docs(corpus):
            attr = attrs.get(doc["id"])
            if attr is not None and attr["quality"] > 0.5 and not attr["toxic"]:
                count += 1
                total += doc["score"]
        return w4_answer(count, total)
    if workload == "W5":
        return sum(1 for v in pq.read_table(os.path.join(out, "w1"), columns=["n_words"]).column("n_words").to_pylist() if v > 100)
    raise KeyError(workload)


# Polars and DuckDB directly -------------------------------------------------------------------


def polars(workload: str, corpus: str, out: str):
    import polars as pl

    docs = pl.scan_ndjson(sorted(glob.glob(docs_glob(corpus))))
    if workload == "W1":
        os.makedirs(os.path.join(out, "w1"), exist_ok=True)
        docs.filter((pl.col("score") > 0.5) & (pl.col("lang") == "en")).with_columns(
            n_words=pl.col("text").str.split(" ").list.len()
        ).sink_parquet(os.path.join(out, "w1", "part-00000.parquet"))
        return w1_answer(os.path.join(out, "w1"))
    if workload == "W2":
        rows = (
            docs.group_by(pl.col("url").str.split("/").list.get(2).alias("domain"))
            .agg(pl.len().alias("n"), pl.col("score").mean().alias("mean"))
            .collect()
            .rows()
        )
        return w2_digest(rows)
    if workload == "W3":
        return docs.select(pl.col("text").n_unique()).collect().item()
    if workload == "W4":
        attrs = pl.scan_parquet(attrs_glob(corpus))
        result = (
            docs.select("id", "score").join(attrs, on="id").filter((pl.col("quality") > 0.5) & ~pl.col("toxic"))
            .select(pl.len(), pl.col("score").sum()).collect().row(0)
        )
        return w4_answer(*result)
    if workload == "W5":
        return pl.scan_parquet(os.path.join(out, "w1", "*.parquet")).filter(pl.col("n_words") > 100).select(pl.len()).collect().item()
    if workload == "W6":
        return polars("W4", corpus, out)  # Polars plans its join itself
    if workload == "W7":
        os.makedirs(os.path.join(out, "w7"), exist_ok=True)
        docs.unique(subset=["text"], keep="any").sink_parquet(os.path.join(out, "w7", "part-00000.parquet"))
        return w7_answer(out)
    if workload == "W8":
        rows = (
            docs.group_by("lang", (pl.col("ts") // SECONDS_PER_YEAR + 1970).alias("year"))
            .agg(pl.len().alias("n"), pl.col("score").mean().alias("mean"))
            .collect()
            .rows()
        )
        return w8_digest(rows)
    raise KeyError(workload)


def duckdb(workload: str, corpus: str, out: str):
    import duckdb as db

    docs = f"read_json_auto('{docs_glob(corpus)}', format='newline_delimited')"
    if workload == "W1":
        os.makedirs(os.path.join(out, "w1"), exist_ok=True)
        db.sql(
            f"copy (select *, len(string_split(text, ' ')) as n_words from {docs} where score > 0.5 and lang = 'en') "
            f"to '{os.path.join(out, 'w1', 'part-00000.parquet')}' (format parquet)"
        )
        return w1_answer(os.path.join(out, "w1"))
    if workload == "W2":
        rows = db.sql(f"select split_part(url, '/', 3) as d, count(*), avg(score) from {docs} group by d").fetchall()
        return w2_digest(rows)
    if workload == "W3":
        return db.sql(f"select count(distinct text) from {docs}").fetchall()[0][0]
    if workload == "W4":
        row = db.sql(
            f"select count(*), coalesce(sum(d.score), 0) from {docs} d join read_parquet('{attrs_glob(corpus)}') a "
            "using (id) where a.quality > 0.5 and not a.toxic"
        ).fetchall()[0]
        return w4_answer(*row)
    if workload == "W5":
        return db.sql(f"select count(*) from read_parquet('{os.path.join(out, 'w1', '*.parquet')}') where n_words > 100").fetchall()[0][0]
    if workload == "W6":
        return duckdb("W4", corpus, out)  # DuckDB plans its join itself
    if workload == "W7":
        os.makedirs(os.path.join(out, "w7"), exist_ok=True)
        db.sql(f"copy (select distinct on (text) * from {docs}) to '{os.path.join(out, 'w7', 'part-00000.parquet')}' (format parquet)")
        return w7_answer(out)
    if workload == "W8":
        rows = db.sql(
            f"select lang, ts // {SECONDS_PER_YEAR} + 1970 as year, count(*), avg(score) from {docs} group by lang, year"
        ).fetchall()
        return w8_digest(rows)
    raise KeyError(workload)


SYSTEMS = {"za_rows": za_rows, "za_columnar": za_columnar, "zephyr": zephyr, "python": python, "polars": polars, "duckdb": duckdb}


if __name__ == "__main__":
    system, workload, corpus, out = sys.argv[1:5]
    started = time.perf_counter()
    answer = SYSTEMS[system](workload, corpus, out)
    print(json.dumps({"answer": answer, "seconds": time.perf_counter() - started}))
