"""How a consumer hands on a batch once Postgres holds its results: publish the results
and commit the batch's input offsets.

- ``TransactionalResults``: the results and the offsets in one Kafka transaction (a
  transactional producer with ``send_offsets_to_transaction``). A ``read_committed``
  reader of the result topics then sees each result once, even when a crash makes Kafka
  deliver a batch again: the crashed attempt's transaction never commits, and a
  restarted replica (same transactional id) aborts it at once.
- ``AtLeastOnceResults``: publish, then commit the offsets. A crash between the two
  publishes a batch's results twice; Postgres still holds each once (upserts).

Which one a service uses is ``RENTALSTREAM_KAFKA_TRANSACTIONS`` (``choose_results``):
``auto`` asks the broker whether it offers transactions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import ApiVersionRequest
from pydantic import BaseModel

from runtime.kafka.batch_publisher import BatchPublisher
from runtime.kafka.subscriber import KafkaRecord

log = logging.getLogger("runtime.kafka.delivery")

Messages = Sequence[tuple[str, str | None, BaseModel]]
# InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit
TRANSACTION_APIS = {22, 24, 25, 26, 28}
TRANSACTION_TIMEOUT_SECONDS = 8  # a transaction takes milliseconds; past this the broker is in trouble
REVOKE_WAIT_SECONDS = 30  # the database retries of a batch included
START_TIMEOUT_SECONDS = 60  # the first transaction of a new cluster creates its transaction log: seconds


class TransactionsUnavailable(RuntimeError):
    """Transactions are asked for (`on`, or `auto` on a broker that offers them) and cannot be had."""


class Acknowledgeable(Protocol):
    """FastStream's message: ``ack`` commits the consumer's offsets."""

    async def ack(self) -> None: ...


class Results(Protocol):
    guarantee: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def deliver(
        self, messages: Messages, records: Sequence[KafkaRecord], message: Acknowledgeable, group_id: str
    ) -> None: ...


class AtLeastOnceResults:
    """Publish the results and wait for their acks, then commit the input offsets."""

    guarantee = "at-least-once"

    def __init__(self, bootstrap: str, client_id: str) -> None:
        self.publisher = BatchPublisher(bootstrap, client_id)

    async def start(self) -> None:
        await self.publisher.start()

    async def stop(self) -> None:
        await self.publisher.stop()

    async def deliver(
        self, messages: Messages, records: Sequence[KafkaRecord], message: Acknowledgeable, group_id: str
    ) -> None:
        await self.publisher.publish(messages)
        await message.ack()


class TransactionalResults:
    """The results and the input offsets in one Kafka transaction.

    A transaction that fails (a broker lost, a timeout) is aborted and the error raised,
    so the batch is consumed again. A producer left unusable (a fatal error, an abort that
    could not reach the coordinator) is replaced by a new one under the same
    transactional id, which fences the old one and aborts whatever it left open."""

    guarantee = "exactly-once (read_committed)"

    def __init__(self, bootstrap: str, client_id: str, transactional_id: str) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.transactional_id = transactional_id
        self.publisher: BatchPublisher | None = None
        self.committed: dict[TopicPartition, int] = {}  # the offsets this process's transactions committed

    async def start(self) -> None:
        publisher = BatchPublisher(self.bootstrap, self.client_id, transactional_id=self.transactional_id)
        try:
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                await publisher.start()  # InitProducerId: retried for ever while no coordinator answers
        except TimeoutError:
            await publisher.stop()
            raise TransactionsUnavailable(
                f"no transaction coordinator answered {self.transactional_id!r} within {START_TIMEOUT_SECONDS} s: "
                "can the broker create its transaction log (transaction.state.log.replication.factor and .min.isr "
                "at most the number of brokers)? RENTALSTREAM_KAFKA_TRANSACTIONS=off runs without transactions"
            ) from None
        self.publisher = publisher

    async def stop(self) -> None:
        if self.publisher is not None:
            await self.publisher.stop()
            self.publisher = None

    async def deliver(
        self, messages: Messages, records: Sequence[KafkaRecord], message: Acknowledgeable, group_id: str
    ) -> None:
        if self.publisher is None:
            await self.start()
        assert self.publisher is not None
        producer = self.publisher.producer
        offsets = batch_offsets(records)
        try:
            async with asyncio.timeout(TRANSACTION_TIMEOUT_SECONDS):
                async with producer.transaction():
                    await asyncio.gather(*await self.publisher.send(messages))
                    await producer.send_offsets_to_transaction(offsets, group_id)
            self.committed.update(offsets)
        except (KafkaError, OSError, TimeoutError) as error:
            log.warning(
                "transaction of %d results not committed (%r); the batch will be consumed again", len(messages), error
            )
            await self._replace_producer()
            raise

    async def _replace_producer(self) -> None:
        old, self.publisher = self.publisher, None
        if old is not None:
            try:
                async with asyncio.timeout(5):
                    await old.stop()
            except (KafkaError, OSError, TimeoutError) as error:
                log.info("closing the failed transactional producer: %r", error)
        # The next batch starts a new producer; its InitProducerId fences this one.


class ResumeAfterOwnCommits(ConsumerRebalanceListener):
    """Rebalance without handing a batch on twice.

    A rebalance (a replica joining or leaving) can start while a batch is between its
    Postgres commit and its Kafka one. Revoked, this replica first lets that batch finish
    (``in_flight``, held by the handler), so its offsets are committed before anyone reads
    them. Assigned, it resumes from the later of the group's committed offset and the one
    its own last transaction committed: the group coordinator learns of a transaction's
    offsets only once the commit markers are written, a moment after the commit returns,
    and aiokafka's offset fetch cannot ask it to wait for them (KIP-447's require_stable)."""

    def __init__(self, results: Callable[[], Results | None], consumer: Callable[[], AIOKafkaConsumer | None]) -> None:
        self.results = results  # both made after the subscriber: asked for when a rebalance comes
        self.consumer = consumer
        self.in_flight = asyncio.Lock()

    async def on_partitions_revoked(self, revoked) -> None:
        try:
            async with asyncio.timeout(REVOKE_WAIT_SECONDS), self.in_flight:
                pass
        except TimeoutError:
            log.warning(
                "a batch was still in hand after %d s of rebalance; it may be consumed twice", REVOKE_WAIT_SECONDS
            )

    async def on_partitions_assigned(self, assigned) -> None:
        own = getattr(self.results(), "committed", {})  # at-least-once results keep none
        consumer = self.consumer()
        if consumer is None:
            return
        resumed = []
        for tp in sorted(assigned):
            group = await consumer.committed(tp)
            if tp in own and own[tp] > (group or 0):
                consumer.seek(tp, own[tp])
                resumed.append(f"{tp.topic}/{tp.partition}@{own[tp]} (own; group {group})")
            else:
                resumed.append(f"{tp.topic}/{tp.partition}@{group} (group)")
        log.info("partitions assigned; resuming at %s", ", ".join(resumed) or "none")


def batch_offsets(records: Sequence[KafkaRecord]) -> dict[TopicPartition, int]:
    """The offsets to commit once ``records`` are done: each partition's last offset + 1."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    return offsets


async def broker_offers_transactions(bootstrap: str, timeout: float = 30) -> bool:
    """Whether the broker's ApiVersions answer lists every request a transaction needs."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await client.bootstrap()
            node_id = next(iter(client.cluster.brokers())).nodeId
            response = await client.send(node_id, ApiVersionRequest())
        return TRANSACTION_APIS <= {api_key for api_key, _, _ in response.api_versions}
    finally:
        await client.close()


async def choose_results(mode: str, bootstrap: str, client_id: str, transactional_id: str) -> Results:
    """The results of ``RENTALSTREAM_KAFKA_TRANSACTIONS``: ``on``, ``off``, or ``auto``
    (transactions where the broker offers them). Says at start which guarantee holds."""
    offered = mode != "off" and await broker_offers_transactions(bootstrap)
    if mode == "on" and not offered:
        raise TransactionsUnavailable(
            "RENTALSTREAM_KAFKA_TRANSACTIONS=on, but the broker at "
            f"{bootstrap} offers no transactions; use Apache Kafka, or set it to auto or off"
        )
    if offered:
        results: Results = TransactionalResults(bootstrap, client_id, transactional_id)
    else:
        results = AtLeastOnceResults(bootstrap, client_id)
        why = "RENTALSTREAM_KAFKA_TRANSACTIONS=off" if mode == "off" else "the broker offers no transactions"
        log.warning(
            "%s: the result topics are at-least-once (a batch consumed again after a crash publishes its "
            "results again); Postgres still holds each result once",
            why,
        )
    log.info("%s publishes its results %s", client_id, results.guarantee)
    return results
