"""Ask the scorer for prices over Kafka and wait for its replies.

FastStream's ``broker.request()`` is not supported for Kafka outside its test client,
so request/reply is done here with aiokafka directly: one producer for
``price-requests``, one consumer reading every partition of the reply topic, and a
table of pending futures keyed by request id. The reply reader stays a hand-written
aiokafka loop rather than a FastStream subscriber: benchmarks/reply_reader.py measured the
same latency one reply at a time and three times the CPU per reply under load
(docs/decisions.md).

Several bridges may share the reply topic: each request id starts with the bridge's
instance id, a bridge ignores replies that are not its own, and a reply of its own
that nobody is waiting for any more (the caller timed out, or Kafka redelivered a
request already answered) is dropped and counted, never handed to another caller.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from runtime.kafka.batch_publisher import HEADERS
from runtime.kafka.connect import start_when_reachable
from runtime.kafka.subscriber import KafkaRecord
from runtime.kafka.topics import partition_ids
from runtime.kafka.traces import BatchTraces, publishing
from runtime.tracing import Headers, carried
from schemas.cars import CarFeatures
from schemas.events import Arm, PriceRequest, PriceScored

log = logging.getLogger("rentalstream.bridge")
CHAMPION_ANSWER = {"answer_with"}  # left out of a request answered by the champion (the default)


class BrokerUnavailable(RuntimeError):
    """The request could not be handed to the broker."""


class ReplyTimeout(TimeoutError):
    """The request was published but no reply came in time."""


class PriceRequester:
    def __init__(
        self,
        bootstrap: str,
        request_topic: str,
        reply_topic: str,
        fetch_max_wait_ms: int,
        on_late_reply: Callable[[], None] = lambda: None,
        security: dict | None = None,
    ) -> None:
        self.request_topic = request_topic
        self.reply_topic = reply_topic
        self.instance = uuid.uuid4().hex[:12]
        self.last_model: tuple[str, str] | None = None
        self._bootstrap = bootstrap
        self._security = security or {}
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._on_late_reply = on_late_reply
        self._pending: dict[str, asyncio.Future[PriceScored]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._receiver: asyncio.Task | None = None

    @property
    def pending(self) -> int:
        """Requests waiting for a reply right now."""
        return len(self._pending)

    @property
    def listening(self) -> bool:
        """The reply consumer holds every partition of the reply topic and is reading."""
        return (
            self._consumer is not None
            and bool(self._consumer.assignment())
            and self._receiver is not None
            and not self._receiver.done()
        )

    def new_request_id(self) -> str:
        return f"{self.instance}-{uuid.uuid4().hex}"

    async def start(self, timeout: float = 30) -> None:
        """Connect (retrying while the broker comes up), take every reply partition at its
        end, and start reading. Replies are only awaited for requests made after this."""
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=f"bridge-{self.instance}",
            acks="all",
            enable_idempotence=True,
            **self._security,
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=f"bridge-{self.instance}",
            group_id=None,  # every bridge reads every reply partition and keeps its own
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            isolation_level="read_committed",  # a reply of an aborted scorer transaction is not a reply
            **self._security,
        )
        await start_when_reachable(self._producer, self._consumer, timeout=timeout, pause=0.5)
        partitions = await partition_ids(self._bootstrap, self.reply_topic, self._security)
        if not partitions:
            raise RuntimeError(f"topic {self.reply_topic!r} does not exist; `rentalstream up` creates the topics")
        assigned = [TopicPartition(self.reply_topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_end(*assigned)
        for tp in assigned:  # resolve the end offsets now, so no reply can slip before them
            await self._consumer.position(tp)
        self._receiver = asyncio.create_task(self._receive(), name="bridge-replies")
        log.info("bridge %s reading %d partitions of %s", self.instance, len(assigned), self.reply_topic)

    async def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
            await asyncio.gather(self._receiver, return_exceptions=True)
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def broker_answers(self, timeout: float = 1.0) -> bool:
        """A metadata round trip to the broker succeeds."""
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout)
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    async def ask(
        self,
        cars: Sequence[CarFeatures],
        request_id: str,
        client: str | None,
        timeout: float,
        explain: bool = False,
        answer_with: Arm = "champion",
    ) -> list[PriceScored]:
        """Publish one PriceRequest per car (id ``<request_id>/<position>``, each asking for
        its explanation when ``explain``, and to be answered with ``answer_with``'s price)
        and return the replies in the same order.

        Raises BrokerUnavailable when the broker does not take the requests, and
        ReplyTimeout when the replies do not all come back within ``timeout`` seconds.
        Either way nothing of this call stays in the pending table.
        """
        assert self._producer is not None, "start() first"
        loop = asyncio.get_running_loop()
        requests = [
            PriceRequest(
                request_id=f"{request_id}/{i}",
                car=car,
                reply_to=self.reply_topic,
                client=client,
                explain=explain,
                answer_with=answer_with,
            )
            for i, car in enumerate(cars)
        ]
        waiting = {r.request_id: loop.create_future() for r in requests}
        self._pending.update(waiting)
        published = False
        try:
            async with asyncio.timeout(timeout):
                with publishing(self.request_topic, len(requests)):
                    await self._publish(requests, carried())
                published = True
                return list(await asyncio.gather(*waiting.values()))
        except TimeoutError:
            if published:
                raise ReplyTimeout(f"no reply from the scorer within {timeout:g} s") from None
            raise BrokerUnavailable(f"the broker did not take the request within {timeout:g} s") from None
        finally:
            for key in waiting:
                self._pending.pop(key, None)

    async def _publish(self, requests: list[PriceRequest], trace_headers: Headers) -> None:
        """Send the requests, each carrying the publishing span's trace (none when not traced)."""
        headers = [*HEADERS, *trace_headers]
        try:
            deliveries = [
                await self._producer.send(
                    self.request_topic,
                    # the champion's answer without the field: what a scorer from before the split reads
                    r.model_dump_json(exclude=CHAMPION_ANSWER if r.answer_with == "champion" else None).encode(),
                    key=r.request_id.encode(),
                    headers=headers,
                )
                for r in requests
            ]
            # asyncio.wait, not gather: a timeout must not cancel aiokafka's own futures.
            await asyncio.wait(deliveries)
            for delivery in deliveries:
                delivery.result()
        except (KafkaError, OSError) as error:
            raise BrokerUnavailable(f"the broker refused the request: {error!r}") from error

    async def _receive(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000, max_records=1000)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive a broker hiccup; aiokafka reconnects
                log.exception("reading replies failed; retrying")
                await asyncio.sleep(0.5)
                continue
            for records in batches.values():
                for record in records:
                    self._deliver(record)

    def _deliver(self, record: KafkaRecord) -> None:
        value = record.value
        try:
            reply = PriceScored.model_validate_json(value or b"")
        except ValidationError:
            log.warning("ignoring a reply that is not a PriceScored: %r", (value or b"")[:200])
            return
        request_id = reply.request_id or ""
        if not request_id.startswith(self.instance + "-"):
            return  # another bridge's reply
        self.last_model = (reply.model_name, reply.model_version)
        future = self._pending.get(request_id)
        if future is None or future.done():
            self._on_late_reply()
            log.info("dropped a reply nobody waits for: %s", request_id)
            return
        with BatchTraces.of([record]).step(f"{self.reply_topic} receive", SpanKind.CONSUMER):
            pass  # the moment the reply is read, in the request's trace
        future.set_result(reply)
