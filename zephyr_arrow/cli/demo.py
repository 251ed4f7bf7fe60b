"""The demo behind ``zephyr-arrow demo``: a real pipeline on the data shipped in ``zephyr_arrow/datasets/``.

Two inputs, three outputs, each step a Dataset method a Zephyr user knows:

    flights (nycflights13, Jan + Jul 2013)
      load_parquet -> reshard(4) -> filter(arr_delay is not null) -> map(tag_late)
        -> aggregate(by carrier) -> join(airlines.csv, on carrier)        -> carriers/*.parquet
        -> group_by(dest, summarise_destination) -> join(airports.csv, how=left) -> destinations/*.parquet
    passages (King James Bible)
      load_parquet -> reshard(4) -> map(count_words) -> deduplicate(book, text)
        -> group_by(book, summarise_book)                                 -> books/*.parquet

Then it answers five questions over the outputs with DuckDB SQL and again with Polars,
checks that both give the same rows, and prints where the output is. Read this file
top to bottom as an example of the API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from zephyr_arrow import Dataset, ShardRefs, ZephyrContext, counters, read_parquet
from zephyr_arrow.cli.text_table import format_table
from zephyr_arrow.errors import CommandError, UsageError
from zephyr_arrow.planner import plan

NUM_SHARDS = 4
LATE_MINUTES = 15
OUTPUTS = ("carriers", "destinations", "books")


# Row functions: plain Python on plain dicts, as in Zephyr. ----------------------------------


def tag_late(flight: dict[str, Any]) -> dict[str, Any]:
    late = flight["arr_delay"] > LATE_MINUTES
    counters.increment("flights/late", int(late))
    return {**flight, "late": late}


def summarise_destination(dest: str, flights: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """One destination's flights arrive as a stream; only running totals are kept."""
    num_flights = num_late = 0
    carriers: set[str] = set()
    for flight in flights:
        num_flights += 1
        num_late += flight["late"]
        carriers.add(flight["carrier"])
    return {"dest": dest, "flights": num_flights, "late": num_late, "carriers": len(carriers)}


def count_words(passage: dict[str, Any]) -> dict[str, Any]:
    counters.increment("passages/read")
    return {**passage, "words": len(passage["text"].split())}


def summarise_book(book: str, passages: Iterator[dict[str, Any]]) -> dict[str, Any]:
    first = next(passages)
    num_passages, num_words = 1, first["words"]
    for passage in passages:
        num_passages += 1
        num_words += passage["words"]
    return {"book_id": first["book_id"], "book": book, "testament": first["testament"],
            "passages": num_passages, "words": num_words}


def airline_names(airline: dict[str, Any]) -> dict[str, Any]:
    return {"carrier": airline["carrier"], "airline": airline["name"]}


def airport_names(airport: dict[str, Any]) -> dict[str, Any]:
    return {"dest": airport["faa"], "airport": airport["name"]}


# The pipelines. -------------------------------------------------------------------------------


def cleaned_flights(data: Path) -> Dataset:
    return (
        Dataset.from_files(str(data / "nycflights13" / "flights_2013_01_07.parquet"))
        .load_parquet(columns=["month", "carrier", "origin", "dest", "arr_delay"])
        .reshard(NUM_SHARDS)
        .filter(pl.col("arr_delay").is_not_null())  # columnar: drops cancelled and diverted flights
        .map(tag_late)
    )


def outputs(data: Path, out: Path, flights: ShardRefs) -> dict[str, Dataset]:
    """The three outputs; two start from the cleaned flights, already run and held as ShardRefs."""
    source = Dataset.from_refs(flights)
    airlines = Dataset.from_files(str(data / "nycflights13" / "airlines.csv")).load_csv().map(airline_names)
    airports = Dataset.from_files(str(data / "nycflights13" / "airports.csv")).load_csv().map(airport_names)
    carriers = (
        source.aggregate(
            "carrier",
            pl.len().alias("flights"),
            pl.col("late").sum().alias("late"),
            pl.col("arr_delay").mean().alias("avg_arr_delay"),
        )
        .join(airlines, on="carrier")
        .write_parquet(str(out / "carriers" / "part-{shard:05d}.parquet"))
    )
    destinations = (
        source.group_by("dest", summarise_destination)
        .join(airports, on="dest", how="left")  # four Caribbean airports are not in airports.csv
        .write_parquet(str(out / "destinations" / "part-{shard:05d}.parquet"))
    )
    books = (
        Dataset.from_files(str(data / "kjv" / "kjv_passages.parquet"))
        .load_parquet(columns=["testament", "book_id", "book", "text"])
        .reshard(NUM_SHARDS)
        .map(count_words)
        .deduplicate(["book", "text"])  # a passage repeated within a book counts once
        .group_by("book", summarise_book)
        .write_parquet(str(out / "books" / "part-{shard:05d}.parquet"))
    )
    return {"carriers": carriers, "destinations": destinations, "books": books}


# Questions over the output: DuckDB SQL, and the same through Polars. ----------------------------

QUESTIONS = [
    (
        "carriers",
        f"Which airlines (of those with 1,000 flights or more) most often arrived over {LATE_MINUTES} minutes late?",
        "select airline, flights, round(100.0 * late / flights, 1) as pct_late, round(avg_arr_delay, 1) as avg_delay "
        "from data where flights >= 1000 order by pct_late desc, airline limit 5",
        lambda lf: lf.filter(pl.col("flights") >= 1000).select(
            "airline",
            "flights",
            (100.0 * pl.col("late") / pl.col("flights")).round(1).alias("pct_late"),
            pl.col("avg_arr_delay").round(1).alias("avg_delay"),
        ).sort(["pct_late", "airline"], descending=[True, False]).head(5),
    ),
    (
        "destinations",
        "Busiest destinations (a left join: airports.csv lacks some, so their name is NULL)",
        "select dest, airport, flights, late, carriers from data order by flights desc, dest limit 6",
        lambda lf: lf.select("dest", "airport", "flights", "late", "carriers")
        .sort(["flights", "dest"], descending=[True, False])
        .head(6),
    ),
    (
        "destinations",
        "Destinations with no row in airports.csv",
        "select dest, flights from data where airport is null order by dest",
        lambda lf: lf.filter(pl.col("airport").is_null()).select("dest", "flights").sort("dest"),
    ),
    (
        "books",
        "Longest books of the King James Bible, repeated passages counted once",
        "select book, testament, passages, words from data order by words desc, book limit 5",
        lambda lf: lf.select("book", "testament", "passages", "words")
        .sort(["words", "book"], descending=[True, False])
        .head(5),
    ),
    (
        "books",
        "Words per testament",
        "select testament, count(*) as books, sum(passages) as passages, sum(words) as words "
        "from data group by testament order by testament",
        lambda lf: lf.group_by("testament")
        .agg(pl.len().alias("books"), pl.col("passages").sum(), pl.col("words").sum())
        .sort("testament"),
    ),
]


def answer(index: int, out: Path) -> None:
    name, question, sql, polars_query = QUESTIONS[index]
    refs = read_parquet(str(out / name / "*.parquet"))
    relation = refs.sql(sql)
    columns, rows = relation.columns, relation.fetchall()
    polars_rows = [tuple(r) for r in polars_query(refs.to_polars()).collect().iter_rows()]
    print(f"\nQ{index + 1}. {question}")
    print(f"    zephyr-arrow sql {_shown(out / name)} \"{sql}\"")
    print(format_table(columns, rows))
    if polars_rows != [tuple(r) for r in rows]:
        print(format_table(columns, polars_rows))
        raise CommandError(f"Q{index + 1}: Polars and DuckDB disagree over {_shown(out / name)} (tables above)")
    print(f"Polars over refs.to_polars() gives the same {len(rows)} rows.")


# Running it. ----------------------------------------------------------------------------------


def default_data_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "datasets"


def run(backend: str = "local", out: str = "zephyr-arrow-demo", data: str | None = None) -> None:
    started = time.perf_counter()
    data_dir = Path(data) if data is not None else default_data_dir()
    if not (data_dir / "nycflights13" / "flights_2013_01_07.parquet").is_file():
        raise UsageError(
            f"no demo data in {data_dir}: --data DIR must be laid out like zephyr_arrow/datasets/ "
            "(nycflights13/ and kjv/); without --data the demo reads the copy installed with the package"
        )
    out_dir = Path(out).resolve()
    _clear_previous_output(out_dir)
    print(f"zephyr-arrow demo: {backend} backend, reading {data_dir}")
    with ZephyrContext(backend=backend) as ctx:
        flights = _execute(ctx, "flights", cleaned_flights(data_dir))
        for name, dataset in outputs(data_dir, out_dir, flights).items():
            _execute(ctx, name, dataset)
    for index in range(len(QUESTIONS)):
        answer(index, out_dir)
    print(f"\nOutput: {_shown(out_dir)}/")
    for name in OUTPUTS:
        refs = read_parquet(str(out_dir / name / "*.parquet"))
        print(f"  {name + '/':14} {refs.num_rows:5,} rows in {refs.num_shards} Parquet files")
    print("Look further:")
    print(f"  zephyr-arrow inspect {_shown(out_dir / 'books')}")
    print(f"  zephyr-arrow sql {_shown(out_dir / 'carriers')} \"select * from data order by flights desc\"")
    print(f"The pipeline is {Path(__file__).resolve()}. Done in {time.perf_counter() - started:.1f} s.")


def _execute(ctx: ZephyrContext, name: str, dataset: Dataset) -> ShardRefs:
    started = time.perf_counter()
    refs = ctx.execute(dataset)
    seconds = time.perf_counter() - started
    if name in OUTPUTS:  # a writer's output rows are the paths it wrote
        paths = refs.to_pylist()
        done = f"wrote {read_parquet(paths).num_rows:,} rows to {len(paths)} Parquet files"
    else:
        done = f"{refs.num_rows:,} rows in {refs.num_shards} shards, kept as ShardRefs (chunk files, not loaded)"
    print(f"\n{name}: {done} in {seconds:.2f} s")
    for line in plan(dataset).explain().splitlines():
        print(f"  {line}")
    user_counters = {k: v for k, v in sorted(refs.counters.items()) if not k.startswith("zephyr/")}
    if user_counters:
        print("  counters: " + ", ".join(f"{k}={v:,}" for k, v in user_counters.items()))
    return refs


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter to read and paste)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _clear_previous_output(out_dir: Path) -> None:
    """Remove the files a previous demo run wrote (only those), so no stale shard lingers."""
    for name in OUTPUTS:
        for path in (out_dir / name).glob("part-*.parquet"):
            path.unlink()
