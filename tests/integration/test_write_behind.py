"""Batches stored behind the scoring of the next one, on a real Apache Kafka broker: a
failed store has its batch and the one fetched behind it consumed again, every partition
from where nothing is skipped. (The order of the stores: tests/unit/test_write_behind.py.)"""

import asyncio
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from runtime.kafka.delivery import BatchDropped, earliest_offsets
from runtime.kafka.write_behind import WriteBehind

pytestmark = pytest.mark.integration

INPUT = "rentals"


@dataclass
class Handed:
    """What FastStream hands a batch handler beside the records: the consumer they came from."""

    consumer: AIOKafkaConsumer


async def seek_to_first(records, message: Handed, floor) -> None:
    """What a failed batch's ``Results.rewind`` does without a transaction: FastStream's
    nack, to no later than ``floor``."""
    for tp, offset in earliest_offsets(records).items():
        message.consumer.seek(tp, min(offset, floor.get(tp, offset)))


async def fill(bootstrap: str, per_partition: dict[int, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, count in per_partition.items():
            for n in range(count):
                await producer.send_and_wait(INPUT, f"{partition}-{n}".encode(), partition=partition)
    finally:
        await producer.stop()


async def assigned_reader(bootstrap: str, partitions: list[TopicPartition]) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign(partitions)
    return consumer


async def fetch(consumer: AIOKafkaConsumer, count: int) -> list:
    records: list = []
    while len(records) < count:
        for batch in (await consumer.getmany(timeout_ms=5000, max_records=count - len(records))).values():
            records.extend(batch)
    return records


def test_a_failed_store_has_its_batch_and_the_one_fetched_behind_it_consumed_again(kafka_bootstrap):
    async def scenario():
        await fill(kafka_bootstrap, {0: 4, 1: 2})
        tp0, tp1 = TopicPartition(INPUT, 0), TopicPartition(INPUT, 1)
        consumer = await assigned_reader(kafka_bootstrap, [tp0, tp1])
        try:
            fetched = await fetch(consumer, 6)
            on = {p: [r for r in fetched if r.partition == p] for p in (0, 1)}
            # The first batch holds partition 0's first two records; the one fetched behind
            # it, partition 0's next two and both of partition 1's.
            first, second = on[0][:2], on[0][2:] + on[1]
            handed = Handed(consumer)
            writes = WriteBehind("test", seek_to_first)
            stored: list[bytes] = []

            async def fails() -> None:
                raise OSError("the database went away")

            await writes.hand_on(first, handed, fails, started=0.0)
            with pytest.raises(BatchDropped):
                await writes.hand_on(second, handed, lambda: asyncio.sleep(0), started=0.0)
            await writes.rewind(second, handed)  # what the handler does with any batch that fails
            # Partition 0 from the failed batch's first record, not the dropped one's;
            # partition 1 from the dropped batch's first record.
            positions = [await consumer.position(tp0), await consumer.position(tp1)]

            again = await fetch(consumer, 6)

            async def store_again() -> None:
                stored.extend(r.value for r in again)

            await writes.hand_on(again, handed, store_again, started=0.0)
            await writes.settle()
            return positions, sorted(stored), writes.rewound
        finally:
            await consumer.stop()

    positions, stored, rewound = asyncio.run(scenario())
    assert positions == [0, 0]
    assert stored == sorted([b"0-0", b"0-1", b"0-2", b"0-3", b"1-0", b"1-1"])
    assert rewound == {}  # consumed again from there: nothing left to drop
