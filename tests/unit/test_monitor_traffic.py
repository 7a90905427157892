"""The monitor's traffic figures on rows built here, against numbers counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sqlalchemy", reason="the store needs the serve extra (pip install -e .[serve])")

from tunesmith.improve.monitor import traffic as figures  # noqa: E402
from tunesmith.store.tables import CompletionRow, FeedbackRow  # noqa: E402

percentiles, requests_per_hour = figures.percentiles, figures.requests_per_hour
traffic_by_generation, traffic_of = figures.traffic_by_generation, figures.traffic_of

T0 = 1_700_000_000 // 3600 * 3600  # the start of an hour


def row(number: int, *, at: int, latency: float, error: str | None = None, generation: int | None = None,
        prompt_tokens: int = 10, completion_tokens: int = 3) -> CompletionRow:
    return CompletionRow(id=f"c{number}", model="m", created_at=at, latency_ms=latency, error=error, generation=generation,
                         prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, endpoint="chat",
                         messages=[{"role": "user", "content": "hi"}], answer="ok")


def feedback(completion: str, score: float | None, correction: str | None = None) -> FeedbackRow:
    return FeedbackRow(id=f"f-{completion}-{score}", completion_id=completion, score=score, correction=correction)


def test_percentiles_interpolate_between_order_statistics():
    figures = percentiles(list(range(1, 101)))
    # rank (n - 1) * q / 100 from 0: p50 halfway between 50 and 51, p90 at 90.1, p99 at 99.01
    assert figures == {"p50": pytest.approx(50.5), "p90": pytest.approx(90.1), "p99": pytest.approx(99.01),
                       "mean": pytest.approx(50.5)}
    rng = np.random.default_rng(1)
    values = rng.lognormal(5, 1, 333).tolist()
    ordered = sorted(values)
    for q in (50, 90, 99):
        rank = (len(values) - 1) * q / 100
        low, high = int(np.floor(rank)), int(np.ceil(rank))
        assert percentiles(values)[f"p{q}"] == pytest.approx(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None, "mean": None}


def test_requests_per_hour_keeps_the_quiet_hours():
    times = [T0 + 5, T0 + 3599, T0 + 3 * 3600 + 1, T0 + 3 * 3600 + 2, T0 + 3 * 3600 + 3]
    assert requests_per_hour(times) == [[T0, 2], [T0 + 3600, 0], [T0 + 7200, 0], [T0 + 10800, 3]]
    assert requests_per_hour([]) == []


def test_traffic_counts_errors_tokens_and_feedback():
    rows = [row(1, at=T0, latency=100, prompt_tokens=12, completion_tokens=4),
            row(2, at=T0 + 10, latency=200, prompt_tokens=8, completion_tokens=6),
            row(3, at=T0 + 20, latency=300, prompt_tokens=10, completion_tokens=5),
            row(4, at=T0 + 30, latency=5, error="generation failed", prompt_tokens=99, completion_tokens=0)]
    given = {"c1": [feedback("c1", 1), feedback("c1", -1, "better")], "c3": [feedback("c3", 4, "")],
             "c4": [feedback("c4", -1)]}  # feedback on a failed request is not an answer's feedback
    traffic = traffic_of(rows, given)
    assert (traffic.requests, traffic.errors, traffic.error_rate) == (4, 1, 0.25)
    assert traffic.latency_ms["p50"] == 200 and traffic.latency_ms["mean"] == 200  # the failed request's 5 ms left out
    assert traffic.prompt_tokens == {"total": 30, "mean": 10.0}
    assert traffic.completion_tokens == {"total": 15, "mean": 5.0}
    fb = traffic.feedback
    assert fb["completions_with_feedback"] == 2 and fb["rate"] == pytest.approx(2 / 3) and fb["rows"] == 3
    assert fb["mean_score"] == pytest.approx((1 - 1 + 4) / 3)
    assert (fb["thumbs_up"], fb["thumbs_down"], fb["corrections"]) == (2, 1, 1)
    assert sum(traffic.latency_histogram["counts"]) == 3 and traffic.requests_per_hour == [[T0, 4]]


def test_traffic_splits_by_generation_only_when_there_are_several():
    rows = [row(1, at=T0, latency=10, generation=1), row(2, at=T0, latency=20, generation=2),
            row(3, at=T0, latency=30, generation=2), row(4, at=T0, latency=40)]
    split = traffic_by_generation(rows, {})
    assert list(split) == ["1", "2", "none"]
    assert [split[key].requests for key in split] == [1, 2, 1] and split["2"].latency_ms["p50"] == 25
    assert traffic_by_generation(rows[1:3], {}) == {}
    empty = traffic_of([], {})
    assert empty.requests == 0 and empty.error_rate is None and empty.feedback["rate"] is None
