"""The monitor's Prometheus metrics (FastStream's middleware adds per-topic message
counts and processing times)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class MonitorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.observed = Counter(
            "rentalstream_monitor_events_total", "Events fed to the drift detectors.", ["topic"], registry=self.registry
        )
        self.dead_letters = Counter(
            "rentalstream_dead_letters_total", "Messages sent to dead letters.", ["topic"], registry=self.registry
        )
        self.alerts = Counter(
            "rentalstream_drift_alerts_total", "Drift alerts raised.", ["signal", "state"], registry=self.registry
        )
        self.drifting = Gauge(
            "rentalstream_signals_drifting", "Monitored signals currently drifting.", registry=self.registry
        )
        self.rolling_mae = Gauge(
            "rentalstream_model_rolling_mae", "The model's rolling mean absolute error against real prices, euros.",
            registry=self.registry,
        )  # fmt: skip
        self.write_retries = Counter(
            "rentalstream_db_write_retries_total", "Batch writes retried after a database error.",
            registry=self.registry,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "rentalstream_batch_seconds", "Time to monitor, store and publish one batch.", ["topic"],
            registry=self.registry, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )  # fmt: skip
