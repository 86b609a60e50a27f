"""What the dashboard reads from Postgres: the aggregates (re-read while events arrive,
each one query whose answer stays small however long the history grows) and, once on
load, the latest rows that seed the live lists before the stream takes over.

Every query is parameterised SQL over the tables of ``schemas.tables``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from answers.min_gap import GapGroup
from answers.model_comparison import COMPARISON_SQL

DELAY_BIN_MINUTES = 30
DELAY_RANGE_MINUTES = (-360, 720)  # delays outside fall in the first or last bin

GAP_GROUPS_SQL = text("""
    SELECT d.checkin_type, d.planned_gap_minutes,
           count(*)                                                          AS rentals,
           count(*) FILTER (WHERE d.is_conflict)                             AS conflicts,
           coalesce(sum(p.price_per_day) FILTER (WHERE d.state = 'ended'), 0) AS ended_revenue_per_day
    FROM delays d LEFT JOIN prices p ON p.rental_id = d.rental_id
    GROUP BY d.checkin_type, d.planned_gap_minutes
""")

TOTALS_SQL = text("""
    SELECT count(*)                                   AS rentals,
           count(*) FILTER (WHERE state = 'ended')    AS ended,
           count(delay_at_checkout_minutes)           AS with_delay,
           count(*) FILTER (WHERE is_late)            AS late_returns,
           count(previous_ended_rental_id)            AS with_previous_rental,
           count(*) FILTER (WHERE is_conflict)        AS conflicts,
           coalesce(sum(waiting_minutes) FILTER (WHERE is_conflict), 0) AS waiting_minutes
    FROM delays
""")

DELAY_HISTOGRAM_SQL = text("""
    SELECT checkin_type,
           least(greatest(floor(delay_at_checkout_minutes / CAST(:bin AS float)) * :bin, :low), :high) AS bin_start,
           count(*) AS rentals,
           count(*) FILTER (WHERE is_late) AS late_returns
    FROM delays WHERE delay_at_checkout_minutes IS NOT NULL
    GROUP BY 1, 2 ORDER BY 1, 2
""")

# A rental's car is in `cars`; a requested car only in the request log.
PRICE_BY_CAR_TYPE_SQL = text("""
    SELECT coalesce(c.car_type, r.car ->> 'car_type') AS car_type,
           count(*) AS prices,
           percentile_cont(0.1) WITHIN GROUP (ORDER BY p.price_per_day) AS p10,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY p.price_per_day) AS median,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY p.price_per_day) AS p90
    FROM prices p
    LEFT JOIN cars c ON p.rental_id IS NOT NULL AND c.car_id = p.car_id
    LEFT JOIN price_requests r ON r.request_id = p.request_id
    GROUP BY 1 ORDER BY median DESC
""")

DRIFT_SIGNALS_SQL = text("""
    SELECT signal, state, detector, events_seen, window_mean, reference_mean, last_alert_at, model_version
    FROM drift_signals ORDER BY state = 'drifting' DESC, signal
""")

LATEST_RETRAINS = 10  # what the Drift tab lists; `rentalstream retrains` shows more

RETRAINS_SQL = text("""
    SELECT started_at, signal, reason, status, recent_rows, reference_rows, model_version, cv_mae, finished_at, detail
    FROM retrains ORDER BY started_at DESC LIMIT :n
""")

DEAD_LETTER_COUNTS_SQL = text(
    "SELECT consumer, topic, count(*) AS dead_letters FROM dead_letters GROUP BY 1, 2 ORDER BY 1, 2"
)

LATEST_PRICES_SQL = text("""
    SELECT price_id, rental_id, request_id, car_id, price_per_day, listed_price_per_day,
           model_name, model_version, event_time, scored_at
    FROM prices ORDER BY scored_at DESC LIMIT :n
""")

LATEST_CONFLICTS_SQL = text("""
    SELECT rental_id, car_id, checkin_type, previous_ended_rental_id, planned_gap_minutes,
           previous_delay_minutes, waiting_minutes, scored_at
    FROM delays WHERE is_conflict ORDER BY scored_at DESC, rental_id DESC LIMIT :n
""")

LATEST_ALERTS_SQL = text("""
    SELECT alert_id, signal, state, detector, before_mean, after_mean, reference_mean, triggered_by, detected_at
    FROM drift_events ORDER BY detected_at DESC LIMIT :n
""")

LATEST_DEAD_LETTERS_SQL = text("""
    SELECT dead_letter_id, topic, kafka_partition AS partition, kafka_offset AS offset, consumer, reason,
           octet_length(raw_value) AS size_bytes, received_at
    FROM dead_letters ORDER BY received_at DESC LIMIT :n
""")


@dataclass
class Aggregates:
    """Everything the dashboard draws from Postgres aggregates, read in one go."""

    gap_groups: list[GapGroup] = field(default_factory=list)
    totals: dict = field(default_factory=dict)
    delay_histogram: list[dict] = field(default_factory=list)
    price_by_car_type: list[dict] = field(default_factory=list)
    drift_signals: list[dict] = field(default_factory=list)
    dead_letter_counts: list[dict] = field(default_factory=list)
    model_comparison: list[dict] = field(default_factory=list)  # champion vs challenger, newest pairing first
    retrains: list[dict] = field(default_factory=list)  # the newest retrains drift set off, newest first


async def read_aggregates(conn: AsyncConnection) -> Aggregates:
    low, high = DELAY_RANGE_MINUTES
    return Aggregates(
        gap_groups=[GapGroup(**row) for row in await _rows(conn, GAP_GROUPS_SQL)],
        totals=(await _rows(conn, TOTALS_SQL))[0],
        delay_histogram=await _rows(conn, DELAY_HISTOGRAM_SQL, bin=DELAY_BIN_MINUTES, low=low, high=high),
        price_by_car_type=await _rows(conn, PRICE_BY_CAR_TYPE_SQL),
        drift_signals=await _rows(conn, DRIFT_SIGNALS_SQL),
        dead_letter_counts=await _rows(conn, DEAD_LETTER_COUNTS_SQL),
        model_comparison=await _rows(conn, COMPARISON_SQL),
        retrains=await _rows(conn, RETRAINS_SQL, n=LATEST_RETRAINS),
    )


@dataclass
class LatestRows:
    """The newest rows of each live list, newest first, to show before the stream brings more."""

    prices: list[dict]
    conflicts: list[dict]
    alerts: list[dict]
    dead_letters: list[dict]


async def read_latest(conn: AsyncConnection, n: int) -> LatestRows:
    return LatestRows(
        prices=await _rows(conn, LATEST_PRICES_SQL, n=n),
        conflicts=await _rows(conn, LATEST_CONFLICTS_SQL, n=n),
        alerts=await _rows(conn, LATEST_ALERTS_SQL, n=n),
        dead_letters=await _rows(conn, LATEST_DEAD_LETTERS_SQL, n=n),
    )


async def _rows(conn: AsyncConnection, query, **params) -> list[dict]:
    return [dict(row) for row in (await conn.execute(query, params)).mappings()]
