"""The retrain gate's verdict from its two sets: on the run's test set the new generation must not be
worse by more than the margin (by default: the lower end of the 95% interval of the difference, not
only its estimate), and on the held-out new rows it must be better."""

from __future__ import annotations

import random

from tunesmith.improve.retrain import GateSet, decide


def gate_set(name: str, estimate: float, low: float, high: float, rows: int = 16) -> GateSet:
    interval = {"estimate": estimate, "low": low, "high": high, "resamples": 200, "level": 0.95}
    return GateSet(name, rows, "macro_f1", {}, {}, interval)


def sets(test: tuple[float, float, float], new: tuple[float, float, float]) -> list[GateSet]:
    return [gate_set("run's test set", *test), gate_set("held-out new rows", *new)]


def test_an_estimate_within_the_margin_whose_interval_reaches_below_it_is_refused() -> None:
    wide = sets((-0.01, -0.12, 0.09), (0.30, 0.10, 0.50))  # the test set cannot rule out a drop of 0.12
    promoted, reasons = decide(wide, 0.02)
    assert not promoted
    assert "interval reaches -0.120, below the margin of -0.02" in reasons[0] and "16 rows" in reasons[0]
    assert decide(wide, 0.02, test_interval=False)[0]  # the estimate alone (the old gate) lets it through
    assert decide(wide, 0.15)[0]  # a margin wider than the interval: promoted
    narrow = sets((-0.01, -0.015, -0.005), (0.30, 0.10, 0.50))
    promoted, reasons = decide(narrow, 0.02)
    assert promoted and "interval down to -0.015" in reasons[0]


def test_the_interval_gate_is_the_estimate_gate_and_more() -> None:
    """Whatever the figures: promoted with the interval implies promoted without it, and a promoted
    generation's test-set interval never reaches below -margin."""
    rng = random.Random(0)
    for _ in range(2000):
        estimate = rng.uniform(-0.3, 0.3)
        low, high = estimate - rng.uniform(0, 0.3), estimate + rng.uniform(0, 0.3)
        gain = rng.uniform(-0.2, 0.4)
        figures = sets((estimate, low, high), (gain, gain - 0.1, gain + 0.1))
        margin = rng.choice([0.0, 0.02, 0.1])
        with_interval, _ = decide(figures, margin)
        estimate_only, _ = decide(figures, margin, test_interval=False)
        assert not with_interval or estimate_only
        assert not with_interval or (low >= -margin and gain > 0)
        assert estimate_only == (estimate >= -margin and gain > 0)


def test_the_cli_requires_the_interval_unless_told_not_to() -> None:
    from tunesmith.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["retrain", "run", "--data", "new.jsonl"]).gate_test_interval is True
    assert parse(["retrain", "run", "--data", "new.jsonl", "--no-gate-test-interval"]).gate_test_interval is False
