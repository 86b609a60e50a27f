"""The bridge's reply reader three ways, on one Apache Kafka node, in the same run.

    python benchmarks/reply_reader.py [--sequential 500] [--burst 20000] [--rounds 2]

Issue 20 asks whether the bridge's hand-written aiokafka reply loop
(runtime/kafka/request_reply.py) can become a FastStream subscriber with explicit
partitions at no cost in latency. This measures the readers alone, with the same
consumer settings as the bridge's (every partition of ``price-replies`` assigned, no
group, read_committed, ``fetch_max_wait_ms`` 10), each validating every reply as a
PriceScored:

- ``aiokafka getmany``: the bridge's loop, ``getmany(timeout_ms=1000, max_records=1000)``;
- ``FastStream``: ``broker.subscriber(partitions=...)``, one reply per handler call;
- ``FastStream batch``: the same with ``batch=True`` (``max_records`` 1000,
  ``batch_timeout_ms`` 10).

For each: ``--sequential`` replies one at a time (publish, wait until the reader has it,
next), giving the publish → handed-over latency p50 / p99; then a burst of ``--burst``
replies published as fast as the producer takes them, giving replies/s and the p99 of
the same latency. The rounds alternate the readers. One Kafka node is started in a
temporary folder and stopped at the end; the CPU of this process is printed per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream import kafka as faststream_kafka
from faststream.kafka import KafkaBroker

from rentalstream import kafka_server
from runtime.kafka.topics import ensure_topics, partition_ids
from runtime.settings import Settings
from schemas.events import PriceScored
from schemas.topics import PRICE_REPLIES

FETCH_MAX_WAIT_MS = Settings().kafka.request_fetch_max_wait_ms  # the bridge's reply consumer's


class Waiting:
    """Replies expected by id; each arrival is stamped with its latency since publication."""

    def __init__(self) -> None:
        self.futures: dict[str, asyncio.Future] = {}
        self.latencies: list[float] = []

    def expect(self, ids: list[str]) -> list[asyncio.Future]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in ids]
        self.futures.update(zip(ids, futures, strict=True))
        return futures

    def arrived(self, reply: PriceScored) -> None:
        self.latencies.append(time.time() - reply.scored_at.timestamp())
        future = self.futures.pop(reply.request_id or "", None)
        if future is not None and not future.done():
            future.set_result(None)


class AiokafkaReader:
    name = "aiokafka getmany"

    def __init__(self, bootstrap: str, waiting: Waiting) -> None:
        self.bootstrap, self.waiting = bootstrap, waiting

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            isolation_level="read_committed",
        )
        await self.consumer.start()
        partitions = [
            TopicPartition(PRICE_REPLIES.name, p) for p in await partition_ids(self.bootstrap, PRICE_REPLIES.name)
        ]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        for partition in partitions:
            await self.consumer.position(partition)
        self.task = asyncio.create_task(self._receive())

    async def _receive(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=1000, max_records=1000)
            for records in batches.values():
                for record in records:
                    self.waiting.arrived(PriceScored.model_validate_json(record.value))

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()


class FastStreamReader:
    def __init__(self, bootstrap: str, waiting: Waiting, batch: bool) -> None:
        self.bootstrap, self.waiting, self.batch = bootstrap, waiting, batch
        self.name = "FastStream batch" if batch else "FastStream"

    async def start(self) -> None:
        numbers = await partition_ids(self.bootstrap, PRICE_REPLIES.name)
        self.broker = KafkaBroker(self.bootstrap, logger=None)
        options = {
            "partitions": [faststream_kafka.TopicPartition(PRICE_REPLIES.name, n) for n in numbers],
            "auto_offset_reset": "latest",
            "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
            "isolation_level": "read_committed",
        }
        if self.batch:
            subscriber = self.broker.subscriber(batch=True, max_records=1000, batch_timeout_ms=10, **options)

            @subscriber
            async def on_replies(replies: list[PriceScored]) -> None:
                for reply in replies:
                    self.waiting.arrived(reply)
        else:
            subscriber = self.broker.subscriber(**options)

            @subscriber
            async def on_reply(reply: PriceScored) -> None:
                self.waiting.arrived(reply)

        await self.broker.start()
        for number in numbers:  # positioned at the end before the first reply, as the bridge is
            await subscriber.consumer.position(TopicPartition(PRICE_REPLIES.name, number))

    async def stop(self) -> None:
        await self.broker.stop()


def reply(request_id: str) -> bytes:
    now = datetime.now(UTC)
    return (
        PriceScored(
            price_id=request_id,
            request_id=request_id,
            car_id=1,
            price_per_day=123.45,
            price_lower=100.0,
            price_upper=150.0,
            model_name="rentalstream-price",
            model_version="1",
            event_time=now,
            scored_at=now,  # stamped at publication: the latency runs from here
        )
        .model_dump_json()
        .encode()
    )


async def publish(producer: AIOKafkaProducer, request_id: str) -> asyncio.Future:
    return await producer.send(
        PRICE_REPLIES.name, reply(request_id), key=request_id.encode(), headers=[("content-type", b"application/json")]
    )


async def measure(reader, waiting: Waiting, producer: AIOKafkaProducer, sequential: int, burst: int) -> dict:
    await reader.start()
    try:
        for i in range(20):  # warm up: connections, the first fetches, the parsers
            [arrived] = waiting.expect([f"warm-{i}"])
            await publish(producer, f"warm-{i}")
            await asyncio.wait_for(arrived, 10)
        waiting.latencies.clear()
        cpu = time.process_time()
        for i in range(sequential):
            [arrived] = waiting.expect([f"seq-{i}"])
            await (await publish(producer, f"seq-{i}"))
            await asyncio.wait_for(arrived, 10)
        sequential_latencies, waiting.latencies = waiting.latencies, []
        sequential_cpu = time.process_time() - cpu
        ids = [f"burst-{i}" for i in range(burst)]
        arrivals = waiting.expect(ids)
        cpu, started = time.process_time(), time.perf_counter()
        deliveries = [await publish(producer, request_id) for request_id in ids]
        await asyncio.gather(*deliveries)
        await asyncio.wait_for(asyncio.gather(*arrivals), 120)
        elapsed, burst_cpu = time.perf_counter() - started, time.process_time() - cpu
        return {
            "seq p50 ms": 1000 * statistics.median(sequential_latencies),
            "seq p99 ms": 1000 * statistics.quantiles(sequential_latencies, n=100)[98],
            "seq cpu s": sequential_cpu,
            "burst/s": burst / elapsed,
            "burst p99 ms": 1000 * statistics.quantiles(waiting.latencies, n=100)[98],
            "burst cpu s": burst_cpu,
        }
    finally:
        waiting.latencies.clear()
        await reader.stop()


async def run(bootstrap: str, args: argparse.Namespace) -> list[tuple[str, dict]]:
    await ensure_topics(bootstrap, partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
    await producer.start()
    readers: list[Callable[[Waiting], object]] = [
        lambda w: AiokafkaReader(bootstrap, w),
        lambda w: FastStreamReader(bootstrap, w, batch=False),
        lambda w: FastStreamReader(bootstrap, w, batch=True),
    ]
    results = []
    try:
        for round_ in range(args.rounds):
            for make in readers:
                waiting = Waiting()
                reader = make(waiting)
                figures = await measure(reader, waiting, producer, args.sequential, args.burst)
                results.append((reader.name, figures))
                print(
                    f"round {round_ + 1} {reader.name:18} " + "  ".join(f"{k} {v:,.1f}" for k, v in figures.items()),
                    flush=True,
                )
    finally:
        await producer.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=500, help="replies read one at a time (default 500)")
    parser.add_argument("--burst", type=int, default=20_000, help="replies published at once (default 20,000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the three readers (default 2)")
    args = parser.parse_args()
    settings = Settings()
    folder = Path(tempfile.mkdtemp(prefix="rentalstream-reply-reader-"))
    runtime = kafka_server.kafka_runtime(
        settings.kafka.cache_dir.expanduser(), settings.kafka.java, settings.kafka.heap
    )
    cluster = kafka_server.start_cluster(folder, runtime, nodes=1)
    try:
        print(
            f"Apache Kafka {runtime.version}, one node on {cluster.bootstrap}; price-replies with 3 partitions; "
            f"{args.sequential} sequential replies, then a burst of {args.burst:,}; {args.rounds} rounds",
            flush=True,
        )
        results = asyncio.run(run(cluster.bootstrap, args))
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print("\nmedian over the rounds:")
    for name in dict.fromkeys(name for name, _ in results):
        runs = [figures for n, figures in results if n == name]
        print(f"  {name:18} " + "  ".join(f"{k} {statistics.median(r[k] for r in runs):,.1f}" for k in runs[0]))


if __name__ == "__main__":
    main()
