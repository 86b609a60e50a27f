"""The drift monitor: a FastStream app reading ``rentals``, ``prices`` and ``delays`` in
consumer groups of its own, feeding every signal's River detector (``monitor.watch``),
and raising ``DriftAlert``\\s on ``drift`` and in ``drift_events``.

Delivery: as in the scorer, a batch's offsets are committed only after its alerts, the
signals' states and its dead letters are stored (one transaction, upserts). The
detectors' windows live in memory: a restarted monitor starts with fresh windows and
every signal stable (a redelivered batch is seen twice by the detectors, which can
only shorten a detection delay).

Reference: the statistics logged with the champion at training. When prices come from
another version of the model (a promotion, or a rollback), the monitor loads that
version's reference and restarts its detectors on it, before it observes the batch
(``monitor.reference_choice``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from opentelemetry.trace import SpanKind
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor import store
from monitor.detectors import DetectorSpec
from monitor.metrics import MonitorMetrics
from monitor.reference_choice import version_to_load
from monitor.watch import DriftWatch, Fired, Origin
from runtime import consumer_service, tracing
from runtime.consumer_service import consumer_app
from runtime.kafka.batch_publisher import BatchPublisher
from runtime.kafka.dead_letters import dead_letter_messages, parse_records
from runtime.kafka.security import broker_security, client_options
from runtime.kafka.subscriber import KafkaRecord, batch_subscriber
from runtime.kafka.traces import BatchTraces, kafka_attributes
from runtime.long_lived import freeze_what_is_loaded
from runtime.postgres.engines import async_engine
from runtime.postgres.retries import with_retries
from runtime.registry import MissingReference, Registry, UnknownVersion
from runtime.settings import Settings
from schemas import tables
from schemas.events import DelayScored, DriftAlert, PriceScored, RentalEvent, utc_now
from schemas.topics import DELAYS, DRIFT, PRICES, RENTALS, Topic

log = logging.getLogger("rentalstream.monitor")
CONSUMER = "monitor"
CLIENT_ID = "rentalstream-monitor"


def build_app(settings: Settings) -> AsgiFastStream:
    """The monitor app: a ``Monitor`` subscribed to ``rentals``, ``prices`` and ``delays``.
    Served over HTTP (``RENTALSTREAM_MONITOR_PORT``): ``/health``, ``/ready`` (reference
    loaded, every consumer holds partitions), ``/metrics``."""
    metrics = MonitorMetrics()
    broker = KafkaBroker(
        settings.resolved_kafka_bootstrap().split(","),  # FastStream takes a list, not "host:port,host:port"
        client_id=CLIENT_ID,
        log_level=logging.DEBUG,
        middlewares=[KafkaPrometheusMiddleware(registry=metrics.registry, app_name="monitor")],
        security=broker_security(settings.kafka),
    )
    monitor = Monitor(settings, metrics)
    return consumer_app(
        broker,
        metrics,
        monitor.subscribe(broker),
        loaded=monitor.loaded,
        on_startup=[monitor.start],
        after_shutdown=[monitor.stop],
        engine=monitor.engine,
    )


class Publisher(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, messages: list[tuple[str, str | None, BaseModel]]) -> None: ...


class Monitor:
    """Feeds every event to its signals' detectors (``monitor.watch``), and stores and
    publishes the alerts they raise, with the signals' states and the dead letters.

    ``publisher`` and ``engine`` are made from the settings unless given: a handler test
    passes its own publisher."""

    def __init__(
        self,
        settings: Settings,
        metrics: MonitorMetrics,
        *,
        engine: AsyncEngine | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.engine = engine or async_engine(settings.resolved_database_url(), pool_size=2)
        self.publisher = publisher or BatchPublisher(
            settings.resolved_kafka_bootstrap(), client_id=CLIENT_ID, security=client_options(settings.kafka)
        )
        self.registry = Registry.of(settings)
        self.spec = DetectorSpec(settings.monitor.detector, settings.monitor.detector_setting)
        self.watch: DriftWatch | None = None  # built on the reference, at start
        self.reference_version: str | None = None
        self.model_version: str | None = None  # of the last price seen: named in the alerts
        self.without_reference: set[str] = set()  # versions trained before references existed
        self.last_alert: dict[str, tuple[str, Any]] = {}  # per signal: (alert id, detected at)
        self.states_dirty = False  # counts moved since the signal states were last written
        self._writer: asyncio.Task | None = None

    def subscribe(self, broker: KafkaBroker) -> list:
        """A batch subscriber per watched topic, in consumer groups of the monitor's own."""
        return [
            self._subscriber(broker, RENTALS, RentalEvent),
            self._subscriber(broker, PRICES, PriceScored),
            self._subscriber(broker, DELAYS, DelayScored),
        ]

    def loaded(self) -> bool:
        return self.watch is not None

    async def start(self) -> None:
        await self.publisher.start()
        await self.load_reference()
        await self._load_last_alerts()
        await self.write_states()  # every signal is listed from the start
        freeze_what_is_loaded()  # the libraries, the reference, the detectors: out of every later collection
        self._writer = asyncio.create_task(self._write_states_periodically(), name="monitor-states")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        if self.states_dirty:
            await self.write_states()
        await self.publisher.stop()
        await self.engine.dispose()

    async def load_reference(self, version: str | None = None) -> None:
        """Watch against the reference statistics of ``version`` (the champion's by default),
        with fresh detectors."""
        settings = self.settings
        if version is None:
            version = await asyncio.to_thread(self.registry.champion, settings.registry.champion_alias)
        reference = await asyncio.to_thread(self.registry.reference, version)
        self.watch = DriftWatch(
            reference,
            self.spec,
            mae_window=settings.monitor.mae_window,
            mae_margin=settings.monitor.mae_margin,
            cooldown=settings.monitor.alert_cooldown,
        )
        self.reference_version = self.model_version = version
        self.metrics.reference_version.set(int(version))
        log.info(
            "monitoring against the reference of %s v%s with %s", settings.registry.model_name, version, self.spec.label
        )

    async def observe(self, topic: Topic, contract: type[BaseModel], records: Sequence[KafkaRecord]) -> None:
        """Observe a batch of ``topic``; store and publish the alerts it raises and its dead letters."""
        parsed = parse_records(records, contract, CONSUMER)
        if topic is PRICES:
            await self._follow_the_pricing_version([event for _, event in parsed.events])
        watch = self.watch
        assert watch is not None, "the monitor subscribes only once its reference is loaded"
        fired: list[Fired] = []
        for record, event in parsed.events:
            origin = Origin(record.topic, record.partition, record.offset, event_id(event), event.event_time)
            if isinstance(event, RentalEvent):
                fired += watch.observe_rental(event, origin)
            elif isinstance(event, PriceScored):
                if event.model_name == self.settings.registry.model_name:
                    self.model_version = event.model_version
                fired += watch.observe_price(event, origin)
            else:
                fired += watch.observe_delay(event, origin)
        alerts = [self._drift_alert(f) for f in fired]
        for alert in alerts:
            self.last_alert[alert.signal] = (alert.alert_id, alert.detected_at)
        # A state change is stored with its alert; the running counts every few moments.
        signal_states = self._signal_rows(watch) if alerts else []
        self.states_dirty = self.states_dirty or (bool(parsed.events) and not alerts)
        if alerts or parsed.dead_letters:
            await self._retrying(lambda: store.write_batch(self.engine, alerts, signal_states, parsed.dead_letters))
        self.metrics.observed.labels(topic.name).inc(len(parsed.events))
        self.metrics.dead_letters.labels(topic.name).inc(len(parsed.dead_letters))
        for alert in alerts:
            self.metrics.alerts.labels(alert.signal, alert.state).inc()
            log.warning(
                "drift: %s %s (%s): mean %.4g -> %.4g",
                alert.signal,
                alert.state,
                alert.detector,
                alert.before.mean,
                alert.after.mean,
            )
        if alerts:  # states change only with an alert
            self.metrics.drifting.set(sum(1 for m in watch.monitors() if m.state == "drifting"))
        await self.publisher.publish(
            [
                *((DRIFT.name, a.signal, a) for a in alerts),
                *dead_letter_messages(parsed.dead_letters),
            ]
        )

    async def write_states(self) -> None:
        """Store every signal's state and running counts."""
        assert self.watch is not None
        self.states_dirty = False
        rows = self._signal_rows(self.watch)
        if self.watch.error.window[1] is not None:
            self.metrics.rolling_mae.set(self.watch.error.window[1])
        if self.watch.estimated_error.window[1] is not None:
            self.metrics.estimated_mae.labels("all").set(self.watch.estimated_error.window[1])
        if self.watch.estimated_where_true.get():
            self.metrics.estimated_mae.labels("with_true_price").set(self.watch.estimated_where_true.get())
        await self._retrying(lambda: store.write_batch(self.engine, [], rows, []))

    def _subscriber(self, broker: KafkaBroker, topic: Topic, contract: type[BaseModel]):
        settings = self.settings
        subscriber = batch_subscriber(
            broker,
            topic.name,
            f"{settings.monitor.group_id}.{topic.name}",
            max_records=settings.monitor.max_records,
            batch_timeout_ms=settings.monitor.batch_timeout_ms,
            session_timeout_ms=settings.kafka.session_timeout_ms,
            heartbeat_interval_ms=settings.kafka.heartbeat_interval_ms,
        )

        @subscriber
        async def consume(records: Any) -> None:
            with (
                self.metrics.batch_seconds.labels(topic.name).time(),
                # In each trace the records carry on (the replay's, a /predict's): a span per batch.
                BatchTraces.of(records).step(
                    f"{topic.name} process", SpanKind.CONSUMER, kafka_attributes(topic.name, len(records))
                ),
            ):
                await self.observe(topic, contract, records)

        return subscriber

    async def _follow_the_pricing_version(self, prices: list[PriceScored]) -> None:
        assert self.reference_version is not None
        version = version_to_load(
            prices, self.settings.registry.model_name, self.reference_version, self.without_reference
        )
        if version is None:
            return
        try:
            await self.load_reference(version)
        except (MissingReference, UnknownVersion) as missing:  # a price naming a version never registered, too
            self.without_reference.add(version)
            log.warning("%s; its prices are watched against the reference of v%s", missing, self.reference_version)

    async def _load_last_alerts(self) -> None:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(tables.drift_signals).where(tables.drift_signals.c.last_alert_id.isnot(None))
            )
            for row in rows.mappings():
                self.last_alert[row["signal"]] = (row["last_alert_id"], row["last_alert_at"])

    async def _write_states_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.monitor.state_seconds)
            if self.states_dirty:
                try:
                    await self.write_states()
                except Exception:  # the next round tries again; the alerts do not depend on it
                    self.states_dirty = True
                    log.exception("could not write the signal states")

    def _retrying(self, write: Callable[[], Awaitable[None]]) -> Awaitable[None]:
        return with_retries(write, self.settings.monitor.db_retries, self._note_retry)

    def _note_retry(self, retry_state) -> None:
        self.metrics.write_retries.inc()
        log.warning("database write failed (%s); retry %d", retry_state.outcome.exception(), retry_state.attempt_number)

    def _drift_alert(self, fired: Fired) -> DriftAlert:
        t = fired.transition
        return DriftAlert(
            alert_id=fired.alert_id,
            signal=t.signal,
            detector=t.detector,
            state=t.state,
            before=t.before,
            after=t.after,
            reference=t.reference,
            events_seen=t.events_seen,
            triggered_by=fired.origin.event_id,
            model_name=self.settings.registry.model_name,
            model_version=self.model_version,
            event_time=fired.origin.event_time,
            detected_at=utc_now(),
        )

    def _signal_rows(self, watch: DriftWatch) -> list[dict]:
        rows = []
        for m in watch.monitors():
            n, mean = m.window
            alert_id, alert_at = self.last_alert.get(m.signal, (None, None))
            rows.append(
                {
                    "signal": m.signal,
                    "detector": m.label,
                    "state": m.state,
                    "events_seen": m.events_seen,
                    "window_n": n,
                    "window_mean": mean,
                    "reference_mean": m.reference_stats.mean if m.reference_stats is not None else None,
                    "last_alert_id": alert_id,
                    "last_alert_at": alert_at,
                    "model_version": self.model_version,
                }
            )
        return rows


def event_id(event: BaseModel) -> str:
    if isinstance(event, RentalEvent):
        return f"rental-{event.rental_id}"
    if isinstance(event, PriceScored):
        return event.price_id
    assert isinstance(event, DelayScored)
    return f"delay-{event.rental_id}"


def serve(settings: Settings) -> None:
    """Run the monitor and its HTTP endpoints until SIGTERM/SIGINT."""
    tracing.configure("rentalstream-monitor")
    consumer_service.serve(build_app(settings), settings.monitor.host, settings.monitor.port)
