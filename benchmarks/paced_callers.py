"""/predict for callers who pause between requests, as a product service asking now and then
does, beside the same requests sent back to back, in the same run.

    python benchmarks/paced_callers.py [--requests 150] [--pause-ms 150 450] [--runs 2] [--against REF]

Starts a fresh embedded stack (broker, PostgreSQL, MLflow, the scorer and the bridge, as
bridge_latency.py does), warms it up, then alternates, ``--rounds`` times: ``--requests``
requests back to back on one keep-alive connection, and as many each after a pause drawn
uniformly from ``--pause-ms`` (seeded, so every run draws the same pauses). It prints each
run's p50 / p90 / p99 / mean.

A consumer that dozes off while idle shows here and not in bridge_latency.py, whose
callers never leave the scorer idle: FastStream's batch subscriber slept
``batch_timeout_ms`` after a poll that found nothing, and a request arriving meanwhile
waited it out (see runtime/kafka/subscriber.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time

import aiohttp
from against import parse_or_compare
from bench_stack import fresh_stack
from bridge_latency import CAR, Run, sequential_run, timed_post

from rentalstream import services
from rentalstream.kafka_jars import kafka_version

FIGURES = r"^(back to back|paced|conditions)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150, help="requests per run")
    parser.add_argument("--pause-ms", type=float, nargs=2, default=(150, 450), metavar=("LOW", "HIGH"))
    parser.add_argument("--runs", type=int, default=2, help="runs of each kind, alternating")
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return
    with fresh_stack((services.SCORER, services.BRIDGE)) as (settings, state):
        url = f"{state['services']['bridge']['url']}/predict"
        asyncio.run(sequential_run(url, 100))  # warm-up: consumer groups joined, the model compiled and loaded
        runs: dict[str, list[Run]] = {"back to back": [], "paced": []}
        for _ in range(args.runs):
            runs["back to back"].append(asyncio.run(sequential_run(url, args.requests)))
            runs["paced"].append(asyncio.run(paced_run(url, args.requests, tuple(args.pause_ms))))
        print(
            f"\nconditions: {os.cpu_count()} CPU cores shared by broker, PostgreSQL, scorer, bridge and the load "
            f"generator; Apache Kafka {kafka_version()}; transactions {settings.kafka.transactions}; scorer idle "
            f"poll {settings.scorer.batch_timeout_ms} ms; paced pause {args.pause_ms[0]:g}-{args.pause_ms[1]:g} ms"
        )
        print(f"{'':<14}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}  statuses")
        for kind, kept in runs.items():
            for run in kept:
                mean = statistics.fmean(run.latencies) * 1000
                print(
                    f"{kind:<14}{run.quantile(0.5):>9.1f}{run.quantile(0.9):>9.1f}{run.quantile(0.99):>9.1f}"
                    f"{mean:>9.1f}  {dict(run.statuses)}"
                )


async def paced_run(url: str, requests: int, pause_ms: tuple[float, float]) -> Run:
    """``requests`` on one connection, each after a pause drawn from ``pause_ms``
    (``bridge_latency.sequential_run``, with the pauses)."""
    pauses = random.Random(42)
    run = Run()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        started = time.perf_counter()
        for i in range(requests):
            await asyncio.sleep(pauses.uniform(*pause_ms) / 1000)
            await timed_post(session, url, {**CAR, "mileage": 50_000 + i}, run)
        run.seconds = time.perf_counter() - started
    return run


if __name__ == "__main__":
    main()
