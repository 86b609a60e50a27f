"""The scorer: a FastStream app pricing rentals and price requests, storing the results.

Delivery: batches are consumed with ``AckPolicy.NACK_ON_ERROR``. The offsets of a
batch are committed only after its Postgres transaction has committed; if the write
still fails after the retries, the handler raises, FastStream nacks (seeks every
partition back to the batch's first offset) and the batch is consumed again. Every
row is an upsert keyed by the message id, so redelivery changes nothing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware

from rentalstream import consumer_service
from rentalstream.batch_publisher import BatchPublisher
from rentalstream.consumer_service import consumer_app
from rentalstream.db import async_engine
from rentalstream.records import KafkaRecord, batch_subscriber, dead_letter_messages, with_retries
from rentalstream.settings import Settings
from schemas.events import PriceRequest, RentalEvent, utc_now
from schemas.topics import DELAYS, PRICE_REQUESTS, PRICES, RENTALS, Topic
from scorer import store
from scorer.compiled import compile_trees
from scorer.metrics import ScorerMetrics
from scorer.pricing import PriceModel
from scorer.scoring import Pricer, price_scored, score_batch

log = logging.getLogger("rentalstream.scorer")
CONSUMER = "scorer"
T = TypeVar("T")


def build_app(settings: Settings, model: Pricer | None = None) -> AsgiFastStream:
    """The scorer app; ``model`` defaults to the registry's champion, loaded at start.

    Served over HTTP (``RENTALSTREAM_SCORER_PORT``): ``/health`` (the broker answers),
    ``/ready`` (and the model is loaded and every consumer holds partitions),
    ``/metrics`` (Prometheus).
    """
    metrics = ScorerMetrics()
    broker = KafkaBroker(
        settings.resolved_kafka_bootstrap(),
        client_id="rentalstream-scorer",
        log_level=logging.DEBUG,  # per-batch "Received/Processed" lines only when debugging
        middlewares=[KafkaPrometheusMiddleware(registry=metrics.registry, app_name="scorer")],
    )
    engine = async_engine(settings.resolved_database_url())
    publisher = BatchPublisher(settings.resolved_kafka_bootstrap(), client_id="rentalstream-scorer")
    state: dict[str, Pricer] = {}
    subscribers: list = []
    background: list[asyncio.Task] = []
    if model is not None:
        state["model"] = model

    def note_retry(retry_state) -> None:
        metrics.write_retries.inc()
        log.warning(
            "database write failed (%s); retry %d",
            retry_state.outcome.exception(), retry_state.attempt_number,
        )  # fmt: skip

    def retrying(write: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return with_retries(write, settings.scorer_db_retries, note_retry)

    def subscribe(
        topic: Topic, score: Callable[[Sequence[KafkaRecord]], Awaitable[None]], fetch_max_wait_ms: int = 500
    ) -> None:
        """Consume ``topic`` in batches, in a consumer group of its own."""

        subscriber = batch_subscriber(
            broker, topic.name, f"{settings.scorer_group_id}.{topic.name}",
            max_records=settings.scorer_max_records, batch_timeout_ms=settings.scorer_batch_timeout_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )  # fmt: skip
        subscribers.append(subscriber)

        @subscriber
        async def consume(records: Any) -> None:
            with metrics.batch_seconds.labels(topic.name).time():
                await score(records)

    async def score_rentals(records: Sequence[KafkaRecord]) -> None:
        model = state["model"]
        priced, dead = score_batch(records, RentalEvent, model, CONSUMER)
        scored_at = utc_now()
        price_rows = [
            price_scored(
                price_id=f"rental-{e.rental_id}", price=p, car=e.car, model=model,
                event_time=e.event_time, scored_at=scored_at, rental_id=e.rental_id,
                car_id=e.car_id,
            )
            for _, e, p in priced
        ]  # fmt: skip
        facts = await retrying(lambda: store.write_rental_batch(
            engine, [(e, r.partition, r.offset) for r, e, _ in priced], price_rows, dead, scored_at,
        ))  # fmt: skip
        metrics.scored.labels(RENTALS.name).inc(len(priced))
        metrics.dead_letters.labels(RENTALS.name).inc(len(dead))
        metrics.conflicts.inc(sum(1 for f in facts if f.is_conflict))
        await publisher.publish([
            *((PRICES.name, p.price_id, p) for p in price_rows),
            *((DELAYS.name, str(f.car_id), f) for f in facts),
            *dead_letter_messages(dead),
        ])  # fmt: skip

    async def score_price_requests(records: Sequence[KafkaRecord]) -> None:
        model = state["model"]
        priced, dead = score_batch(records, PriceRequest, model, CONSUMER)
        scored_at = utc_now()
        answered = [
            (request, price_scored(
                price_id=request.request_id, price=p, car=request.car, model=model,
                event_time=request.event_time, scored_at=scored_at,
                request_id=request.request_id, listed_price_per_day=request.listed_price_per_day,
            ))
            for _, request, p in priced
        ]  # fmt: skip
        await retrying(lambda: store.write_price_requests(
            engine, [(r, rec.partition, rec.offset) for rec, r, _ in priced], [s for _, s in answered], dead,
        ))  # fmt: skip
        metrics.scored.labels(PRICE_REQUESTS.name).inc(len(answered))
        metrics.dead_letters.labels(PRICE_REQUESTS.name).inc(len(dead))
        await publisher.publish([
            *((PRICES.name, s.price_id, s) for _, s in answered),
            *((r.reply_to, r.request_id, s) for r, s in answered if r.reply_to),
            *dead_letter_messages(dead),
        ])  # fmt: skip

    subscribe(RENTALS, score_rentals)
    # Someone is waiting for these: a short broker-side fetch wait (see the setting).
    subscribe(PRICE_REQUESTS, score_price_requests, settings.request_fetch_max_wait_ms)

    async def start() -> None:
        await publisher.start()
        await load_model()
        # What is loaded by now (MLflow, pandas, the model: ~400 MB of objects) lives as
        # long as the process; frozen, the collector stops rescanning it, which took
        # ~0.2 s, once every few batches, in the middle of scoring.
        gc.freeze()

    async def load_model() -> None:
        if "model" not in state:
            state["model"] = await asyncio.to_thread(
                PriceModel.load,
                settings.resolved_mlflow_tracking_uri(),
                settings.model_name,
                settings.champion_alias,
            )
        metrics.model.labels(state["model"].name, state["model"].version).set(1)
        log.info("scoring with %s v%s", state["model"].name, state["model"].version)
        if settings.scorer_compile_model and isinstance(state["model"], PriceModel):
            background.append(asyncio.create_task(switch_to_compiled(state["model"])))

    async def switch_to_compiled(model: PriceModel) -> None:
        """Score with the compiled trees once they are ready; the swap is one assignment,
        between two batches (each batch reads ``state["model"]`` once)."""
        try:
            compiled = await compile_trees(model.booster, settings.model_cache_dir.expanduser())
        except Exception as error:  # noqa: BLE001  (an optimisation: whatever fails, the booster scores on)
            log.warning("scoring stays on LightGBM's own predictor: %s", error)
            return
        state["model"] = model.with_compiled(compiled)
        metrics.compiled.set(1)
        log.info("scoring with %s v%s compiled (%s)", model.name, model.version, compiled.path)

    async def stop() -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await publisher.stop()
        await engine.dispose()

    return consumer_app(
        broker, metrics, subscribers, loaded=lambda: "model" in state,
        on_startup=[start], after_shutdown=[stop], engine=engine,
    )  # fmt: skip


def serve(settings: Settings) -> None:
    """Run the scorer and its HTTP endpoints until SIGTERM/SIGINT."""
    consumer_service.serve(build_app(settings), settings.scorer_host, settings.scorer_port)
