"""Drift monitor throughput through the broker: one pass of the simulated stream, as the
scorer would have published it, consumed and fed to every signal by `rentalstream monitor`.

    python benchmarks/monitor_throughput.py [--keep-home]

Starts a fresh embedded stack in a temporary home, trains the champion (its reference is
what the monitor loads), starts the monitor and waits until it is ready, then publishes
the monitored messages of one clean pass (the rentals, their prices and delay facts, the
price requests' prices: see benchmarks/drift_detectors.py) as fast as possible onto
`rentals`, `prices` and `delays`, and prints the messages per second from the first
publish to the last message the monitor counted (its /metrics), with the monitor's peak
RSS. No scorer runs: the monitor has the machine to itself, with the broker and
PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from itertools import islice

import httpx
from against import parse_or_compare
from bench_stack import fresh_stack
from drift_detectors import EVENTS, monitored_stream
from replay_throughput import PeakRss

from answers.drift_states import signal_states
from producers.publishing import publish_paced
from producers.simulator import Simulator
from rentalstream import services
from runtime.registry import Registry

FIGURES = r"^(conditions|published|monitored|monitor peak)"  # the lines --against sets side by side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary stack folder")
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return
    with fresh_stack((services.MONITOR,), keep_home=args.keep_home) as (settings, state):
        simulator = Simulator.from_data_dir(settings.data_dir, run_id="bench")
        registry = Registry.of(settings)
        booster = registry.load_lightgbm(registry.champion(settings.registry.champion_alias)).booster_
        messages = [
            (topic, _key(message), message)
            for _, topic, message in monitored_stream(list(islice(simulator.events(), EVENTS)), booster)
        ]
        monitor = state["services"]["monitor"]
        peak_rss = PeakRss(monitor["pid"])
        started = time.time()
        stats = asyncio.run(
            publish_paced(settings.resolved_kafka_bootstrap(), messages, batch_size=settings.replay.batch_size)
        )
        while (counted := monitored(monitor["url"])) < len(messages):
            time.sleep(0.05)
        finished = time.time()
        peak_rss.stop()
        print(
            f"conditions: {len(messages):,} messages ({EVENTS:,} simulated events), {os.cpu_count()} CPU cores "
            f"shared by broker, PostgreSQL, publisher and monitor; {settings.kafka.topic_partitions} partitions; "
            f"batches of up to {settings.monitor.max_records}; {settings.monitor.detector} "
            f"({settings.monitor.detector_setting:g}) on every signal"
        )
        print(f"published:           {stats.events_per_second:>10,.0f} messages/s ({stats.seconds:.2f} s)")
        print(
            f"monitored:           {counted / (finished - started):>10,.0f} messages/s "
            f"({finished - started:.2f} s from first publish to last message counted)"
        )
        print(f"monitor peak RSS:    {peak_rss.peak / 2**20:>10,.0f} MiB")
        alerts = [s["signal"] for s in signal_states(settings.resolved_database_url()) if s["last_alert_id"]]
        print(f"signals that alerted (false alarms: nothing was shifted): {len(alerts)} {alerts}")


def _key(message) -> str:
    return str(getattr(message, "car_id", None) or getattr(message, "price_id", ""))


def monitored(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return int(
        sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("rentalstream_monitor_events_total{")
        )
    )


if __name__ == "__main__":
    main()
