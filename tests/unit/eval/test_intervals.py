"""Bootstrap intervals: a known difference is covered, no difference is not called a gain."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.eval.intervals import gain_interval, mean_gain_interval, metric_interval
from tunesmith.eval.metrics import label_metrics


def _accuracy(predicted, gold) -> float:
    return float(np.mean([p == g for p, g in zip(predicted, gold)]))


def test_the_interval_of_a_known_difference_covers_it():
    rng = np.random.default_rng(7)
    rows = 2000
    gold = ["a"] * rows
    baseline = ["a" if rng.random() < 0.60 else "b" for _ in range(rows)]  # true accuracy 0.60
    candidate = ["a" if rng.random() < 0.75 else "b" for _ in range(rows)]  # true accuracy 0.75
    gain = gain_interval(_accuracy, baseline, candidate, gold, resamples=1000, seed=1)
    assert gain.low < 0.15 < gain.high and gain.excludes_zero
    assert gain.estimate == pytest.approx(_accuracy(candidate, gold) - _accuracy(baseline, gold))
    assert "is above zero" in gain.verdict("the fine-tuned model's accuracy gain")
    single = metric_interval(_accuracy, candidate, gold, resamples=1000)
    assert single.low < 0.75 < single.high and single.high - single.low < 0.06


def test_coverage_over_many_experiments_is_near_the_level():
    rng = np.random.default_rng(3)
    covered = 0
    for experiment in range(200):
        a = (rng.random(300) < 0.7).astype(float)
        b = (rng.random(300) < 0.8).astype(float)
        interval = mean_gain_interval(a, b, resamples=500, seed=experiment)
        covered += interval.low < 0.1 < interval.high
    assert 0.90 <= covered / 200 <= 0.99  # a 95% interval covers the true gain about 95% of the time


def test_identical_systems_are_not_told_apart():
    answers = ["a", "b", "a", "a", "b"] * 40
    gold = ["a", "b", "b", "a", "a"] * 40
    gain = gain_interval(_accuracy, answers, answers, gold)
    assert gain.estimate == 0 and gain.low == 0 and gain.high == 0 and not gain.excludes_zero
    close = gain_interval(_accuracy, answers, answers[:-2] + ["b", "a"], gold)  # two rows differ
    assert close.low < 0 < close.high and "cannot be told apart from zero" in close.verdict("the gain")


def test_macro_f1_gain_is_recomputed_per_resample():
    def macro_f1(predicted, gold):
        return label_metrics(gold, predicted, ["pos", "neg"]).macro["f1"]

    gold = ["pos", "neg"] * 50
    perfect = list(gold)
    majority = ["pos"] * 100
    gain = gain_interval(macro_f1, majority, perfect, gold, resamples=300)
    assert gain.estimate == pytest.approx(1 - macro_f1(majority, gold)) and gain.low > 0.5


def test_a_perfect_classifier_with_a_rare_class_has_macro_f1_one_in_every_resample():
    # 2 of 100 rows are class c: about 13% of resamples hold none of them, and a macro average over a
    # fixed label set scored those 2/3 (c: no gold, no prediction, F1 0), an interval of [0.67, 1.0]
    from tunesmith.eval.intervals import system_intervals

    gold = ["a"] * 50 + ["b"] * 48 + ["c"] * 2
    found = system_intervals(["a", "b", "c"], gold, {"tuned": list(gold), "base": ["a"] * 100}, "tuned", resamples=500)
    perfect = found["systems"]["tuned"]["macro_f1"]
    assert (perfect.estimate, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    assert found["systems"]["base"]["macro_f1"].estimate == pytest.approx(2 / 3 / 3)  # a: F1 2/3; b and c: 0
