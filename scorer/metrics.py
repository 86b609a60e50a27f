"""The scorer's Prometheus metrics (FastStream's middleware adds the per-topic
message counts and processing times; these are the domain's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class ScorerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.scored = Counter(
            "rentalstream_events_scored_total", "Events scored and committed to Postgres.",
            ["topic"], registry=self.registry,
        )  # fmt: skip
        self.conflicts = Counter(
            "rentalstream_conflicts_found_total",
            "Delay facts written with a knock-on conflict (a redelivery counts again).",
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "rentalstream_dead_letters_total", "Messages sent to dead letters.",
            ["topic"], registry=self.registry,
        )  # fmt: skip
        self.write_retries = Counter(
            "rentalstream_db_write_retries_total", "Batch writes retried after a database error.",
            registry=self.registry,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "rentalstream_batch_seconds", "Time to score, store and publish one batch.",
            ["topic"], registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.model = Gauge(
            "rentalstream_model_info", "The model the scorer serves (value 1).",
            ["name", "version"], registry=self.registry,
        )  # fmt: skip
