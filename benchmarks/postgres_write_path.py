"""The scorer's Postgres write path on each driver: psycopg 3 against asyncpg.

    python benchmarks/postgres_write_path.py [--rounds N] [--limit N] [--batch N]

Starts an embedded PostgreSQL in a temporary folder and writes the replay's rentals
with ``scorer.store.write_rental_batch`` (cars, rentals, prices and delay facts upserted
in one transaction per batch, as the scorer does), through an engine on each driver:

- ``psycopg``: SQLAlchemy on psycopg 3, binary COPY written row by row from Python;
- ``asyncpg``: SQLAlchemy on asyncpg, ``copy_records_to_table`` (binary, its encoders
  compiled).

Everything else (the staging table, the ``INSERT … ON CONFLICT`` from it, the delay
lookups) is the same statement on both. Each round writes the history twice per driver:
into empty tables (``fresh``), then over itself (``again``: every row a conflict, as on
redelivery). The drivers alternate ABBA across rounds. It prints, per driver and case, the
median over rounds of: milliseconds per batch, this process's CPU per row (the scorer's
share) and the server's CPU per row.

The prices are a fixed function of the car, not a model: the write path is what is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench_stack import cpu_seconds
from sqlalchemy import text

from producers.replay import rental_events
from rentalstream.embedded import start_postgres, stop_postgres
from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path
from runtime.postgres.engines import async_engine, upgrade
from runtime.postgres.upsert import upsert
from runtime.settings import Settings
from schemas import tables
from schemas.events import RentalEvent
from scorer.scoring import price_scored
from scorer.store import _fields, write_rental_batch

DRIVERS = ("psycopg", "asyncpg")


class FixedPricer:
    name = "benchmark"
    version = "1"
    interval = None

    def price_per_day(self, cars):
        return [round(50 + car.engine_power / 10, 2) for car in cars]


def batches(events: list[RentalEvent], size: int):
    pricer = FixedPricer()
    scored_at = datetime.now(UTC)
    for start in range(0, len(events), size):
        chunk = events[start : start + size]
        prices = [
            price_scored(
                price_id=f"rental-{e.rental_id}",
                price=p,
                car=e.car,
                model=pricer,
                event_time=e.event_time,
                scored_at=scored_at,
                rental_id=e.rental_id,
                car_id=e.car_id,
            )
            for e, p in zip(chunk, pricer.price_per_day([e.car for e in chunk]), strict=True)
        ]
        yield [(e, 0, start + i) for i, e in enumerate(chunk)], prices, scored_at


async def write_all(url: str, driver: str, work: list, server_pid: int) -> dict[str, float]:
    engine = async_engine(url, driver=driver)
    try:
        async with engine.connect() as conn:  # connect (and the staging table) outside the timing
            await conn.execute(text("SELECT 1"))
        figures = {}
        for case in ("fresh", "again", "prices only"):
            rows = sum(len(rentals) for rentals, _, _ in work)
            server_before = cpu_seconds({"postgres": server_pid})["postgres"]
            cpu_before = time.process_time()
            started = time.perf_counter()
            for rentals, prices, scored_at in work:
                if case == "prices only":  # the COPY and the INSERT … ON CONFLICT alone
                    async with engine.begin() as conn:
                        await upsert(conn, tables.prices, "price_id", [_fields(p) for p in prices])
                else:
                    await write_rental_batch(engine, rentals, prices, [], scored_at)
            wall = time.perf_counter() - started
            figures[f"{case} ms/batch"] = wall * 1000 / len(work)
            figures[f"{case} client µs/row"] = (time.process_time() - cpu_before) * 1e6 / rows
            figures[f"{case} server µs/row"] = (
                (cpu_seconds({"postgres": server_pid})["postgres"] - server_before) * 1e6 / rows
            )
        return figures
    finally:
        await engine.dispose()


def empty_tables(url: str) -> None:
    async def run() -> None:
        engine = async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE cars, rentals, prices, delays"))
        await engine.dispose()

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds; the drivers alternate ABBA (default 4)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rentals of the history")
    parser.add_argument("--batch", type=int, default=2000, help="rentals per transaction (the scorer's default)")
    args = parser.parse_args()

    os.environ.setdefault("RENTALSTREAM_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    settings = Settings()
    events = rental_events(
        dataset_path(DELAYS_XLSX, settings.data_dir), dataset_path(PRICING_CSV, settings.data_dir), args.limit
    )
    work = list(batches(events, args.batch))
    results: dict[str, list[dict[str, float]]] = {driver: [] for driver in DRIVERS}
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as folder:
        server = start_postgres(Path(folder) / "pgdata")
        try:
            upgrade(server.url)
            for round_number in range(args.rounds):
                order = DRIVERS if round_number % 2 == 0 else DRIVERS[::-1]
                for driver in order:
                    empty_tables(server.url)
                    results[driver].append(asyncio.run(write_all(server.url, driver, work, server.pid)))
                    print(f"round {round_number + 1}/{args.rounds} {driver}: done", file=sys.stderr, flush=True)
        finally:
            stop_postgres(server.pgdata, server.system_user)

    print(
        f"conditions: {len(events):,} rentals in {len(work)} transactions of up to {args.batch:,}; "
        f"{os.cpu_count()} CPU cores; embedded PostgreSQL on 127.0.0.1; median of {args.rounds} rounds, "
        "drivers alternating ABBA"
    )
    keys = list(results[DRIVERS[0]][0])
    print(f"{'':24}" + "".join(f"{driver:>12}" for driver in DRIVERS) + f"{'ratio':>10}")
    for key in keys:
        medians = [statistics.median(r[key] for r in results[driver]) for driver in DRIVERS]
        print(f"{key:24}" + "".join(f"{m:>12.1f}" for m in medians) + f"{medians[1] / medians[0]:>10.2f}")


if __name__ == "__main__":
    main()
