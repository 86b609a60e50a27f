"""Replay throughput: the whole delay history through broker → scorer → Postgres.

    python benchmarks/replay_throughput.py [--limit N] [--keep-home]

Starts a fresh embedded stack in a temporary home (``bench_stack.fresh_stack``), trains
the champion, starts `rentalstream scorer` (and nothing else), waits until one warm-up event is stored (so the consumer group is assigned
and the model loaded), then replays the history as fast as possible and prints:

- events/s published (replay start → last ack),
- events/s scored and committed (first publish → last row committed),
- time from the last event published to the last row committed,
- p50/p99 event-to-commit latency (event time set at send; commit time from
  PostgreSQL's clock_timestamp(); same machine, same clock),
- peak RSS of the scorer process,

with the conditions (CPU count, partitions, batch size, dataset rows).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time

import psutil
from bench_stack import fresh_stack
from sqlalchemy import create_engine, text

from producers.replay import publish_events, rental_events
from rentalstream import services
from rentalstream.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path
from rentalstream.db import psycopg_url
from rentalstream.demo import wait_until_scored
from schemas.events import utc_now

LATENCY_SQL = text("""
    SELECT count(*) AS n,
           max(stored_at) AS last_commit,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - event_time)) AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - event_time)) AS p99
    FROM rentals WHERE event_time >= :since
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N rows")
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary stack folder")
    args = parser.parse_args()

    with fresh_stack((services.SCORER,), keep_home=args.keep_home) as (settings, state):
        scorer_pid = state["services"]["scorer"]["pid"]
        events = rental_events(
            dataset_path(DELAYS_XLSX, settings.data_dir),
            dataset_path(PRICING_CSV, settings.data_dir),
            limit=args.limit,
        )
        engine = create_engine(psycopg_url(settings.resolved_database_url()))
        bootstrap = settings.resolved_kafka_bootstrap()

        warm_up_since = utc_now()
        asyncio.run(publish_events(bootstrap, events[:1]))
        wait_until_scored(settings, warm_up_since, 1, scorer_pid)

        peak_rss = PeakRss(scorer_pid)
        since = utc_now()
        started = time.time()
        stats = asyncio.run(publish_events(bootstrap, events, batch_size=settings.replay_batch_size))
        last_published = started + stats.seconds
        wait_until_scored(settings, since, len(events), scorer_pid)
        with engine.connect() as conn:
            row = conn.execute(LATENCY_SQL, {"since": since}).one()
        peak_rss.stop()
        engine.dispose()

        last_commit = row.last_commit.timestamp()
        cores = os.cpu_count()
        print(f"conditions: {len(events)} rentals, {cores} CPU cores shared by broker, PostgreSQL, "
              f"scorer and replay; {settings.topic_partitions} partitions; scorer batches of up to "
              f"{settings.scorer_max_records}; broker {bootstrap}")  # fmt: skip
        print(f"published:               {stats.events_per_second:>10,.0f} events/s ({stats.seconds:.2f} s)")
        print(f"scored and committed:    {len(events) / (last_commit - started):>10,.0f} events/s "
              f"({last_commit - started:.2f} s from first publish to last commit)")  # fmt: skip
        print(f"last publish → last commit: {last_commit - last_published:>7.2f} s")
        print(f"event-to-commit latency: p50 {row.p50 * 1000:,.0f} ms, p99 {row.p99 * 1000:,.0f} ms")
        print(f"scorer peak RSS:         {peak_rss.peak / 2**20:>10,.0f} MiB")


class PeakRss:
    """Samples a process's resident memory every 50 ms in a background thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.NoSuchProcess:
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


if __name__ == "__main__":
    main()
