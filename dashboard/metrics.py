"""The dashboard's Prometheus metrics, served on its /metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class DashboardMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.messages = Counter(
            "rentalstream_dashboard_messages_total", "Messages the live feed read.", ["topic"], registry=self.registry
        )
        self.unreadable = Counter(
            "rentalstream_dashboard_unreadable_messages_total",
            "Messages the live feed could not read.",
            ["topic"],
            registry=self.registry,
        )
        self.refresh_seconds = Histogram(
            "rentalstream_dashboard_aggregate_seconds",
            "Time to re-read the aggregates from Postgres.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.refresh_errors = Counter(
            "rentalstream_dashboard_aggregate_errors_total", "Aggregate reads that failed.", registry=self.registry
        )
        self.sessions = Gauge("rentalstream_dashboard_sessions", "Open dashboard pages.", registry=self.registry)
