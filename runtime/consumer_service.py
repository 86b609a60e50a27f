"""What every consuming service (scorer, monitor) exposes besides its handlers: the
Prometheus metrics all of them keep, and an HTTP face — ``/health`` (the broker
answers), ``/ready`` (what the service loads at start is there, and every subscriber
holds partitions), ``/metrics`` — served next to the broker by ``serve``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiokafka.errors import KafkaError
from faststream.asgi import AsgiFastStream, AsgiResponse, AsyncAPIRoute, get, make_ping_asgi
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime import tracing
from runtime.postgres import engines

log = logging.getLogger("rentalstream.consumer")


@dataclass
class ConsumerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.dead_letters = Counter(
            "rentalstream_dead_letters_total", "Messages sent to dead letters.", ["topic"], registry=self.registry
        )
        self.write_retries = Counter(
            "rentalstream_db_write_retries_total",
            "Batch writes retried after a database error.",
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "rentalstream_batch_seconds",
            "Time to handle and store one batch and hand its results on (on Apache Kafka its "
            "transaction then commits while the next batch is handled).",
            ["topic"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


def consumer_app(
    broker: KafkaBroker,
    metrics: ConsumerMetrics,
    subscribers: Sequence,
    loaded: Callable[[], bool],
    on_startup: Sequence[Callable[[], Awaitable[None]]],
    after_shutdown: Sequence[Callable[[], Awaitable[None]]],
    engine: AsyncEngine,
    contracts: AsyncAPI | None = None,
) -> AsgiFastStream:
    """The service's app. Ready means ``loaded()``, every subscriber has joined its group
    and holds partitions (a replica beyond the partition count holds none and stays
    not-ready: it is a standby), the broker answers and the database (``engine``) takes
    a query: a consumer that cannot store its results commits nothing and falls behind.
    ``rentalstream_assigned_partitions`` tells how the partitions are spread over replicas."""
    metrics.registry.register(AssignedPartitions(subscribers))

    @get
    async def ready(scope) -> AsgiResponse:
        consuming = all(s.consumer is not None and s.consumer.assignment() for s in subscribers)
        if not (loaded() and consuming):
            return AsgiResponse(b"not ready: loading, or joining its consumer groups", 503)
        # Both asked at once, and every one that fails is named: a slow broker ping must
        # not hide that the database is away.
        broker_answers, database_answers = await asyncio.gather(broker.ping(timeout=2), engines.answers(engine))
        missing = [
            f"the {name} does not answer"
            for name, answers in (("broker", broker_answers), ("database", database_answers))
            if not answers
        ]
        if missing:
            return AsgiResponse(f"not ready: {'; '.join(missing)}".encode(), 503)
        return AsgiResponse(b"ready", 200)

    return AsgiFastStream(
        broker,
        asgi_routes=[
            ("/health", make_ping_asgi(broker, timeout=2)),
            ("/ready", ready),
            ("/metrics", lag_then(make_asgi_app(metrics.registry), ConsumerLag(subscribers, metrics.registry))),
        ],
        on_startup=list(on_startup),
        after_shutdown=[*after_shutdown, tracing.shutdown_async],  # the last spans, too
        # The contracts of the topics, for producers written elsewhere: /asyncapi.json (and
        # FastStream's page at /asyncapi). No "try it out": nobody publishes through here.
        specification=contracts,
        asyncapi_path=AsyncAPIRoute("/asyncapi", try_it_out_path=None) if contracts else None,
    )


class AssignedPartitions(Collector):
    """The partitions this replica holds now, per topic, read from the consumers at scrape
    time (a rebalance moves them without telling the handlers)."""

    def __init__(self, subscribers: Sequence) -> None:
        self.subscribers = subscribers

    def collect(self):
        family = GaugeMetricFamily(
            "rentalstream_assigned_partitions", "Partitions of a topic this replica holds now.", labels=["topic"]
        )
        for subscriber in self.subscribers:
            held = subscriber.consumer.assignment() if subscriber.consumer is not None else set()
            for topic in subscriber.topic_names:
                family.add_metric([topic], sum(1 for tp in held if tp.topic == topic))
        yield family


class ConsumerLag:
    """``rentalstream_consumer_lag{group,topic,partition}``: how many messages of each
    partition this replica holds are not committed yet (the log end offset minus the
    group's committed offset, as Kafka's consumer-groups tool counts it): the figure an
    autoscaler scales on. Read from the broker when /metrics is scraped, never otherwise,
    so it costs nothing between scrapes; a partition without a commit yet counts from its
    first offset."""

    def __init__(self, subscribers: Sequence, registry: CollectorRegistry) -> None:
        self.subscribers = subscribers
        self.gauge = Gauge(
            "rentalstream_consumer_lag",
            "Messages of a partition this replica holds that its group has not committed.",
            ["group", "topic", "partition"],
            registry=registry,
        )

    async def refresh(self, timeout: float = 2.0) -> None:
        lags: dict[tuple[str, str, str], int] = {}
        try:
            async with asyncio.timeout(timeout):
                for subscriber in self.subscribers:
                    consumer = subscriber.consumer
                    held = sorted(consumer.assignment()) if consumer is not None else []
                    if not held:
                        continue
                    ends = await consumer.end_offsets(held)
                    starts = await consumer.beginning_offsets(held)
                    for tp in held:
                        committed = await consumer.committed(tp)
                        start = committed if committed is not None else starts[tp]
                        lags[subscriber.group_id, tp.topic, str(tp.partition)] = max(0, ends[tp] - start)
        except (KafkaError, OSError, TimeoutError) as error:  # the broker is away: no figure rather than a stale one
            log.info("consumer lag not read: %r", error)
        self.gauge.clear()
        for labels, lag in lags.items():
            self.gauge.labels(*labels).set(lag)


def lag_then(metrics_app, lag: ConsumerLag):
    """The Prometheus ASGI app, after refreshing the consumer lag."""

    async def app(scope, receive, send) -> None:
        await lag.refresh()
        await metrics_app(scope, receive, send)

    return app


def serve(app: AsgiFastStream, host: str, port: int) -> None:
    """Run the app and its HTTP endpoints until SIGTERM/SIGINT (the batch in hand is
    finished and committed, then the consumers close)."""
    asyncio.run(app.run(log_level=logging.WARNING, run_extra_options={"host": host, "port": port}))
