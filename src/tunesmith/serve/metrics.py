"""Prometheus metrics of one server (its own registry, so two servers in one process do not mix)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80)


class ServeMetrics:
    def __init__(self, queue_depth: Callable[[], int], loaded_adapters: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("tunesmith_requests", "Requests answered, by endpoint, model and status code",
                                ["endpoint", "model", "status"], registry=self.registry)
        self.prompt_tokens = Counter("tunesmith_prompt_tokens", "Prompt tokens read", ["model"], registry=self.registry)
        self.completion_tokens = Counter("tunesmith_completion_tokens", "Tokens generated", ["model"],
                                         registry=self.registry)
        self.latency = Histogram("tunesmith_request_seconds", "Time from request to its last byte",
                                 ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.first_token = Histogram("tunesmith_first_token_seconds", "Time from request to its first token",
                                     ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.feedback = Counter("tunesmith_feedback", "Feedback received on stored completions", ["model"],
                                registry=self.registry)
        queue = Gauge("tunesmith_queue_depth", "Rows queued or decoding", registry=self.registry)
        queue.set_function(queue_depth)
        adapters = Gauge("tunesmith_loaded_adapters", "LoRA adapters in memory", registry=self.registry)
        adapters.set_function(loaded_adapters)

    def answered(self, endpoint: str, model: str, status: int, seconds: float, prompt_tokens: int = 0,
                 completion_tokens: int = 0) -> None:
        self.requests.labels(endpoint, model, str(status)).inc()
        self.latency.labels(endpoint, model).observe(seconds)
        if prompt_tokens:
            self.prompt_tokens.labels(model).inc(prompt_tokens)
        if completion_tokens:
            self.completion_tokens.labels(model).inc(completion_tokens)
