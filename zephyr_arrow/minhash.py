"""MinHash signatures and LSH bands, computed a batch of documents at a time.

Normalisation: a text is lower-cased (Unicode) and cut into words, the maximal runs of letters,
digits and underscores (Unicode ``\\w``); everything else (punctuation, whitespace of any kind)
only separates words. Shingles are the runs of ``ngram_size`` consecutive words (a text of fewer
words is one shingle of all of them; one of no words has none and is nobody's near-duplicate).

Each word is hashed by Polars (``Series.hash`` with a fixed seed, as the shuffle's keys are: the
same in every process of one Polars build), a shingle's hash combines its words' hashes and
keeps 32 bits ``x``, and permutation ``j`` of the signature maps ``x`` to ``(a[j] * x + b[j])
mod 2**64 >> 32``: Dietzfelbinger's multiply-add-shift, a 2-independent family for 32-bit keys,
with no division (datasketch's ``(a * x + b) mod (2**61 - 1)`` costs one per value and ran at a
third of the speed). ``(a, b)`` are drawn as ``datasketch.MinHash(num_perm, seed)`` draws its
permutations. All of it runs vectorised (numpy, all permutations by a block of shingles at a
time); Python loops over n-gram offsets and bands, never over shingles or documents.

Bands: the signature's ``num_perm`` values are cut into ``bands`` bands of ``rows_per_band``;
two documents are candidates when one band is equal. ``optimal_bands`` picks them as
datasketch's ``MinHashLSH`` does: the pair minimising the (equally weighted) sum of the areas
of false positives (similarity below the threshold, yet a candidate) and of false negatives.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa

_MERSENNE_PRIME = np.uint64((1 << 61) - 1)  # the range datasketch draws permutations from
MAX_HASH = np.uint64((1 << 32) - 1)
WORD_HASH_SEED = 0x3C6E_F372
_SHINGLE_MIX = np.uint64(0x9E37_79B9_7F4A_7C15)
_BLOCK_SHINGLES = 4096  # shingles hashed by every permutation at a time (4096 x 128 x 8 bytes = 4 MB)


def optimal_bands(threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows_per_band) with ``bands * rows_per_band <= num_perm`` minimising the weighted
    false positive and false negative areas of the S-curve ``1 - (1 - s**r)**b`` at ``threshold``."""
    best, best_error = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            error = false_positive_weight * _area(threshold, bands, rows, below=True)
            error += false_negative_weight * _area(threshold, bands, rows, below=False)
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


def _area(threshold: float, bands: int, rows: int, below: bool, steps: int = 200) -> float:
    """Simpson's rule over [0, threshold] of P(candidate), or over [threshold, 1] of P(not a candidate)."""
    low, high = (0.0, threshold) if below else (threshold, 1.0)
    width = (high - low) / steps
    total = 0.0
    for step in range(steps + 1):
        s = low + step * width
        candidate = 1.0 - (1.0 - s**rows) ** bands
        value = candidate if below else 1.0 - candidate
        total += value * (1 if step in (0, steps) else 4 if step % 2 else 2)
    return total * width / 3


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of each permutation (uint64), drawn as ``datasketch.MinHash(num_perm, seed)`` draws them."""
    generator = np.random.RandomState(seed)
    pairs = [
        (generator.randint(1, _MERSENNE_PRIME, dtype=np.uint64), generator.randint(0, _MERSENNE_PRIME, dtype=np.uint64))
        for _ in range(num_perm)
    ]
    a, b = np.array(pairs, dtype=np.uint64).T
    return a.copy(), b.copy()


def shingle_hashes(texts: pa.Array | pa.ChunkedArray, ngram_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The 32-bit hash of every shingle of every text (as uint64), and each text's number of shingles.

    A null text has no shingles. Shingles of one text are consecutive, texts in order.
    """
    import polars as pl

    words = pl.Series("text", texts).cast(pl.String).str.to_lowercase().str.extract_all(r"\w+")
    num_words = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    hashed = words.explode().drop_nulls().hash(WORD_HASH_SEED).to_numpy()
    num_shingles = np.where(num_words >= ngram_size, num_words - ngram_size + 1, np.minimum(num_words, 1))
    if not len(hashed):
        return np.zeros(0, np.uint64), num_shingles
    # The shingle starting at every word (past a text's end it mixes in the next text's words,
    # and is dropped below): n passes over slices, no gather.
    padded = np.concatenate([hashed, np.zeros(ngram_size - 1, np.uint64)])
    combined = padded[: len(hashed)].copy()
    with np.errstate(over="ignore"):
        for k in range(1, ngram_size):
            combined *= _SHINGLE_MIX
            combined += padded[k : k + len(hashed)]
    text_starts = np.cumsum(num_words) - num_words
    short = np.flatnonzero((num_words > 0) & (num_words < ngram_size))
    if len(short):  # a text of fewer words than ngram_size: one shingle of all of them
        lengths = num_words[short]
        partial = hashed[text_starts[short]].copy()
        with np.errstate(over="ignore"):
            for k in range(1, ngram_size - 1):
                following = hashed[np.minimum(text_starts[short] + k, len(hashed) - 1)]
                partial = np.where(k < lengths, partial * _SHINGLE_MIX + following, partial)
        combined[text_starts[short]] = partial
    offset_in_text = np.arange(len(hashed)) - np.repeat(text_starts, num_words)
    combined = combined[offset_in_text < np.repeat(num_shingles, num_words)]
    with np.errstate(over="ignore"):
        combined ^= combined >> np.uint64(29)
        combined *= _SHINGLE_MIX
    return combined >> np.uint64(32), num_shingles


def signatures(shingles: np.ndarray, num_shingles: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """The MinHash signature of each text (rows: texts, columns: permutations, uint64 < 2**32);
    a text of no shingles gets ``MAX_HASH`` everywhere."""
    a, b = permutations(num_perm, seed)
    result = np.full((len(num_shingles), num_perm), MAX_HASH, dtype=np.uint64)
    has = np.flatnonzero(num_shingles)
    if not len(has):
        return result
    ends = np.cumsum(num_shingles[has])
    begins = ends - num_shingles[has]
    text = 0
    with np.errstate(over="ignore"):
        while text < len(has):
            # A block of whole texts, of about _BLOCK_SHINGLES shingles (at least one text).
            stop = max(int(np.searchsorted(ends, begins[text] + _BLOCK_SHINGLES, side="right")), text + 1)
            # Permutations by shingles: each permutation's minima are taken along contiguous memory.
            hashed = a[:, None] * shingles[None, begins[text] : ends[stop - 1]]
            hashed += b[:, None]
            minima = np.minimum.reduceat(hashed, begins[text:stop] - begins[text], axis=1)
            minima >>= np.uint64(32)  # the high half of the least is the least high half: one shift per text, not per shingle
            result[has[text:stop]] = minima.T
            text = stop
    return result


def band_hashes(signature: np.ndarray, bands: int, rows_per_band: int) -> np.ndarray:
    """One uint64 per (text, band): the band's values and its index hashed together (texts x bands)."""
    result = np.empty((len(signature), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            value = np.full(len(signature), np.uint64(band + 1) * _SHINGLE_MIX, dtype=np.uint64)
            for column in range(band * rows_per_band, (band + 1) * rows_per_band):
                value = (value ^ signature[:, column]) * _SHINGLE_MIX
                value ^= value >> np.uint64(31)
            result[:, band] = value
    return result
