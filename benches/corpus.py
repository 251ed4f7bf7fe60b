"""Deterministic synthetic web-corpus generator for zephyr_arrow benchmarks.

Usage::

    python benches/corpus.py --size tiny|small|medium --out DIR

or, from Python::

    from corpus import generate
    info = generate("/tmp/corpus", "small")

Layout written under DIR::

    docs/docs-00000.jsonl.gz ...              gzip JSON lines, one document each:
        id    int    unique, ascending within and across shards (not contiguous)
        url   str    https://{domain}/{section}/{slug}.html, domain Zipf over ~5k domains
        lang  str    en ~60%, de, fr, es, zh, ja, ru, pt, it, nl
        score float  in [0, 1), 4 decimals
        text  str    50-400 words drawn from a Zipf vocabulary of 4000 words
        ts    int    unix seconds, 2013-01-01 .. 2023-12-31
    attributes/attributes-00000.parquet ...   zstd Parquet, sorted by id, one file per doc
                                              shard covering the same id range:
        id      int64   ~70% of the doc ids plus ~5% ids that are no doc's id
        quality float64 in [0, 1), correlated with the doc's score
        toxic   bool    ~4% true
        source  string  small categorical set
    manifest.json                             counts and file lists

About 15% of the documents repeat the exact text of an earlier document (with a
different id and url); some texts are repeated many times (heavy-tailed cluster
sizes), and duplicates cross shard boundaries.

Everything is derived from a counter-based hash (splitmix64) evaluated with
pyarrow.compute, so the output is byte-identical for the same size, independent
of worker count, and needs nothing beyond pyarrow and the standard library.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import time
import zlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SIZES: dict[str, dict[str, int]] = {
    # attribute shard k covers exactly the id range of doc shard k (co-partitioned)
    "tiny": {"docs": 5_000, "shards": 2, "attr_shards": 2},
    "small": {"docs": 200_000, "shards": 8, "attr_shards": 8},
    "medium": {"docs": 800_000, "shards": 16, "attr_shards": 16},
}

SEED = 20130101
VOCAB_SIZE = 4000
N_DOMAINS = 5000
MIN_WORDS, MAX_WORDS = 50, 400
DUP_FRACTION = 0.15
ATTR_COVERAGE = 0.70
ATTR_EXTRA = 0.05
TS_START = 1_356_998_400  # 2013-01-01T00:00:00Z
TS_SPAN = 11 * 365 * 86_400
GZIP_LEVEL = 1
ZIPF_BUCKETS_LOG2 = 20  # resolution of the inverse-CDF lookup tables

LANGS = [("en", 60), ("de", 9), ("fr", 8), ("es", 7), ("zh", 5), ("ja", 3),
         ("ru", 3), ("pt", 2), ("it", 2), ("nl", 1)]
SOURCES = [("common-crawl", 70), ("news", 10), ("forums", 8), ("wikipedia", 5),
           ("books", 3), ("arxiv", 2), ("github", 2)]
SECTIONS = ["news", "blog", "article", "post", "wiki", "forum", "docs", "story", "p", "item"]
TLDS = [(".com", 50), (".org", 12), (".net", 10), (".de", 7), (".fr", 5), (".io", 4),
        (".co.uk", 4), (".es", 3), (".cn", 3), (".jp", 2)]

COMMON_WORDS = (
    "the of and to a in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will more out can up about into than its some only other time new these two may "
    "first then do any like my now over such our man me even most made after also did many "
    "before must through back years where much your way well down should because each just "
    "those people how too little state good very make world still own see men work long get "
    "here between both life being under never day same another know while last might us "
    "great old year off come since against go came right used take three"
).split()

# Streams of the counter-based generator; each stream gets its own hash family.
_S_WORD, _S_LEN, _S_DOMAIN, _S_LANG, _S_SCORE, _S_TS, _S_SLUG, _S_SECTION = range(8)
_S_DUP, _S_SRC, _S_POP, _S_IDR, _S_ATTR, _S_QUAL, _S_TOX, _S_SOURCE, _S_EXTRA = range(8, 17)

_U64 = pa.uint64()
_M64 = (1 << 64) - 1


# ---------------------------------------------------------------------------
# vectorised splitmix64 over uint64 arrays

def _u(x: int) -> pa.Scalar:
    return pa.scalar(x & _M64, _U64)


def _mix(x: pa.Array) -> pa.Array:
    x = pc.add(x, _u(0x9E3779B97F4A7C15))
    x = pc.multiply(pc.bit_wise_xor(x, pc.shift_right(x, _u(30))), _u(0xBF58476D1CE4E5B9))
    x = pc.multiply(pc.bit_wise_xor(x, pc.shift_right(x, _u(27))), _u(0x94D049BB133111EB))
    return pc.bit_wise_xor(x, pc.shift_right(x, _u(31)))


def _hash(counter: pa.Array, stream: int) -> pa.Array:
    """64-bit hash of (SEED, stream, counter) for a uint64 counter array."""
    key = (SEED * 0x100000001B3 + stream * 0xD1B54A32D192ED03) & _M64
    return _mix(pc.bit_wise_xor(counter, _u(key)))


def _uniform(counter: pa.Array, stream: int) -> pa.Array:
    """float64 in [0, 1)."""
    h = pc.shift_right(_hash(counter, stream), _u(11))
    return pc.multiply(pc.cast(h, pa.float64()), 2.0 ** -53)


def _below(counter: pa.Array, stream: int, n: int) -> pa.Array:
    """uint64 in [0, n) (n << 2**32, bias negligible)."""
    h = pc.shift_right(_hash(counter, stream), _u(32))
    return pc.shift_right(pc.multiply(h, _u(n)), _u(32))


def _arange(start: int, stop: int) -> pa.Array:
    n = stop - start
    if n <= 0:
        return pa.array([], _U64)
    return pc.add(pc.cumulative_sum(pa.repeat(pa.scalar(1, _U64), n)), _u(start - 1))


class _Table:
    """Inverse-CDF lookup table: maps a 64-bit hash to an index with given weights."""

    def __init__(self, weights: list[float]):
        m = 1 << ZIPF_BUCKETS_LOG2
        total = float(sum(weights))
        idx: list[int] = []
        acc = 0.0
        prev = 0
        for i, w in enumerate(weights):
            acc += w
            edge = m if i == len(weights) - 1 else round(acc / total * m)
            idx.extend([i] * (edge - prev))
            prev = edge
        self.lookup = pa.array(idx, pa.int32())

    def sample(self, counter: pa.Array, stream: int) -> pa.Array:
        h = pc.shift_right(_hash(counter, stream), _u(64 - ZIPF_BUCKETS_LOG2))
        return pc.take(self.lookup, h)


def _zipf_weights(n: int, s: float, q: float) -> list[float]:
    return [1.0 / (r + q) ** s for r in range(1, n + 1)]


# ---------------------------------------------------------------------------
# vocabularies (small, built with random.Random, stable across Python versions)

_ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v",
           "w", "z", "br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y"]
_CODAS = ["", "", "", "n", "r", "s", "l", "t", "m", "nd", "st", "ng", "x", "ck"]


def _make_words(rng: random.Random, n: int, taken: set[str], min_syl: int, max_syl: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        k = rng.randint(min_syl, max_syl)
        w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(k))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def _vocab() -> list[str]:
    rng = random.Random(SEED)
    taken = set(COMMON_WORDS)
    words = list(COMMON_WORDS)
    # Zipf's law of abbreviation: the more frequent a word, the shorter it tends to be.
    words += sorted(_make_words(rng, VOCAB_SIZE - len(words), taken, 1, 3), key=len)
    return words


def _domains() -> list[str]:
    rng = random.Random(SEED + 1)
    names = _make_words(rng, N_DOMAINS, set(), 2, 3)
    tlds = [t for t, _ in TLDS]
    tw = [w for _, w in TLDS]
    out = []
    for name in names:
        tld = rng.choices(tlds, weights=tw)[0]
        prefix = "www." if rng.random() < 0.4 else ""
        out.append(prefix + name + tld)
    return out


# ---------------------------------------------------------------------------
# global plan: duplicates and ids

def _plan(n: int) -> dict[str, pa.Array]:
    i = _arange(0, n)
    # Which docs copy an earlier text, and from which doc.
    is_dup = pc.and_(pc.less(_uniform(i, _S_DUP), DUP_FRACTION), pc.greater(i, _u(0)))
    # 25% of copies come from a small "popular" pool (boilerplate-like clusters),
    # the rest from a uniformly chosen earlier doc.
    pool = pc.min_element_wise(i, _u(64))
    src_pop = pc.shift_right(pc.multiply(pc.shift_right(_hash(i, _S_POP), _u(32)), pool), _u(32))
    src_any = pc.shift_right(pc.multiply(pc.shift_right(_hash(i, _S_SRC), _u(32)), i), _u(32))
    src = pc.if_else(pc.less(_uniform(i, _S_POP + 100), 0.25), src_pop, src_any)
    key = pc.if_else(is_dup, src, i)
    # Resolve chains (a copy of a copy) by pointer jumping: key[i] -> key[key[i]].
    while True:
        nxt = pc.take(key, key)
        if nxt.equals(key):
            break
        key = nxt
    # Unique, ascending, non-contiguous ids: 3*i + r with r in {0,1,2}.
    r = _below(i, _S_IDR, 3)
    ids = pc.cast(pc.add(pc.multiply(i, _u(3)), r), pa.int64())
    return {"i": i, "key": key, "is_dup": is_dup, "r": r, "id": ids}


_G: dict[str, Any] = {}


def _globals(n: int) -> dict[str, Any]:
    if _G.get("n") != n:
        _G.clear()
        _G["n"] = n
        _G["plan"] = _plan(n)
        _G["vocab"] = pa.array(_vocab(), pa.string())
        _G["domains"] = pa.array(_domains(), pa.string())
        _G["word_table"] = _Table(_zipf_weights(VOCAB_SIZE, 1.0, 2.7))
        _G["domain_table"] = _Table(_zipf_weights(N_DOMAINS, 1.1, 1.0))
        _G["lang_table"] = _Table([w for _, w in LANGS])
        _G["source_table"] = _Table([w for _, w in SOURCES])
    return _G


def _texts(keys: pa.Array, g: dict[str, Any]) -> pa.Array:
    """Text of each text-key: word j of key k is hash(k << 9 | j)."""
    lengths = pc.add(_below(keys, _S_LEN, MAX_WORDS - MIN_WORDS + 1), _u(MIN_WORDS))
    ends = pc.cumulative_sum(lengths)
    total = ends[-1].as_py() if len(ends) else 0
    starts = pc.subtract(ends, lengths)
    offsets = pa.concat_arrays([pa.array([0], pa.int64()), pc.cast(ends, pa.int64())])
    skeleton = pa.ListArray.from_arrays(pc.cast(offsets, pa.int32()), pa.nulls(total, pa.null()))
    parent = pc.list_parent_indices(skeleton)
    # counter = (k << 9) + (pos - start)  =  pos + ((k << 9) - start)
    base = pc.subtract(pc.shift_left(keys, _u(9)), starts)
    counters = pc.add(_arange(0, total), pc.take(base, parent))
    words = pc.take(g["vocab"], g["word_table"].sample(counters, _S_WORD))
    return pc.binary_join(pa.ListArray.from_arrays(pc.cast(offsets, pa.int32()), words), " ")


def _shard_bounds(n: int, shards: int, s: int) -> tuple[int, int]:
    return (n * s) // shards, (n * (s + 1)) // shards


def _write_doc_shard(args: tuple[str, str, int]) -> tuple[str, int, int]:
    out_dir, size, s = args
    cfg = SIZES[size]
    n = cfg["docs"]
    g = _globals(n)
    plan = g["plan"]
    lo, hi = _shard_bounds(n, cfg["shards"], s)
    i = plan["i"][lo:hi]
    ids = plan["id"][lo:hi]
    keys = plan["key"][lo:hi]

    text = _texts(keys, g)
    domain = pc.take(g["domains"], g["domain_table"].sample(i, _S_DOMAIN))
    section = pc.take(pa.array(SECTIONS), _below(i, _S_SECTION, len(SECTIONS)))
    slug = pc.cast(pc.shift_right(_hash(i, _S_SLUG), _u(24)), pa.string())
    lang = pc.take(pa.array([l for l, _ in LANGS]), g["lang_table"].sample(i, _S_LANG))
    score = pc.divide(pc.floor(pc.multiply(_uniform(i, _S_SCORE), 10_000.0)), 10_000.0)
    ts = pc.add(pc.cast(_below(i, _S_TS, TS_SPAN), pa.int64()), TS_START)

    s_ = lambda a: pc.cast(a, pa.string())  # noqa: E731
    # Arrow prints 0.0 as "0"; keep every score a JSON float so readers infer double.
    score_s = s_(score)
    score_s = pc.if_else(pc.match_substring(score_s, "."), score_s,
                         pc.binary_join_element_wise(score_s, ".0", ""))
    line = pc.binary_join_element_wise(
        '{"id":', s_(ids),
        ',"url":"https://', domain, "/", section, "/", slug, ".html",
        '","lang":"', lang,
        '","score":', score_s,
        ',"text":"', text,
        '","ts":', s_(ts),
        "}\n",
        "",
    )
    line = line.combine_chunks() if isinstance(line, pa.ChunkedArray) else line
    raw = _values_bytes(line)
    comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # gzip container, mtime 0
    data = comp.compress(raw) + comp.flush()
    path = os.path.join(out_dir, "docs", f"docs-{s:05d}.jsonl.gz")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path, len(raw), len(data)


def _values_bytes(arr: pa.Array) -> memoryview:
    """Concatenated values of a string array (rows already end with newlines)."""
    if arr.type == pa.large_string():
        off_t = pa.int64()
    else:
        off_t = pa.int32()
    offsets = pa.Array.from_buffers(off_t, len(arr) + 1, [None, arr.buffers()[1]], offset=arr.offset)
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    return memoryview(arr.buffers()[2])[start:end]


def _write_attr_shard(args: tuple[str, str, int]) -> tuple[str, int, int]:
    out_dir, size, a = args
    cfg = SIZES[size]
    n = cfg["docs"]
    g = _globals(n)
    plan = g["plan"]
    lo, hi = _shard_bounds(n, cfg["attr_shards"], a)
    i = plan["i"][lo:hi]
    r = plan["r"][lo:hi]
    present = pc.less(_uniform(i, _S_ATTR), ATTR_COVERAGE)
    extra = pc.less(_uniform(i, _S_EXTRA), ATTR_EXTRA)
    # A missing id: 3*i + r' with r' != r, so it falls between real ids.
    r_missing = pc.add(r, pc.add(_below(i, _S_EXTRA + 100, 2), _u(1)))  # r+1 or r+2
    r_missing = pc.subtract(r_missing, pc.multiply(pc.divide(r_missing, _u(3)), _u(3)))  # mod 3
    real_i = pc.filter(i, present)
    real_id = pc.filter(plan["id"][lo:hi], present)
    fake_i = pc.filter(i, extra)
    fake_id = pc.cast(pc.add(pc.multiply(fake_i, _u(3)), pc.filter(r_missing, extra)), pa.int64())

    ids = pa.concat_arrays([real_id, fake_id])
    ctr = pa.concat_arrays([real_i, pc.add(fake_i, _u(1 << 40))])
    order = pc.sort_indices(ids)
    ids = pc.take(ids, order)
    ctr = pc.take(ctr, order)
    score = pc.divide(pc.floor(pc.multiply(_uniform(ctr, _S_SCORE), 10_000.0)), 10_000.0)
    quality = pc.add(pc.multiply(score, 0.6), pc.multiply(_uniform(ctr, _S_QUAL), 0.4))
    quality = pc.min_element_wise(quality, 0.9999)
    toxic = pc.less(_uniform(ctr, _S_TOX), 0.04)
    source = pc.take(pa.array([x for x, _ in SOURCES]), g["source_table"].sample(ctr, _S_SOURCE))
    table = pa.table({"id": ids, "quality": quality, "toxic": toxic, "source": source})
    path = os.path.join(out_dir, "attributes", f"attributes-{a:05d}.parquet")
    tmp = path + ".tmp"
    pq.write_table(table, tmp, compression="zstd", row_group_size=65_536)
    os.replace(tmp, path)
    return path, table.num_rows, os.path.getsize(path)


def generate(out_dir: str, size: str = "small", workers: int | None = None, quiet: bool = True) -> dict[str, Any]:
    """Write the corpus for ``size`` under ``out_dir``; return paths and counts.

    Returns a dict with keys ``docs`` (list of shard paths), ``attributes`` (list of
    shard paths), ``manifest`` (path), ``n_docs``, ``n_duplicates``, ``n_unique_texts``,
    ``n_attribute_rows``, ``n_attribute_matches``, ``bytes`` (on disk),
    ``raw_bytes`` (uncompressed JSONL), ``seconds``.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    t0 = time.perf_counter()
    cfg = SIZES[size]
    n = cfg["docs"]
    os.makedirs(os.path.join(out_dir, "docs"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "attributes"), exist_ok=True)
    g = _globals(n)  # computed before forking so workers inherit it
    plan = g["plan"]

    doc_jobs = [(out_dir, size, s) for s in range(cfg["shards"])]
    attr_jobs = [(out_dir, size, a) for a in range(cfg["attr_shards"])]
    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    if workers > 1 and n > 50_000 and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            docs = pool.map(_write_doc_shard, doc_jobs, chunksize=1)
            attrs = pool.map(_write_attr_shard, attr_jobs, chunksize=1)
    else:
        docs = [_write_doc_shard(j) for j in doc_jobs]
        attrs = [_write_attr_shard(j) for j in attr_jobs]

    n_dup = pc.sum(pc.cast(plan["is_dup"], pa.int64())).as_py() or 0
    n_unique = len(pc.unique(plan["key"]))
    attr_ids = pa.concat_arrays(
        [pq.read_table(p, columns=["id"]).column("id").combine_chunks() for p, _, _ in attrs])
    n_match = pc.sum(pc.cast(pc.is_in(attr_ids, value_set=plan["id"]), pa.int64())).as_py() or 0
    info: dict[str, Any] = {
        "size": size,
        "docs": [p for p, _, _ in docs],
        "attributes": [p for p, _, _ in attrs],
        "n_docs": n,
        "n_duplicates": n_dup,
        "n_unique_texts": n_unique,
        "n_attribute_rows": sum(r for _, r, _ in attrs),
        "n_attribute_matches": n_match,
        "raw_bytes": sum(r for _, r, _ in docs),
        "bytes": sum(b for _, _, b in docs) + sum(b for _, _, b in attrs),
    }
    manifest = os.path.join(out_dir, "manifest.json")
    rel = dict(info, docs=[os.path.relpath(p, out_dir) for p in info["docs"]],
               attributes=[os.path.relpath(p, out_dir) for p in info["attributes"]])
    with open(manifest, "w") as f:
        json.dump(rel, f, indent=1, sort_keys=True)
        f.write("\n")
    info["manifest"] = manifest
    info["seconds"] = round(time.perf_counter() - t0, 2)
    if not quiet:
        print(
            f"corpus {size}: {n} docs in {len(docs)} shards, {n_dup} duplicates "
            f"({n_unique} unique texts), {info['n_attribute_rows']} attribute rows "
            f"({n_match} match a doc) in {len(attrs)} shards, "
            f"{info['bytes']} bytes on disk ({info['raw_bytes']} raw JSONL), "
            f"{info['seconds']}s -> {out_dir}"
        )
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: cores, max 4)")
    args = ap.parse_args(argv)
    generate(args.out, args.size, workers=args.workers, quiet=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
