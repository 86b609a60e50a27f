"""The batch publisher on the real broker: every message arrives once, on the partition
any Kafka producer would choose for its key, and the acks are awaited."""

import asyncio
import json

import pytest
from pydantic import BaseModel

from runtime.kafka.batch_publisher import BatchPublisher
from runtime.kafka.topics import ensure_topics
from schemas.topics import DELAYS, PRICES
from tests.helpers import read_topic

pytestmark = pytest.mark.integration


class Note(BaseModel):
    n: int
    text: str


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), written from the
    Java source for this test, as a signed 32-bit int."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = data[whole:]
    if len(rest) >= 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h ^= rest[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h >= 1 << 31 else h


def kafka_partition(key: bytes, partitions: int) -> int:
    """The Java client's default partition of a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_the_reference_murmur2_matches_kafkas_own_test_vectors():
    # from Kafka's UtilsTest.testMurmur2
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {key: murmur2(key) for key in vectors} == vectors


def test_every_message_arrives_once_on_its_keys_partition(kafka_bootstrap):
    # ~1.7 MB in all: more than one 1 MiB record batch per partition
    messages = [(PRICES.name, f"rental-{i}", Note(n=i, text="x" * (i % 600))) for i in range(5000)]
    messages += [(DELAYS.name, None, Note(n=-1, text="no key"))]

    async def go():
        await ensure_topics(kafka_bootstrap, partitions=3)
        publisher = BatchPublisher(kafka_bootstrap, client_id="test")
        await publisher.start()
        try:
            await publisher.publish(messages)
        finally:
            await publisher.stop()
        received = await read_topic(kafka_bootstrap, PRICES.name)
        unkeyed = await read_topic(kafka_bootstrap, DELAYS.name)
        return received, unkeyed

    received, unkeyed = asyncio.run(go())
    assert sorted(json.loads(r.value)["n"] for r in received) == list(range(5000))
    assert {r.partition for r in received} == {0, 1, 2}
    assert all(dict(r.headers)["content-type"] == b"application/json" for r in received)
    for record in received:  # each value is the model's JSON, under its own key
        assert record.key == f"rental-{json.loads(record.value)['n']}".encode()
    assert json.loads(unkeyed[0].value) == {"n": -1, "text": "no key"} and unkeyed[0].key is None
    # where the Java client (and so any other producer of these keys) would put them
    assert all(r.partition == kafka_partition(r.key, 3) for r in received)
