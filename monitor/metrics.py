"""The monitor's Prometheus metrics (FastStream's middleware adds per-topic message
counts and processing times; ``ConsumerMetrics`` the dead letters, write retries and
batch times every consumer keeps)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from runtime.consumer_service import ConsumerMetrics


@dataclass
class MonitorMetrics(ConsumerMetrics):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.observed = Counter(
            "rentalstream_monitor_events_total", "Events fed to the drift detectors.", ["topic"], registry=self.registry
        )
        self.alerts = Counter(
            "rentalstream_drift_alerts_total", "Drift alerts raised.", ["signal", "state"], registry=self.registry
        )
        self.drifting = Gauge(
            "rentalstream_signals_drifting", "Monitored signals currently drifting.", registry=self.registry
        )
        self.rolling_mae = Gauge(
            "rentalstream_model_rolling_mae",
            "The model's rolling mean absolute error against real prices, euros.",
            registry=self.registry,
        )
        self.estimated_mae = Gauge(
            "rentalstream_model_estimated_mae",
            "The model's rolling mean absolute error as its error estimator expects it, euros: over every "
            "price (prices=all), and over the prices whose real price is known, beside the rolling MAE "
            "(prices=with_true_price).",
            ["prices"],
            registry=self.registry,
        )
        self.reference_version = Gauge(
            "rentalstream_monitor_reference_version",
            "The model version whose training statistics the detectors compare with.",
            registry=self.registry,
        )
