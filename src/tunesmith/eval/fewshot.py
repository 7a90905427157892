"""Few-shot prompts: k solved examples from the training rows before the question.

Shots come only from the training pool, and a pool row whose input equals the evaluated row's
input (after normalization) is never used for it: no test row ever appears in its own prompt.
Selection is random (seeded per row, so reruns give the same prompts) or by similarity
(TF-IDF cosine over the inputs); for label tasks either one is balanced over the classes.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict

from tunesmith.data.examples import Message
from tunesmith.eval.items import EvalItem
from tunesmith.eval.metrics import normalize

_WORD = re.compile(r"\w+")


class TfidfIndex:
    """Sparse TF-IDF vectors of the pool inputs with an inverted index. Written here rather than
    taken from scikit-learn: thirty lines instead of a large dependency for one use."""

    def __init__(self, texts: list[str]) -> None:
        counts = [Counter(_WORD.findall(text.lower())) for text in texts]
        document_frequency = Counter(term for count in counts for term in count)
        self.idf = {t: math.log((1 + len(texts)) / (1 + df)) + 1 for t, df in document_frequency.items()}
        self.postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for index, count in enumerate(counts):
            vector = self._vector(count)
            for term, weight in vector.items():
                self.postings[term].append((index, weight))

    def _vector(self, count: Counter) -> dict[str, float]:
        weights = {t: c * self.idf[t] for t, c in count.items() if t in self.idf}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {t: w / norm for t, w in weights.items()}

    def nearest(self, text: str, k: int, exclude: set[int]) -> list[int]:
        scores: dict[int, float] = defaultdict(float)
        for term, weight in self._vector(Counter(_WORD.findall(text.lower()))).items():
            for index, other in self.postings.get(term, ()):
                scores[index] += weight * other
        ranked = sorted((i for i in scores if i not in exclude), key=lambda i: (-scores[i], i))
        return ranked[:k]


SELECTIONS = ("random", "similar", "fixed")


def select_shots(item: EvalItem, position: int, pool: list[EvalItem], k: int, method: str, seed: int,
                 index: TfidfIndex | None = None) -> list[EvalItem]:
    """The k pool items to show before `item` (never one with the same input).

    For a label task the shots are balanced: classes take turns in a seeded order, so k shots over c
    classes differ by at most one per class (5 binary shots are 3:2, never 4:1, which a small model
    would copy), random or most similar within each class, and shown in interleaved order."""
    if method not in SELECTIONS:
        raise ValueError(f"unknown few-shot selection {method!r}")
    same_input = {i for i, candidate in enumerate(pool) if normalize(candidate.key) == normalize(item.key)}
    # fixed: one seeded draw for every row (as HELM shows the same examples to every instance), so
    # the prompts share the block of shots and likelihood scoring runs it once; a row whose own input
    # is among them gets the next ones in the same draw instead.
    rng = random.Random(f"{seed}-fixed" if method == "fixed" else f"{seed}-{position}")
    if method == "similar":
        index = index or TfidfIndex([p.key for p in pool])
        ranked = index.nearest(item.key, len(pool), same_input)
        rest = [i for i in range(len(pool)) if i not in same_input and i not in set(ranked)]
        rng.shuffle(rest)  # no word in common: the rest at random, after every similar row
        order = ranked + rest
    elif method == "fixed":  # the draw before leaving out the row's own input, so it is every row's
        order = list(range(len(pool)))
        rng.shuffle(order)
        order = [i for i in order if i not in same_input]
    else:
        order = [i for i in range(len(pool)) if i not in same_input]
        rng.shuffle(order)
    if all(pool[i].label is None for i in order):
        return [pool[i] for i in order[:k]]
    return [pool[i] for i in _round_robin(order, pool, k, rng)]


def _round_robin(order: list[int], pool: list[EvalItem], k: int, rng: random.Random) -> list[int]:
    """Up to k indices taken in turn from each class (classes in a seeded order), each class's own
    candidates in `order`; a class that runs out leaves its turns to the others."""
    by_class: dict[str | None, list[int]] = defaultdict(list)
    for i in order:
        by_class[pool[i].label].append(i)
    classes = sorted(by_class, key=str)
    rng.shuffle(classes)
    queues = [list(reversed(by_class[c])) for c in classes]
    chosen: list[int] = []
    while len(chosen) < k and any(queues):
        for queue in queues:
            if queue and len(chosen) < k:
                chosen.append(queue.pop())
    return chosen


def few_shot_prompt(item: EvalItem, shots: list[EvalItem]) -> tuple[Message, ...]:
    """The shots as earlier turns of the conversation (user question, assistant answer), then the item."""
    system = [m for m in item.prompt if m.role == "system"]
    turns: list[Message] = list(system)
    for shot in shots:
        turns.extend(m for m in shot.prompt if m.role != "system")
        turns.append(Message("assistant", shot.reference))
    turns.extend(m for m in item.prompt if m.role != "system")
    return tuple(turns)
