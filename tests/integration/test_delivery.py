"""The scorer's transactional delivery on a real Apache Kafka broker: replies leave before
the transaction, batches are handed over while earlier ones commit, and a failed
transaction has its batches, those queued after them and those fetched before the rewind
consumed again, with nothing skipped and nothing committed twice; and a batch fetched
before a rebalance began is told outdated."""

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import BaseModel

from runtime.kafka.delivery import BatchDropped, ResumeAfterOwnCommits, TransactionalResults
from runtime.kafka.subscriber import batch_subscriber
from tests.helpers import read_topic

pytestmark = pytest.mark.integration

INPUT = "price-requests"
GROUP = "delivery-test"


class Note(BaseModel):
    n: int
    text: str = ""


@dataclass
class Handed:
    """What FastStream hands a batch handler beside the records: the consumer they came from."""

    consumer: AIOKafkaConsumer

    async def ack(self) -> None:
        raise AssertionError("a transactional delivery commits offsets in its transaction, never by ack")

    async def nack(self) -> None:
        raise AssertionError("a transactional delivery seeks back itself")


async def fill_partition_zero(bootstrap: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(INPUT, Note(n=n).model_dump_json().encode(), partition=0)
    finally:
        await producer.stop()


async def started_reader(bootstrap: str) -> AIOKafkaConsumer:
    """A consumer in the group whose offsets the transactions commit, as the scorer's reads."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    return consumer


async def fetch(consumer: AIOKafkaConsumer, count: int) -> list:
    records: list = []
    while len(records) < count:
        for batch in (await consumer.getmany(timeout_ms=5000, max_records=count - len(records))).values():
            records.extend(batch)
    return records


async def group_offset_once_written(consumer: AIOKafkaConsumer, tp: TopicPartition, expected: int) -> int | None:
    """The group's committed offset of ``tp``, once it is ``expected`` or after 10 s: the
    group (and a read_committed reader) learns a transaction's offsets once its markers
    are written, a moment after the commit returns."""
    for _ in range(100):
        if (committed := await consumer.committed(tp)) == expected:
            break
        await asyncio.sleep(0.1)
    return committed


def prices_of(records) -> list[tuple[str, str | None, BaseModel]]:
    return [("prices", f"p{Note.model_validate_json(r.value).n}", Note.model_validate_json(r.value)) for r in records]


def replies_of(records) -> list[tuple[str, str | None, BaseModel]]:
    return [
        ("price-replies", f"r{Note.model_validate_json(r.value).n}", Note.model_validate_json(r.value)) for r in records
    ]


def test_a_failed_transaction_is_consumed_again_with_the_batch_after_it_and_each_result_committed_once(
    kafka_bootstrap,
):
    async def scenario():
        await fill_partition_zero(kafka_bootstrap, 6)
        tp = TopicPartition(INPUT, 0)
        consumer = await started_reader(kafka_bootstrap)
        results = TransactionalResults(kafka_bootstrap, "delivery-test", "delivery-test.tx", GROUP, replies=True)
        await results.start()
        try:
            consumer.assign([tp])
            handed = Handed(consumer)
            first, second, third = await fetch(consumer, 2), await fetch(consumer, 2), await fetch(consumer, 2)
            assert [r.offset for r in first + second + third] == [0, 1, 2, 3, 4, 5]

            # The first batch's transaction fails: the broker refuses a 2-MiB record. The
            # second is queued behind it; every reply is already out.
            too_large = [("prices", "big", Note(n=-1, text="x" * (2 << 20)))]
            await results.deliver(too_large, first, handed, replies_of(first))
            await results.deliver(prices_of(second), second, handed, replies_of(second))
            await results.settle()
            assert await consumer.position(tp) == 0  # both sought back to the failed batch's first offset
            # The third was fetched before that rewind: dropped, and consumed again with the others.
            with pytest.raises(BatchDropped):
                await results.deliver(prices_of(third), third, handed, replies_of(third))
            await results.rewind(third, handed)
            assert await consumer.position(tp) == 0

            # Consumed again: every record from offset 0, two batches back to back (the
            # first still committing while the second is handed over).
            again, rest = await fetch(consumer, 4), await fetch(consumer, 2)
            assert [r.offset for r in again + rest] == [0, 1, 2, 3, 4, 5]
            await results.deliver(prices_of(again), again, handed, replies_of(again))
            await results.deliver(prices_of(rest), rest, handed, replies_of(rest))
            await results.settle()
            committed = await group_offset_once_written(consumer, tp, 6)
        finally:
            await results.stop()
            await consumer.stop()

        prices = [r.key.decode() for r in await read_topic(kafka_bootstrap, "prices")]
        replies = [r.key.decode() for r in await read_topic(kafka_bootstrap, "price-replies")]
        return committed, prices, replies

    committed, prices, replies = asyncio.run(scenario())
    assert committed == 6
    # Exactly once for a read_committed reader: the aborted and the dropped attempts left nothing.
    assert sorted(prices) == [f"p{n}" for n in range(6)]
    # Replies are at least once: every batch's went out before its transaction, and went
    # out again with the batches consumed again.
    assert sorted(replies) == sorted([f"r{n}" for n in range(6)] * 2)


def test_a_rebalance_waits_for_the_queued_transactions_and_resumes_after_them(kafka_bootstrap):
    async def scenario():
        await fill_partition_zero(kafka_bootstrap, 6)
        tp = TopicPartition(INPUT, 0)
        consumer = await started_reader(kafka_bootstrap)
        results = TransactionalResults(kafka_bootstrap, "delivery-test", "delivery-test.rebalance", GROUP)
        await results.start()
        rebalance = ResumeAfterOwnCommits(lambda: results, lambda: consumer)
        try:
            consumer.assign([tp])
            handed = Handed(consumer)
            batches = [await fetch(consumer, 2) for _ in range(3)]
            for batch in batches:  # handed over back to back: queued, none committed yet
                await results.deliver(prices_of(batch), batch, handed)
            queued = len(results._queue)
            await rebalance.on_partitions_revoked({tp})
            # Handed back only once every queued batch is committed.
            committed_by_revoke = dict(results.committed)
            consumer.seek(tp, 0)  # as a consumer given the partition afresh would start: not from its own position
            await rebalance.on_partitions_assigned({tp})
            resumed_at = await consumer.position(tp)
            committed = await group_offset_once_written(consumer, tp, 6)
        finally:
            await results.stop()
            await consumer.stop()
        prices = [r.key.decode() for r in await read_topic(kafka_bootstrap, "prices")]
        return queued, committed_by_revoke, resumed_at, committed, prices

    queued, committed_by_revoke, resumed_at, committed, prices = asyncio.run(scenario())
    assert queued == 3  # the revoke really found batches waiting
    assert committed_by_revoke == {TopicPartition(INPUT, 0): 6}
    assert resumed_at == 6  # the later of the group's offset and its own transactions' one
    assert committed == 6
    assert sorted(prices) == [f"p{n}" for n in range(6)]


def test_replies_need_a_reply_producer():
    async def scenario():
        results = TransactionalResults("127.0.0.1:9", "delivery-test", "delivery-test.no-replies", GROUP)
        with pytest.raises(ValueError, match="replies=True"):
            await results.deliver([], [], Handed(None), [("price-replies", "r", Note(n=0))])

    asyncio.run(scenario())


class TellsOfRevokes(ResumeAfterOwnCommits):
    """The scorer's listener, with an event the test can wait on once partitions are revoked."""

    def __init__(self) -> None:
        super().__init__(lambda: None, lambda: None)
        self.revoked = asyncio.Event()

    async def on_partitions_revoked(self, revoked) -> None:
        await super().on_partitions_revoked(revoked)
        if revoked:
            self.revoked.set()


def test_a_batch_fetched_before_a_real_rebalance_began_is_outdated_and_consumed_again(kafka_bootstrap):
    """The race CI met on eeed15f, forced: the subscriber fetches a batch, and before its
    handler takes it in hand a second member joins the group, so the first one's
    partitions are revoked and assigned again. The scorer's handler asks the subscriber's
    ``rebalances.batch_outdated`` once it holds ``in_flight`` (scorer/app.py) and leaves
    such a batch; the consumer then reads it again from the committed offset, current."""
    group = "delivery-test.rebalance-race"

    async def scenario():
        await fill_partition_zero(kafka_bootstrap, 6)
        listener = TellsOfRevokes()
        joining = asyncio.Event()
        seen: list[tuple[list[int], bool]] = []
        broker = KafkaBroker(kafka_bootstrap)
        subscriber = batch_subscriber(
            broker,
            INPUT,
            group,
            max_records=2,
            batch_timeout_ms=100,
            heartbeat_interval_ms=300,
            ack_policy=AckPolicy.MANUAL,
            listener=listener,
        )

        @subscriber
        async def handle(records: Any, message: KafkaMessage) -> None:
            if not seen:  # the first batch: a rebalance begins before it is taken in hand
                joining.set()
                await asyncio.wait_for(listener.revoked.wait(), 30)
            async with listener.in_flight:
                seen.append(([r.offset for r in records], subscriber.rebalances.batch_outdated))

        # The second member reads another topic in the same group: its join rebalances
        # the group, and the range assignor gives the first member its partitions back.
        joiner = AIOKafkaConsumer("rentals", bootstrap_servers=kafka_bootstrap, group_id=group)
        await broker.start()
        try:
            await asyncio.wait_for(joining.wait(), 60)
            await joiner.start()
            for _ in range(300):  # every record handled current: until 30 s
                if sorted(o for offsets, outdated in seen if not outdated for o in offsets) == list(range(6)):
                    break
                await asyncio.sleep(0.1)
        finally:
            await joiner.stop()
            await broker.stop()
        return seen

    seen = asyncio.run(scenario())
    first_offsets, first_outdated = seen[0]
    assert first_offsets[0] == 0 and first_outdated  # fetched before the rebalance began: outdated
    current = [(offsets, outdated) for offsets, outdated in seen[1:]]
    assert all(not outdated for _, outdated in current)  # fetched after it: current
    # Consumed again from the committed offset (none: the earliest), the first batch included.
    assert sorted(o for offsets, _ in current for o in offsets) == list(range(6))
