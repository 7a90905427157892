"""Task metrics: label tasks (accuracy, per-class and macro precision / recall / F1, confusion
matrix) and free-text tasks (exact match, normalized exact match, ROUGE-L). Macro means run over the
labels present in the rows' gold or predicted labels, scikit-learn's definition.

A generated answer becomes a label by the first rule that matches (`map_answer_to_label`):
1. exact: the answer, stripped of surrounding whitespace, is a label;
2. normalized: lower-cased, punctuation removed and whitespace collapsed, it equals a label so
   normalized;
3. first matching label: the label whose normalized form occurs earliest in the normalized answer
   as whole words (at the same position, the longer label wins), leaving out every mention negated
   by the word before it ("not positive", "isn't negative", "never positive"), or by the word before
   a softener ("not really positive"): a negated label is not a vote, and if no other label is named the answer is
   unparsed (a binary "not positive" is not read as "negative": the model did not say it).
An answer no rule maps is "unparsed": it counts as wrong for every metric and is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tunesmith.data.text import normalize, normalize_for_match

UNPARSED = "(unparsed)"
def map_answer_to_label(answer: str, labels: Sequence[str]) -> tuple[str | None, str]:
    """(label, rule that matched) for a generated answer; (None, "unparsed") when no rule matches."""
    stripped = answer.strip()
    if stripped in labels:
        return stripped, "exact"
    normalized = normalize(answer)
    by_normal = {normalize(label): label for label in labels}
    if normalized in by_normal:
        return by_normal[normalized], "normalized"
    best: tuple[int, int, str] | None = None
    padded = f" {normalized} "
    for norm_label, label in by_normal.items():
        if not norm_label:
            continue
        position = _first_unnegated(padded, f" {norm_label} ")
        if position >= 0 and (best is None or (position, -len(norm_label)) < best[:2]):
            best = (position, -len(norm_label), label)
    if best is not None:
        return best[2], "first match"
    return None, "unparsed"


# Words that negate the label right after them (within two words), after normalization ("isn't" -> "isn t").
_NEGATIONS = {"not", "no", "never", "nor", "neither", "t", "cannot", "without", "hardly"}
_SOFTENERS = {"really", "very", "so", "too", "that", "quite", "exactly", "entirely", "particularly", "especially", "all"}


def _first_unnegated(padded: str, needle: str) -> int:
    """Position of the first whole-word mention of `needle` in `padded` not negated just before it; -1 if none."""
    start = padded.find(needle)
    while start >= 0:
        before = padded[:start].split()[-2:]
        negated = bool(before) and (before[-1] in _NEGATIONS or (len(before) == 2 and before[-1] in _SOFTENERS
                                                                 and before[0] in _NEGATIONS))
        if not negated:
            return start
        start = padded.find(needle, start + 1)
    return -1


@dataclass
class LabelMetrics:
    accuracy: float
    per_class: dict[str, dict[str, float]]  # label -> precision, recall, f1, support
    macro: dict[str, float]  # precision, recall, f1: means over the labels present in gold or predicted
    confusion: list[list[int]]  # rows: gold label; columns: labels, then UNPARSED
    labels: list[str]
    unparsed: int
    rules: dict[str, int] = field(default_factory=dict)  # how answers were mapped

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "macro_precision": self.macro["precision"], "macro_recall": self.macro["recall"],
                "macro_f1": self.macro["f1"], "unparsed": self.unparsed, "per_class": self.per_class,
                "confusion": self.confusion, "labels": self.labels, "rules": self.rules}


def label_metrics(gold: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str]) -> LabelMetrics:
    """Metrics of predicted labels (None = unparsed, always wrong) against gold labels. The macro
    average runs over the labels present in these rows' gold or predicted labels, as scikit-learn's
    does (seqeval's too, for entity types): a label nothing tested and nothing predicted is no error,
    where a fixed label set would score it 0 (a group or a bootstrap resample without a rare label)."""
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    confusion = [[0] * (len(labels) + 1) for _ in labels]
    for truth, guess in zip(gold, predicted):
        confusion[index[truth]][index[guess] if guess in index else len(labels)] += 1
    per_class, present = {}, []
    for i, label in enumerate(labels):
        true_positive = confusion[i][i]
        predicted_count = sum(row[i] for row in confusion)
        support = sum(confusion[i])
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support or predicted_count:
            present.append(label)
    macro = {name: sum(per_class[label][name] for label in present) / len(present) if present else 0.0
             for name in ("precision", "recall", "f1")}
    correct = sum(confusion[i][i] for i in range(len(labels)))
    unparsed = sum(row[-1] for row in confusion)
    return LabelMetrics(correct / len(gold) if gold else 0.0, per_class, macro, confusion, labels, unparsed)


def metrics_by_group(members: dict[str, list[int]], gold: Sequence[str], predicted: Sequence[str | None],
                     labels: Sequence[str]) -> dict:
    """Accuracy and macro F1 of the rows of each group (`members`: group -> row indices; macro F1 over
    the labels present in the group's rows, so a group of one class, all right, scores 1), and the
    gaps between the best and the worst group with rows (None with fewer than two such groups)."""
    groups = {}
    for name, rows in members.items():
        if not rows:
            groups[name] = {"rows": 0, "accuracy": None, "macro_f1": None}
            continue
        scored = label_metrics([gold[i] for i in rows], [predicted[i] for i in rows], labels)
        groups[name] = {"rows": len(rows), "accuracy": scored.accuracy, "macro_f1": scored.macro["f1"]}
    found = [g for g in groups.values() if g["rows"]]
    gap = None
    if len(found) > 1:
        gap = {key: max(g[key] for g in found) - min(g[key] for g in found) for key in ("accuracy", "macro_f1")}
    return {"groups": groups, "gap": gap}


def contains_answer(reference: str, prediction: str) -> bool:
    """The reference, normalized, is a whole-word run inside the normalized prediction: open-domain
    QA's "has answer" accuracy (as DPR and the RAG paper score generated answers), fair to a model
    that answers in a sentence ("He was born in 1702.") where exact match counts it wrong."""
    wanted = normalize_for_match(reference)
    return bool(wanted) and f" {wanted} " in f" {normalize_for_match(prediction)} "


def text_metrics(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Exact match, normalized exact match, answer contained, and mean ROUGE-L F-measure (Google's rouge-score)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    count = max(len(references), 1)
    return {
        "exact_match": sum(r.strip() == p.strip() for r, p in zip(references, predictions)) / count,
        "normalized_exact_match": sum(normalize_for_match(r) == normalize_for_match(p) for r, p in zip(references, predictions)) / count,
        "contains_answer": sum(contains_answer(r, p) for r, p in zip(references, predictions)) / count,
        "rouge_l": sum(scorer.score(r, p)["rougeL"].fmeasure for r, p in zip(references, predictions)) / count,
    }


def row_scores(labels: Sequence[str] | None, references: Sequence[object],
               answers: Sequence[object]) -> dict[str, list[float]]:
    """Per-row scores whose means are the task's row-decomposable metrics: accuracy for a label task
    (answers are predicted labels, None when unparsed), exact match and ROUGE-L for free text."""
    if labels:
        return {"accuracy": [float(answer == reference) for answer, reference in zip(answers, references)]}
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return {"exact_match": [float(str(a).strip() == str(r).strip()) for a, r in zip(answers, references)],
            "contains_answer": [float(contains_answer(str(r), str(a))) for a, r in zip(answers, references)],
            "rouge_l": [scorer.score(str(r), str(a))["rougeL"].fmeasure for a, r in zip(answers, references)]}
