"""The scorer's delivery on the real broker, with transactions: the results a batch sends
early (before its Postgres write) travel inside the batch's transaction, so a
``read_committed`` reader sees them only once the transaction commits with the batch's
input offsets, and never when they are taken back (a failed write) or sent again."""

import asyncio
import json
from collections import Counter
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel

from runtime.kafka.delivery import TransactionalResults
from runtime.kafka.topics import ensure_topics
from schemas.topics import DELAYS, PRICES, RENTALS
from tests.helpers import read_topic

pytestmark = pytest.mark.integration
GROUP = "delivery-test"


class Note(BaseModel):
    n: int


def rentals(first: int, last: int) -> list[SimpleNamespace]:
    """Input records of partition 0, offsets first..last: what a batch carries."""
    return [
        SimpleNamespace(topic=RENTALS.name, partition=0, offset=o, key=None, value=b"{}")
        for o in range(first, last + 1)
    ]


async def sent(bootstrap: str, expected: int, timeout: float = 30) -> list:
    """The records on ``prices`` a read_uncommitted reader sees, once there are ``expected``
    (the early sends are on their way when ``send_early`` returns, not yet written)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        records = await read_topic(bootstrap, PRICES.name, isolation_level="read_uncommitted")
        if len(records) >= expected or asyncio.get_running_loop().time() > deadline:
            return records
        await asyncio.sleep(0.2)


def numbers(records) -> Counter:
    return Counter(json.loads(r.value)["n"] for r in records)


async def committed_offset(bootstrap: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(RENTALS.name, 0))
    finally:
        await consumer.stop()


def test_results_sent_early_are_read_once_and_only_after_the_batch_commits(kafka_bootstrap):
    prices_1 = [(PRICES.name, f"rental-{i}", Note(n=i)) for i in range(300)]
    prices_2 = [(PRICES.name, f"rental-{i}", Note(n=i)) for i in range(300, 500)]
    facts = [(DELAYS.name, str(i), Note(n=i)) for i in range(50)]

    async def go():
        await ensure_topics(kafka_bootstrap, partitions=3)
        results = TransactionalResults(kafka_bootstrap, "test", transactional_id="test.delivery")
        await results.start()
        seen = {}
        try:
            # Batch 1: its prices go ahead; then its database write fails and is retried.
            await results.send_early(prices_1)
            seen["early, uncommitted"] = await sent(kafka_bootstrap, 300)
            seen["early, committed"] = await read_topic(kafka_bootstrap, PRICES.name)  # with them written
            await results.abort_early()
            await results.deliver([*prices_1, *facts], rentals(0, 9), None, GROUP)
            seen["offset 1"] = await committed_offset(kafka_bootstrap)
            # Batch 2: sent early and delivered in the same transaction.
            await results.send_early(prices_2)
            await results.deliver(prices_2, rentals(10, 19), None, GROUP)
            seen["offset 2"] = await committed_offset(kafka_bootstrap)
            # A batch whose delivery does not begin with what it sent early is refused.
            await results.send_early(prices_2[:1])
            with pytest.raises(ValueError, match="begin with those it sent early"):
                await results.deliver(facts, rentals(20, 29), None, GROUP)
            await results.abort_early()
            seen["offset 3"] = await committed_offset(kafka_bootstrap)
        finally:
            await results.stop()
        seen["prices"] = await read_topic(kafka_bootstrap, PRICES.name)
        seen["facts"] = await read_topic(kafka_bootstrap, DELAYS.name)
        seen["attempted"] = await read_topic(kafka_bootstrap, PRICES.name, isolation_level="read_uncommitted")
        return seen

    seen = asyncio.run(go())
    assert seen["early, committed"] == []  # in flight, not yet a result anyone reads
    assert numbers(seen["early, uncommitted"]) == Counter(range(300))
    assert seen["offset 1"] == 10 and seen["offset 2"] == 20 and seen["offset 3"] == 20
    # Each price and fact once for a read_committed reader: the taken-back copies never count.
    assert numbers(seen["prices"]) == Counter(range(500))
    assert numbers(seen["facts"]) == Counter(range(50))
    # What was attempted: batch 1's prices twice (taken back, sent again), batch 2's once,
    # and the refused batch's one price.
    assert numbers(seen["attempted"]) == Counter(range(300)) + Counter(range(500)) + Counter([300])
