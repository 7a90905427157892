"""Evaluation of a trained classification head on labelled rows."""

from __future__ import annotations

import time

from tunesmith.config import EvalConfig
from tunesmith.eval.compare import Comparison, SystemResult
from tunesmith.eval.items import EvalItem
from tunesmith.eval.metrics import label_metrics
from tunesmith.models.classifier import Classifier, load_classifier, predict_probabilities

__all__ = ["Classifier", "evaluate_classifier", "load_classifier", "predict_probabilities"]


def evaluate_classifier(classifier: Classifier, items: list[EvalItem], settings: EvalConfig,
                        name: str = "classification head") -> Comparison:
    """Label metrics of the classifier on `items` (labelled rows), as a one-system comparison."""
    started = time.perf_counter()
    probabilities = predict_probabilities(classifier, [item.key for item in items], batch_size=settings.batch_size)
    predicted = [classifier.labels[i] for i in probabilities.argmax(axis=1)]
    metrics = label_metrics([item.label for item in items], predicted, classifier.labels)
    metrics.rules = {"argmax": len(items)}
    answers = [f"{label} ({probabilities[n].max():.2f})" for n, label in enumerate(predicted)]
    system = SystemResult(name, classifier.name, answers, metrics.as_dict(), time.perf_counter() - started, 0,
                          predicted=predicted, rules=["argmax"] * len(items))
    return Comparison("label", items, [system], list(classifier.labels))
