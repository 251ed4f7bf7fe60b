"""What reading the corpus's JSON lines costs, per file, in zephyr_arrow's reader and in Polars'.

    .venv/bin/python benches/parse_floor.py [--corpus benches/data/medium] [--files 4] [--repeat 3]

The columnar workloads that read few fields (W2: url and score; W4: id and score) spend most
of their CPU reading: this prints the CPU seconds per file (the least of ``--repeat``, all
threads counted) of each step, in one process with nothing else running:

- decompress: the gzip stream read through ISA-L, as zephyr_arrow reads it;
- arrow parse: Arrow's JSON reader over the decompressed file in zephyr_arrow's 4 MB pieces,
  converting only the fields read (the rest of each object is tokenized and skipped);
- read_jsonl: zephyr_arrow's whole reader (both of the above, on two threads, and the
  batching), what a task pays before its first op;
- polars parse / polars scan: Polars' NDJSON reader over the decompressed bytes / the
  gzip file, selecting the same fields.

It ends by showing why Polars' reader is not zephyr_arrow's: given a string column, Polars
takes a number or an object in it as its JSON text, silently, where Arrow's reader raises.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import sys
import time
from collections.abc import Callable

import polars as pl
import pyarrow as pa
import pyarrow.json as pjson
from isal import igzip

from zephyr_arrow.io.text import PIECE_BYTES, read_jsonl

FIELDS = {
    "W2 (url, score)": {"url": pa.string(), "score": pa.float64()},
    "W4 (id, score)": {"id": pa.int64(), "score": pa.float64()},
}


def cpu_seconds(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def decompress(path: str) -> None:
    with igzip.open(path) as stream:
        while stream.read(PIECE_BYTES):
            pass


def pieces(raw: bytes) -> list[bytes]:
    """``raw`` in pieces of about PIECE_BYTES that end at a newline, as zephyr_arrow parses it."""
    out, start = [], 0
    while start < len(raw):
        end = raw.find(b"\n", start + PIECE_BYTES)
        end = len(raw) if end < 0 else end + 1
        out.append(raw[start:end])
        start = end
    return out


def arrow_parse(parts: list[bytes], schema: pa.Schema) -> None:
    options = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    for part in parts:
        pjson.read_json(pa.BufferReader(part), parse_options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "medium"))
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    paths = sorted(glob.glob(os.path.join(args.corpus, "docs", "*.jsonl.gz")))[: args.files]
    if not paths:
        sys.exit(f"no docs/*.jsonl.gz under {args.corpus} (make one with benches/corpus.py)")

    rows: dict[str, dict[str, float]] = {}
    for path in paths:
        with igzip.open(path) as stream:
            raw = stream.read()
        parts = pieces(raw)
        for label, fields in FIELDS.items():
            names = list(fields)
            row = rows.setdefault(label, {})
            steps = {
                "decompress": lambda: decompress(path),
                "arrow parse": lambda: arrow_parse(parts, pa.schema(fields)),
                "read_jsonl": lambda: sum(1 for _ in read_jsonl(path, keep=names)),
                "polars parse": lambda: pl.scan_ndjson(io.BytesIO(raw)).select(names).collect(),
                "polars scan": lambda: pl.scan_ndjson(path).select(names).collect(),
            }
            for step, fn in steps.items():
                row[step] = row.get(step, 0.0) + cpu_seconds(fn, args.repeat) / len(paths)

    print(f"CPU seconds per file, the mean over {len(paths)} files of {args.corpus} (least of {args.repeat} runs each)\n")
    steps = list(next(iter(rows.values())))
    print("| fields | " + " | ".join(steps) + " |")
    print("|---|" + "---|" * len(steps))
    for label, row in rows.items():
        print(f"| {label} | " + " | ".join(f"{row[step]:.3f}" for step in steps) + " |")

    lines = b'{"url": "https://a.org/x.html"}\n{"url": 5}\n{"url": {"host": "b.org"}}\n'
    polars_urls = pl.read_ndjson(io.BytesIO(lines), schema={"url": pl.String})["url"].to_list()
    try:
        pjson.read_json(pa.BufferReader(lines), parse_options=pjson.ParseOptions(explicit_schema=pa.schema({"url": pa.string()})))
        arrow = "reads it"
    except pa.ArrowInvalid as error:
        arrow = f"raises ArrowInvalid ({error})"
    print(f"\nA url column of a string, a number and an object: Polars reads {polars_urls}; Arrow {arrow}.")


if __name__ == "__main__":
    main()
