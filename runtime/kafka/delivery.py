"""How a consumer hands on a batch once Postgres holds its results: publish the results
and commit the batch's input offsets.

- ``TransactionalResults``: the results and the offsets in one Kafka transaction (a
  transactional producer with ``send_offsets_to_transaction``). A ``read_committed``
  reader of the result topics then sees each result once, even when a crash makes Kafka
  deliver a batch again: the crashed attempt's transaction never commits, and a
  restarted replica (same transactional id) aborts it at once. The transaction commits
  while the next batch is scored (one batch ahead at most); replies leave at once,
  outside it.
- ``AtLeastOnceResults``: publish, then commit the offsets. A crash between the two
  publishes a batch's results twice; Postgres still holds each once (upserts).

Which one a service uses is ``RENTALSTREAM_KAFKA_TRANSACTIONS`` (``choose_results``):
``auto`` asks the broker whether it offers transactions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import ApiVersionRequest

from runtime.kafka.batch_publisher import BatchPublisher, Message
from runtime.kafka.subscriber import KafkaRecord

log = logging.getLogger("runtime.kafka.delivery")

Messages = Sequence[Message]
# InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit
TRANSACTION_APIS = {22, 24, 25, 26, 28}
TRANSACTION_TIMEOUT_SECONDS = 8  # a transaction takes milliseconds; past this the broker is in trouble
MAX_QUEUED_BATCHES = 4  # handed over, waiting for a transaction: then the consumer waits
REVOKE_WAIT_SECONDS = 30  # the database retries of a batch included
START_TIMEOUT_SECONDS = 60  # the first transaction of a new cluster creates its transaction log: seconds


class TransactionsUnavailable(RuntimeError):
    """Transactions are asked for (`on`, or `auto` on a broker that offers them) and cannot be had."""


class BatchDropped(RuntimeError):
    """A batch fetched before the rewind that followed a failed transaction: consumed again."""


class Acknowledgeable(Protocol):
    """FastStream's message: ``ack`` commits the consumer's offsets, ``nack`` seeks each of
    the batch's partitions back to its earliest record, ``consumer`` is the one it came from."""

    consumer: Any

    async def ack(self) -> None: ...

    async def nack(self) -> None: ...


class StoresBehind(Protocol):
    """The batches a handler stored behind itself (``runtime.kafka.write_behind``): settled
    before a transaction takes their offsets, their rewinds forgotten after a rebalance."""

    async def settle(self) -> None: ...

    def forget_rewinds(self) -> None: ...


class Results(Protocol):
    guarantee: str
    committed: dict[TopicPartition, int]  # the offsets this process committed itself (see ResumeAfterOwnCommits)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def deliver(
        self,
        messages: Messages,
        records: Sequence[KafkaRecord],
        message: Acknowledgeable,
        replies: Messages = (),
    ) -> None:
        """Publish ``messages`` and ``replies`` and commit the batch's offsets (maybe after
        returning: see ``settle``)."""

    async def rewind(
        self, records: Sequence[KafkaRecord], message: Acknowledgeable, floor: Mapping[TopicPartition, int] = {}
    ) -> None:
        """The batch failed: have it consumed again, with nothing before it skipped: each of
        its partitions from no later than its first offset there, nor than ``floor`` (where
        a failed store sought it back to, ``runtime.kafka.write_behind``). One seek per
        partition, to the earliest of them: a second seek could move it forward again."""

    async def settle(self) -> None:
        """Wait until no batch is left committing (before partitions are handed back)."""

    def forget_rewinds(self) -> None:
        """Partitions were assigned: every one resumes from committed offsets now."""


class AtLeastOnceResults:
    """Publish the results and wait for their acks, then commit the input offsets."""

    guarantee = "at-least-once"

    def __init__(self, bootstrap: str, client_id: str, security: dict | None = None) -> None:
        self.publisher = BatchPublisher(bootstrap, client_id, security=security)
        self.committed: dict[TopicPartition, int] = {}  # acked through the consumer group, never kept here

    async def start(self) -> None:
        await self.publisher.start()

    async def stop(self) -> None:
        await self.publisher.stop()

    async def deliver(
        self,
        messages: Messages,
        records: Sequence[KafkaRecord],
        message: Acknowledgeable,
        replies: Messages = (),
    ) -> None:
        await self.publisher.publish([*replies, *messages])
        await message.ack()

    async def rewind(
        self, records: Sequence[KafkaRecord], message: Acknowledgeable, floor: Mapping[TopicPartition, int] = {}
    ) -> None:
        await message.nack()  # back to the batch's first offsets
        for tp, offset in earliest_offsets(records).items():
            if floor.get(tp, offset) < offset:
                message.consumer.seek(tp, floor[tp])

    async def settle(self) -> None:
        pass

    def forget_rewinds(self) -> None:
        pass


@dataclass
class HandedOver:
    """A batch whose results wait for their transaction."""

    messages: Messages
    replied: list[asyncio.Future]  # its replies' acks
    records: Sequence[KafkaRecord]
    message: Acknowledgeable


class TransactionalResults:
    """The results and the input offsets in Kafka transactions, committed while the next
    batches are scored.

    ``deliver`` sends the batch's replies at once, on a producer of their own outside the
    transactions (the caller waiting for one has it as soon as Postgres holds its price),
    queues the batch's results and returns: the consumer fetches and scores the next batch
    meanwhile. One transaction at a time commits everything queued: the results of those
    batches and their offsets (each partition's last). A slow transaction thus carries
    more batches instead of holding up the consumer, which waits only once
    ``MAX_QUEUED_BATCHES`` are queued. Offsets stay in input order.

    A transaction that fails (a broker lost, a timeout) is aborted. Its batches and the
    ones queued after them are sought back to their first offsets, to be consumed again,
    and a batch fetched before that rewind is dropped (``BatchDropped``) and consumed again
    too, rather than committed past them. A producer left unusable (a fatal error, an
    abort that could not reach the coordinator) is replaced by a new one under the same
    transactional id, which fences the old one and aborts whatever it left open. A reply's
    send failing fails the transaction, so replies are at least once: a batch consumed
    again replies again.

    Two transactional producers take turns (ids ``transactional_id`` and
    ``transactional_id.2``). A transaction begun on the producer that has just committed
    is answered CONCURRENT_TRANSACTIONS until the coordinator has written the commit's
    markers, and aiokafka then waits 20 ms before it asks again: back to back, as the
    queue begins them, that wait was paid on every transaction."""

    guarantee = "exactly-once (read_committed)"

    def __init__(
        self,
        bootstrap: str,
        client_id: str,
        transactional_id: str,
        group_id: str,
        replies: bool = False,
        security: dict | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.security = security
        self.client_id = client_id
        self.transactional_ids = (transactional_id, f"{transactional_id}.2")
        self.publishers: list[BatchPublisher | None] = [None, None]  # taking turns, one per transaction
        self._turn = 0
        self.replier = BatchPublisher(bootstrap, f"{client_id}-replies", security=security) if replies else None
        self.committed: dict[TopicPartition, int] = {}  # the offsets this process's transactions committed
        self.rewound: dict[TopicPartition, int] = {}  # where failed transactions sought their partitions back to
        self.group_id = group_id  # the consumer group whose offsets the transactions commit
        self._queue: list[HandedOver] = []
        self._room = asyncio.Condition()
        self._committer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for turn in (0, 1):
            if self.publishers[turn] is None:
                await self._start_publisher(turn)
        if self.replier is not None and not self.replier.started:
            await self.replier.start()

    async def _start_publisher(self, turn: int) -> BatchPublisher:
        transactional_id = self.transactional_ids[turn]
        publisher = BatchPublisher(
            self.bootstrap, self.client_id, transactional_id=transactional_id, security=self.security
        )
        try:
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                await publisher.start()  # InitProducerId: retried for ever while no coordinator answers
        except TimeoutError:
            await publisher.stop()
            raise TransactionsUnavailable(
                f"no transaction coordinator answered {transactional_id!r} within {START_TIMEOUT_SECONDS} s: "
                "can the broker create its transaction log (transaction.state.log.replication.factor and .min.isr "
                "at most the number of brokers)? RENTALSTREAM_KAFKA_TRANSACTIONS=off runs without transactions"
            ) from None
        self.publishers[turn] = publisher
        return publisher

    async def stop(self) -> None:
        await self.settle()
        for turn, publisher in enumerate(self.publishers):
            if publisher is not None:
                await publisher.stop()
                self.publishers[turn] = None
        if self.replier is not None:
            await self.replier.stop()

    async def deliver(
        self,
        messages: Messages,
        records: Sequence[KafkaRecord],
        message: Acknowledgeable,
        replies: Messages = (),
    ) -> None:
        replied = await self._send_replies(replies)
        async with self._room:
            await self._room.wait_for(lambda: len(self._queue) < MAX_QUEUED_BATCHES)
        if self.rewound:  # only after a failed transaction
            earliest = earliest_offsets(records)
            if fetched_before_rewind(earliest, self.rewound):
                raise BatchDropped(f"a batch of {len(records)} fetched before a failed transaction's rewind")
            for tp, offset in earliest.items():  # consumed again from where it was sought back to
                if offset <= self.rewound.get(tp, -1):
                    del self.rewound[tp]
        self._queue.append(HandedOver(messages, replied, records, message))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued(), name=f"{self.transactional_ids[0]}-commits")

    async def rewind(
        self, records: Sequence[KafkaRecord], message: Acknowledgeable, floor: Mapping[TopicPartition, int] = {}
    ) -> None:
        await self.settle()  # a failing transaction before this batch rewinds further back
        for tp, offset in earliest_offsets(records).items():
            message.consumer.seek(tp, min(offset, self.rewound.get(tp, offset), floor.get(tp, offset)))

    async def settle(self) -> None:
        while self._committer is not None and not self._committer.done():
            await asyncio.shield(self._committer)  # it never raises (see _commit)

    def forget_rewinds(self) -> None:
        """After a rebalance every partition resumes from committed offsets."""
        self.rewound.clear()

    async def _send_replies(self, replies: Messages) -> list[asyncio.Future]:
        if not replies:
            return []
        if self.replier is None:
            raise ValueError("replies given to results made without a reply producer (replies=True)")
        return await self.replier.send(replies)

    async def _commit_queued(self) -> None:
        while self._queue:
            batches, self._queue = self._queue, []
            if not await self._commit(batches):
                batches += self._queue  # queued after a failed one: they must not commit past it
                self._queue = []
                self._rewind_after_failure(batches)
            async with self._room:
                self._room.notify_all()

    async def _commit(self, batches: list[HandedOver]) -> bool:
        turn, self._turn = self._turn, 1 - self._turn
        messages = [m for batch in batches for m in batch.messages]
        offsets = batch_offsets([r for batch in batches for r in batch.records])
        try:
            publisher = self.publishers[turn] or await self._start_publisher(turn)  # None after a failure
            producer = publisher.producer
            async with asyncio.timeout(TRANSACTION_TIMEOUT_SECONDS):
                async with producer.transaction():
                    replied = [ack for batch in batches for ack in batch.replied]
                    await asyncio.gather(*replied, *await publisher.send(messages))
                    await producer.send_offsets_to_transaction(offsets, self.group_id)
        except Exception as error:  # whatever it was, the batches must be consumed again
            expected = isinstance(error, KafkaError | OSError | TimeoutError | TransactionsUnavailable)
            log.log(
                logging.WARNING if expected else logging.ERROR,
                "transaction of %d results (%d batches) not committed (%r); they will be consumed again",
                len(messages),
                len(batches),
                error,
                exc_info=not expected,
            )
            await self._replace_producer(turn)
            return False
        self.committed.update(offsets)
        return True

    def _rewind_after_failure(self, batches: list[HandedOver]) -> None:
        earliest = earliest_offsets([r for batch in batches for r in batch.records])
        self.rewound.update({tp: min(o, self.rewound.get(tp, o)) for tp, o in earliest.items()})
        try:
            for tp in earliest:
                batches[0].message.consumer.seek(tp, self.rewound[tp])
        except Exception as error:  # noqa: BLE001  (stopping: the group's offsets decide)
            log.info("could not seek back after the failed transaction: %r", error)

    async def _replace_producer(self, turn: int) -> None:
        old, self.publishers[turn] = self.publishers[turn], None
        if old is not None:
            try:
                async with asyncio.timeout(5):
                    await old.stop()
            except (KafkaError, OSError, TimeoutError) as error:
                log.info("closing the failed transactional producer: %r", error)
        # The next transaction starts a new producer; its InitProducerId fences this one.


def earliest_offsets(records: Sequence[KafkaRecord]) -> dict[TopicPartition, int]:
    """Each partition's first offset in ``records``: where to consume them again from."""
    earliest: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        earliest[tp] = min(earliest.get(tp, record.offset), record.offset)
    return earliest


def fetched_before_rewind(earliest: dict[TopicPartition, int], rewound: dict[TopicPartition, int]) -> bool:
    """Whether a batch starting at ``earliest`` lies past where a failed transaction sought
    one of its partitions back to: it was fetched before that seek, and committing it would
    skip the failed batch's records."""
    return any(offset > rewound[tp] for tp, offset in earliest.items() if tp in rewound)


class ResumeAfterOwnCommits(ConsumerRebalanceListener):
    """Rebalance without handing a batch on twice.

    A rebalance (a replica joining or leaving) can start while a batch is between its
    Postgres commit and its Kafka one. Revoked, this replica first lets that batch finish
    (``in_flight``, held by the handler, then ``writes``: the batch still being stored,
    then the results' ``settle``: the transactions still committing), so its offsets are
    committed before anyone reads them. Assigned, it resumes from the later of the
    group's committed offset and the one its own last transaction committed: the group
    coordinator learns of a transaction's offsets only once the commit markers are
    written, a moment after the commit returns, and aiokafka's offset fetch cannot ask it
    to wait for them (KIP-447's require_stable).

    A batch fetched before the rebalance began but taken in hand (``in_flight``) only
    after is the subscriber's ``rebalances.batch_outdated``: the handler leaves it, to be
    consumed again from the committed offsets."""

    def __init__(
        self,
        results: Callable[[], Results | None],
        consumer: Callable[[], AIOKafkaConsumer | None],
        writes: StoresBehind | None = None,
    ) -> None:
        self.results = results  # both made after the subscriber: asked for when a rebalance comes
        self.consumer = consumer
        self.writes = writes  # the batches still being stored behind the handler, if any
        self.in_flight = asyncio.Lock()

    async def on_partitions_revoked(self, revoked) -> None:
        results = self.results()
        try:
            async with asyncio.timeout(REVOKE_WAIT_SECONDS):
                async with self.in_flight:
                    pass
                if self.writes is not None:  # the batch still being stored
                    await self.writes.settle()
                if results is not None:  # and the transactions of the batches before it
                    await results.settle()
        except TimeoutError:
            log.warning(
                "a batch was still in hand after %d s of rebalance; it may be consumed twice", REVOKE_WAIT_SECONDS
            )

    async def on_partitions_assigned(self, assigned) -> None:
        results = self.results()
        if results is not None:
            results.forget_rewinds()
        if self.writes is not None:
            self.writes.forget_rewinds()
        own = results.committed if results is not None else {}
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


async def broker_offers_transactions(bootstrap: str, timeout: float = 30, security: dict | None = None) -> bool:
    """Whether the broker's ApiVersions answer lists every request a transaction needs."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **(security or {}))
    try:
        async with asyncio.timeout(timeout):
            await client.bootstrap()
            node_id = next(iter(client.cluster.brokers())).nodeId
            response = await client.send(node_id, ApiVersionRequest())
        return TRANSACTION_APIS <= {api_key for api_key, _, _ in response.api_versions}
    finally:
        await client.close()


async def choose_results(
    mode: str,
    bootstrap: str,
    client_id: str,
    transactional_id: str,
    group_id: str,
    replies: bool = False,
    security: dict | None = None,
) -> Results:
    """The results of ``RENTALSTREAM_KAFKA_TRANSACTIONS``: ``on``, ``off``, or ``auto``
    (transactions where the broker offers them), committing the offsets of consumer group
    ``group_id``, with a producer for replies when ``replies``. Says at start which
    guarantee holds."""
    offered = mode != "off" and await broker_offers_transactions(bootstrap, security=security)
    if mode == "on" and not offered:
        raise TransactionsUnavailable(
            "RENTALSTREAM_KAFKA_TRANSACTIONS=on, but the broker at "
            f"{bootstrap} offers no transactions; use Apache Kafka, or set it to auto or off"
        )
    if offered:
        results: Results = TransactionalResults(
            bootstrap, client_id, transactional_id, group_id, replies=replies, security=security
        )
    else:
        results = AtLeastOnceResults(bootstrap, client_id, security)
        why = "RENTALSTREAM_KAFKA_TRANSACTIONS=off" if mode == "off" else "the broker offers no transactions"
        log.warning(
            "%s: the result topics are at-least-once (a batch consumed again after a crash publishes its "
            "results again); Postgres still holds each result once",
            why,
        )
    log.info("%s publishes its results %s", client_id, results.guarantee)
    return results
