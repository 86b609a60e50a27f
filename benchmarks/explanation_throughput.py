"""The scorer's throughput on price requests, with explanations off and on, in one run.

    python benchmarks/explanation_throughput.py [--requests N] [--shares 0,0.1,1] [--against REF]

Starts a fresh embedded stack with the scorer alone (``bench_stack.fresh_stack``), warms
it up (one rental, the compiled trees), then for each share of requests that ask
``explain``: publishes N price requests straight onto ``price-requests`` (one car each,
the pricing file's listings in order, as fast as the broker takes them) and waits until
the scorer has committed every answer to Postgres. It prints, per share, the requests
scored and committed per second (first publish → last answer stored) and the scorer's
CPU seconds meanwhile. Rentals are never explained (docs/decisions.md, "Prices explained
on demand"): a share of 0 is the scorer as every replay runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

from against import parse_or_compare
from bench_stack import add_broker_option, cpu_seconds, fresh_stack, warm_up
from sqlalchemy import create_engine, text

from producers.car_profiles import read_profile_pool
from producers.publishing import publish_paced
from producers.replay import rental_events
from rentalstream import services
from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path
from runtime.settings import normalised_database_url
from schemas.events import PriceRequest
from schemas.topics import PRICE_REQUESTS

# A request's log row and its answer are stored in one transaction; stored_at is the write's clock.
ANSWERED_SQL = text("SELECT count(*) AS n, max(stored_at) AS last FROM price_requests WHERE request_id LIKE :prefix")
FIGURES = r"^(explain share|conditions)"
TIMEOUT_SECONDS = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="price requests per share (default 2,000)")
    parser.add_argument(
        "--shares", default="0,0.1,1", help="shares of the requests that ask explain=true (default 0,0.1,1)"
    )
    add_broker_option(parser)
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return
    shares = [float(share) for share in args.shares.split(",")]

    with fresh_stack((services.SCORER,), broker=args.broker) as (settings, state):
        scorer_pid = state["services"]["scorer"]["pid"]
        pricing = dataset_path(PRICING_CSV, settings.data_dir)
        cars = [car for car, _ in read_profile_pool(pricing)]
        warm_up(
            settings,
            rental_events(dataset_path(DELAYS_XLSX, settings.data_dir), pricing, limit=1)[0],
            scorer_pid,
            [state["services"]["scorer"]["url"]],
        )
        time.sleep(2)
        engine = create_engine(normalised_database_url(settings.resolved_database_url()))
        bootstrap = settings.resolved_kafka_bootstrap()
        print(
            f"conditions: {args.requests:,} price requests of one car per share, published as fast as possible; "
            f"{os.cpu_count()} CPU cores shared by the broker, PostgreSQL, MLflow, the publisher and the scorer; "
            f"{settings.kafka.topic_partitions} partitions; batches of up to {settings.scorer.max_records}; "
            "prices from the compiled trees, explanations from LightGBM's pred_contrib"
        )
        for share in shares:
            prefix = f"bench-{uuid.uuid4().hex[:8]}-"
            asking = round(args.requests * share)
            requests = [
                PriceRequest(request_id=f"{prefix}{i}", car=cars[i % len(cars)], explain=i < asking)
                for i in range(args.requests)
            ]
            cpu_before = cpu_seconds({"scorer": scorer_pid})["scorer"]
            started = time.time()
            asyncio.run(publish_paced(bootstrap, [(PRICE_REQUESTS.name, r.request_id, r) for r in requests]))
            answered, last = 0, None
            deadline = time.monotonic() + TIMEOUT_SECONDS
            while answered < len(requests):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{answered:,} of {len(requests):,} requests answered in {TIMEOUT_SECONDS} s")
                time.sleep(0.2)
                with engine.connect() as conn:
                    answered, last = conn.execute(ANSWERED_SQL, {"prefix": f"{prefix}%"}).one()
            seconds = last.timestamp() - started
            cpu = cpu_seconds({"scorer": scorer_pid})["scorer"] - cpu_before
            print(
                f"explain share {share:>4.0%}: {len(requests) / seconds:>8,.0f} requests/s scored and committed "
                f"({seconds:.2f} s; {asking:,} explained); scorer CPU {cpu:.1f} s"
            )
        engine.dispose()


if __name__ == "__main__":
    main()
