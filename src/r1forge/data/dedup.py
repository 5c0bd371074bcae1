"""Exact and near-duplicate removal, and n-gram decontamination against eval sets.

Near duplicates are found with MinHash over word shingles and LSH banding, then confirmed
by the exact Jaccard similarity, so the cost stays near-linear in the number of texts.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

_TOKEN = re.compile(r"\w+|[^\w\s]")
_PRIME = (1 << 61) - 1


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def normalize(text: str) -> str:
    return " ".join(tokens(text))


def exact_duplicates(texts: Sequence[str]) -> list[bool]:
    """True for every text whose normalised form appeared earlier in the list."""
    seen: set[str] = set()
    flags = []
    for text in texts:
        key = normalize(text)
        flags.append(key in seen)
        seen.add(key)
    return flags


def _shingles(text: str, size: int) -> set[str]:
    words = tokens(text)
    if len(words) <= size:
        return {" ".join(words)}
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def _hash64(items: Iterable[str]) -> np.ndarray:
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") % _PRIME
            for s in items
        ],
        dtype=np.uint64,
    )


def near_duplicates(
    texts: Sequence[str],
    threshold: float = 0.9,
    shingle_size: int = 3,
    num_perm: int = 64,
    bands: int = 16,
) -> list[bool]:
    """True for every text with Jaccard similarity >= threshold to an earlier kept text."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    rows = num_perm // bands
    rng = np.random.default_rng(0x51A)
    a = rng.integers(1, 1 << 31, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 31, size=num_perm, dtype=np.uint64)
    shingle_sets = [_shingles(t, shingle_size) for t in texts]
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    flags = []
    for index, shingles in enumerate(shingle_sets):
        hashes = _hash64(sorted(shingles)) % (1 << 31)
        signature = ((hashes[None, :] * a[:, None] + b[:, None]) % _PRIME).min(axis=1)
        keys = [
            (band, signature[band * rows : (band + 1) * rows].tobytes()) for band in range(bands)
        ]
        candidates = {j for key in keys for j in buckets.get(key, ())}
        duplicate = any(
            len(shingles & shingle_sets[j]) / len(shingles | shingle_sets[j]) >= threshold
            for j in candidates
        )
        flags.append(duplicate)
        if not duplicate:
            for key in keys:
                buckets[key].append(index)
    return flags


def contaminated(
    train_texts: Sequence[str], eval_texts: Sequence[str], n: int = 13, boilerplate: float = 0.05
) -> list[bool]:
    """True for every training text that shares an n-gram of words with any eval text.

    Eval texts shorter than n words count as one gram of their own length, so a short
    eval question reappearing inside a training text is caught too. Grams found in more
    than `boilerplate` of the eval texts (and at least 3) are prompt templates, not
    problems, and are ignored.
    """
    frequency: dict[tuple[str, ...], int] = defaultdict(int)
    for text in eval_texts:
        words = tuple(tokens(text))
        size = min(n, len(words))
        for gram in {words[i : i + size] for i in range(len(words) - size + 1)} if size else ():
            frequency[gram] += 1
    limit = max(3, boilerplate * len(eval_texts))
    grams_by_size: dict[int, set[tuple[str, ...]]] = defaultdict(set)
    for gram, count in frequency.items():
        if count <= limit:
            grams_by_size[len(gram)].add(gram)
    flags = []
    for text in train_texts:
        words = tuple(tokens(text))
        flags.append(
            any(
                words[i : i + size] in grams
                for size, grams in grams_by_size.items()
                for i in range(len(words) - size + 1)
            )
        )
    return flags
