"""Side by side in one run: the streaming scorer against a plain model API.

    python benchmarks/baseline_comparison.py [--clients 50] [--requests 1000] [--limit N]

Starts a fresh embedded stack in a temporary home with the scorer and the bridge, and
the baseline (benchmarks/plain_model_api.py: FastAPI calling the same champion per
request, with one INSERT per prediction). Then, on the same machine in the same run:

1. **Throughput.** The whole delay history (21,310 rentals) through each:
   - ours: replayed onto ``rentals`` as fast as possible, scored and committed to
     Postgres by the scorer (first publish → last row committed);
   - the baseline: the same rentals' cars POSTed to ``/predict-and-store`` by
     ``--clients`` concurrent HTTP clients (first request → last answer, every answer
     a committed INSERT). Meanwhile our broker, scorer and bridge are paused
     (SIGSTOP, with their children; PostgreSQL, which the baseline writes to, runs):
     idle, they burned ~20 CPU-s over its run and flattered the ratio.
2. **Latency.** ``--requests`` sequential ``/predict`` calls on one connection to the
   bridge (HTTP → Kafka → scorer → Postgres → Kafka → HTTP) and to the baseline's
   ``/predict`` (the model called in-process, nothing stored): p50 / p99.

It prints both figures and the ratios ours / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import aiohttp
import psutil
from against import parse_or_compare
from bench_stack import cpu_seconds, fresh_stack, stack_processes, warm_up
from bridge_latency import Run, plain_api, sequential_run, timed_post

from producers.replay import publish_events, rental_events
from rentalstream import services
from rentalstream.demo import wait_until_scored
from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path
from schemas.events import RentalEvent, utc_now

FIGURES = r"^(conditions|throughput|latency|  (ours|plain|ratio|bridge))"  # the lines --against sets side by side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent HTTP clients feeding the baseline")
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests for the latency figures")
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N rows")
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return

    with fresh_stack((services.SCORER, services.BRIDGE)) as (settings, state), plain_api() as baseline:
        events = rental_events(
            dataset_path(DELAYS_XLSX, settings.data_dir), dataset_path(PRICING_CSV, settings.data_dir), limit=args.limit
        )
        scorer_pid = state["services"]["scorer"]["pid"]
        processes = stack_processes(state) | {"plain API": baseline["pid"], "this process": os.getpid()}

        warm_up(settings, events[0], scorer_pid, [state["services"]["scorer"]["url"]])
        asyncio.run(http_replay(f"{baseline['url']}/predict-and-store", events[:200], args.clients))  # warm-up

        print(f"replaying {len(events):,} rentals through Kafka and the scorer...", flush=True)
        before = cpu_seconds(processes)
        since = utc_now()
        started = time.time()
        asyncio.run(publish_events(settings.resolved_kafka_bootstrap(), events, batch_size=settings.replay.batch_size))
        _, _, last_commit = wait_until_scored(settings, since, len(events), scorer_pid)
        ours_seconds = last_commit - started
        ours_cpu = delta(before, cpu_seconds(processes))

        print(f"posting the same {len(events):,} cars to the plain API with {args.clients} clients...", flush=True)
        ours = {name: pid for name, pid in stack_processes(state).items() if name != "postgres"}
        before = cpu_seconds(processes)
        with paused(ours.values()):
            plain = asyncio.run(http_replay(f"{baseline['url']}/predict-and-store", events, args.clients))
        plain_cpu = delta(before, cpu_seconds(processes))
        for name in ("scorer", "bridge"):  # back, holding their partitions again, before the latency runs
            service = state["services"][name]
            services.wait_ready(name, f"{service['url']}/ready", service["pid"], time.monotonic() + 120, service["log"])

        print(f"timing {args.requests:,} sequential /predict calls on each...", flush=True)
        bridge_url, plain_url = f"{state['services']['bridge']['url']}/predict", f"{baseline['url']}/predict"
        for url in (bridge_url, plain_url):
            asyncio.run(sequential_run(url, 100))  # warm-up
        bridge_latency = asyncio.run(sequential_run(bridge_url, args.requests))
        direct_latency = asyncio.run(sequential_run(plain_url, args.requests))

    ours_rate = len(events) / ours_seconds
    print(
        f"\nconditions: {os.cpu_count()} CPU cores shared by the broker, PostgreSQL, MLflow, scorer, bridge, the plain "
        f"API and the load generator (this process), except while the plain API's throughput is measured: then "
        f"{', '.join(ours)} are paused (SIGSTOP); {settings.kafka.topic_partitions} partitions; the same champion "
        f"(compiled trees in the scorer, LightGBM in the plain API)"
    )
    print(f"\nthroughput, {len(events):,} rentals priced and committed to PostgreSQL")
    print(
        f"  ours (Kafka → scorer → COPY):          {ours_rate:>8,.0f} events/s ({ours_seconds:.2f} s); "
        f"CPU s: {top(ours_cpu)}"
    )
    print(
        f"  plain API ({args.clients} clients, one INSERT each): {plain.rate:>8,.0f} events/s ({plain.seconds:.2f} s, "
        f"statuses {dict(plain.statuses)}); CPU s: {top(plain_cpu)}"
    )
    print(f"  ratio ours / plain API:               {ours_rate / plain.rate:>8.1f}x")
    print(f"\nlatency, {args.requests:,} sequential /predict calls on one connection (p50 / p99 ms)")
    print(
        f"  bridge (HTTP → Kafka → scorer → Postgres → Kafka): "
        f"{bridge_latency.quantile(0.5):.1f} / {bridge_latency.quantile(0.99):.1f}"
    )
    print(
        f"  plain API, model called in-process:             "
        f"{direct_latency.quantile(0.5):.1f} / {direct_latency.quantile(0.99):.1f}"
    )
    print(
        f"  ratio bridge / direct call:                     "
        f"{bridge_latency.quantile(0.5) / direct_latency.quantile(0.5):.1f}x at p50, "
        f"{bridge_latency.quantile(0.99) / direct_latency.quantile(0.99):.1f}x at p99"
    )


@contextmanager
def paused(pids: Iterable[int]) -> Iterator[None]:
    """Every process of ``pids``, with its children, stopped (SIGSTOP) for the block and
    continued (SIGCONT) after it, even when the block fails."""
    family = []
    for pid in pids:
        parent = psutil.Process(pid)
        family += [parent, *parent.children(recursive=True)]
    for process in family:
        process.suspend()
    try:
        yield
    finally:
        for process in family:
            try:
                process.resume()
            except psutil.NoSuchProcess:
                pass


async def http_replay(url: str, events: list[RentalEvent], clients: int) -> Run:
    """Every event's car POSTed once, by ``clients`` callers taking the next event as soon
    as their previous answer is in."""
    run = Run()
    queue = iter(events)

    async def caller(session: aiohttp.ClientSession) -> None:
        for event in queue:
            await timed_post(session, url, event.car.model_dump(mode="json"), run)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(caller(session) for _ in range(clients)))
        run.seconds = time.perf_counter() - started
    return run


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after}


def top(cpu: dict[str, float]) -> str:
    return ", ".join(f"{n} {s:.1f}" for n, s in sorted(cpu.items(), key=lambda i: -i[1]) if s >= 0.05)


if __name__ == "__main__":
    main()
