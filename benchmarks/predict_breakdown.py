"""Where a sequential /predict spends its time, step by step, from the clocks the request
leaves behind.

    python benchmarks/predict_breakdown.py [--requests 400] [--against REF]

Starts a fresh embedded stack with the scorer and the bridge (as bridge_latency.py does),
warms it up, sends ``--requests`` requests back to back on one keep-alive connection,
then reads, for each one:

- the request record's CreateTime on ``price-requests`` (set by the bridge's producer as
  it sends),
- the price's ``scored_at`` (the scorer, once it has parsed and priced the request) and
  the request log's ``stored_at`` (PostgreSQL's clock_timestamp() as the row is written),
- the reply record's CreateTime on ``price-replies`` (the scorer's producer, after the
  PostgreSQL commit),

and prints the p50 and mean of each step between them. Every clock is on this machine;
record timestamps have millisecond resolution, so a single step's figure is good to
about a millisecond, its p50 over hundreds of requests much better.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import aiohttp
from against import parse_or_compare
from aiokafka import AIOKafkaConsumer, TopicPartition
from bench_stack import fresh_stack
from bridge_latency import CAR
from sqlalchemy import create_engine, text

from rentalstream import services
from rentalstream.kafka_jars import kafka_version
from runtime.settings import normalised_database_url

FIGURES = r"^(HTTP|request|scored|stored|reply|whole|conditions)"
STEPS = (
    "HTTP in → request produced",
    "request produced → scored",
    "scored → stored (first row)",
    "stored → reply produced",
    "reply produced → HTTP out",
    "whole request",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="sequential requests measured")
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return
    with fresh_stack((services.SCORER, services.BRIDGE)) as (settings, state):
        url = f"{state['services']['bridge']['url']}/predict"
        asyncio.run(requests(url, 100))  # warm-up: consumer groups joined, the model compiled and loaded
        answered = asyncio.run(requests(url, args.requests))
        bootstrap = settings.resolved_kafka_bootstrap()
        partitions = settings.kafka.topic_partitions  # as the stack created them
        sent = asyncio.run(create_times(bootstrap, "price-requests", partitions))
        replied = asyncio.run(create_times(bootstrap, "price-replies", partitions))
        engine = create_engine(normalised_database_url(settings.resolved_database_url()))
        try:
            with engine.connect() as conn:
                stored = {
                    row.price_id: (row.scored_at.timestamp(), row.stored_at.timestamp())
                    for row in conn.execute(
                        text(
                            "SELECT p.price_id, p.scored_at, q.stored_at FROM prices p "
                            "JOIN price_requests q ON q.request_id = p.price_id"
                        )
                    )
                }
        finally:
            engine.dispose()
        steps = [
            (
                sent[rid] - began,
                stored[rid][0] - sent[rid],
                stored[rid][1] - stored[rid][0],
                replied[rid] - stored[rid][1],
                ended - replied[rid],
                ended - began,
            )
            for began, ended, rid in answered
            if rid in sent and rid in replied and rid in stored
        ]
        print(
            f"\nconditions: {os.cpu_count()} CPU cores shared by broker, PostgreSQL, scorer, bridge and the load "
            f"generator; Apache Kafka {kafka_version()}; transactions {settings.kafka.transactions}; "
            f"{len(steps)} of {len(answered)} requests found in both topics and the tables"
        )
        print(f"{'step':<32}{'p50 ms':>9}{'mean ms':>9}")
        if not steps:
            raise SystemExit("no request was found in both topics and the tables")
        for name, values in zip(STEPS, zip(*steps, strict=True), strict=True):
            print(f"{name:<32}{statistics.median(values) * 1000:>9.1f}{statistics.fmean(values) * 1000:>9.1f}")


async def create_times(bootstrap: str, topic: str, partition_count: int) -> dict[str, float]:
    """Each key on ``topic`` with its first record's CreateTime, in seconds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        times: dict[str, float] = {}
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    times.setdefault(record.key.decode(), record.timestamp / 1000)  # a reply may be sent twice
        return times
    finally:
        await consumer.stop()


async def requests(url: str, count: int) -> list[tuple[float, float, str]]:
    """``count`` requests back to back: (wall clock sent, wall clock answered, request id)."""
    answered = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for i in range(count):
            began = time.time()
            async with session.post(url, json={**CAR, "mileage": 50_000 + i}) as response:
                body = await response.json()
            answered.append((began, time.time(), body["request_id"]))
    return answered


if __name__ == "__main__":
    main()
