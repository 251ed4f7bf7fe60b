"""Precision and recall of near-duplicate pairs: zephyr_arrow's near_duplicate_clusters and
datasketch's MinHashLSH against exact Jaccard similarity, on real and planted near-duplicates.

    .venv/bin/pip install -q -e '.[bench]' && .venv/bin/python benches/near_duplicates_quality.py

Two corpora (``--corpora``), each reported in a table of its own:

- **kjv**: every KJV passage (zephyr_arrow/datasets; parallel passages in Samuel-Kings and
  Chronicles, the gospels, Psalms) and a planted set: 1,500 passages of 40 words or more, each
  copied once with a share of its words replaced, deleted or doubled (0-40%), so pairs spread
  over Jaccard 0.3-1.
- **debian**: the long descriptions of a sample of Debian 12 packages (zephyr_arrow/datasets/
  debian), as written by their maintainers: the packages built from one source often share most
  of a description (libfoo1, libfoo-dev, libfoo-doc), and boilerplate recurs across sources
  (transitional packages, fonts, Python and Perl modules).

Exact Jaccard is computed for every pair that shares a shingle (an inverted index:
exact on all pairs, since pairs sharing none have Jaccard 0). Shingles are the same for both
systems (5-word n-grams of the normalised text, minhash.py); datasketch hashes each with its
SHA-1 and its own permutations (the same count, drawn from the same seed) and gets the same bands
(``params=(bands, rows)``, zephyr_arrow's choice, which is datasketch's own too).

A pair is "found" by zephyr_arrow when both documents are in one cluster. For datasketch both its
candidate pairs (what MinHashLSH.query returns) and the pairs of their connected components
(what a dedup keeping one per cluster acts on, as zephyr_arrow's clusters) are reported.
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq

import zephyr_arrow
from zephyr_arrow import Dataset, ZephyrContext, minhash

DATASETS = Path(zephyr_arrow.__file__).parent / "datasets"
KJV = DATASETS / "kjv" / "kjv_passages.parquet"
DEBIAN = DATASETS / "debian" / "debian_descriptions.parquet"
THRESHOLDS = (0.5, 0.7, 0.8, 0.9)


def debian_corpus() -> list[str]:
    return pq.read_table(DEBIAN, columns=["text"]).column("text").to_pylist()


def kjv_corpus(num_planted: int, seed: int) -> list[str]:
    texts = pq.read_table(KJV, columns=["text"]).column("text").to_pylist()
    rng = random.Random(seed)
    long_enough = [text for text in texts if len(text.split()) >= 40]
    planted = []
    for text in rng.sample(long_enough, num_planted):
        words = text.split()
        rate = rng.uniform(0.0, 0.4)
        edited = []
        for word in words:
            roll = rng.random()
            if roll < rate / 3:
                edited.append(f"x{rng.randrange(10**6)}")  # replaced
            elif roll < 2 * rate / 3:
                continue  # deleted
            elif roll < rate:
                edited.extend([word, word])  # doubled
            else:
                edited.append(word)
        planted.append(" ".join(edited))
    return texts + planted


def shingles(text: str, ngram_size: int) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i : i + ngram_size]) for i in range(max(len(words) - ngram_size + 1, 1))} if words else set()


def exact_pairs(sets: list[set[str]], minimum: float) -> dict[tuple[int, int], float]:
    """Jaccard of every pair of documents sharing a shingle, where it is at least ``minimum``."""
    index: dict[str, list[int]] = defaultdict(list)
    for doc, doc_shingles in enumerate(sets):
        for shingle in doc_shingles:
            index[shingle].append(doc)
    shared: Counter = Counter()
    for docs in index.values():
        shared.update(itertools.combinations(docs, 2))
    pairs = {}
    for (a, b), common in shared.items():
        jaccard = common / (len(sets[a]) + len(sets[b]) - common)
        if jaccard >= minimum:
            pairs[(a, b)] = jaccard
    return pairs


def cluster_pairs(groups: list[list[int]]) -> set[tuple[int, int]]:
    return {pair for group in groups for pair in itertools.combinations(sorted(group), 2)}


def components(num_docs: int, pairs: set[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(num_docs))

    def root(doc: int) -> int:
        while parent[doc] != doc:
            parent[doc] = parent[parent[doc]]
            doc = parent[doc]
        return doc

    for a, b in pairs:
        parent[max(root(a), root(b))] = min(root(a), root(b))
    groups: dict[int, list[int]] = defaultdict(list)
    for doc in range(num_docs):
        groups[root(doc)].append(doc)
    return [group for group in groups.values() if len(group) > 1]


def scores(found: set[tuple[int, int]], truth: set[tuple[int, int]]) -> tuple[float, float]:
    """Precision and recall of pairs, in percent."""
    hits = len(found & truth)
    return 100 * (hits / len(found) if found else 1.0), 100 * (hits / len(truth) if truth else 1.0)


def row(cells: list[tuple[float, float]]) -> str:
    return " | ".join(f"{precision:5.1f} / {recall:5.1f}" for precision, recall in cells)


HEADER = "| threshold | bands x rows | true pairs | zephyr_arrow clusters P / R | datasketch candidates P / R | datasketch clusters P / R |"


def report(
    ctx: ZephyrContext, texts: list[str], sets: list[set[str]], truth_all: dict[tuple[int, int], float], ngram_size: int, num_perm: int, seed: int
) -> dict[float, list[tuple[float, float]]]:
    """Print the table of one corpus (its shingle sets, its pairs at Jaccard >= min(THRESHOLDS)),
    both systems' permutations drawn from ``seed``; return its cells by threshold."""
    from datasketch import MinHash, MinHashLSH

    signatures = []
    for doc_shingles in sets:
        signature = MinHash(num_perm=num_perm, seed=seed)
        signature.update_batch([shingle.encode() for shingle in doc_shingles])
        signatures.append(signature)
    print(HEADER)
    print("|---|---|---|---|---|---|")
    cells = {}
    docs = Dataset.from_list([{"text": text} for text in texts], num_shards=4)
    for threshold in THRESHOLDS:
        bands, rows = minhash.optimal_bands(threshold, num_perm)
        truth = {pair for pair, jaccard in truth_all.items() if jaccard >= threshold}
        clustered = ctx.execute(docs.near_duplicate_clusters("text", threshold=threshold, ngram_size=ngram_size, num_perm=num_perm, seed=seed))
        groups: dict[int, list[int]] = defaultdict(list)
        for row_id, cluster_id in clustered.sql("select row_id, cluster_id from data").fetchall():
            groups[cluster_id].append(row_id)
        ours = cluster_pairs(list(groups.values()))
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, rows))
        for doc, signature in enumerate(signatures):
            if sets[doc]:
                lsh.insert(doc, signature)
        candidates = {
            (min(doc, other), max(doc, other)) for doc, signature in enumerate(signatures) if sets[doc] for other in lsh.query(signature) if other != doc
        }
        theirs = cluster_pairs(components(len(texts), candidates))
        cells[threshold] = [scores(ours, truth), scores(candidates, truth), scores(theirs, truth)]
        print(f"| {threshold} | {bands} x {rows} | {len(truth):,} | {row(cells[threshold])} |")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", default="kjv,debian")
    parser.add_argument("--planted", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=7, help="of the planted edits")
    parser.add_argument("--minhash-seeds", default="42", help="a table per seed of the permutations: 42,1,2 shows the spread")
    parser.add_argument("--ngram-size", type=int, default=5)
    parser.add_argument("--num-perm", type=int, default=128)
    args = parser.parse_args()
    names = args.corpora.split(",")
    if not set(names) <= {"kjv", "debian"}:
        parser.error(f"--corpora {args.corpora!r}: kjv, debian or both")
    with ZephyrContext(backend="local", max_workers=2, progress=False) as ctx:
        for name in names:
            texts = kjv_corpus(args.planted, args.seed) if name == "kjv" else debian_corpus()
            sets = [shingles(text, args.ngram_size) for text in texts]
            started = time.perf_counter()
            truth_all = exact_pairs(sets, min(THRESHOLDS))
            print(f"{name}: {len(texts):,} documents; {len(truth_all):,} pairs at Jaccard >= {min(THRESHOLDS)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
            seeds = [int(seed) for seed in args.minhash_seeds.split(",")]
            tables = []
            for seed in seeds:
                print(f"\n{name}, seed {seed}:\n")
                tables.append(report(ctx, texts, sets, truth_all, args.ngram_size, args.num_perm, seed))
            if len(seeds) > 1:
                print(f"\n{name}, mean of {len(seeds)} seeds (zephyr_arrow's recall minus datasketch's clusters': min .. max over seeds):\n")
                print(HEADER + " recall difference |")
                print("|---|---|---|---|---|---|---|")
                for threshold in THRESHOLDS:
                    cells = [tuple(statistics.mean(table[threshold][system][k] for table in tables) for k in (0, 1)) for system in range(3)]
                    differences = [table[threshold][0][1] - table[threshold][2][1] for table in tables]
                    print(f"| {threshold} | {'{} x {}'.format(*minhash.optimal_bands(threshold, args.num_perm))} | "
                          f"{sum(jaccard >= threshold for jaccard in truth_all.values()):,} | {row(cells)} | {statistics.mean(differences):+.1f} ({min(differences):+.1f} .. {max(differences):+.1f}) |")


if __name__ == "__main__":
    main()
