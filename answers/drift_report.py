"""What `rentalstream drift-report --html` puts in its document, read from Postgres and
set beside the serving version's reference (``schemas.reference``):

- every monitored signal: its reference and its recent window (the last ``window``
  values, from the result tables), the monitor's state of it and when that last changed;
- the alerts, in order;
- the model's rolling error on prices whose real price came back, against its
  cross-validated error and beside what its error estimator expected of the same prices;
  and the error estimated over every recent price, true price or not;
- which versions served, and when.

The recent windows are read from the tables, not from the monitor's memory: they are the
same events the monitor watched (a rental's car as stored in ``cars``, its delay, the
prices, the conflicts), so the report can be written after the fact, even with the
monitor stopped. Numeric values are clipped to the reference's [1st, 99th] percentiles,
as the monitor sees them. ``answers.drift_report_html`` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import text

from monitor.watch import (
    CONFLICT_SIGNAL,
    ESTIMATED_MAE_SIGNAL,
    MAE_SIGNAL,
    PRICE_SOURCES,
    category_signal,
    delay_signal,
    numeric_signal,
    price_signal,
)
from runtime.postgres.engines import read_rows
from schemas.cars import CATEGORICAL, EQUIPMENT, NUMERIC
from schemas.reference import Distribution, ReferenceStats

ERROR_ROWS = 100_000  # the most recent prices with a real price that the error curve covers

SIGNALS_SQL = text("SELECT * FROM drift_signals")
ALERTS_SQL = text("SELECT * FROM drift_events ORDER BY detected_at, alert_id")
VERSIONS_SQL = text("""
    SELECT model_name, model_version, count(*) AS prices, min(scored_at) AS first_scored_at,
           max(scored_at) AS last_scored_at
    FROM prices GROUP BY 1, 2 ORDER BY min(scored_at)
""")
# The last :window rentals stored, each with its car as stored.
RECENT_CARS_SQL = text("""
    SELECT c.* FROM (SELECT car_id FROM rentals ORDER BY stored_at DESC, rental_id DESC LIMIT :window) r
    JOIN cars c USING (car_id)
""")
RECENT_DELAYS_SQL = text("""
    SELECT checkin_type, delay_at_checkout_minutes AS value FROM (
        SELECT checkin_type, delay_at_checkout_minutes,
               row_number() OVER (PARTITION BY checkin_type ORDER BY stored_at DESC, rental_id DESC) AS age
        FROM rentals WHERE delay_at_checkout_minutes IS NOT NULL) d
    WHERE age <= :window
""")
RECENT_PRICES_SQL = text("""
    SELECT source, price_per_day AS value FROM (
        SELECT CASE WHEN rental_id IS NOT NULL THEN 'rentals' ELSE 'requests' END AS source, price_per_day,
               row_number() OVER (PARTITION BY rental_id IS NOT NULL ORDER BY scored_at DESC, price_id DESC) AS age
        FROM prices) p
    WHERE age <= :window
""")
RECENT_CONFLICTS_SQL = text("""
    SELECT CAST(is_conflict AS integer) AS value FROM delays WHERE is_conflict IS NOT NULL
    ORDER BY scored_at DESC, rental_id DESC LIMIT :window
""")
ERRORS_SQL = text("""
    SELECT scored_at, abs(price_per_day - listed_price_per_day) AS error, estimated_error FROM prices
    WHERE listed_price_per_day IS NOT NULL ORDER BY scored_at DESC, price_id DESC LIMIT :rows
""")
RECENT_ESTIMATES_SQL = text("""
    SELECT estimated_error AS value FROM prices WHERE estimated_error IS NOT NULL
    ORDER BY scored_at DESC, price_id DESC LIMIT :window
""")


@dataclass(frozen=True)
class SignalView:
    """One monitored signal: the monitor's word on it (None where it wrote none) and the
    reference against the recent window (a mean for a numeric signal, a share for a
    category, an equipment or the conflicts, the MAE for the model's error)."""

    signal: str
    reference: float
    recent: float | None
    recent_n: int
    state: str | None = None
    changed_at: datetime | None = None
    events_seen: int | None = None
    detector: str | None = None


@dataclass(frozen=True)
class NumericSection:
    """A numeric signal: its reference distribution and its recent values, clipped."""

    title: str
    unit: str
    signal: SignalView
    reference: Distribution
    recent: np.ndarray


@dataclass(frozen=True)
class ShareSection:
    """A categorical field (one signal per category) or the equipment (one per item)."""

    title: str
    signals: list[SignalView]
    labels: list[str]


@dataclass(frozen=True)
class ErrorSection:
    """The rolling MAE over the last ``window`` prices with a real price, as of each price,
    and the rolling mean of their estimated errors (NaN where a price in the window has
    no estimate); ``estimated``: the error estimated over the last ``window`` prices."""

    signal: SignalView
    estimated: SignalView
    cv_mae: float
    threshold: float
    window: int
    times: list[datetime]
    rolling_mae: list[float]
    estimated_rolling_mae: list[float]
    with_real_price: int

    @property
    def estimated_now(self) -> float | None:
        """The estimated rolling MAE of the latest window with a real price, if every price in it had an estimate."""
        last = self.estimated_rolling_mae[-1] if self.estimated_rolling_mae else None
        return last if last is not None and np.isfinite(last) else None


@dataclass(frozen=True)
class DriftReport:
    generated_at: datetime
    reference_version: str
    window: int
    detectors: list[str]
    numeric: list[NumericSection]
    shares: list[ShareSection]
    conflicts: SignalView
    error: ErrorSection
    alerts: list[dict]
    versions: list[dict]
    monitor_states: int = field(default=0)

    @property
    def signals(self) -> list[SignalView]:
        return [
            *(s.signal for s in self.numeric),
            *(v for s in self.shares for v in s.signals),
            self.conflicts,
            self.error.signal,
            self.error.estimated,
        ]

    @property
    def drifting(self) -> list[SignalView]:
        return [s for s in self.signals if s.state == "drifting"]


def served_versions(database_url: str) -> list[dict]:
    """Each version that priced something: how many prices, first and last, oldest first."""
    [rows] = read_rows(database_url, VERSIONS_SQL)
    return rows


def serving_version(versions: list[dict]) -> str | None:
    """The version of the latest price, None when nothing has been priced yet."""
    return max(versions, key=lambda v: v["last_scored_at"])["model_version"] if versions else None


def drift_report(
    database_url: str,
    reference: ReferenceStats,
    reference_version: str,
    *,
    versions: list[dict],
    window: int,
    mae_window: int,
    mae_margin: float,
    now: datetime,
) -> DriftReport:
    """Everything the document shows, read in one go (``versions`` from ``served_versions``)."""
    signals, alerts, cars, delays, prices, conflicts, errors, estimates = read_rows(
        database_url,
        SIGNALS_SQL,
        ALERTS_SQL,
        RECENT_CARS_SQL.bindparams(window=window),
        RECENT_DELAYS_SQL.bindparams(window=window),
        RECENT_PRICES_SQL.bindparams(window=window),
        RECENT_CONFLICTS_SQL.bindparams(window=window),
        ERRORS_SQL.bindparams(rows=ERROR_ROWS),
        RECENT_ESTIMATES_SQL.bindparams(window=mae_window),
    )
    states = {row["signal"]: row for row in signals}

    def view(signal: str, reference_value: float, values: list[float]) -> SignalView:
        state = states.get(signal, {})
        return SignalView(
            signal=signal,
            reference=reference_value,
            recent=float(np.mean(values)) if values else None,
            recent_n=len(values),
            state=state.get("state"),
            changed_at=state.get("last_alert_at"),
            events_seen=state.get("events_seen"),
            detector=state.get("detector"),
        )

    def numeric(title: str, unit: str, signal: str, distribution: Distribution, values: list[float]) -> NumericSection:
        clipped = np.clip(np.asarray(values, dtype=np.float64), distribution.low, distribution.high)
        return NumericSection(title, unit, view(signal, distribution.mean, clipped.tolist()), distribution, clipped)

    numeric_sections = [
        numeric(
            name.replace("_", " "),
            UNITS[name],
            numeric_signal(name),
            reference.numeric[name],
            [c[name] for c in cars],
        )
        for name in NUMERIC
    ]
    numeric_sections += [
        numeric(
            f"delay at checkout, {checkin_type}",
            "minutes",
            delay_signal(checkin_type),
            distribution,
            [d["value"] for d in delays if d["checkin_type"] == checkin_type],
        )
        for checkin_type, distribution in sorted(reference.delays.items())
    ]
    numeric_sections += [
        numeric(
            f"price per day, {source}",
            "€",
            price_signal(source),
            reference.predicted_price,
            [p["value"] for p in prices if p["source"] == source],
        )
        for source in PRICE_SOURCES
    ]
    share_sections = [
        ShareSection(
            name.replace("_", " "),
            [
                view(category_signal(name, category), share, [float(c[name] == category) for c in cars])
                for category, share in reference.category_shares[name].items()
            ],
            list(reference.category_shares[name]),
        )
        for name in CATEGORICAL
    ]
    share_sections.append(
        ShareSection(
            "equipment",
            [
                view(
                    category_signal(name, "true"),
                    reference.category_shares[name]["true"],
                    [float(c[name]) for c in cars],
                )
                for name in EQUIPMENT
            ],
            [name.replace("_", " ") for name in EQUIPMENT],
        )
    )
    errors.reverse()  # oldest first
    rolling = _rolling_mean([e["error"] for e in errors], mae_window)
    estimated = [e["estimated_error"] if e["estimated_error"] is not None else np.nan for e in errors]
    error = ErrorSection(
        signal=view(MAE_SIGNAL, reference.cv_mae, [e["error"] for e in errors[-mae_window:]]),
        estimated=view(ESTIMATED_MAE_SIGNAL, reference.cv_mae, [e["value"] for e in estimates]),
        cv_mae=reference.cv_mae,
        threshold=reference.cv_mae * (1 + mae_margin),
        window=mae_window,
        times=[e["scored_at"] for e in errors[mae_window - 1 :]],
        rolling_mae=rolling,
        estimated_rolling_mae=_rolling_mean(estimated, mae_window),
        with_real_price=len(errors),
    )
    return DriftReport(
        generated_at=now,
        reference_version=reference_version,
        window=window,
        detectors=sorted({row["detector"] for row in signals}),
        numeric=numeric_sections,
        shares=share_sections,
        conflicts=view(CONFLICT_SIGNAL, reference.conflict_share, [c["value"] for c in conflicts]),
        error=error,
        alerts=alerts,
        versions=versions,
        monitor_states=len(signals),
    )


UNITS = {"mileage": "km", "engine_power": "hp"}


def _rolling_mean(values: list[float], window: int) -> list[float]:
    """The mean of each full run of ``window`` consecutive values, in order.

    >>> _rolling_mean([1, 2, 3, 4], 2)
    [1.5, 2.5, 3.5]
    >>> _rolling_mean([1, 2], 3)
    []
    """
    if len(values) < window:
        return []
    sums = np.cumsum(np.concatenate([[0.0], np.asarray(values, dtype=np.float64)]))
    return ((sums[window:] - sums[:-window]) / window).tolist()
