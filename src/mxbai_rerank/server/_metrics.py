"""Prometheus metrics of one server, in its own registry (never the process-global one).

Token metrics count real (unpadded) tokens: the token ids of query, document and prompt
template. Padding added to batch rows of unequal length is not counted; the padded size of a
forward pass is bounded by ``max_batch_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ._scheduler import BatchStats

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_TOKEN_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


class ServerMetrics:
    """Request, failure, queue and batch metrics (names prefixed ``mxbai_rerank_``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.requests = Counter(
            "mxbai_rerank_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=reg
        )
        self.failures = Counter(
            "mxbai_rerank_request_failures",
            "Failed requests by endpoint and kind (auth, validation, too_large, not_found, overloaded, model, ...)",
            ["endpoint", "kind"],
            registry=reg,
        )
        self.latency = Histogram(
            "mxbai_rerank_request_duration_seconds",
            "End-to-end request latency",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge("mxbai_rerank_requests_in_flight", "Rerank requests being served", registry=reg)
        self.queue_depth = Gauge("mxbai_rerank_queue_depth", "Requests waiting for the model", registry=reg)
        self.documents = Counter("mxbai_rerank_documents", "Documents ranked in successful requests", registry=reg)
        self.tokens = Counter(
            "mxbai_rerank_tokens",
            "Real (unpadded) tokens scored in successful requests: query, document and prompt template",
            registry=reg,
        )
        self.batches = Counter(
            "mxbai_rerank_batches", "Merged scoring calls made by the scheduler", ["outcome"], registry=reg
        )
        self.batch_requests = Histogram(
            "mxbai_rerank_batch_requests", "Requests merged into one scoring call", buckets=_COUNT_BUCKETS, registry=reg
        )
        self.batch_pairs = Histogram(
            "mxbai_rerank_batch_pairs", "Pairs in one scoring call", buckets=_COUNT_BUCKETS, registry=reg
        )
        self.batch_tokens = Histogram(
            "mxbai_rerank_batch_tokens",
            "Real (unpadded) tokens in one scoring call (each forward pass: at most max_batch_tokens padded)",
            buckets=_TOKEN_BUCKETS,
            registry=reg,
        )
        self.batch_duration = Histogram(
            "mxbai_rerank_batch_duration_seconds",
            "Model time of one scoring call",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.queue_wait = Histogram(
            "mxbai_rerank_queue_wait_seconds",
            "Time a request waited for the model",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.tokenize_duration = Histogram(
            "mxbai_rerank_tokenize_duration_seconds",
            "Tokenization time per request",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.model_info = Gauge(
            "mxbai_rerank_model_info",
            "The served model (value 1)",
            ["model", "family", "device", "dtype"],
            registry=reg,
        )

    def track_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batches.labels("ok" if stats.ok else "error").inc()
        self.batch_requests.observe(stats.requests)
        self.batch_pairs.observe(stats.pairs)
        self.batch_tokens.observe(stats.real_tokens)
        self.batch_duration.observe(stats.seconds)
        for wait in stats.queue_waits:
            self.queue_wait.observe(wait)

    def render(self) -> bytes:
        return generate_latest(self.registry)
