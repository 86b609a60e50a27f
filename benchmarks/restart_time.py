"""A scorer killed mid-stream and restarted at once: how long until it commits again.

    python benchmarks/restart_time.py [--rate 2000] [--restarts 3] [--broker kafka|kafka-3]

Starts a fresh embedded stack with the scorer alone, waits until it prices with the
compiled trees, then publishes the history at ``--rate`` rentals/s. Every few seconds it
SIGKILLs the scorer and at once spawns it again (same port, so the same instance id:
its static group membership and transactional ids), and measures from the spawn:

- ``/health`` answering 2xx (the process serves HTTP and its broker answers),
- ``/ready`` answering 200 (model loaded, every topic's consumers holding partitions),
- the first rental committed to PostgreSQL after the spawn (only the new process can
  have committed it: the old one is dead).

It prints each restart and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import threading
import time
from datetime import UTC, datetime

import httpx
from against import parse_or_compare
from bench_stack import add_broker_option, fresh_stack, warm_up
from sqlalchemy import create_engine, text

from producers.replay import publish_events, rental_events
from rentalstream import processes, services
from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path
from runtime.settings import normalised_database_url

FIGURES = r"^(restart |median|conditions)"
FIRST_COMMIT_SQL = text("SELECT min(stored_at) FROM rentals WHERE stored_at > :spawned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000, help="rentals/s published meanwhile (default 2000)")
    parser.add_argument("--restarts", type=int, default=3, help="kills and restarts (default 3)")
    add_broker_option(parser)
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return

    with fresh_stack((services.SCORER,), broker=args.broker) as (settings, state):
        scorer = state["services"]["scorer"]
        events = rental_events(
            dataset_path(DELAYS_XLSX, settings.data_dir), dataset_path(PRICING_CSV, settings.data_dir)
        )
        warm_up(settings, events[0], scorer["pid"], [scorer["url"]])

        done = threading.Event()

        def publish_until_done() -> None:  # the history again and again (rows rewritten: stored_at moves)
            while not done.is_set():
                asyncio.run(publish_events(settings.resolved_kafka_bootstrap(), events, rate=args.rate))

        publishing = threading.Thread(target=publish_until_done, daemon=True)
        publishing.start()
        engine = create_engine(normalised_database_url(settings.resolved_database_url()))
        pid, timings = scorer["pid"], []
        try:
            for restart in range(1, args.restarts + 1):
                time.sleep(3)  # scoring at full speed when it is killed
                os.kill(pid, signal.SIGKILL)
                processes.wait_until_dead(pid, timeout=10)
                spawned_at, spawned = time.monotonic(), datetime.now(UTC)
                pid = services.spawn(settings, services.SCORER).pid
                timings.append(measure(scorer["url"], engine, spawned_at, spawned))
                health, ready, commit = timings[-1]
                print(
                    f"restart {restart}: /health after {health:.2f} s, /ready after {ready:.2f} s, "
                    f"first rental committed {commit:.2f} s after the spawn",
                    flush=True,
                )
        finally:
            done.set()
            processes.stop_pid(pid, timeout=30)
            engine.dispose()
        print(
            f"conditions: the scorer SIGKILLed while scoring {args.rate:,.0f} rentals/s and spawned again at once "
            f"(same instance id); {os.cpu_count()} CPU cores; {settings.kafka.topic_partitions} partitions; "
            f"session timeout "
            f"{settings.kafka.session_timeout_ms / 1000:g} s"
        )
        for name, column in (("/health", 0), ("/ready", 1), ("first commit", 2)):
            print(f"median {name}: {statistics.median(t[column] for t in timings):.2f} s after the spawn")


def measure(url: str, engine, spawned_at: float, spawned: datetime) -> tuple[float, float, float]:
    """Seconds from the spawn to /health, /ready and the first committed rental."""
    marks: dict[str, float] = {}
    deadline = spawned_at + 120
    while not {"ready", "commit"} <= marks.keys() and time.monotonic() < deadline:
        for route in ("health", "ready"):
            if route not in marks:
                try:
                    if httpx.get(f"{url}/{route}", timeout=1).is_success:
                        marks[route] = time.monotonic() - spawned_at
                except httpx.HTTPError:
                    pass
        if "commit" not in marks:
            with engine.connect() as conn:
                first = conn.execute(FIRST_COMMIT_SQL, {"spawned": spawned}).scalar()
            if first is not None:
                marks["commit"] = first.timestamp() - spawned.timestamp()
        time.sleep(0.05)
    if "commit" not in marks:
        raise TimeoutError("the restarted scorer committed nothing within 120 s")
    return marks.get("health", float("nan")), marks.get("ready", float("nan")), marks["commit"]


if __name__ == "__main__":
    main()
