"""Few-shot prompts: k solved examples from the training rows before the question.

Shots come only from the training pool, and a pool row whose input equals the evaluated row's
input (after normalization) is never used for it: no test row ever appears in its own prompt.
Selection is random (seeded per row, so reruns give the same prompts) or by similarity
(TF-IDF cosine over the inputs).
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


def select_shots(item: EvalItem, position: int, pool: list[EvalItem], k: int, method: str, seed: int,
                 index: TfidfIndex | None = None) -> list[EvalItem]:
    """The k pool items to show before `item` (never one with the same input)."""
    same_input = {i for i, candidate in enumerate(pool) if normalize(candidate.key) == normalize(item.key)}
    if method == "similar":
        index = index or TfidfIndex([p.key for p in pool])
        chosen = index.nearest(item.key, k, same_input)
        if len(chosen) < k:  # no word in common with enough rows: fill at random
            rest = [i for i in range(len(pool)) if i not in same_input and i not in chosen]
            chosen += random.Random(f"{seed}-{position}").sample(rest, min(k - len(chosen), len(rest)))
        return [pool[i] for i in chosen]
    if method != "random":
        raise ValueError(f"unknown few-shot selection {method!r}")
    candidates = [i for i in range(len(pool)) if i not in same_input]
    rng = random.Random(f"{seed}-{position}")
    return [pool[i] for i in rng.sample(candidates, min(k, len(candidates)))]


def few_shot_prompt(item: EvalItem, shots: list[EvalItem]) -> tuple[Message, ...]:
    """The shots as earlier turns of the conversation (user question, assistant answer), then the item."""
    system = [m for m in item.prompt if m.role == "system"]
    turns: list[Message] = list(system)
    for shot in shots:
        turns.extend(m for m in shot.prompt if m.role != "system")
        turns.append(Message("assistant", shot.reference))
    turns.extend(m for m in item.prompt if m.role != "system")
    return tuple(turns)
