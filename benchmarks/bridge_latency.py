"""/predict through the bridge, side by side with a plain model API, in the same run.

    python benchmarks/bridge_latency.py [--broker kafka|kafka-3] [--requests 1000] [--clients 50] [--seconds 20]

Starts a fresh embedded stack in a temporary home (broker, PostgreSQL, MLflow), trains
the champion, starts the scorer and the bridge (not the monitor, so it does not share
the cores) as `rentalstream up` does, and the
baseline (benchmarks/plain_model_api.py: FastAPI calling the same model in-process).
Then, for each of

- the bridge: HTTP → price-requests → scorer (model + Postgres commit) → price-replies → HTTP,
- the same with ``?explain=true`` (the scorer adds each price's exact contributions),
- the plain API, model only,
- the plain API with one INSERT per prediction (the same durability as the bridge's log),

it measures the latency of ``--requests`` sequential requests on one keep-alive
connection (p50 / p99 / mean), then the throughput and latency of ``--clients``
concurrent clients (one connection each) for ``--seconds``, with the CPU seconds each
process used meanwhile. The load generator (aiohttp) runs here, on the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from against import parse_or_compare
from bench_stack import BROKERS, add_broker_option, cpu_seconds, fresh_stack

from rentalstream import processes, services
from rentalstream.kafka_jars import kafka_version
from runtime.settings import Settings

CAR = {
    "model_key": "Renault",
    "mileage": 120_000,
    "engine_power": 110,
    "fuel": "diesel",
    "paint_color": "grey",
    "car_type": "estate",
    "has_gps": True,
}


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


# The lines that carry the figures, for --against's side-by-side summary.
FIGURES = r"^(bridge \(via Kafka\)|bridge, explain|plain API|sequential|\d+ concurrent|target|conditions)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per target")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=20, help="duration of each concurrent run")
    add_broker_option(parser)
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return

    with (
        fresh_stack((services.SCORER, services.BRIDGE), broker=args.broker) as (settings, state),
        plain_api() as baseline,
    ):
        baseline_url = baseline["url"]
        bridge_url = state["services"]["bridge"]["url"]
        targets = {
            "bridge (via Kafka)": f"{bridge_url}/predict",
            "bridge, explain=true": f"{bridge_url}/predict?explain=true",
            "plain API, model only": f"{baseline_url}/predict",
            "plain API + INSERT": f"{baseline_url}/predict-and-store",
        }
        processes = {
            "bridge": state["services"]["bridge"]["pid"],
            "scorer": state["services"]["scorer"]["pid"],
            **{name: pid for name, pid in state["pids"].items() if name.startswith("broker")},
            "postgres": state["pids"]["postgres"],
            "plain API": baseline["pid"],
            "load generator": os.getpid(),
        }

        sequential = {}
        for name, url in targets.items():
            asyncio.run(sequential_run(url, 100))  # warm-up
            sequential[name] = asyncio.run(sequential_run(url, args.requests))
        concurrent = {}
        for name, url in targets.items():
            before = cpu_seconds(processes)
            concurrent[name] = asyncio.run(concurrent_run(url, args.clients, args.seconds))
            after = cpu_seconds(processes)
            concurrent[name].cpu = {p: after[p] - before[p] for p in processes}

        report(settings, args, sequential, concurrent)


@contextmanager
def plain_api() -> Iterator[dict]:
    """The baseline (``plain_model_api.py``) on a free port, ready; stopped on the way out."""
    port = processes.free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("plain_model_api.py")), "--port", str(port)]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        services.wait_ready("plain API", f"{url}/ready", process.pid, time.monotonic() + 120)
        yield {"url": url, "pid": process.pid}
    finally:
        process.terminate()
        process.wait(30)


async def sequential_run(url: str, requests: int) -> Run:
    run = Run()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        started = time.perf_counter()
        for i in range(requests):
            await timed_post(session, url, {**CAR, "mileage": 50_000 + i}, run)
        run.seconds = time.perf_counter() - started
    return run


async def concurrent_run(url: str, clients: int, seconds: float) -> Run:
    """``clients`` callers on ``clients`` connections, each sending its next request as
    soon as the previous one is answered. aiohttp, not httpx: at 50 callers httpx's
    client used more CPU than the services under test."""
    run = Run()
    deadline = time.perf_counter() + seconds

    async def caller(session: aiohttp.ClientSession, index: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            await timed_post(session, url, {**CAR, "mileage": 1_000 * index + i}, run)
            i += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(caller(session, i) for i in range(clients)))
        run.seconds = time.perf_counter() - started
    return run


async def timed_post(session: aiohttp.ClientSession, url: str, body: dict, run: Run) -> None:
    sent = time.perf_counter()
    async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=30)) as response:
        await response.read()
    run.latencies.append(time.perf_counter() - sent)
    run.statuses[response.status] += 1


def report(settings: Settings, args, sequential: dict[str, Run], concurrent: dict[str, Run]) -> None:
    print(
        f"\nbroker: {BROKERS[args.broker]} (Apache Kafka {kafka_version()}); the scorer's replies in Kafka "
        f"transactions ({settings.kafka.transactions}), read read_committed"
    )
    print(
        f"conditions: {os.cpu_count()} CPU cores shared by broker, PostgreSQL, scorer, bridge, plain API and the "
        f"load generator; {settings.kafka.topic_partitions} partitions; request/reply fetch wait "
        f"{settings.kafka.request_fetch_max_wait_ms} ms; bridge timeout {settings.bridge.timeout_seconds:g} s"
    )
    print(f"\nsequential, {args.requests} requests on one connection")
    print(f"{'target':<24}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}  statuses")
    for name, run in sequential.items():
        mean = statistics.fmean(run.latencies) * 1000
        print(f"{name:<24}{run.quantile(0.5):>9.1f}{run.quantile(0.99):>9.1f}{mean:>9.1f}  {dict(run.statuses)}")
    print(f"\n{args.clients} concurrent clients for {args.seconds:g} s")
    print(f"{'target':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}  statuses; CPU seconds used meanwhile")
    for name, run in concurrent.items():
        cpu = ", ".join(f"{p} {s:.1f}" for p, s in run.cpu.items() if s >= 0.05)
        print(
            f"{name:<24}{run.rate:>9,.0f}{run.quantile(0.5):>9.1f}{run.quantile(0.99):>9.1f}  {dict(run.statuses)}; {cpu}"
        )
    bridge, plain, stored = (
        sequential[n] for n in ("bridge (via Kafka)", "plain API, model only", "plain API + INSERT")
    )
    print("\nthe cost of the Kafka round trip, as ratios (bridge / plain API)")
    print(
        f"sequential p50 latency: {bridge.quantile(0.5) / plain.quantile(0.5):.1f}x the model-only API, "
        f"{bridge.quantile(0.5) / stored.quantile(0.5):.1f}x the API with an INSERT"
    )
    cb, cp, cs = (concurrent[n] for n in ("bridge (via Kafka)", "plain API, model only", "plain API + INSERT"))
    print(
        f"throughput at {args.clients} clients: {cb.rate / cp.rate:.2f}x the model-only API, "
        f"{cb.rate / cs.rate:.2f}x the API with an INSERT"
    )


if __name__ == "__main__":
    main()
