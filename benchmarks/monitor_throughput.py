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
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import httpx
from drift_detectors import EVENTS, monitored_stream
from replay_throughput import PeakRss

from producers.car_profiles import read_profile_pool
from producers.publishing import publish_paced
from producers.replay import rental_events
from producers.simulator import Simulator
from rentalstream import embedded, services, stack
from rentalstream.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path
from rentalstream.drift_report import signal_states
from rentalstream.settings import Settings
from scorer.pricing import PriceModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary stack folder")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="rentalstream-bench-"))
    os.environ.setdefault("RENTALSTREAM_HOME", str(home))
    os.environ.setdefault("RENTALSTREAM_MONITOR_PORT", str(embedded.free_port()))
    settings = Settings()
    stack.up(settings)
    monitor = None
    try:
        env = {**os.environ, "RENTALSTREAM_LOG_LEVEL": "WARNING"}
        subprocess.run([sys.executable, "-m", "rentalstream.cli", "train", "--if-no-champion"],
                       env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        pricing_csv = dataset_path(PRICING_CSV, settings.data_dir)
        simulator = Simulator(rental_events(dataset_path(DELAYS_XLSX, settings.data_dir), pricing_csv),
                              read_profile_pool(pricing_csv), run_id="bench")  # fmt: skip
        model = PriceModel.load(settings.resolved_mlflow_tracking_uri(), settings.model_name)
        messages = [
            (topic, _key(message), message)
            for _, topic, message in monitored_stream(list(islice(simulator.events(), EVENTS)), model.model.booster_)
        ]
        monitor = subprocess.Popen([sys.executable, "-m", "rentalstream.cli", "monitor"], env=env)
        url = f"http://{settings.monitor_host}:{settings.monitor_port}"
        services.wait_ready("monitor", f"{url}/ready", monitor.pid, time.monotonic() + 120)
        peak_rss = PeakRss(monitor.pid)
        started = time.time()
        stats = asyncio.run(publish_paced(settings.resolved_kafka_bootstrap(), messages,
                                          batch_size=settings.replay_batch_size))  # fmt: skip
        while (counted := monitored(url)) < len(messages):
            time.sleep(0.05)
        finished = time.time()
        peak_rss.stop()
        print(f"conditions: {len(messages):,} messages ({EVENTS:,} simulated events), {os.cpu_count()} CPU cores "
              f"shared by broker, PostgreSQL, publisher and monitor; {settings.topic_partitions} partitions; "
              f"batches of up to {settings.scorer_max_records}; {settings.monitor_detector} "
              f"({settings.monitor_detector_setting:g}) on every signal")
        print(f"published:           {stats.events_per_second:>10,.0f} messages/s ({stats.seconds:.2f} s)")
        print(f"monitored:           {counted / (finished - started):>10,.0f} messages/s "
              f"({finished - started:.2f} s from first publish to last message counted)")
        print(f"monitor peak RSS:    {peak_rss.peak / 2**20:>10,.0f} MiB")
        alerts = [s["signal"] for s in signal_states(settings.resolved_database_url()) if s["last_alert_id"]]
        print(f"signals that alerted (false alarms: nothing was shifted): {len(alerts)} {alerts}")
    finally:
        if monitor is not None:
            monitor.terminate()
            monitor.wait(30)
        stack.down(settings)
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)


def _key(message) -> str:
    return str(getattr(message, "car_id", None) or getattr(message, "price_id", ""))


def monitored(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return int(sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("rentalstream_monitor_events_total{")))  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("RENTALSTREAM_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    main()
