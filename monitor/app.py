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
from collections.abc import Sequence
from typing import Any

from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from pydantic import BaseModel
from sqlalchemy import select

from monitor import store
from monitor.detectors import DetectorSpec
from monitor.metrics import MonitorMetrics
from monitor.reference_choice import version_to_load
from monitor.watch import DriftWatch, Fired, Origin
from runtime import consumer_service
from runtime.consumer_service import consumer_app
from runtime.kafka.batch_publisher import BatchPublisher
from runtime.kafka.dead_letters import dead_letter_messages, parse_records
from runtime.kafka.subscriber import KafkaRecord, batch_subscriber
from runtime.postgres.engines import async_engine
from runtime.postgres.retries import with_retries
from runtime.registry import MissingReference, champion_version, reference_of
from runtime.settings import Settings
from schemas import tables
from schemas.events import DelayScored, DriftAlert, PriceScored, RentalEvent, utc_now
from schemas.topics import DELAYS, DRIFT, PRICES, RENTALS, Topic

log = logging.getLogger("rentalstream.monitor")
CONSUMER = "monitor"


def build_app(settings: Settings) -> AsgiFastStream:
    """The monitor app. Served over HTTP (``RENTALSTREAM_MONITOR_PORT``): ``/health``,
    ``/ready`` (reference loaded, every consumer holds partitions), ``/metrics``."""
    metrics = MonitorMetrics()
    broker = KafkaBroker(
        settings.resolved_kafka_bootstrap().split(","),  # FastStream takes a list, not "host:port,host:port"
        client_id="rentalstream-monitor",
        log_level=logging.DEBUG,
        middlewares=[KafkaPrometheusMiddleware(registry=metrics.registry, app_name="monitor")],
    )
    engine = async_engine(settings.resolved_database_url(), pool_size=2)
    publisher = BatchPublisher(settings.resolved_kafka_bootstrap(), client_id="rentalstream-monitor")
    spec = DetectorSpec(settings.monitor_detector, settings.monitor_detector_setting)
    state: dict[str, Any] = {"model_version": None, "states_dirty": False}
    without_reference: set[str] = set()  # versions trained before references existed
    last_alert: dict[str, tuple[str, Any]] = {}
    subscribers: list = []

    async def load_reference(version: str | None = None) -> None:
        tracking_uri = settings.resolved_mlflow_tracking_uri()
        if version is None:
            version = await asyncio.to_thread(
                champion_version, tracking_uri, settings.model_name, settings.champion_alias
            )
        reference = await asyncio.to_thread(reference_of, tracking_uri, settings.model_name, version)
        state["watch"] = DriftWatch(
            reference, spec, mae_window=settings.monitor_mae_window, mae_margin=settings.monitor_mae_margin
        )
        state["reference_version"] = state["model_version"] = version
        metrics.reference_version.set(int(version))
        log.info("monitoring against the reference of %s v%s with %s", settings.model_name, version, spec.label)

    async def load_last_alerts() -> None:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(tables.drift_signals).where(tables.drift_signals.c.last_alert_id.isnot(None))
            )
            for row in rows.mappings():
                last_alert[row["signal"]] = (row["last_alert_id"], row["last_alert_at"])

    def note_retry(retry_state) -> None:
        metrics.write_retries.inc()
        log.warning("database write failed (%s); retry %d", retry_state.outcome.exception(), retry_state.attempt_number)

    def subscribe(topic: Topic, contract: type[BaseModel]) -> None:
        subscriber = batch_subscriber(
            broker,
            topic.name,
            f"{settings.monitor_group_id}.{topic.name}",
            max_records=settings.scorer_max_records,
            batch_timeout_ms=settings.scorer_batch_timeout_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        )
        subscribers.append(subscriber)

        @subscriber
        async def consume(records: Any) -> None:
            with metrics.batch_seconds.labels(topic.name).time():
                await monitor(topic, contract, records)

    async def follow_the_pricing_version(prices: list[PriceScored]) -> None:
        version = version_to_load(prices, settings.model_name, state["reference_version"], without_reference)
        if version is None:
            return
        try:
            await load_reference(version)
        except MissingReference as missing:
            without_reference.add(version)
            log.warning("%s; its prices are watched against the reference of v%s", missing, state["reference_version"])

    async def monitor(topic: Topic, contract: type[BaseModel], records: Sequence[KafkaRecord]) -> None:
        parsed = parse_records(records, contract, CONSUMER)
        if topic is PRICES:
            await follow_the_pricing_version([event for _, event in parsed.events])
        watch: DriftWatch = state["watch"]
        fired: list[Fired] = []
        for record, event in parsed.events:
            origin = Origin(record.topic, record.partition, record.offset, event_id(event), event.event_time)
            if isinstance(event, RentalEvent):
                fired += watch.observe_rental(event, origin)
            elif isinstance(event, PriceScored):
                note_model(event)
                fired += watch.observe_price(event, origin)
            else:
                fired += watch.observe_delay(event, origin)
        alerts = [drift_alert(f) for f in fired]
        for alert in alerts:
            last_alert[alert.signal] = (alert.alert_id, alert.detected_at)
        # A state change is stored with its alert; the running counts every few moments.
        signal_states = signal_rows(watch) if alerts else []
        state["states_dirty"] = state["states_dirty"] or (bool(parsed.events) and not alerts)
        if alerts or parsed.dead_letters:
            await with_retries(
                lambda: store.write_batch(engine, alerts, signal_states, parsed.dead_letters),
                settings.scorer_db_retries,
                note_retry,
            )
        metrics.observed.labels(topic.name).inc(len(parsed.events))
        metrics.dead_letters.labels(topic.name).inc(len(parsed.dead_letters))
        for alert in alerts:
            metrics.alerts.labels(alert.signal, alert.state).inc()
            log.warning(
                "drift: %s %s (%s): mean %.4g -> %.4g",
                alert.signal,
                alert.state,
                alert.detector,
                alert.before.mean,
                alert.after.mean,
            )
        if alerts:  # states change only with an alert
            metrics.drifting.set(sum(1 for m in watch.monitors() if m.state == "drifting"))
        await publisher.publish(
            [
                *((DRIFT.name, a.signal, a) for a in alerts),
                *dead_letter_messages(parsed.dead_letters),
            ]
        )

    def note_model(price: PriceScored) -> None:
        if price.model_name == settings.model_name:
            state["model_version"] = price.model_version

    def drift_alert(fired: Fired) -> DriftAlert:
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
            model_name=settings.model_name,
            model_version=state["model_version"],
            event_time=fired.origin.event_time,
            detected_at=utc_now(),
        )

    def signal_rows(watch: DriftWatch) -> list[dict]:
        rows = []
        for m in watch.monitors():
            n, mean = m.window
            alert_id, alert_at = last_alert.get(m.signal, (None, None))
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
                    "model_version": state["model_version"],
                }
            )
        return rows

    subscribe(RENTALS, RentalEvent)
    subscribe(PRICES, PriceScored)
    subscribe(DELAYS, DelayScored)

    async def write_states() -> None:
        state["states_dirty"] = False
        watch: DriftWatch = state["watch"]
        rows = signal_rows(watch)
        if watch.error.window[1] is not None:
            metrics.rolling_mae.set(watch.error.window[1])
        await with_retries(lambda: store.write_batch(engine, [], rows, []), settings.scorer_db_retries, note_retry)

    async def write_states_periodically() -> None:
        while True:
            await asyncio.sleep(settings.monitor_state_seconds)
            if state["states_dirty"]:
                try:
                    await write_states()
                except Exception:  # the next round tries again; the alerts do not depend on it
                    state["states_dirty"] = True
                    log.exception("could not write the signal states")

    async def stop() -> None:
        writer = state.pop("writer", None)
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        if state.get("states_dirty"):
            await write_states()
        await publisher.stop()
        await engine.dispose()

    async def start() -> None:
        await publisher.start()
        await load_reference()
        await load_last_alerts()
        await write_states()  # every signal is listed from the start
        state["writer"] = asyncio.create_task(write_states_periodically(), name="monitor-states")

    return consumer_app(
        broker,
        metrics,
        subscribers,
        loaded=lambda: "watch" in state,
        on_startup=[start],
        after_shutdown=[stop],
        engine=engine,
    )


def event_id(event: BaseModel) -> str:
    if isinstance(event, RentalEvent):
        return f"rental-{event.rental_id}"
    if isinstance(event, PriceScored):
        return event.price_id
    assert isinstance(event, DelayScored)
    return f"delay-{event.rental_id}"


def serve(settings: Settings) -> None:
    """Run the monitor and its HTTP endpoints until SIGTERM/SIGINT."""
    consumer_service.serve(build_app(settings), settings.monitor_host, settings.monitor_port)
