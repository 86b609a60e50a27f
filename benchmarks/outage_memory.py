"""The scorer's memory while PostgreSQL is away: does it grow without bound?

    python benchmarks/outage_memory.py [--outage-seconds 300] [--rate 1500] [--plot PATH]

Starts a fresh embedded stack with the scorer alone, waits until it prices with the
compiled trees, replays the delay history at ``--rate`` events/s, stops PostgreSQL
once 3,000 rentals are stored, keeps it down for ``--outage-seconds`` while sampling
the scorer's resident memory every second, then starts it again and waits until every
rental is stored. Prints the RSS at every tenth of the outage, the growth per minute
over its second half (a least-squares slope), and writes the whole series as a PNG.

During the outage the scorer retries its batch write with backoff, gives the batch
back to Kafka, is handed it again, and so on: any memory kept per attempt shows up
here as a steady slope.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from contextlib import suppress
from pathlib import Path

import numpy as np
import psutil
from against import parse_or_compare
from bench_stack import fresh_stack, wait_until_compiled
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from producers.replay import publish_events, rental_events
from rentalstream import embedded, services
from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path
from runtime.settings import normalised_database_url

FIGURES = r"^(conditions|scorer RSS|growth)"  # the lines --against sets side by side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-seconds", type=float, default=300)
    parser.add_argument("--rate", type=float, default=1500, help="replay rate, events/s")
    parser.add_argument("--plot", type=Path, default=Path("outage_memory.png"), help="where the PNG goes")
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return

    with fresh_stack((services.SCORER,)) as (settings, state):
        scorer = state["services"]["scorer"]
        wait_until_compiled(scorer["url"])
        events = rental_events(
            dataset_path(DELAYS_XLSX, settings.data_dir), dataset_path(PRICING_CSV, settings.data_dir)
        )
        bootstrap, url = settings.resolved_kafka_bootstrap(), settings.resolved_database_url()
        replay = threading.Thread(target=lambda: asyncio.run(publish_events(bootstrap, events, rate=args.rate)))
        replay.start()
        wait_for_rows(url, 3000)

        pgdata, system_user = Path(state["postgres"]["pgdata"]), state["postgres"]["system_user"]
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        process = psutil.Process(scorer["pid"])
        rss_before = process.memory_info().rss
        embedded.stop_postgres(pgdata, system_user, mode="immediate")
        down_at = time.monotonic()
        series: list[tuple[float, float]] = []  # (seconds into the outage, MiB)
        while (elapsed := time.monotonic() - down_at) < args.outage_seconds:
            series.append((elapsed, process.memory_info().rss / 2**20))
            time.sleep(1)
        embedded.start_postgres(pgdata, port)
        replay.join()
        back_at = time.monotonic()
        wait_for_rows(url, len(events))
        caught_up = time.monotonic() - back_at

    seconds, mib = np.array(series).T
    second_half = seconds >= args.outage_seconds / 2
    slope_per_minute = np.polyfit(seconds[second_half], mib[second_half], 1)[0] * 60
    print(
        f"conditions: scorer alone, {len(events):,} rentals replayed at {args.rate:,.0f}/s, PostgreSQL stopped "
        f"(immediate) after 3,000 were stored, for {args.outage_seconds:.0f} s; RSS sampled every second"
    )
    print(f"scorer RSS before the outage: {rss_before / 2**20:,.1f} MiB")
    for fraction in np.linspace(0, 1, 11):
        index = min(int(fraction * (len(series) - 1)), len(series) - 1)
        print(f"  {seconds[index]:6.0f} s into the outage: {mib[index]:7.1f} MiB")
    print(
        f"growth over the second half: {slope_per_minute:+.2f} MiB/min (least squares); "
        f"peak {mib.max():,.1f} MiB; caught up {caught_up:.1f} s after PostgreSQL returned"
    )
    plot(seconds, mib, rss_before / 2**20, args.plot)
    print(f"plot: {args.plot.resolve()}")


def wait_for_rows(url: str, expected: int, timeout: float = 600) -> None:
    engine = create_engine(normalised_database_url(url))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with suppress(OperationalError), engine.connect() as conn:  # the server may be starting again
                if conn.execute(text("SELECT count(*) FROM rentals")).scalar_one() >= expected:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"fewer than {expected:,} rentals stored after {timeout:.0f} s")
    finally:
        engine.dispose()


def plot(seconds: np.ndarray, mib: np.ndarray, before: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4))
    axes.plot(seconds, mib, label="scorer RSS during the outage")
    axes.axhline(before, linestyle="--", color="grey", label="before the outage")
    axes.set_xlabel("seconds since PostgreSQL stopped")
    axes.set_ylabel("MiB")
    axes.set_title("Scorer memory while the database is away")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
