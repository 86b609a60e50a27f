"""The dashboard's live feed: one per dashboard process, shared by every open page.

It reads ``prices``, ``delays``, ``drift`` and ``dead-letters`` in a consumer group of
its own (``own_group``: two dashboards in one group would each get only some of the
partitions, and show only their rows) into bounded buffers: the newest rows of each live list, and the arrival
time and event-to-scored latency of recent prices. A partition the feed has not followed
yet starts at its end, and the feed then (re)reads the tables from Postgres, which
already hold everything before that end: the scorer and the monitor store a batch
before they publish it. A row both read from Postgres and then consumed is shown once.
A partition taken away by a rebalance and given back resumes where the feed left it,
so a rebalance skips nothing. While messages arrive it re-reads the
aggregates from Postgres every ``dashboard_aggregate_seconds``. Pages never see a
message: each one redraws from ``snapshot()`` on its own periodic callback, so a replay
at full speed costs a page one redraw a second, not one per message.

A message the feed cannot read (the topics are written by our own services, so that
would be a bug upstream) is counted and logged, not dead-lettered: the dashboard
writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import takewhile

import numpy as np
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from answers.queries import Aggregates, read_aggregates, read_latest
from dashboard.metrics import DashboardMetrics
from runtime.kafka.traces import BatchTraces, kafka_attributes
from schemas.events import DeadLetter, DelayScored, DriftAlert, PriceScored
from schemas.topics import DEAD_LETTERS, DELAYS, DRIFT, PRICES

log = logging.getLogger("rentalstream.dashboard")

CONTRACTS: dict[str, type[BaseModel]] = {
    PRICES.name: PriceScored,
    DELAYS.name: DelayScored,
    DRIFT.name: DriftAlert,
    DEAD_LETTERS.name: DeadLetter,
}
# The columns that name a row of each live list, to show a row once (a rental's delay is
# scored again when its rental changes: one row per scoring).
ROW_IDS = {
    "prices": ("price_id",),
    "conflicts": ("rental_id", "scored_at"),
    "alerts": ("alert_id",),
    "dead_letters": ("dead_letter_id",),
}
RATE_WINDOW_SECONDS = 5.0
IDLE_REFRESH_SECONDS = 15.0  # re-read the aggregates this often even when no message comes


@dataclass(frozen=True)
class Snapshot:
    """What a page draws; ``version`` changes whenever anything in it does."""

    version: int
    aggregates: Aggregates | None
    events_per_second: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    prices_seen: int
    model: str | None
    prices: list[dict] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)


def own_group(prefix: str) -> str:
    """This process's consumer group: ``<prefix>.<host>.<pid>``, so that every dashboard
    process, on this machine or another, reads every partition."""
    return f"{prefix}.{socket.gethostname()}.{os.getpid()}"


class LiveFeed:
    def __init__(
        self,
        bootstrap: str,
        engine: AsyncEngine,
        *,
        group_id: str,
        buffer_rows: int,
        aggregate_seconds: float,
        metrics: DashboardMetrics,
        security: dict | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.engine = engine
        self.group_id = group_id
        self.aggregate_seconds = aggregate_seconds
        self.metrics = metrics
        self.security = security or {}
        self.prices: deque[dict] = deque(maxlen=buffer_rows)
        self.conflicts: deque[dict] = deque(maxlen=buffer_rows)
        self.alerts: deque[dict] = deque(maxlen=buffer_rows)
        self.dead_letters: deque[dict] = deque(maxlen=buffer_rows)
        # (arrival time, event-to-scored latencies in ms) of each poll's prices, for the rate and percentiles
        self.recent: deque[tuple[float, list[float]]] = deque(maxlen=10_000)
        self.prices_seen = 0
        self.model: str | None = None
        self.aggregates: Aggregates | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.version = 0
        self._stale = True  # messages arrived since the aggregates were read
        self.positioned = False  # every assigned partition's position is resolved
        self.followed: dict[TopicPartition, int] = {}  # where a revoked partition was left
        self.seeded_ids: dict[str, set[tuple]] = {}  # the ids of the rows read from Postgres, per list
        self.seed_error: Exception | None = None  # a seed that failed in the rebalance listener

    @property
    def ready(self) -> bool:
        return (
            self.aggregates is not None
            and self.consumer is not None
            and bool(self.consumer.assignment())
            and self.positioned
        )

    async def run(self) -> None:
        """Follow the topics until cancelled, seeded from Postgres whenever the feed
        takes a partition it has not followed (``_Positions``)."""
        self.followed.clear()
        self.seed_error = None
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id="rentalstream-dashboard",
            enable_auto_commit=False,  # nothing reads them: _Positions places every partition it is given
            auto_offset_reset="latest",
            isolation_level="read_committed",  # the scorer publishes in transactions: only committed ones
            **self.security,
        )
        await self.consumer.start()
        self.consumer.subscribe(list(CONTRACTS), listener=_Positions(self))
        refresher = asyncio.create_task(self._refresh_aggregates())
        try:
            while True:
                batches = await self.consumer.getmany(timeout_ms=500, max_records=5000)
                if self.seed_error is not None:  # aiokafka only logs a listener's errors
                    raise self.seed_error
                for partition, records in batches.items():
                    # In each trace the records carry on (the replay's, a /predict's): a span per batch.
                    with BatchTraces.of(records).step(
                        f"{partition.topic} process", SpanKind.CONSUMER, kafka_attributes(partition.topic, len(records))
                    ):
                        self._take(records)
        finally:
            refresher.cancel()
            await self.consumer.stop()

    def snapshot(self, now: float | None = None) -> Snapshot:
        """What the page shows; the rate and percentiles cover the ``RATE_WINDOW_SECONDS``
        before ``now`` (``time.monotonic()``, by default)."""
        now = time.monotonic() if now is None else now
        polls = takewhile(lambda poll: now - poll[0] <= RATE_WINDOW_SECONDS, reversed(self.recent))
        window = [latency for _, latencies in polls for latency in latencies]
        p50, p99 = np.percentile(window, [50, 99]) if window else (None, None)
        return Snapshot(
            version=self.version,
            aggregates=self.aggregates,
            events_per_second=len(window) / RATE_WINDOW_SECONDS,
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            prices_seen=self.prices_seen,
            model=self.model,
            prices=list(self.prices),
            conflicts=list(self.conflicts),
            alerts=list(self.alerts),
            dead_letters=list(self.dead_letters),
        )

    # -- the stream --------------------------------------------------------------

    def _take(self, records: Iterable) -> None:
        latencies: list[float] = []
        self.recent.append((time.monotonic(), latencies))
        for record in records:
            try:
                message = CONTRACTS[record.topic].model_validate_json(record.value)
            except (ValidationError, ValueError, TypeError) as error:
                self.metrics.unreadable.labels(record.topic).inc()
                log.warning(
                    "unreadable message topic=%s partition=%s offset=%s error=%s",
                    record.topic,
                    record.partition,
                    record.offset,
                    str(error).splitlines()[0],
                )
                continue
            self.metrics.messages.labels(record.topic).inc()
            if isinstance(message, PriceScored):
                if self._new("prices", (message.price_id,)):
                    latencies.append(self._price(message))
            elif isinstance(message, DelayScored):
                if message.is_conflict and self._new("conflicts", (message.rental_id, message.scored_at)):
                    self.conflicts.appendleft(message.model_dump())
            elif isinstance(message, DriftAlert):
                if self._new("alerts", (message.alert_id,)):
                    self.alerts.appendleft(_alert_row(message))
            elif self._new("dead_letters", (message.dead_letter_id,)):
                self.dead_letters.appendleft(_dead_letter_row(message))
            self._stale = True
        self.version += 1

    def _new(self, rows: str, row_id: tuple) -> bool:
        """Whether a consumed row is not one the feed read from Postgres already."""
        return row_id not in self.seeded_ids.get(rows, ())

    def _price(self, price: PriceScored) -> float:
        latency_ms = (price.scored_at - price.event_time).total_seconds() * 1000
        self.prices_seen += 1
        self.model = f"{price.model_name} v{price.model_version}"
        self.prices.appendleft({**price.model_dump(exclude={"unknown_fields"}), "latency_ms": latency_ms})
        return latency_ms

    # -- Postgres ----------------------------------------------------------------

    async def seed(self) -> None:
        """Read the aggregates and the newest rows of each live list from Postgres (done by
        ``_Positions`` once new partitions are positioned at their end)."""
        async with self.engine.connect() as conn:
            latest = await read_latest(conn, self.prices.maxlen or 0)
            self.aggregates = await read_aggregates(conn)
        for buffer in (self.prices, self.conflicts, self.alerts, self.dead_letters):
            buffer.clear()  # a feed restarted after an outage starts again from Postgres
        self.prices.extend({**row, "latency_ms": _latency_ms(row)} for row in latest.prices)
        self.conflicts.extend(latest.conflicts)
        self.alerts.extend(latest.alerts)
        self.dead_letters.extend(latest.dead_letters)
        self.seeded_ids = {
            rows: {tuple(row[column] for column in columns) for row in getattr(latest, rows)}
            for rows, columns in ROW_IDS.items()
        }
        if latest.prices:
            self.model = f"{latest.prices[0]['model_name']} v{latest.prices[0]['model_version']}"
        self._stale = False
        self.version += 1

    async def _refresh_aggregates(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.aggregate_seconds)
            if not self._stale and time.monotonic() - last < IDLE_REFRESH_SECONDS:
                continue
            self._stale = False
            started = time.monotonic()
            try:
                async with self.engine.connect() as conn:
                    self.aggregates = await read_aggregates(conn)
            except (SQLAlchemyError, OSError) as error:  # the database may be away a while: keep what we have
                self._stale = True
                self.metrics.refresh_errors.inc()
                log.warning("aggregates not refreshed error=%s", str(error).splitlines()[0])
                continue
            last = time.monotonic()
            self.metrics.refresh_seconds.observe(last - started)
            self.version += 1


class _Positions(ConsumerRebalanceListener):
    """Where the feed reads each partition it is given: where it left it, if a rebalance
    took it away; else at its end, and then the tables are read again from Postgres,
    which hold everything before that end."""

    def __init__(self, feed: LiveFeed) -> None:
        self.feed = feed

    async def on_partitions_revoked(self, revoked) -> None:
        self.feed.positioned = False
        for partition in revoked:
            self.feed.followed[partition] = await self.feed.consumer.position(partition)

    async def on_partitions_assigned(self, assigned) -> None:
        consumer, followed = self.feed.consumer, self.feed.followed
        for partition in assigned:
            if partition in followed:
                consumer.seek(partition, followed[partition])
        new = [partition for partition in assigned if partition not in followed]
        if new:
            await consumer.seek_to_end(*new)
            # seek_to_end is lazy (resolved at the next fetch): resolve it before reading
            # Postgres, so that nothing published since can be skipped
            for partition in new:
                followed[partition] = await consumer.position(partition)
            try:
                await self.feed.seed()
            except (SQLAlchemyError, OSError) as error:
                self.feed.seed_error = error
                return
        self.feed.positioned = True


def _latency_ms(row: dict) -> float:
    return (row["scored_at"] - row["event_time"]).total_seconds() * 1000


def _alert_row(alert: DriftAlert) -> dict:
    return {
        "alert_id": alert.alert_id,
        "signal": alert.signal,
        "state": alert.state,
        "detector": alert.detector,
        "before_mean": alert.before.mean,
        "after_mean": alert.after.mean,
        "reference_mean": alert.reference.mean if alert.reference else None,
        "triggered_by": alert.triggered_by,
        "detected_at": alert.detected_at,
    }


def _dead_letter_row(letter: DeadLetter) -> dict:
    return {
        "dead_letter_id": letter.dead_letter_id,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "consumer": letter.consumer,
        "reason": letter.reason,
        "size_bytes": letter.raw_size or len(letter.raw_value),
        "received_at": letter.received_at,
    }
