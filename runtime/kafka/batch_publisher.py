"""Publishing a batch's results: one record batch per topic partition, all acks awaited together.

A consumer's results (prices, delay facts, replies, dead letters) leave in bulk after
each Postgres commit. Published one by one through FastStream, each message costs
~40 µs of Python (middlewares, a correlation id, a send future): 4,000 results of a
2,000-rental batch took ~0.3 s, more than scoring them. Here the messages are grouped
by topic and partition (Kafka's default partitioner on the key, murmur2, as every
client computes it, so a key lands where any other producer would put it) and each group is
appended to aiokafka record batches (a C extension) and sent as one produce request.

The murmur2 is ``murmurhash2``'s (C): aiokafka's own is pure Python, 2.2 µs a key against
0.17, and a rental's results carry two keys (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from murmurhash2 import murmurhash2
from pydantic import BaseModel

from runtime.tracing import Headers

HEADERS = [("content-type", b"application/json")]
# (topic, key, value), or (topic, key, value, headers) for a message carrying more headers
Message = tuple[str, str | None, BaseModel] | tuple[str, str | None, BaseModel, Headers]
MAX_BATCH_BYTES = 1 << 20  # Kafka's default largest message (record batch) is 1 MiB


class BatchPublisher:
    """One aiokafka producer publishing (topic, key, model) messages in bulk."""

    def __init__(
        self,
        bootstrap: str,
        client_id: str,
        transactional_id: str | None = None,
        request_timeout_ms: int = 40_000,
        security: dict | None = None,
    ) -> None:
        """``request_timeout_ms`` (aiokafka's default here) also bounds how long a record waits
        for a partition that has no leader (the whole cluster restarting, say) before its
        send fails with ``LeaderNotAvailableError``. ``security``: ``runtime.kafka.security.client_options``."""
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.transactional_id = transactional_id
        self.request_timeout_ms = request_timeout_ms
        self.security = security or {}
        self._producer: AIOKafkaProducer | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the publisher is not started")
        return self._producer

    async def start(self) -> None:
        """Connect (aiokafka wants its loop running, so not in ``__init__``)."""
        # Idempotent: a send retried after a lost ack is written once. Transactional when
        # given an id (``delivery.TransactionalResults``).
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            max_batch_size=MAX_BATCH_BYTES,
            linger_ms=0,
            acks="all",
            enable_idempotence=True,
            transactional_id=self.transactional_id,
            # A replica that dies with a transaction open blocks read_committed readers of
            # its partitions until the broker aborts it: after this, not aiokafka's 60 s
            # (above delivery's own 8 s limit, so a slow commit is ours to abandon first).
            transaction_timeout_ms=10_000,
            request_timeout_ms=self.request_timeout_ms,
            **self.security,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, messages: Sequence[Message]) -> None:
        """Send every message, then wait until the broker has acknowledged all of them."""
        await asyncio.gather(*await self.send(messages))

    async def send(self, messages: Sequence[Message]) -> list[asyncio.Future]:
        """Hand every message to the producer; the futures resolve when the broker has
        acknowledged them (one per record batch). A message's fourth item, when it has one,
        is headers it carries besides the content type (its trace: ``runtime.tracing``)."""
        groups: dict[tuple[str, int], list[tuple[bytes | None, bytes, Headers]]] = defaultdict(list)
        partitions: dict[str, list[int]] = {}
        for message in messages:
            if len(message) == 3:  # unpacked whole: ~30 ns a message less than slicing
                topic, key, value = message
                headers = HEADERS
            else:
                topic, key, value, extra = message
                headers = [*HEADERS, *extra]
            if topic not in partitions:
                partitions[topic] = sorted(await self.producer.partitions_for(topic))
            key_bytes = key.encode() if key is not None else None
            partition = partition_of(key_bytes, partitions[topic])
            groups[topic, partition].append((key_bytes, value.__pydantic_serializer__.to_json(value), headers))
        acks = []
        for (topic, partition), records in groups.items():
            batch = self.producer.create_batch()
            for key_bytes, value_bytes, headers in records:
                if batch.append(key=key_bytes, value=value_bytes, timestamp=None, headers=headers) is None:
                    # full: send it and start the next (an empty batch takes any record;
                    # the broker judges its size, and its refusal fails the ack)
                    acks.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
                    batch.append(key=key_bytes, value=value_bytes, timestamp=None, headers=headers)
            acks.append(await self.producer.send_batch(batch, topic, partition=partition))
        return acks


KAFKA_MURMUR2_SEED = 0x9747B28C  # org.apache.kafka.common.utils.Utils.murmur2's


def partition_of(key: bytes | None, partitions: list[int]) -> int:
    """The partition Kafka's default partitioner gives ``key`` (a random one without a key):
    ``toPositive(murmur2(key)) % count``, as the Java client and aiokafka compute it."""
    if key is None:
        return random.choice(partitions)
    return partitions[(murmurhash2(key, KAFKA_MURMUR2_SEED) & 0x7FFFFFFF) % len(partitions)]
