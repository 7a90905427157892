"""What a served model has been asked and how it answered: volume, latency, tokens, errors, feedback.

Latency and tokens are those of answered requests: a request that failed after reaching the model
is counted in the error rate, and its time says nothing about how long answering takes. Feedback
is counted per feedback row (a completion may have several); the feedback rate is the share of
answered completions with at least one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunesmith.store.tables import CompletionRow, FeedbackRow

HOUR = 3600
LATENCY_BINS = 20
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Traffic:
    requests: int  # every stored row, failed ones included
    errors: int
    error_rate: float | None
    first_at: int | None  # unix seconds of the first and last request
    last_at: int | None
    requests_per_hour: list[list[int]]  # [hour start (unix s), requests], every hour from the first to the last
    latency_ms: dict[str, float | None]  # p50, p90, p99, mean of answered requests
    latency_histogram: dict[str, list]  # edges (ms), counts
    prompt_tokens: dict[str, float | None]  # total, mean over answered requests
    completion_tokens: dict[str, float | None]
    feedback: dict[str, Any]  # completions_with_feedback, rate, rows, mean_score, thumbs_up, thumbs_down, corrections

    @classmethod
    def from_json(cls, raw: dict) -> Traffic:
        return cls(**raw)


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99 (linear interpolation between order statistics, numpy's default) and the mean."""
    if not values:
        return {**{f"p{q}": None for q in PERCENTILES}, "mean": None}
    found = np.percentile(np.asarray(values, dtype=float), PERCENTILES)
    return {**{f"p{q}": float(v) for q, v in zip(PERCENTILES, found)}, "mean": float(np.mean(values))}


def requests_per_hour(times: list[int]) -> list[list[int]]:
    """Requests in each clock hour, zero hours included, so a gap in traffic shows as a gap."""
    if not times:
        return []
    hours = Counter(time // HOUR * HOUR for time in times)
    first, last = min(hours), max(hours)
    return [[hour, hours.get(hour, 0)] for hour in range(first, last + HOUR, HOUR)]


def token_figures(counts: list[int]) -> dict[str, float | None]:
    return {"total": int(sum(counts)), "mean": float(np.mean(counts)) if counts else None}


def feedback_figures(answered: list[CompletionRow], feedback: dict[str, list[FeedbackRow]]) -> dict[str, Any]:
    given = [row for completion in answered for row in feedback.get(completion.id, [])]
    scores = [row.score for row in given if row.score is not None]
    with_feedback = sum(1 for completion in answered if feedback.get(completion.id))
    return {"completions_with_feedback": with_feedback,
            "rate": with_feedback / len(answered) if answered else None,
            "rows": len(given),
            "mean_score": float(np.mean(scores)) if scores else None,
            "thumbs_up": sum(score > 0 for score in scores),
            "thumbs_down": sum(score < 0 for score in scores),
            "corrections": sum(bool(row.correction) for row in given)}


def traffic_of(rows: list[CompletionRow], feedback: dict[str, list[FeedbackRow]]) -> Traffic:
    answered = [row for row in rows if row.error is None]
    latencies = [float(row.latency_ms) for row in answered]
    counts, edges = np.histogram(latencies, bins=LATENCY_BINS) if latencies else (np.array([]), np.array([]))
    times = [int(row.created_at) for row in rows]
    return Traffic(
        requests=len(rows), errors=len(rows) - len(answered),
        error_rate=(len(rows) - len(answered)) / len(rows) if rows else None,
        first_at=min(times) if times else None, last_at=max(times) if times else None,
        requests_per_hour=requests_per_hour(times),
        latency_ms=percentiles(latencies),
        latency_histogram={"edges": edges.tolist(), "counts": counts.astype(int).tolist()},
        prompt_tokens=token_figures([row.prompt_tokens or 0 for row in answered]),
        completion_tokens=token_figures([row.completion_tokens or 0 for row in answered]),
        feedback=feedback_figures(answered, feedback),
    )


def traffic_by_generation(rows: list[CompletionRow], feedback: dict[str, list[FeedbackRow]]) -> dict[str, Traffic]:
    """Traffic of each generation that answered, when more than one did ("none": rows without one)."""
    generations = sorted({row.generation for row in rows}, key=lambda g: (g is None, g or 0))
    if len(generations) < 2:
        return {}
    return {("none" if generation is None else str(generation)): traffic_of([r for r in rows if r.generation == generation],
                                                                              feedback)
            for generation in generations}
