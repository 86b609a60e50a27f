"""The scorer: a FastStream app pricing rentals and price requests, storing the results.

Delivery: a batch's offsets are committed only after its Postgres transaction has
committed, and on Apache Kafka together with its published results in one Kafka
transaction (``runtime.kafka.delivery``). If the write still fails after the retries, or
the Kafka transaction fails, the handler nacks (seeks every partition back to the
batch's first offset) and the batch is consumed again. Every row is an upsert keyed by
the message id, so redelivery changes nothing in Postgres, and an aborted transaction
nothing for ``read_committed`` readers of the result topics.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from faststream import AckPolicy
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware

from runtime import consumer_service
from runtime.consumer_service import consumer_app
from runtime.kafka.dead_letters import dead_letter_messages
from runtime.kafka.delivery import Results, ResumeAfterOwnCommits, choose_results
from runtime.kafka.subscriber import KafkaRecord, batch_subscriber
from runtime.postgres.engines import async_engine
from runtime.postgres.retries import with_retries
from runtime.registry import champion_version, version_behind_alias
from runtime.settings import Settings
from schemas.contracts import asyncapi as contract_document
from schemas.events import PriceRequest, RentalEvent, utc_now
from schemas.topics import DELAYS, PRICE_REQUESTS, PRICES, RENTALS, Topic
from scorer import store
from scorer.compiled import compile_trees
from scorer.metrics import ScorerMetrics
from scorer.pricing import PriceModel
from scorer.reply_topics import ReplyTopics
from scorer.scoring import Pricer, challenger_prices, price_scored, refuse_replies, score_batch

log = logging.getLogger("rentalstream.scorer")
CONSUMER = "scorer"
T = TypeVar("T")
Messages = list[tuple[str, str | None, Any]]  # (topic, key, model) to publish


def build_app(settings: Settings) -> AsgiFastStream:
    """The scorer app. It loads the registry's champion (and challenger, if any) at start
    and then polls the two aliases every ``registry_poll_seconds``: a version that moved
    is loaded in full beside the one scoring, then swapped in between two batches (each
    batch reads the models once), so no event is priced by a half-loaded model and every
    price names the version that made it.

    Served over HTTP (``RENTALSTREAM_SCORER_PORT``): ``/health`` (the broker answers),
    ``/ready`` (and the model is loaded and every consumer holds partitions),
    ``/metrics`` (Prometheus).
    """
    metrics = ScorerMetrics()
    broker = KafkaBroker(
        settings.resolved_kafka_bootstrap().split(","),  # FastStream takes a list, not "host:port,host:port"
        client_id="rentalstream-scorer",
        log_level=logging.DEBUG,  # per-batch "Received/Processed" lines only when debugging
        middlewares=[KafkaPrometheusMiddleware(registry=metrics.registry, app_name="scorer")],
    )
    engine = async_engine(settings.resolved_database_url())
    results: dict[str, Results] = {}  # per input topic: a transactional producer each, as two batches overlap
    reply_topics = ReplyTopics(settings.resolved_kafka_bootstrap())
    state: dict[str, Pricer] = {}  # "model": the champion; "challenger", when its alias exists
    subscribers: list = []
    background: list[asyncio.Task] = []

    def note_retry(retry_state) -> None:
        # The failed attempt's objects (the batch's rows, held by the exception's
        # traceback in reference cycles) would otherwise wait for a full collection, and
        # a database outage piled up several attempts' worth before one came: 435 -> 483
        # MiB over a 150-s outage, against 439 -> 467 MiB, flat after the first cycle,
        # with this (benchmarks/outage_memory.py). It runs only while writes fail.
        gc.collect()
        metrics.write_retries.inc()
        log.warning(
            "database write failed (%s); retry %d",
            retry_state.outcome.exception(),
            retry_state.attempt_number,
        )

    def retrying(write: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return with_retries(write, settings.scorer_db_retries, note_retry)

    def group_of(topic: Topic) -> str:
        return f"{settings.scorer_group_id}.{topic.name}"

    def subscribe(
        topic: Topic, score: Callable[[Sequence[KafkaRecord]], Awaitable[Messages]], fetch_max_wait_ms: int = 500
    ) -> None:
        """Consume ``topic`` in batches, in a consumer group of its own; hand each batch's
        results on (and commit its offsets) once Postgres holds them."""

        rebalance = ResumeAfterOwnCommits(lambda: results.get(topic.name), lambda: subscriber.consumer)
        subscriber = batch_subscriber(
            broker,
            topic.name,
            group_of(topic),
            max_records=settings.scorer_max_records,
            batch_timeout_ms=settings.scorer_batch_timeout_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=fetch_max_wait_ms,
            ack_policy=AckPolicy.MANUAL,
            group_instance_id=settings.resolved_scorer_instance_id(),
            listener=rebalance,
        )
        subscribers.append(subscriber)

        @subscriber
        async def consume(records: Any, message: KafkaMessage) -> None:
            try:
                async with rebalance.in_flight:
                    with metrics.batch_seconds.labels(topic.name).time():
                        messages = await score(records)
                        await results[topic.name].deliver(messages, records, message, group_of(topic))
            except BaseException:
                await message.nack()  # consumed again from the batch's first offsets
                raise

    def challenge(challenger: Pricer | None, priced: Sequence[tuple[Any, Any, float]]) -> list[float | None]:
        if challenger is None:
            return [None] * len(priced)
        prices = challenger_prices(challenger, [e.car for _, e, _ in priced])
        metrics.challenger_failures.inc(sum(p is None for p in prices))
        return prices

    async def score_rentals(records: Sequence[KafkaRecord]) -> Messages:
        model, challenger = state["model"], state.get("challenger")  # once per batch: see build_app
        priced, dead = score_batch(records, RentalEvent, model, CONSUMER)
        scored_at = utc_now()
        price_rows = [
            price_scored(
                price_id=f"rental-{e.rental_id}",
                price=p,
                car=e.car,
                model=model,
                event_time=e.event_time,
                scored_at=scored_at,
                rental_id=e.rental_id,
                car_id=e.car_id,
                challenger=challenger,
                challenger_price=c,
            )
            for (_, e, p), c in zip(priced, challenge(challenger, priced), strict=True)
        ]
        facts = await retrying(
            lambda: store.write_rental_batch(
                engine,
                [(e, r.partition, r.offset) for r, e, _ in priced],
                price_rows,
                dead,
                scored_at,
            )
        )
        metrics.scored.labels(RENTALS.name).inc(len(priced))
        metrics.dead_letters.labels(RENTALS.name).inc(len(dead))
        metrics.conflicts.inc(sum(1 for f in facts if f.is_conflict))
        return [
            *((PRICES.name, p.price_id, p) for p in price_rows),
            *((DELAYS.name, str(f.car_id), f) for f in facts),
            *dead_letter_messages(dead),
        ]

    async def score_price_requests(records: Sequence[KafkaRecord]) -> Messages:
        model, challenger = state["model"], state.get("challenger")
        priced, dead = score_batch(records, PriceRequest, model, CONSUMER)
        allowed = await reply_topics.allowed({request.reply_to for _, request, _ in priced if request.reply_to})
        priced, refused = refuse_replies(priced, allowed, CONSUMER)
        dead += refused
        scored_at = utc_now()
        answered = [
            (
                request,
                price_scored(
                    price_id=request.request_id,
                    price=p,
                    car=request.car,
                    model=model,
                    event_time=request.event_time,
                    scored_at=scored_at,
                    request_id=request.request_id,
                    listed_price_per_day=request.listed_price_per_day,
                    challenger=challenger,
                    challenger_price=c,
                ),
            )
            for (_, request, p), c in zip(priced, challenge(challenger, priced), strict=True)
        ]
        await retrying(
            lambda: store.write_price_requests(
                engine,
                [(r, rec.partition, rec.offset) for rec, r, _ in priced],
                [s for _, s in answered],
                dead,
            )
        )
        metrics.scored.labels(PRICE_REQUESTS.name).inc(len(answered))
        metrics.dead_letters.labels(PRICE_REQUESTS.name).inc(len(dead))
        return [
            *((PRICES.name, s.price_id, s) for _, s in answered),
            *((r.reply_to, r.request_id, s) for r, s in answered if r.reply_to),
            *dead_letter_messages(dead),
        ]

    subscribe(RENTALS, score_rentals)
    # Someone is waiting for these: a short broker-side fetch wait (see the setting).
    subscribe(PRICE_REQUESTS, score_price_requests, settings.request_fetch_max_wait_ms)

    async def start() -> None:
        instance = settings.resolved_scorer_instance_id()
        for topic in (RENTALS, PRICE_REQUESTS):
            results[topic.name] = await choose_results(
                settings.kafka_transactions,
                settings.resolved_kafka_bootstrap(),
                "rentalstream-scorer",
                transactional_id=f"rentalstream-scorer.{instance}.{topic.name}",
            )
            await results[topic.name].start()
        await refresh_models()
        # What is loaded by now (MLflow, pandas, the model: ~400 MB of objects) lives as
        # long as the process; frozen, the collector stops rescanning it, which took
        # ~0.2 s, once every few batches, in the middle of scoring.
        gc.freeze()
        background.append(asyncio.create_task(watch_registry(), name="scorer-registry-watch"))

    async def watch_registry() -> None:
        while True:
            await asyncio.sleep(settings.registry_poll_seconds)
            try:
                await refresh_models()
            except Exception as error:  # noqa: BLE001  (the registry may be away; scoring goes on with what is loaded)
                log.warning("registry check failed; scoring on with %s: %s", loaded_versions(), error)

    def loaded_versions() -> str:
        return ", ".join(f"{role} v{m.version}" for role, m in state.items())

    async def refresh_models() -> None:
        """Load whatever version an alias now points to, and swap it in once loaded."""
        uri, name = settings.resolved_mlflow_tracking_uri(), settings.model_name
        for role, alias in (("model", settings.champion_alias), ("challenger", settings.challenger_alias)):
            # No champion raises NoChampion (at start: a scorer without a model cannot score).
            lookup = champion_version if role == "model" else version_behind_alias
            version = await asyncio.to_thread(lookup, uri, name, alias)
            current = state.get(role)
            if version == (current.version if current else None):
                continue
            if version is None:
                del state[role]  # the challenge is over
                log.info("challenger alias removed; scoring with the champion only")
            else:
                loaded = await asyncio.to_thread(PriceModel.load_version, uri, name, version)
                state[role] = loaded  # one assignment: the next batch prices with it
                if current is not None:
                    metrics.model_swaps.labels(alias).inc()
                log.info(
                    "%s: scoring with %s v%s (was %s)",
                    alias,
                    name,
                    version,
                    f"v{current.version}" if current else "none",
                )
                if settings.scorer_compile_model:
                    background.append(asyncio.create_task(switch_to_compiled(role, loaded)))
            gauge = metrics.model if role == "model" else metrics.challenger
            gauge.clear()
            if role in state:
                gauge.labels(name, state[role].version).set(1)
        metrics.compiled.set(int(getattr(state["model"], "compiled", None) is not None))

    async def switch_to_compiled(role: str, model: PriceModel) -> None:
        """Score with the compiled trees once they are ready, if ``model`` is still the
        one in ``role`` by then; the swap is one assignment, between two batches."""
        try:
            compiled = await compile_trees(model.booster, settings.model_cache_dir.expanduser())
        except Exception as error:  # noqa: BLE001  (an optimisation: whatever fails, the booster scores on)
            log.warning("v%s stays on LightGBM's own predictor: %s", model.version, error)
            return
        if state.get(role) is not model:
            return  # an alias moved while compiling
        state[role] = model.with_compiled(compiled)
        if role == "model":
            metrics.compiled.set(1)
        log.info("scoring with %s v%s compiled (%s)", model.name, model.version, compiled.path)

    async def stop() -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for delivery in results.values():
            await delivery.stop()
        await engine.dispose()

    return consumer_app(
        broker,
        metrics,
        subscribers,
        loaded=lambda: "model" in state,
        on_startup=[start],
        after_shutdown=[stop],
        engine=engine,
        contracts=contract_document(),
    )


def serve(settings: Settings) -> None:
    """Run the scorer and its HTTP endpoints until SIGTERM/SIGINT."""
    consumer_service.serve(build_app(settings), settings.scorer_host, settings.scorer_port)
