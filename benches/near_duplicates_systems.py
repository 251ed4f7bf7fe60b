"""One near-duplicate measurement in this process (benches/near_duplicates_speed.py runs each in a fresh one).

    python near_duplicates_systems.py signatures SYSTEM DOCS_GLOB NUM_DOCS
    python near_duplicates_systems.py dedup SYSTEM DOCS_GLOB OUT_DIR
    python near_duplicates_systems.py plant SOURCE_GLOB OUT_DIR SHARE   (writes a corpus with SHARE near-duplicates)

SYSTEM: za (zephyr_arrow), datasketch, rensa, datatrove. Every system uses 5-word shingles, 128
permutations (datatrove: 9 buckets of 13 hashes, the bands zephyr_arrow picks for 0.8) and seed 42.
``signatures`` times one core (``POLARS_MAX_THREADS=1`` for za) on the first NUM_DOCS texts
already in memory; ``dedup`` is the whole operation from the JSONL files to the kept documents
written (za: on 2 local workers; datatrove: its four steps on 2 local workers; datasketch and
rensa: one process, LSH and union-find in memory). Prints one JSON line.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import random
import re
import sys
import time

NGRAM, NUM_PERM, BANDS, ROWS, SEED, THRESHOLD = 5, 128, 9, 13, 42, 0.8


def texts_of(pattern: str, limit: int | None = None) -> list[str]:
    texts: list[str] = []
    for path in sorted(glob.glob(pattern)):
        with gzip.open(path, "rt") as lines:
            for line in lines:
                texts.append(json.loads(line)["text"])
                if limit is not None and len(texts) >= limit:
                    return texts
    return texts


def shingles(text: str) -> list[str]:
    words = re.findall(r"\w+", text.lower())
    return [" ".join(words[i : i + NGRAM]) for i in range(max(len(words) - NGRAM + 1, 1))] if words else []


def signatures(system: str, texts: list[str]) -> None:
    if system == "za":
        import pyarrow as pa

        from zephyr_arrow import minhash

        for start in range(0, len(texts), 8192):  # a Parquet chunk's batch
            batch = pa.array(texts[start : start + 8192])
            hashes, counts = minhash.shingle_hashes(batch, NGRAM)
            minhash.band_hashes(minhash.signatures(hashes, counts, NUM_PERM, SEED), BANDS, ROWS)
    elif system == "datasketch":
        from datasketch import MinHash

        for text in texts:
            signature = MinHash(num_perm=NUM_PERM, seed=SEED)
            signature.update_batch([shingle.encode() for shingle in shingles(text)])
    elif system == "rensa":
        from rensa import RMinHash

        for text in texts:
            signature = RMinHash(num_perm=NUM_PERM, seed=SEED)
            signature.update(shingles(text))
            signature.digest()
    elif system == "datatrove":
        step = _datatrove_signature_step("/tmp/unused")
        for text in texts:
            step.get_signature(step.get_shingles(text))
    else:
        raise SystemExit(f"unknown system {system}")


def _datatrove_config():
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    return MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS, seed=SEED)


def _datatrove_signature_step(folder: str):
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    return MinhashDedupSignature(output_folder=folder, config=_datatrove_config())


def dedup(system: str, pattern: str, out: str) -> int:
    """The whole operation; returns the number of documents kept."""
    if system == "za":
        from zephyr_arrow import Dataset, ZephyrContext

        with ZephyrContext(max_workers=2, progress=False) as ctx:
            refs = ctx.execute(
                Dataset.from_files(pattern).load_jsonl().fuzzy_deduplicate("text", threshold=THRESHOLD).write_parquet(f"{out}/part-{{shard:05d}}.parquet")
            )
            paths = refs.to_pylist()
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)
    if system == "datatrove":
        return _datatrove_dedup(pattern, out)
    texts = texts_of(pattern)
    if system == "datasketch":
        from datasketch import MinHash, MinHashLSH

        lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=(BANDS, ROWS))
        signatures = []
        for doc, text in enumerate(texts):
            signature = MinHash(num_perm=NUM_PERM, seed=SEED)
            signature.update_batch([shingle.encode() for shingle in shingles(text)])
            signatures.append(signature)
            lsh.insert(doc, signature)
        pairs = ((doc, other) for doc, signature in enumerate(signatures) for other in lsh.query(signature) if other != doc)
    elif system == "rensa":
        from rensa import RMinHash

        # rensa's own LSH needs num_perm divisible by the bands: the bands go in a dict instead.
        first_of_bucket: dict[tuple, int] = {}
        found = []
        for doc, text in enumerate(texts):
            signature = RMinHash(num_perm=NUM_PERM, seed=SEED)
            signature.update(shingles(text))
            digest = signature.digest()
            for band in range(BANDS):
                first = first_of_bucket.setdefault((band, *digest[band * ROWS : (band + 1) * ROWS]), doc)
                if first != doc:
                    found.append((first, doc))
        pairs = iter(found)
    else:
        raise SystemExit(f"unknown system {system}")
    parent = list(range(len(texts)))

    def root(doc: int) -> int:
        while parent[doc] != doc:
            parent[doc] = parent[parent[doc]]
            doc = parent[doc]
        return doc

    for doc, other in pairs:
        a, b = root(doc), root(other)
        parent[max(a, b)] = min(a, b)
    kept = [text for doc, text in enumerate(texts) if root(doc) == doc]
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out, exist_ok=True)
    pq.write_table(pa.table({"text": kept}), f"{out}/kept.parquet")
    return len(kept)


def _datatrove_dedup(pattern: str, out: str) -> int:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    config = _datatrove_config()
    folder, name = os.path.dirname(pattern), os.path.basename(pattern)
    files = len(glob.glob(pattern))
    read = lambda: JsonlReader(folder, glob_pattern=name, id_key="id", default_metadata={})  # noqa: E731
    steps = [
        ([read(), _datatrove_signature_step(f"{out}/signatures")], files),
        ([MinhashDedupBuckets(input_folder=f"{out}/signatures", output_folder=f"{out}/buckets", config=config)], BANDS),
        ([MinhashDedupCluster(input_folder=f"{out}/buckets", output_folder=f"{out}/remove_ids", config=config)], 1),
        ([read(), MinhashDedupFilter(input_folder=f"{out}/remove_ids"), JsonlWriter(f"{out}/kept")], files),
    ]
    for index, (pipeline, tasks) in enumerate(steps):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=2, logging_dir=f"{out}/logs-{index}", skip_completed=False).run()
    kept = 0
    for path in glob.glob(f"{out}/kept/*"):
        with gzip.open(path, "rt") as lines:
            kept += sum(1 for _ in lines)
    return kept


def plant(source: str, out: str, share: float, seed: int = 11) -> None:
    """Copy ``source``'s files, replacing ``share`` of the texts with an earlier text with 2-8% of its
    words replaced, deleted or doubled (Jaccard of 5-word shingles about 0.55-0.9)."""
    rng = random.Random(seed)
    os.makedirs(out, exist_ok=True)
    earlier: list[str] = []
    for path in sorted(glob.glob(source)):
        with gzip.open(path, "rt") as lines, gzip.open(os.path.join(out, os.path.basename(path)), "wt", compresslevel=1) as written:
            for line in lines:
                doc = json.loads(line)
                if earlier and rng.random() < share:
                    words = rng.choice(earlier).split()
                    for _ in range(max(1, int(len(words) * rng.uniform(0.02, 0.08)))):
                        position = rng.randrange(len(words))
                        edit = rng.random()
                        if edit < 1 / 3:
                            words[position] = f"edit{rng.randrange(10**6)}"
                        elif edit < 2 / 3 and len(words) > 1:
                            del words[position]
                        else:
                            words.insert(position, words[position])
                    doc["text"] = " ".join(words)
                elif len(earlier) < 100_000:
                    earlier.append(doc["text"])
                else:
                    earlier[rng.randrange(len(earlier))] = doc["text"]
                written.write(json.dumps(doc) + "\n")


def main() -> None:
    mode = sys.argv[1]
    if mode == "plant":
        plant(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return
    system, pattern = sys.argv[2], sys.argv[3]
    if mode == "signatures":
        texts = texts_of(pattern, int(sys.argv[4]))
        signatures(system, texts[:50])  # imports (Polars, numpy, spaCy) and first-call set-up are not the rate
        started = time.process_time()
        signatures(system, texts)
        print(json.dumps({"docs": len(texts), "cpu": time.process_time() - started}))
    else:
        started = time.perf_counter()
        kept = dedup(system, pattern, sys.argv[4])
        print(json.dumps({"docs_kept": kept, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
