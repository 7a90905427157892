"""How sure is a score, and a gain: paired bootstrap confidence intervals over the evaluation rows.

Every system answers the same rows, so a gain is measured pairwise: each resample draws rows with
replacement and recomputes both systems' metric on the same draw. The percentile interval of the
resampled gains is the 95% interval (Efron & Tibshirani 1993, ch. 13; the paired design is what
evaluation harnesses use to compare two models on one test set).

Written with numpy rather than taken from scipy.stats.bootstrap: scipy is not otherwise a dependency
(tens of MB for ten lines), and the metrics here (macro F1 over the labels each resample holds) need
the resampled predictions themselves, which a resample index matrix gives directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval."""

    estimate: float
    low: float
    high: float
    resamples: int
    level: float = LEVEL

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "resamples": self.resamples,
                "level": self.level}

    def text(self, digits: int = 3) -> str:
        return f"{self.estimate:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def verdict(self, what: str) -> str:
        """The interval in words: is the difference distinguishable from zero?"""
        percent = f"{self.level:.0%}"
        if self.low > 0:
            return f"{what} is above zero ({percent} interval {self.text()})"
        if self.high < 0:
            return f"{what} is below zero ({percent} interval {self.text()})"
        return f"{what} cannot be told apart from zero on these rows ({percent} interval {self.text()})"


Metric = Callable[[Sequence[object], Sequence[object]], float]  # (predictions, references) -> value



def resample_indices(rows: int, *, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples, rows] row indices drawn with replacement, the same for every system compared."""
    return np.random.default_rng(seed).integers(0, rows, size=(resamples, rows))


def metric_interval(metric: Metric, predictions: Sequence[object], references: Sequence[object], *,
                    resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """The metric of one system, with its percentile bootstrap interval over rows."""
    predictions, references = list(predictions), list(references)
    draws = resample_indices(len(references), resamples=resamples, seed=seed)
    values = np.array([metric([predictions[i] for i in draw], [references[i] for i in draw]) for draw in draws])
    return _interval(metric(predictions, references), values, level)


def gain_interval(metric: Metric, baseline: Sequence[object], candidate: Sequence[object], references: Sequence[object],
                  *, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """metric(candidate) - metric(baseline) on the same rows, with its paired bootstrap interval."""
    baseline, candidate, references = list(baseline), list(candidate), list(references)
    if not len(baseline) == len(candidate) == len(references):
        raise ValueError("a paired interval needs both systems' answers to the same rows")
    draws = resample_indices(len(references), resamples=resamples, seed=seed)
    values = []
    for draw in draws:
        gold = [references[i] for i in draw]
        values.append(metric([candidate[i] for i in draw], gold) - metric([baseline[i] for i in draw], gold))
    return _interval(metric(candidate, references) - metric(baseline, references), np.array(values), level)


def mean_gain_interval(baseline_scores: Sequence[float], candidate_scores: Sequence[float], *,
                       resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """Difference of per-row scores (correctness, ROUGE, exact match): vectorized over resamples."""
    difference = np.asarray(candidate_scores, dtype=np.float64) - np.asarray(baseline_scores, dtype=np.float64)
    draws = resample_indices(len(difference), resamples=resamples, seed=seed)
    return _interval(float(difference.mean()), difference[draws].mean(axis=1), level)


def _interval(estimate: float, values: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), len(values), level)


def macro_f1_metric(labels: Sequence[str]) -> Metric:
    """Macro F1 (over the labels present in the resample; an unparsed answer, None, is wrong), as a bootstrap metric."""
    from tunesmith.eval.metrics import label_metrics

    return lambda predicted, gold: label_metrics(list(gold), list(predicted), labels).macro["f1"]


def system_intervals(labels: Sequence[str] | None, references: Sequence[object], answers: dict[str, Sequence[object]],
                     tuned: str | None, *, resamples: int = RESAMPLES, seed: int = 0) -> dict[str, dict[str, dict[str, Interval]]]:
    """Every system's headline metrics with intervals, and the gain of `tuned` over every other system.

    `answers` maps a system's name to its per-row answers: predicted labels (None when unparsed) for
    a label task, generated texts otherwise. Returns {"systems": {name: {metric: Interval}},
    "gains": {name: {metric: Interval of tuned - name}}}; no gains when `tuned` is None or absent."""
    from tunesmith.eval.metrics import row_scores

    per_row = {name: row_scores(labels, references, values) for name, values in answers.items()}
    result: dict[str, dict[str, dict[str, Interval]]] = {"systems": {}, "gains": {}}
    for name, scores in per_row.items():
        result["systems"][name] = {metric: mean_gain_interval([0.0] * len(values), values, resamples=resamples, seed=seed)
                                   for metric, values in scores.items()}
    for name, scores in per_row.items():
        if name == tuned or tuned not in per_row:
            continue
        result["gains"][name] = {metric: mean_gain_interval(values, per_row[tuned][metric], resamples=resamples, seed=seed)
                                 for metric, values in scores.items()}
    if labels:
        f1 = macro_f1_metric(labels)
        for name, values in answers.items():
            result["systems"][name]["macro_f1"] = metric_interval(f1, values, references, resamples=resamples, seed=seed)
            if name != tuned and tuned in answers:
                result["gains"][name]["macro_f1"] = gain_interval(f1, values, answers[tuned], references,
                                                                  resamples=resamples, seed=seed)
    return result


def micro_f1_intervals(counts: dict[str, np.ndarray], tuned: str | None, *, resamples: int = RESAMPLES,
                       seed: int = 0) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """Micro F1 (2 correct / (predicted + gold), as entity-level scores define it) of each system,
    and the gain of `tuned` over each other, from per-row counts ([rows, 3]: correct, predicted,
    gold), resampling whole rows (sentences) with the same draws for every system."""
    def f1(totals: np.ndarray) -> np.ndarray:
        denominator = totals[..., 1] + totals[..., 2]
        return np.where(denominator > 0, 2 * totals[..., 0] / np.maximum(denominator, 1), 0.0)

    rows = len(next(iter(counts.values())))
    draws = resample_indices(rows, resamples=resamples, seed=seed)
    resampled = {name: f1(values[draws].sum(axis=1)) for name, values in counts.items()}
    systems = {name: _interval(float(f1(values.sum(axis=0))), resampled[name], LEVEL) for name, values in counts.items()}
    gains = {name: _interval(systems[tuned].estimate - systems[name].estimate, resampled[tuned] - resampled[name], LEVEL)
             for name in counts if tuned in counts and name != tuned}
    return systems, gains
