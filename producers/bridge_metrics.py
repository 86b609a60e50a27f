"""Prometheus metrics of the HTTP bridge, in a registry of its own."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# From 1 ms (a direct in-process call) to the default 2 s timeout and beyond.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2, 5)


class BridgeMetrics:
    def __init__(self, pending: Callable[[], int], tasks: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.response_seconds = Histogram(
            "rentalstream_bridge_response_seconds",
            "Time from request to response start, by route and status (its _count is the responses).",
            ["path", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cars_priced = Counter(
            "rentalstream_bridge_cars_priced", "Cars priced and answered.", registry=self.registry
        )
        self.answers = Counter(
            "rentalstream_bridge_answers",
            "Cars answered, by the model version whose price the caller got (the challenger's for callers in "
            "the live split, RENTALSTREAM_BRIDGE_CHALLENGER_SHARE).",
            ["model_version"],
            registry=self.registry,
        )
        self.late_replies = Counter(
            "rentalstream_bridge_late_replies",
            "Replies to this bridge that nobody waited for any more (timed out, or redelivered); dropped.",
            registry=self.registry,
        )
        self.client_responses = Counter(
            "rentalstream_bridge_client_responses",
            "Responses by client (the API key's, or 'anonymous' when no key is required; 'unknown' before a key "
            "is checked or when it is nobody's) and status.",
            ["client", "status"],
            registry=self.registry,
        )
        self.pending = Gauge(
            "rentalstream_bridge_pending_replies",
            "Price requests waiting for their reply now.",
            registry=self.registry,
        )
        self.pending.set_function(pending)
        self.tasks = Gauge(
            "rentalstream_bridge_asyncio_tasks",
            "Tasks alive in the bridge's event loop (a leak shows here).",
            registry=self.registry,
        )
        self.tasks.set_function(tasks)


class TimeResponses:
    """ASGI middleware timing every response by route and status, including the ones
    FastAPI gives before our handler runs (401, 413, 422)."""

    def __init__(self, app: ASGIApp, metrics: BridgeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The router has matched by now; the route's template, not the raw path,
                # so a scan of random URLs cannot grow the label set.
                route = scope.get("route")
                path = getattr(route, "path", "unmatched")
                status = str(message["status"])
                self.metrics.response_seconds.labels(path, status).observe(time.perf_counter() - started)
                if path != "unmatched" and scope["method"] == "POST":  # the API's calls, not the probes
                    client = scope.get("state", {}).get("client", "unknown")  # set by the key check
                    self.metrics.client_responses.labels(client, status).inc()
            await send(message)

        await self.app(scope, receive, timed_send)
