"""Exact and near duplicates, within a data set and across two (leakage).

Near duplicates come from datasketch's MinHash LSH over word 3-gram shingles (the method of the
GPT-3 and The Pile de-duplication, with shorter shingles for rows of a sentence or two), and every candidate pair the LSH proposes is checked against
the true Jaccard similarity of the two shingle sets, so a reported pair is never an LSH artefact.

What most rows share says nothing about whether two rows are alike: an instruction template, a
stock opening of every answer. Shingles found in more than half of the rows (of data sets of
`COMMON_MIN_ROWS` rows or more) are left out of the near-duplicate and leakage comparisons, as are
13-word runs found in more than half of the training answers; a row made only of such shingles
keeps them. (The audit compares rows without their system turns: see rows.py.) Exact duplicates
are rows equal after normalization, shared parts and all.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass

from tunesmith.data.text import normalize

SHINGLE = 3  # words per shingle: one changed word in 30 still leaves a Jaccard of 0.8
PERMUTATIONS = 64
# The LSH's bands are tuned below the reported threshold: tuned at it, MinHash LSH misses about
# half of the pairs that sit right at it; every candidate is confirmed by its true Jaccard anyway.
LSH_MARGIN = 0.2
THRESHOLD = 0.7  # Jaccard similarity from which two rows count as near duplicates
COMMON = 0.5  # a shingle in more than this share of the rows is boilerplate
COMMON_MIN_ROWS = 10  # below this, "most rows" may be one duplicate pair: nothing counts as boilerplate


@dataclass(frozen=True)
class DuplicateGroup:
    rows: tuple[str, ...]  # file:line of each row in the group, first occurrence first
    similarity: float  # 1.0 for exact duplicates (after normalization); the lowest pair's Jaccard otherwise
    exact: bool


def shingles(text: str, size: int = SHINGLE) -> set[str]:
    words = normalize(text).split()
    if len(words) <= size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def common_shingles(shingle_sets: list[set[str]]) -> set[str]:
    """Shingles in more than half of the sets: a template or stock phrase most rows share."""
    if len(shingle_sets) < COMMON_MIN_ROWS:
        return set()
    counts: Counter = Counter()
    for shingle_set in shingle_sets:
        counts.update(shingle_set)
    return {shingle for shingle, n in counts.items() if n > COMMON * len(shingle_sets)}


def without(shingle_sets: list[set[str]], common: set[str]) -> list[set[str]]:
    """Each set less the common shingles, or whole where nothing else would be left."""
    return [(shingle_set - common) or shingle_set for shingle_set in shingle_sets] if common else shingle_sets


def _digest(text: str) -> str:
    return hashlib.blake2b(normalize(text).encode(), digest_size=16).hexdigest()


def _minhashes(shingle_sets: list[set[str]]):
    from datasketch import MinHash

    # bulk hashing is several times faster than updating one MinHash at a time, and CRC-32 (C, stable
    # across processes) hashes a shingle in a third of the time of datasketch's default SHA-1
    return MinHash.bulk([[s.encode() for s in group] or [b""] for group in shingle_sets],
                        num_perm=PERMUTATIONS, seed=1, hashfunc=zlib.crc32)


def find_duplicates(wheres: list[str], texts: list[str], threshold: float = THRESHOLD) -> list[DuplicateGroup]:
    """Groups of rows whose texts are equal after normalization, then groups of near duplicates
    (Jaccard >= threshold) among the rest, each listed once."""
    from datasketch import MinHashLSH

    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(texts):
        by_digest[_digest(text)].append(i)
    groups = [DuplicateGroup(tuple(wheres[i] for i in rows), 1.0, True) for rows in by_digest.values() if len(rows) > 1]
    firsts = [rows[0] for rows in by_digest.values()]  # one row per exact group takes part in the near search
    sets = [shingles(texts[i]) for i in firsts]
    sets = without(sets, common_shingles(sets))
    lsh = MinHashLSH(threshold=max(threshold - LSH_MARGIN, 0.1), num_perm=PERMUTATIONS)
    hashes = _minhashes(sets)
    parent = list(range(len(firsts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    lowest: dict[int, float] = {}
    for i, minhash in enumerate(hashes):
        for j in lsh.query(minhash):
            similarity = jaccard(sets[i], sets[j])
            if similarity >= threshold:
                a, b = root(i), root(j)
                parent[max(a, b)] = min(a, b)
                lowest[min(a, b)] = min(lowest.get(min(a, b), 1.0), lowest.get(max(a, b), 1.0), similarity)
        lsh.insert(i, minhash)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(firsts)):
        members[root(i)].append(i)
    for top, rows in members.items():
        if len(rows) > 1:
            groups.append(DuplicateGroup(tuple(wheres[firsts[i]] for i in sorted(rows)), lowest.get(top, threshold), False))
    return groups


@dataclass(frozen=True)
class Leak:
    train: str  # file:line of the training row
    held_out: str  # file:line of the validation or test row
    kind: str  # "exact", "near" or "ngram"
    similarity: float


def find_leaks(train_wheres: list[str], train_texts: list[str], held_wheres: list[str], held_texts: list[str],
               train_answers: list[str], held_answers: list[str], *, threshold: float = THRESHOLD,
               ngram: int = 13) -> list[Leak]:
    """Held-out rows that equal or nearly equal a training row, or share a long run of words
    (`ngram` words, as GPT-3's contamination check) between their answers; at most one leak per
    held-out row, the strongest."""
    from datasketch import MinHashLSH

    digests: dict[str, int] = {}
    for i, text in enumerate(train_texts):
        digests.setdefault(_digest(text), i)
    train_sets = [shingles(text) for text in train_texts]
    common = common_shingles(train_sets)
    train_sets = without(train_sets, common)
    lsh = MinHashLSH(threshold=max(threshold - LSH_MARGIN, 0.1), num_perm=PERMUTATIONS)
    for i, minhash in enumerate(_minhashes(train_sets)):
        lsh.insert(i, minhash)
    grams = _answer_grams(train_answers, ngram)
    leaks = []
    held_sets = without([shingles(text) for text in held_texts], common)
    for j, minhash in enumerate(_minhashes(held_sets)):
        if (i := digests.get(_digest(held_texts[j]))) is not None:
            leaks.append(Leak(train_wheres[i], held_wheres[j], "exact", 1.0))
            continue
        near = [(jaccard(held_sets[j], train_sets[i]), i) for i in lsh.query(minhash)]
        near = [pair for pair in near if pair[0] >= threshold]
        if near:
            similarity, i = max(near)
            leaks.append(Leak(train_wheres[i], held_wheres[j], "near", similarity))
            continue
        shared = next((grams[g] for g in sorted(_grams(held_answers[j], ngram)) if g in grams), None)
        if shared is not None:
            leaks.append(Leak(train_wheres[shared], held_wheres[j], "ngram", 0.0))
    return leaks


def _grams(answer: str, ngram: int) -> set[str]:
    return shingles(answer, ngram) if len(normalize(answer).split()) >= ngram else set()


def _answer_grams(answers: list[str], ngram: int) -> dict[str, int]:
    """Each `ngram`-word run of the answers -> the first answer holding it, less the runs most
    answers share (a stock opening or sign-off)."""
    gram_sets = [_grams(answer, ngram) for answer in answers]
    common = common_shingles(gram_sets)
    grams: dict[str, int] = {}
    for i, gram_set in enumerate(gram_sets):
        for gram in gram_set - common:
            grams.setdefault(gram, i)
    return grams
