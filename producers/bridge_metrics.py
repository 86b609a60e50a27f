"""Prometheus metrics of the HTTP bridge, in a registry of its own."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# From 1 ms (a direct in-process call) to the default 2 s timeout and beyond.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2, 5)


class BridgeMetrics:
    def __init__(self, pending: Callable[[], int], tasks: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.responses = Counter(
            "rentalstream_bridge_responses", "HTTP responses by path and status.",
            ["path", "status"], registry=self.registry,
        )  # fmt: skip
        self.predict_seconds = Histogram(
            "rentalstream_bridge_predict_seconds", "Time to answer POST /predict, by status.",
            ["status"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.cars_priced = Counter("rentalstream_bridge_cars_priced", "Cars priced and answered.", registry=self.registry)
        self.late_replies = Counter(
            "rentalstream_bridge_late_replies",
            "Replies to this bridge that nobody waited for any more (timed out, or redelivered); dropped.",
            registry=self.registry,
        )
        self.pending = Gauge(
            "rentalstream_bridge_pending_replies", "Price requests waiting for their reply now.",
            registry=self.registry,
        )  # fmt: skip
        self.pending.set_function(pending)
        self.tasks = Gauge(
            "rentalstream_bridge_asyncio_tasks", "Tasks alive in the bridge's event loop (a leak shows here).",
            registry=self.registry,
        )  # fmt: skip
        self.tasks.set_function(tasks)


class CountResponses:
    """ASGI middleware counting every response by path and status, including the ones
    FastAPI answers before our handler runs (401, 413, 422)."""

    def __init__(self, app: ASGIApp, metrics: BridgeMetrics, paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths  # anything else counts as "other": a scan must not grow the label set

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        path = scope["path"] if scope["path"] in self.paths else "other"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.responses.labels(path, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
