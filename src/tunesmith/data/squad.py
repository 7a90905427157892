"""Extractive QA scores as the official SQuAD v2.0 evaluation script defines them: answers
normalized (lower case, punctuation and the articles a/an/the removed, whitespace collapsed),
exact match and token-overlap F1 against each gold answer, the best one kept; a question with no
gold answer scores 1 only when the prediction is empty too."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact(gold: str, predicted: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(predicted))


def f1(gold: str, predicted: str) -> float:
    gold_tokens, predicted_tokens = normalize_answer(gold).split(), normalize_answer(predicted).split()
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)  # no answer: right only when both are empty
    common = sum((Counter(gold_tokens) & Counter(predicted_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(golds: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
    """Mean exact match and F1 (0-1) over questions, and for SQuAD 2.0 data the answerable and
    unanswerable parts and the no-answer accuracy."""
    exacts, f1s, has_answer = [], [], []
    for answers, predicted in zip(golds, predictions, strict=True):
        answers = [a for a in answers if normalize_answer(a)] or [""]
        exacts.append(max(exact(a, predicted) for a in answers))
        f1s.append(max(f1(a, predicted) for a in answers))
        has_answer.append(answers != [""])
    count = max(len(exacts), 1)
    scores = {"exact_match": sum(exacts) / count, "f1": sum(f1s) / count}
    if not all(has_answer):
        unanswerable = [e for e, has in zip(exacts, has_answer) if not has]
        scores["no_answer_accuracy"] = sum(unanswerable) / len(unanswerable)
        answerable = [f for f, has in zip(f1s, has_answer) if has]
        scores["has_answer_f1"] = sum(answerable) / len(answerable) if answerable else 0.0
    return scores
