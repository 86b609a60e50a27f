"""The scorer: a FastStream app pricing rentals and price requests, storing the results.

Delivery: a batch is stored in Postgres while the next batch is scored, one store at a
time in input order (``runtime.kafka.write_behind``). Its offsets are committed only after
its Postgres transaction has committed, and on Apache Kafka together with its published
results in a Kafka transaction that commits while later batches are scored
(``runtime.kafka.delivery``; replies to price requests leave before it). If the write
still fails after the retries, or the Kafka transaction fails, the batch's partitions are
sought back to its first offsets (``Results.rewind``) and it is consumed again, with the
batch scored behind it. Every row is an upsert keyed by the message id, so redelivery
changes nothing in Postgres, and an aborted transaction nothing for ``read_committed``
readers of the result topics.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from faststream import AckPolicy
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime import consumer_service, tracing
from runtime.compiled_trees import compile_trees
from runtime.consumer_service import consumer_app
from runtime.kafka.dead_letters import dead_letter_messages
from runtime.kafka.delivery import Results, ResumeAfterOwnCommits, choose_results
from runtime.kafka.security import broker_security, client_options
from runtime.kafka.subscriber import KafkaRecord, RebalanceWatch, batch_subscriber
from runtime.kafka.traces import BatchTraces, kafka_attributes
from runtime.kafka.write_behind import WriteBehind
from runtime.long_lived import freeze_what_is_loaded
from runtime.model_slot import ModelSlot, follow
from runtime.postgres.engines import async_engine
from runtime.postgres.retries import with_retries
from runtime.prepared_versions import PreparedVersion, recall, remember, remembered_path
from runtime.registry_process import RegistryProcess
from runtime.settings import Settings
from runtime.tracing import Headers
from schemas.contracts import asyncapi as contract_document
from schemas.events import DeadLetter, PriceRequest, PriceScored, RentalEvent, utc_now
from schemas.topics import DELAYS, PRICE_REQUESTS, PRICES, RENTALS, Topic
from scorer import store
from scorer.metrics import ScorerMetrics
from scorer.pricing import PriceModel
from scorer.reply_topics import ReplyTopics
from scorer.scoring import Pricer, challenger_prices, estimated_errors, price_scored, refuse_replies, score_batch

log = logging.getLogger("rentalstream.scorer")
CONSUMER = "scorer"
T = TypeVar("T")
Messages = list[tuple[str, str | None, Any]]  # (topic, key, model) to publish
CLIENT_ID = "rentalstream-scorer"


class Handover(NamedTuple):
    """What a batch hands on once Postgres holds it: its results (in the batch's Kafka
    transaction) and the replies to price requests (sent at once, outside it), each with
    the request's record, whose trace it continues; ``traces``: the batch's processing
    spans, and when it has any, ``sources``: the record each result comes from (None for
    a delay fact of an earlier rental), whose trace the result carries on."""

    results: Messages
    replies: Sequence[tuple[str, str | None, Any, KafkaRecord]] = ()
    traces: BatchTraces = BatchTraces()
    sources: Sequence[KafkaRecord | None] = ()

    def traced_results(self, traces: BatchTraces) -> Messages | list[tuple[str, str | None, Any, Headers]]:
        """The results, each with the headers of its record's span in ``traces`` when
        there are spans (else as they are: traces off cost no copy)."""
        if not traces:
            return self.results
        return [(*result, traces.carried(source)) for result, source in zip(self.results, self.sources, strict=True)]


Store = Callable[[], Awaitable[Handover]]  # a scored batch's second half: store it, say what to hand on


def build_app(settings: Settings) -> AsgiFastStream:
    """The scorer app: a ``Scorer`` subscribed to ``rentals`` and ``price-requests``.

    Served over HTTP (``RENTALSTREAM_SCORER_PORT``): ``/health`` (the broker answers),
    ``/ready`` (and the model is loaded and every consumer holds partitions),
    ``/metrics`` (Prometheus).
    """
    metrics = ScorerMetrics()
    broker = KafkaBroker(
        settings.resolved_kafka_bootstrap().split(","),  # FastStream takes a list, not "host:port,host:port"
        client_id=CLIENT_ID,
        log_level=logging.DEBUG,  # per-batch "Received/Processed" lines only when debugging
        middlewares=[KafkaPrometheusMiddleware(registry=metrics.registry, app_name="scorer")],
        security=broker_security(settings.kafka),
    )
    scorer = Scorer(settings, metrics)
    return consumer_app(
        broker,
        metrics,
        scorer.subscribe(broker),
        loaded=scorer.loaded,
        on_startup=[scorer.start],
        after_shutdown=[scorer.stop],
        engine=scorer.engine,
        contracts=contract_document(),
    )


def serve(settings: Settings) -> None:
    """Run the scorer and its HTTP endpoints until SIGTERM/SIGINT."""
    tracing.configure("rentalstream-scorer")
    consumer_service.serve(build_app(settings), settings.scorer.host, settings.scorer.port)


class Scorer:
    """Prices every rental and price request with the champion (and the challenger, when
    one is set), works out each rental's delay facts, stores it all, and hands the
    results on for publishing.

    The models: at start, the versions this machine's scorers served last for this
    registry, when their files are still in the model cache (a restart scores at once),
    else loaded from the registry; then the two aliases are checked (at once after such a
    resumption) and polled every ``registry_poll_seconds``; a version that moved is loaded
    in full beside the one scoring and swapped in between two batches (each batch reads
    the models once).

    ``results`` (per input topic) and ``reply_topics`` are made at start from the settings
    unless given: a handler test passes its own.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: ScorerMetrics,
        *,
        engine: AsyncEngine | None = None,
        results: Mapping[str, Results] | None = None,
        reply_topics: ReplyTopics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        # No ping before each batch's transaction (~0.4 ms of a /predict): every write is retried.
        self.engine = engine or async_engine(settings.resolved_database_url(), ping_on_checkout=False)
        self.results: dict[str, Results] = dict(results or {})  # one producer per input topic: batches overlap
        self._own_results = results is None
        self.reply_topics = reply_topics or ReplyTopics(
            settings.resolved_kafka_bootstrap(), client_options(settings.kafka)
        )
        self.registry = RegistryProcess.of(settings)  # MLflow stays in that child process
        champion, challenger = settings.registry.champion_alias, settings.registry.challenger_alias
        # No champion raises NoChampion: at start, a scorer without a model cannot score.
        self.champion: ModelSlot[Pricer] = ModelSlot(champion, lambda: self.registry.champion(champion), self._load)
        self.challenger: ModelSlot[Pricer] = ModelSlot(
            challenger, lambda: self.registry.version_behind(challenger), self._load
        )
        self._background: list[asyncio.Task] = []
        self.writes: dict[str, WriteBehind] = {}  # per input topic: each batch stored behind the next one's scoring
        self.rebalances: dict[str, RebalanceWatch] = {}  # per input topic: its subscriber's watch over rebalances
        self._prepared: dict[str, PreparedVersion] = {}  # by version: what _moved remembers

    @property
    def compiled_cache(self) -> Path | None:
        """Where compiled trees are kept, None when the scorer prices with the booster only."""
        scorer = self.settings.scorer
        return scorer.model_cache_dir.expanduser() if scorer.compile_model else None

    async def _load(self, version: str) -> PriceModel:
        prepared = await self.registry.prepare(version, compiled=self.compiled_cache is not None)
        self._prepared[version] = prepared
        return await asyncio.to_thread(PriceModel.load, self.settings.registry.model_name, prepared)

    def _remembered(self, slot: ModelSlot) -> Path:
        registry = self.registry
        return remembered_path(registry.cache_dir, registry.tracking_uri, registry.model_name, slot.alias)

    async def _resume(self) -> bool:
        """Serve what this machine's scorers last served for both aliases, if it is all
        still in the cache: a restart then prices at once, before the registry (a child
        process importing MLflow, ~2.5 s) answers, and the first check corrects it."""
        slots = (self.champion, self.challenger)
        recalled = [await asyncio.to_thread(recall, self._remembered(slot)) for slot in slots]
        if not all(known for known, _ in recalled) or recalled[0][1] is None:
            return False
        try:
            for slot, (_, prepared) in zip(slots, recalled, strict=True):
                if prepared is not None and self.compiled_cache is None:
                    prepared = prepared.model_copy(update={"compiled_object": None})
                model = None
                if prepared is not None:
                    model = await asyncio.to_thread(PriceModel.load, self.settings.registry.model_name, prepared)
                    self._prepared[prepared.version] = prepared
                slot.assume(None if prepared is None else prepared.version, model)
        except Exception as error:  # noqa: BLE001  (a shortcut: the registry knows)
            log.warning("could not resume with the versions served last (%s); asking the registry", error)
            for slot in slots:
                slot.assume(None, None)
            return False
        log.info("resuming with what was served last; asking the registry at once")
        for slot in slots:
            if slot.version is not None:
                self._moved(slot, None)
        return True

    def subscribe(self, broker: KafkaBroker) -> list:
        """The batch subscribers of the two input topics, one consumer group each."""
        return [
            self._subscriber(broker, RENTALS, self.score_rentals),
            # Someone is waiting for these: their own fetch wait (see the setting).
            self._subscriber(
                broker, PRICE_REQUESTS, self.score_price_requests, self.settings.kafka.request_fetch_max_wait_ms
            ),
        ]

    def loaded(self) -> bool:
        return self.champion.current is not None

    async def start(self) -> None:
        if self._own_results:
            instance = self.settings.scorer.resolved_instance_id()
            for topic in (RENTALS, PRICE_REQUESTS):
                self.results[topic.name] = await choose_results(
                    self.settings.kafka.transactions,
                    self.settings.resolved_kafka_bootstrap(),
                    CLIENT_ID,
                    transactional_id=f"{CLIENT_ID}.{instance}.{topic.name}",
                    group_id=self._group(topic),
                    replies=topic is PRICE_REQUESTS,
                    security=client_options(self.settings.kafka),
                )
        for results in self.results.values():
            await results.start()
        resumed = await self._resume()
        if not resumed:
            for slot in (self.champion, self.challenger):
                previous = slot.version
                if await slot.refresh():
                    self._moved(slot, previous)
                self._remember(slot)  # an alias that points nowhere, too
        freeze_what_is_loaded()  # the libraries and the models: out of every later collection
        self._background.append(
            asyncio.create_task(
                follow(
                    [self.champion, self.challenger],
                    lambda: self.settings.registry.poll_seconds,
                    self._moved,
                    at_once=resumed,
                ),
                name="scorer-registry-watch",
            )
        )

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for writes in self.writes.values():  # the last batches scored: stored and handed on
            await writes.settle()
        for results in self.results.values():
            await results.stop()
        await self.registry.close()
        await self.engine.dispose()

    async def score_rentals(self, records: Sequence[KafkaRecord]) -> Store:
        """Price a batch of rentals; then (``Store``) store them with their delay facts, and
        hand on the prices, the delay facts that changed and the dead letters to publish."""
        with BatchTraces.of(records).step(*processing(RENTALS, records)) as traces:
            return self._score_rentals(records, traces)

    def _score_rentals(self, records: Sequence[KafkaRecord], traces: BatchTraces) -> Store:
        model, challenger = self._models()
        priced, dead = score_batch(records, RentalEvent, model, CONSUMER)
        scored_at = utc_now()
        challenged = self._challenge(challenger, priced)
        estimates, challenger_estimates = self._estimates(model, challenger, priced, challenged)
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
                estimated_error=estimate,
                challenger_estimated_error=challenger_estimate,
            )
            for (_, e, p), c, estimate, challenger_estimate in zip(
                priced, challenged, estimates, challenger_estimates, strict=True
            )
        ]

        async def stored() -> Handover:
            with traces.step(*STORING):
                facts = await self._retrying(
                    lambda: store.write_rental_batch(
                        self.engine,
                        [(e, r.partition, r.offset) for r, e, _ in priced],
                        price_rows,
                        dead,
                        scored_at,
                    )
                )
            self.metrics.scored.labels(RENTALS.name).inc(len(priced))
            self.metrics.dead_letters.labels(RENTALS.name).inc(len(dead))
            self.metrics.conflicts.inc(sum(1 for f in facts if f.is_conflict))
            handover = Handover(
                [
                    *((PRICES.name, p.price_id, p) for p in price_rows),
                    *((DELAYS.name, str(f.car_id), f) for f in facts),
                    *dead_letter_messages(dead),
                ],
                traces=traces,
            )
            if not traces:
                return handover
            of_rental = {e.rental_id: r for r, e, _ in priced}
            sources = [
                *(r for r, _, _ in priced),
                *(of_rental.get(f.rental_id) for f in facts),
                *dead_letter_sources(records, dead),
            ]
            return handover._replace(sources=sources)

        return stored

    async def score_price_requests(self, records: Sequence[KafkaRecord]) -> Store:
        """Price a batch of requests; then (``Store``) store them, and hand on the prices, the
        replies (to the topic each request names, if it may) and the dead letters to publish."""
        with BatchTraces.of(records).step(*processing(PRICE_REQUESTS, records)) as traces:
            return await self._score_price_requests(records, traces)

    async def _score_price_requests(self, records: Sequence[KafkaRecord], traces: BatchTraces) -> Store:
        model, challenger = self._models()
        priced, dead = score_batch(records, PriceRequest, model, CONSUMER)
        allowed = await self.reply_topics.allowed({request.reply_to for _, request, _ in priced if request.reply_to})
        priced, refused = refuse_replies(priced, allowed, CONSUMER)
        dead += refused
        scored_at = utc_now()
        challenged = self._challenge(challenger, priced)
        estimates, challenger_estimates = self._estimates(model, challenger, priced, challenged)
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
                    answer_with=request.answer_with,
                    estimated_error=estimate,
                    challenger_estimated_error=challenger_estimate,
                ),
            )
            for (_, request, p), c, estimate, challenger_estimate in zip(
                priced, challenged, estimates, challenger_estimates, strict=True
            )
        ]
        answered = await self._explained(model, challenger, answered)

        async def stored() -> Handover:
            with traces.step(*STORING):
                await self._retrying(
                    lambda: store.write_price_requests(
                        self.engine,
                        [(r, rec.partition, rec.offset) for rec, r, _ in priced],
                        [s for _, s in answered],
                        dead,
                    )
                )
            self.metrics.scored.labels(PRICE_REQUESTS.name).inc(len(answered))
            self.metrics.dead_letters.labels(PRICE_REQUESTS.name).inc(len(dead))
            record_of = {request.request_id: record for record, request, _ in priced}
            return Handover(
                [*((PRICES.name, s.price_id, s) for _, s in answered), *dead_letter_messages(dead)],
                [(r.reply_to, r.request_id, s, record_of[r.request_id]) for r, s in answered if r.reply_to],
                traces,
                [*(record_of[r.request_id] for r, _ in answered), *dead_letter_sources(records, dead)]
                if traces
                else (),
            )

        return stored

    def _group(self, topic: Topic) -> str:
        """The consumer group reading ``topic``: one per input topic."""
        return f"{self.settings.scorer.group_id}.{topic.name}"

    def _subscriber(
        self,
        broker: KafkaBroker,
        topic: Topic,
        score: Callable[[Sequence[KafkaRecord]], Awaitable[Store]],
        fetch_max_wait_ms: int = 500,
    ):
        """Consume ``topic`` in batches, in a consumer group of its own: score each batch,
        then store it while the next is scored (``WriteBehind``), and hand its results on
        (and commit its offsets) once Postgres holds them."""
        settings = self.settings
        group = self._group(topic)
        writes = self.writes[topic.name] = WriteBehind(
            f"scorer {topic.name}",
            lambda records, message, floor: self.results[topic.name].rewind(records, message, floor),
            self.metrics.batch_seconds.labels(topic.name).observe,
        )
        resume = ResumeAfterOwnCommits(lambda: self.results.get(topic.name), lambda: subscriber.consumer, writes=writes)
        subscriber = batch_subscriber(
            broker,
            topic.name,
            group,
            max_records=settings.scorer.max_records,
            batch_timeout_ms=settings.scorer.batch_timeout_ms,
            session_timeout_ms=settings.kafka.session_timeout_ms,
            heartbeat_interval_ms=settings.kafka.heartbeat_interval_ms,
            fetch_max_wait_ms=fetch_max_wait_ms,
            ack_policy=AckPolicy.MANUAL,
            group_instance_id=settings.scorer.resolved_instance_id(),
            listener=resume,
        )
        rebalances = self.rebalances[topic.name] = subscriber.rebalances

        @subscriber
        async def consume(records: Any, message: KafkaMessage) -> None:
            results = self.results[topic.name]
            started = time.perf_counter()
            async with resume.in_flight:
                if rebalances.batch_outdated:  # its partitions resume from committed offsets
                    log.info(
                        "left a batch of %d %s fetched before a rebalance, to be consumed again",
                        len(records),
                        topic.name,
                    )
                    return
                try:
                    stored = await score(records)

                    async def store_and_deliver() -> None:
                        handover = await stored()
                        with handover.traces.step(*publishing(handover)) as traces:
                            replies = [(*reply, traces.carried(record)) for *reply, record in handover.replies]
                            await results.deliver(handover.traced_results(traces), records, message, replies)

                    await writes.hand_on(records, message, store_and_deliver, started)
                except BaseException:
                    await writes.settle()  # the batch before it first: if it fails too, it rewinds further back
                    await writes.rewind(records, message)  # consumed again, nothing before it skipped
                    raise

        return subscriber

    def _models(self) -> tuple[Pricer, Pricer | None]:
        """The champion and the challenger, read once per batch (see the class)."""
        champion = self.champion.current
        assert champion is not None, "the scorer subscribes only once its champion is loaded"
        return champion, self.challenger.current

    def _challenge(self, challenger: Pricer | None, priced: Sequence[tuple[Any, Any, float]]) -> list[float | None]:
        if challenger is None:
            return [None] * len(priced)
        prices = challenger_prices(challenger, [e.car for _, e, _ in priced])
        self.metrics.challenger_failures.inc(sum(p is None for p in prices))
        return prices

    @staticmethod
    def _estimates(
        model: Pricer, challenger: Pricer | None, priced: Sequence[tuple[Any, Any, float]], challenged: list
    ) -> tuple[list[float | None], list[float | None]]:
        """Each version's estimated error of its own price (``estimated_errors``)."""
        cars = [e.car for _, e, _ in priced]
        return (
            estimated_errors(model, cars, [p for _, _, p in priced]),
            estimated_errors(challenger, cars, challenged),
        )

    async def _explained(
        self, model: Pricer, challenger: Pricer | None, answered: list[tuple[PriceRequest, PriceScored]]
    ) -> list[tuple[PriceRequest, PriceScored]]:
        """``answered``, with the explanation of every price whose request asked for one:
        of the price its requester is answered with (the champion's, or the challenger's
        in the live split). Worked out in a thread (~10 ms a car), so the rentals go on
        meanwhile; a failure is logged and the price goes without it (the bridge then
        answers 502)."""
        explained = list(answered)
        explainers = [model] if challenger is None or challenger.version == model.version else [model, challenger]
        for explainer in explainers:
            asked = [
                i
                for i, (request, scored) in enumerate(answered)
                if request.explain and scored.answer().model_version == explainer.version
            ]
            if not asked:
                continue
            try:
                explanations = await asyncio.to_thread(
                    explainer.explain,
                    [answered[i][0].car for i in asked],
                    [answered[i][1].answer().price_per_day for i in asked],
                )
            except Exception:
                log.exception("%s v%s could not explain %d prices", explainer.name, explainer.version, len(asked))
                continue
            self.metrics.explained.inc(len(asked))
            for i, explanation in zip(asked, explanations, strict=True):
                request, scored = answered[i]
                explained[i] = (request, scored.model_copy(update={"explanation": explanation}))
        return explained

    def _retrying(self, write: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return with_retries(write, self.settings.scorer.db_retries, self._note_retry)

    def _note_retry(self, retry_state) -> None:
        # The failed attempt's objects (the batch's rows, held by the exception's
        # traceback in reference cycles) would otherwise wait for a full collection, and
        # a database outage piled up several attempts' worth before one came: 435 -> 483
        # MiB over a 150-s outage, against 439 -> 467 MiB, flat after the first cycle,
        # with this (benchmarks/outage_memory.py). It runs only while writes fail.
        gc.collect()
        self.metrics.write_retries.inc()
        log.warning(
            "database write failed (%s); retry %d",
            retry_state.outcome.exception(),
            retry_state.attempt_number,
        )

    def _remember(self, slot: ModelSlot) -> None:
        prepared = None if slot.version is None else self._prepared.get(slot.version)
        if slot.version is not None and prepared is None:
            return  # not loaded through _load or _resume: nothing to remember it by
        try:
            remember(self._remembered(slot), prepared)
        except OSError as error:  # a shortcut for restarts, not a reason to stop
            log.warning("could not note what @%s serves: %s", slot.alias, error)

    def _moved(self, slot: ModelSlot, previous: str | None) -> None:
        """Log, count and remember an alias that moved, and compile the new version's trees."""
        name = self.settings.registry.model_name
        self._remember(slot)
        if slot.current is None:
            log.info("%s alias removed; scoring with the champion only", slot.alias)
        else:
            if previous is not None:
                self.metrics.model_swaps.labels(slot.alias).inc()
            log.info(
                "%s: scoring with %s v%s (was %s)",
                slot.alias,
                name,
                slot.version,
                f"v{previous}" if previous else "none",
            )
            if self.compiled_cache is not None and getattr(slot.current, "compiled", None) is None:
                self._background.append(asyncio.create_task(self._switch_to_compiled(slot, slot.current)))
        gauge = self.metrics.model if slot is self.champion else self.metrics.challenger
        gauge.clear()
        if slot.current is not None:
            gauge.labels(name, slot.version).set(1)
        self.metrics.compiled.set(int(getattr(self.champion.current, "compiled", None) is not None))

    async def _switch_to_compiled(self, slot: ModelSlot, model: PriceModel) -> None:
        """Score with the compiled trees once they are ready, if ``model`` is still the one
        in ``slot`` by then; the swap is one assignment, between two batches."""
        assert self.compiled_cache is not None
        try:
            compiled = await compile_trees(model.booster, self.compiled_cache)
        except Exception as error:  # noqa: BLE001  (an optimisation: whatever fails, the booster scores on)
            log.warning("v%s stays on LightGBM's own predictor: %s", model.version, error)
            return
        if not slot.replace(model, model.with_compiled(compiled)):
            return  # the alias moved while compiling
        if slot is self.champion:
            self.metrics.compiled.set(1)
        log.info("scoring with %s v%s compiled (%s)", model.name, model.version, compiled.path)


# The spans of a batch, in each trace its records carry (runtime/kafka/traces.py).
STORING = ("postgres store", SpanKind.CLIENT, {"db.system.name": "postgresql", "db.operation.name": "upsert"})


def dead_letter_sources(records: Sequence[KafkaRecord], dead: Sequence[DeadLetter]) -> list[KafkaRecord | None]:
    """The record each dead letter of a batch was made of (None for one refused before it
    was a record of this batch)."""
    at = {(r.partition, r.offset): r for r in records}
    return [at.get((d.partition, d.offset)) for d in dead]


def processing(topic: Topic, records: Sequence[KafkaRecord]) -> tuple[str, SpanKind, dict]:
    return f"{topic.name} process", SpanKind.CONSUMER, kafka_attributes(topic.name, len(records))


def publishing(handover: Handover) -> tuple[str, SpanKind, dict]:
    return (
        "results publish",
        SpanKind.PRODUCER,
        {"messaging.batch.message_count": len(handover.results) + len(handover.replies)},
    )
