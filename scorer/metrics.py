"""The scorer's Prometheus metrics (FastStream's middleware adds the per-topic message
counts and processing times; ``ConsumerMetrics`` the dead letters, write retries and
batch times every consumer keeps; these are the domain's)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from runtime.consumer_service import ConsumerMetrics


@dataclass
class ScorerMetrics(ConsumerMetrics):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.scored = Counter(
            "rentalstream_events_scored_total",
            "Events scored and committed to Postgres.",
            ["topic"],
            registry=self.registry,
        )
        self.conflicts = Counter(
            "rentalstream_conflicts_found_total",
            "Delay facts written with a knock-on conflict (a redelivery counts again).",
            registry=self.registry,
        )
        self.model = Gauge(
            "rentalstream_model_info",
            "The model the scorer serves (value 1).",
            ["name", "version"],
            registry=self.registry,
        )
        self.challenger = Gauge(
            "rentalstream_challenger_info",
            "The challenger the scorer also prices with (value 1), if any.",
            ["name", "version"],
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "rentalstream_model_swaps_total",
            "Models swapped in between batches after an alias moved.",
            ["alias"],
            registry=self.registry,
        )
        self.challenger_failures = Counter(
            "rentalstream_challenger_failures_total",
            "Events the challenger could not price (the champion did).",
            registry=self.registry,
        )
        self.compiled = Gauge(
            "rentalstream_model_compiled",
            "1 once the scorer prices with the compiled trees (see runtime/compiled_trees.py).",
            registry=self.registry,
        )
        self.explained = Counter(
            "rentalstream_prices_explained_total",
            "Prices explained because their request asked (explain=true).",
            registry=self.registry,
        )
