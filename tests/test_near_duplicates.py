"""fuzzy_deduplicate / near_duplicate_clusters: signatures against a plain-Python MinHash, planted
near-duplicates at known Jaccard similarities, an exact all-pairs oracle, every backend, the
parallel passages of the KJV and the families of Debian package descriptions."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import zephyr_arrow
from zephyr_arrow import Dataset, PlanError, ZephyrContext, minhash

KJV = Path(zephyr_arrow.__file__).parent / "datasets" / "kjv" / "kjv_passages.parquet"
DEBIAN = Path(zephyr_arrow.__file__).parent / "datasets" / "debian" / "debian_descriptions.parquet"
MASK64 = (1 << 64) - 1


def python_signature(text: str, ngram_size: int, num_perm: int, seed: int) -> list[int]:
    """The MinHash of ``text`` as minhash.py documents it, one shingle and one permutation at a time."""
    words = re.findall(r"\w+", text.lower())
    if not words:
        return [int(minhash.MAX_HASH)] * num_perm
    word_hashes = [int(h) for h in pl.Series(words).hash(minhash.WORD_HASH_SEED).to_list()]
    mix = int(minhash._SHINGLE_MIX)
    starts = range(max(len(words) - ngram_size + 1, 1))
    shingles = []
    for start in starts:
        value = word_hashes[start]
        for following in word_hashes[start + 1 : start + ngram_size]:
            value = (value * mix + following) & MASK64
        value ^= value >> 29
        shingles.append(((value * mix) & MASK64) >> 32)
    a, b = minhash.permutations(num_perm, seed)
    return [min((((int(a[j]) * x + int(b[j])) & MASK64) >> 32) for x in shingles) for j in range(num_perm)]


def test_signatures_are_a_plain_minhash_of_the_normalised_shingles():
    texts = ["The cat sat on the mat; the cat slept.", "one two", "", None, "Ünïcode wörds, and   tabs\tand\nlines!", "a b c d e"]
    shingles, num_shingles = minhash.shingle_hashes(pa.array(texts), 3)
    got = minhash.signatures(shingles, num_shingles, 16, 7)
    assert list(num_shingles) == [7, 1, 0, 0, 4, 3]
    for text, signature in zip(texts, got):
        assert signature.tolist() == python_signature(text or "", 3, 16, 7), text


def test_normalisation_ignores_case_punctuation_and_whitespace():
    texts = pa.array(["Hello, World! It's here.", "hello world   it s\nhere"])
    shingles, num_shingles = minhash.shingle_hashes(texts, 2)
    signature = minhash.signatures(shingles, num_shingles, 8, 1)
    assert (signature[0] == signature[1]).all()


def test_bands_are_datasketchs_choice():
    # datasketch.lsh._optimal_param(threshold, 128, 0.5, 0.5) gives these.
    assert [minhash.optimal_bands(t, 128) for t in (0.5, 0.7, 0.8, 0.9)] == [(25, 5), (14, 9), (9, 13), (5, 25)]


def planted_corpus(seed: int = 5) -> tuple[list[dict], dict[str, list[tuple[int, int]]]]:
    """Base documents of 100 distinct words, and copies with k words replaced by new ones: the
    Jaccard similarity of the word sets (ngram_size=1) of a copy and its base is (100-k)/(100+k)."""
    rng = random.Random(seed)
    fresh = (f"w{index}" for index in itertools.count())
    docs: list[dict] = []
    pairs: dict[str, list[tuple[int, int]]] = {"0.96": [], "0.5": []}
    for base_index in range(60):
        words = [next(fresh) for _ in range(100)]
        docs.append({"id": len(docs), "text": " ".join(words)})
        base = len(docs) - 1
        if base_index % 3 == 2:
            continue
        replaced = 2 if base_index % 3 == 0 else 33  # J = 98/102 = 0.96, or 67/133 = 0.50
        copy = list(words)
        for position in rng.sample(range(100), replaced):
            copy[position] = next(fresh)
        docs.append({"id": len(docs), "text": " ".join(copy)})
        pairs["0.96" if replaced == 2 else "0.5"].append((base, len(docs) - 1))
    rng.shuffle(docs)  # copies before their bases too: the kept one is the first in input order
    return docs, pairs


def test_planted_near_duplicates_are_found_and_documents_below_the_threshold_kept(ctx):
    docs, pairs = planted_corpus()
    dataset = Dataset.from_list(docs, num_shards=3)
    kept = ctx.execute(dataset.fuzzy_deduplicate("text", threshold=0.8, ngram_size=1)).to_pylist()
    position = {doc["id"]: index for index, doc in enumerate(docs)}
    dropped = {max(pair, key=position.__getitem__) for pair in pairs["0.96"]}  # the later of each pair
    assert [doc["id"] for doc in kept] == [doc["id"] for doc in docs if doc["id"] not in dropped]
    clusters = ctx.execute(dataset.near_duplicate_clusters("text", threshold=0.8, ngram_size=1)).to_pylist()
    assert sorted(tuple(sorted(doc["id"] for doc in clusters if doc["cluster_id"] == cluster)) for cluster in {d["cluster_id"] for d in clusters}) == sorted(pairs["0.96"])
    for doc in clusters:
        assert doc["row_id"] == position[doc["id"]] and doc["cluster_size"] == 2
        assert doc["cluster_id"] == min(position[other["id"]] for other in clusters if other["cluster_id"] == doc["cluster_id"])


def test_verify_drops_pairs_whose_signatures_disagree(ctx):
    docs, pairs = planted_corpus()
    dataset = Dataset.from_list(docs, num_shards=2)
    # One band of one row: every pair sharing the first permutation's minimum is a candidate,
    # most pairs at J = 0.5 among them; verify keeps those whose signatures agree on 80%.
    loose = ctx.execute(dataset.near_duplicate_clusters("text", ngram_size=1, bands=1, rows_per_band=1)).to_pylist()
    verified = ctx.execute(dataset.near_duplicate_clusters("text", ngram_size=1, bands=1, rows_per_band=1, verify=True)).to_pylist()
    in_pairs = {doc_id for pair in pairs["0.5"] for doc_id in pair}
    assert {doc["id"] for doc in loose} & in_pairs
    assert not {doc["id"] for doc in verified} & in_pairs
    assert {doc["id"] for doc in verified} <= {doc_id for pair in pairs["0.96"] for doc_id in pair}


def kjv_sample(num_rows: int) -> list[dict]:
    table = pq.read_table(KJV, columns=["book", "ref", "text"])
    return table.slice(0, num_rows).to_pylist() + table.filter(pa.compute.equal(table.column("book"), "1 Chronicles")).slice(0, 300).to_pylist()


def shingle_sets(docs: list[dict], ngram_size: int) -> list[set[tuple[str, ...]]]:
    sets = []
    for doc in docs:
        words = re.findall(r"\w+", doc["text"].lower())
        sets.append({tuple(words[i : i + ngram_size]) for i in range(max(len(words) - ngram_size + 1, 1))} if words else set())
    return sets


def test_clusters_agree_with_exact_jaccard_on_all_pairs():
    docs = kjv_sample(1200)  # Genesis (with its genealogies) and the first chapters of 1 Chronicles
    with ZephyrContext(backend="sync", progress=False) as ctx:
        clusters = ctx.execute(Dataset.from_list(docs, num_shards=4).near_duplicate_clusters("text", threshold=0.7, ngram_size=3)).to_pylist()
    cluster_of = {doc["row_id"]: doc["cluster_id"] for doc in clusters}
    sets = shingle_sets(docs, 3)
    similar = [(i, j, len(sets[i] & sets[j]) / len(sets[i] | sets[j])) for i, j in itertools.combinations(range(len(docs)), 2) if sets[i] & sets[j]]
    strong = [(i, j) for i, j, jaccard in similar if jaccard >= 0.85]
    assert len(strong) >= 5  # Genesis 10 and 46 against 1 Chronicles 1-2 and Exodus 6
    assert all(cluster_of.get(i) is not None and cluster_of.get(i) == cluster_of.get(j) for i, j in strong)
    # Every clustered document has a partner in its cluster at J >= 0.4: no chance collisions.
    best: dict[int, float] = {}
    for i, j, jaccard in similar:
        if cluster_of.get(i) is not None and cluster_of.get(i) == cluster_of.get(j):
            best[i] = max(best.get(i, 0), jaccard)
            best[j] = max(best.get(j, 0), jaccard)
    assert set(best) == set(cluster_of) and min(best.values()) >= 0.4


def test_debian_description_families_are_clusters_and_different_descriptions_are_kept():
    docs = pq.read_table(DEBIAN, columns=["package", "text"]).slice(0, 800).to_pylist()  # 9menu .. libbos-ocaml
    dataset = Dataset.from_list(docs, num_shards=3)
    with ZephyrContext(backend="sync", progress=False) as ctx:
        clusters = ctx.execute(dataset.near_duplicate_clusters("text", threshold=0.8)).to_pylist()
        kept = ctx.execute(dataset.fuzzy_deduplicate("text", threshold=0.8)).to_pylist()
    cluster_of = {doc["package"]: doc["cluster_id"] for doc in clusters}

    def together(*packages: str) -> bool:
        return packages[0] in cluster_of and len({cluster_of.get(package) for package in packages}) == 1

    forensics = ["all", "btrfs", "exfat", "ext2", "ext4", "files", "ntfs", "tools", "vfat"]
    assert together(*(f"forensics-samples-{name}" for name in forensics))  # one text, the file system's name changed
    assert together("kinit", "kinit-dev") and together("libbearssl0", "libbearssl-dev")  # a library and its development files
    assert together("docker-registry", "golang-github-docker-distribution-dev")  # two source packages, one upstream text
    assert not together("kinit", "libbearssl0")
    # The oracle: exact Jaccard of 5-word shingles, every pair.
    sets = shingle_sets(docs, 5)
    similar = {(i, j): len(sets[i] & sets[j]) / len(sets[i] | sets[j]) for i, j in itertools.combinations(range(len(docs)), 2) if sets[i] & sets[j]}
    strong = [(i, j) for (i, j), jaccard in similar.items() if jaccard >= 0.9]
    assert len(strong) >= 15 and all(together(docs[i]["package"], docs[j]["package"]) for i, j in strong)
    best = [0.0] * len(docs)
    for (i, j), jaccard in similar.items():
        if cluster_of.get(docs[i]["package"]) is None or cluster_of.get(docs[i]["package"]) != cluster_of.get(docs[j]["package"]):
            continue
        best[i], best[j] = max(best[i], jaccard), max(best[j], jaccard)
    assert all(best[index] >= 0.5 for index, doc in enumerate(docs) if doc["package"] in cluster_of)  # no chance collisions
    # Every description at Jaccard < 0.5 from all others is kept; of a cluster, only its first row.
    distinct = {docs[i]["package"] for i in range(len(docs))} - {docs[i]["package"] for pair, jaccard in similar.items() if jaccard >= 0.5 for i in pair}
    assert len(distinct) > 550 and not distinct & set(cluster_of)
    assert [doc["package"] for doc in kept] == [doc["package"] for row_id, doc in enumerate(docs) if cluster_of.get(doc["package"], row_id) == row_id]


def test_every_backend_gives_the_same_clusters(ctx):
    docs = kjv_sample(400)
    docs = docs + [{**doc, "text": doc["text"].upper()} for doc in docs[::7]]  # exact copies but for case
    dataset = Dataset.from_list(docs, num_shards=5)
    with ZephyrContext(backend="sync", progress=False) as reference:
        expected = reference.execute(dataset.near_duplicate_clusters(lambda d: d["book"] + " " + d["text"], threshold=0.6)).to_pylist()
        expected_kept = reference.execute(dataset.reshard(2).fuzzy_deduplicate("text", threshold=0.6)).to_pylist()
    assert len(expected) > 100
    assert ctx.execute(dataset.near_duplicate_clusters(lambda d: d["book"] + " " + d["text"], threshold=0.6)).to_pylist() == expected
    assert ctx.execute(dataset.reshard(2).fuzzy_deduplicate("text", threshold=0.6)).to_pylist() == expected_kept


def test_kjv_parallel_passages_are_clusters():
    with ZephyrContext(backend="sync", progress=False) as ctx:
        docs = Dataset.from_files(str(KJV)).load_parquet(columns=["book", "ref", "text"]).reshard(4)
        clusters = ctx.execute(docs.near_duplicate_clusters("text", threshold=0.5)).to_pylist()
    cluster_of = {(doc["book"], doc["ref"]): doc["cluster_id"] for doc in clusters}

    def together(*passages: tuple[str, str]) -> bool:
        return len({cluster_of.get(passage) for passage in passages}) == 1 and passages[0] in cluster_of

    assert together(("Genesis", "10:2"), ("1 Chronicles", "1:5"))  # the sons of Japheth
    assert together(("2 Samuel", "22:4"), ("Psalms", "18:3"))  # David's song, twice
    assert together(("2 Samuel", "7:17"), ("1 Chronicles", "17:15"))  # Nathan's vision, Samuel and Chronicles
    assert together(("1 Kings", "8:1"), ("2 Chronicles", "5:2"))  # the ark brought up, Kings and Chronicles
    assert together(("Matthew", "12:29"), ("Mark", "3:27"))  # the strong man's house, in two gospels
    assert not together(("Genesis", "1:1"), ("John", "1:1"))  # "In the beginning", and little else in common


def test_bad_arguments_fail_when_the_pipeline_is_built():
    docs = Dataset.from_list([{"text": "a"}])
    with pytest.raises(PlanError, match="threshold"):
        docs.fuzzy_deduplicate("text", threshold=1.5)
    with pytest.raises(PlanError, match="both bands and rows_per_band"):
        docs.fuzzy_deduplicate("text", bands=4)
    with pytest.raises(PlanError, match=r"bands \* rows_per_band <= num_perm"):
        docs.near_duplicate_clusters("text", num_perm=16, bands=4, rows_per_band=5)
    with pytest.raises(PlanError, match="key"):
        docs.fuzzy_deduplicate(["text", "title"])


def test_a_key_column_that_is_not_text_is_an_error_naming_it():
    with ZephyrContext(backend="sync", progress=False) as ctx:
        with pytest.raises(Exception, match="column 'n' holds int64"):
            ctx.execute(Dataset.from_list([{"n": 1}, {"n": 2}]).fuzzy_deduplicate("n"))


def test_no_candidates_keeps_every_row_and_empty_texts_are_kept():
    docs = [{"text": "alpha beta gamma delta epsilon"}, {"text": ""}, {"text": None}, {"text": ""}, {"text": "zeta eta theta iota kappa"}]
    with ZephyrContext(backend="sync", progress=False) as ctx:
        assert ctx.execute(Dataset.from_list(docs, num_shards=2).fuzzy_deduplicate("text")).to_pylist() == docs
        assert ctx.execute(Dataset.from_list(docs).near_duplicate_clusters("text")).to_pylist() == []


def test_only_the_output_chunks_remain_after_the_rounds(tmp_path):
    docs = [{"text": f"alpha beta gamma delta epsilon {i % 3} zeta eta theta"} for i in range(30)]
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(tmp_path), progress=False) as ctx:
        refs = ctx.execute(Dataset.from_list(docs, num_shards=3).map(lambda d: d).fuzzy_deduplicate("text", threshold=0.5))
        assert refs.to_pylist() == docs[:3]
        assert refs.counters == {}  # the rounds' own counter is not the user's
        files = {str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.parquet")}
        assert files == {chunk.path[len(str(tmp_path)) + 1 :] for chunk in refs.chunks}
        assert all("/stage-01-pipelines/004-output/" in path for path in files)


def test_chunks_on_an_object_store_give_the_same_clusters(s3_prefix):
    docs, pairs = planted_corpus()
    dataset = Dataset.from_list(docs, num_shards=3).near_duplicate_clusters("text", threshold=0.8, ngram_size=1)
    with ZephyrContext(backend="sync", progress=False) as local:
        expected = local.execute(dataset).to_pylist()
    with ZephyrContext(backend="sync", chunk_storage_prefix=s3_prefix, progress=False) as ctx:
        refs = ctx.execute(dataset)
        assert all(chunk.path.startswith("s3://") for chunk in refs.chunks)
        assert refs.to_pylist() == expected and len(expected) == 2 * len(pairs["0.96"])
