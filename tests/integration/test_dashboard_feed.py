"""The dashboard's live feed against the real broker and PostgreSQL: seeded from the
tables on start, then following the result topics into bounded buffers, and re-reading
the aggregates while messages arrive."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry.trace import SpanKind
from sqlalchemy import insert

from dashboard.feed import CONTRACTS, RATE_WINDOW_SECONDS, LiveFeed
from dashboard.metrics import DashboardMetrics
from runtime.postgres.engines import async_engine
from runtime.postgres.upsert import insert_dead_letters
from schemas import tables
from schemas.events import DeadLetter, DelayScored, DriftAlert, PriceScored, WindowStats

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def delay_row(rental_id, checkin_type, state, gap, conflict, delay=10, waiting=None):
    return {
        "rental_id": rental_id,
        "car_id": rental_id % 7 + 1,
        "checkin_type": checkin_type,
        "state": state,
        "delay_at_checkout_minutes": delay,
        "is_late": None if delay is None else delay > 0,
        "previous_ended_rental_id": None if gap is None else rental_id + 1000,
        "planned_gap_minutes": gap,
        "previous_delay_minutes": None if gap is None else gap + (waiting or 0),
        "waiting_minutes": waiting,
        "is_conflict": conflict,
        "event_time": T0,
        "scored_at": T0,
    }


def price(rental_id, euros, latency_ms=40.0, version="1"):
    return PriceScored(
        price_id=f"rental-{rental_id}",
        rental_id=rental_id,
        car_id=rental_id % 7 + 1,
        price_per_day=euros,
        model_name="rentalstream-price",
        model_version=version,
        event_time=T0,
        scored_at=T0 + timedelta(milliseconds=latency_ms),
    )


def delay_fact(row) -> DelayScored:
    return DelayScored(**{k: v for k, v in row.items()})


async def wait_until(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_feed_seeds_from_postgres_then_follows_the_topics(clean_database, kafka_bootstrap):
    asyncio.run(_scenario(clean_database, kafka_bootstrap))


async def _scenario(database_url, bootstrap):
    engine = async_engine(database_url, pool_size=2)
    stored = [
        delay_row(1, "mobile", "ended", 0, True, waiting=25),
        delay_row(2, "connect", "ended", 30, False),
        delay_row(3, "connect", "canceled", 30, True, waiting=5),
        delay_row(4, "mobile", "ended", None, None, delay=-20),
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(tables.delays), stored)
        await conn.execute(
            insert(tables.prices),
            [
                {**price(i, e).model_dump(), "unknown_fields": []}
                for i, e in [(1, 100.0), (2, 80.0), (3, 60.0), (4, 50.0)]
            ],
        )

    metrics = DashboardMetrics()
    feed = LiveFeed(bootstrap, engine, group_id="dashboard-test", buffer_rows=3, aggregate_seconds=0.2, metrics=metrics)
    following = asyncio.create_task(feed.run())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await wait_until(lambda: feed.ready, "the feed to hold its partitions")
        seeded = feed.snapshot()
        # Seeded from the tables: the totals, the groups of the simulator, the newest rows.
        assert seeded.aggregates.totals["rentals"] == 4
        assert seeded.aggregates.totals["late_returns"] == 3 and seeded.aggregates.totals["conflicts"] == 2
        groups = {(g.checkin_type, g.planned_gap_minutes): g for g in seeded.aggregates.gap_groups}
        assert (groups[("connect", 30)].rentals, groups[("connect", 30)].conflicts) == (2, 1)
        assert groups[("connect", 30)].ended_revenue_per_day == 80.0  # the canceled rental earns nothing
        assert groups[("mobile", None)].rentals == 1
        assert {row["rental_id"] for row in seeded.conflicts} == {1, 3}
        assert seeded.model == "rentalstream-price v1" and seeded.prices_seen == 0

        # Live: prices with their latency, a conflict, an alert, a dead letter, and one
        # message nobody could read. The buffers keep the newest 3 rows, newest first.
        for rental_id in range(10, 15):
            await producer.send(
                "prices",
                price(rental_id, 90.0 + rental_id, latency_ms=rental_id * 10, version="2").model_dump_json().encode(),
                key=b"one partition, in order",
            )
        await producer.send("prices", b"{not json")
        conflict = delay_row(20, "connect", "ended", 60, True, waiting=45)
        await producer.send("delays", delay_fact(conflict).model_dump_json().encode())
        await producer.send(
            "delays", delay_fact(delay_row(21, "mobile", "ended", None, None)).model_dump_json().encode()
        )
        stats = WindowStats(n=100, mean=1.0, std=0.1)
        alert = DriftAlert(
            alert_id="rentals/mileage@rentals/0/99",
            signal="rentals/mileage",
            detector="ADWIN(delta=0.0001)",
            state="drifting",
            before=stats,
            after=WindowStats(n=50, mean=2.0, std=0.2),
            reference=stats,
            events_seen=150,
            triggered_by="99",
            model_name="rentalstream-price",
            model_version="2",
            event_time=T0,
            detected_at=T0,
        )
        await producer.send("drift", alert.model_dump_json().encode())
        letter = DeadLetter(
            dead_letter_id="rentals/1/7/scorer",
            topic="rentals",
            partition=1,
            offset=7,
            key="5",
            raw_value=b"\x00bad",
            reason="invalid JSON",
            consumer="scorer",
            received_at=T0,
        )
        await producer.send("dead-letters", letter.model_dump_json().encode())
        await producer.flush()

        await wait_until(lambda: feed.snapshot().prices_seen == 5 and feed.snapshot().dead_letters, "the live messages")
        # The rate and percentiles, as of the moment the last prices arrived (so however
        # long this machine took to get here), and once they have left the window.
        arrived = feed.recent[-1][0]
        live = feed.snapshot(now=arrived)
        assert [row["rental_id"] for row in live.prices] == [14, 13, 12]
        assert live.model == "rentalstream-price v2"
        assert live.latency_p50_ms == pytest.approx(120.0) and live.latency_p99_ms == pytest.approx(139.6)
        assert live.events_per_second == pytest.approx(5 / RATE_WINDOW_SECONDS)
        later = feed.snapshot(now=arrived + RATE_WINDOW_SECONDS + 0.001)
        assert later.events_per_second == 0 and later.latency_p50_ms is None
        assert [row["rental_id"] for row in live.conflicts] == [20, 3, 1]  # rental 21 waited for nobody
        assert live.conflicts[0]["waiting_minutes"] == 45
        assert live.alerts[0]["signal"] == "rentals/mileage" and live.alerts[0]["after_mean"] == 2.0
        assert live.dead_letters[0]["reason"] == "invalid JSON" and live.dead_letters[0]["size_bytes"] == 4
        assert metrics.unreadable.labels("prices")._value.get() == 1

        # The aggregates are re-read from Postgres once messages came in.
        async with engine.begin() as conn:
            await conn.execute(insert(tables.delays), [conflict])
        before = live.aggregates
        await producer.send("delays", delay_fact(conflict).model_dump_json().encode())
        await producer.flush()
        await wait_until(lambda: feed.snapshot().aggregates.totals["rentals"] == 5, "the aggregates to be re-read")
        assert feed.snapshot().aggregates is not before and feed.snapshot().aggregates.totals["conflicts"] == 3
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await producer.stop()
        await engine.dispose()


def test_the_feed_joins_the_trace_its_records_carry(clean_database, kafka_bootstrap, exported_spans):
    asyncio.run(_traced_scenario(clean_database, kafka_bootstrap))
    spans = exported_spans.get_finished_spans()
    # One span per batch of the traced records (however the broker hands them over), all
    # in the publisher's trace, under its span; the untraced price makes none of its own.
    assert spans and {(s.name, s.kind) for s in spans} == {("prices process", SpanKind.CONSUMER)}
    assert {(f"{s.context.trace_id:032x}", f"{s.parent.span_id:016x}") for s in spans} == {(TRACE_ID, PARENT_ID)}


TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


async def _traced_scenario(database_url, bootstrap):
    engine = async_engine(database_url, pool_size=2)
    feed = LiveFeed(
        bootstrap, engine, group_id="traced-dashboard", buffer_rows=10, aggregate_seconds=5, metrics=DashboardMetrics()
    )
    following = asyncio.create_task(feed.run())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await wait_until(lambda: feed.ready, "the feed to hold its partitions")
        traceparent = [("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01".encode())]
        for rental_id in (1, 2, 3):
            body = price(rental_id, 50.0).model_dump_json().encode()
            await producer.send("prices", body, key=b"one partition", headers=traceparent)
        await producer.send("prices", price(4, 50.0).model_dump_json().encode(), key=b"one partition")
        await producer.flush()
        await wait_until(lambda: feed.prices_seen == 4, "the feed to take the four prices")
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await producer.stop()
        await engine.dispose()


def letter(n: int) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=f"rentals/0/{n}/scorer",
        topic="rentals",
        partition=0,
        offset=n,
        key=str(n),
        raw_value=b"{not json",
        reason="invalid JSON",
        consumer="scorer",
        received_at=T0 + timedelta(seconds=n),
    )


async def send_letters(producer: AIOKafkaProducer, numbers) -> None:
    for n in numbers:  # keyed by number: spread over every partition of dead-letters
        await producer.send("dead-letters", letter(n).model_dump_json().encode(), key=str(n).encode())
    await producer.flush()


def test_a_rebalance_costs_the_feed_no_row_and_a_stored_row_shows_once(clean_database, kafka_bootstrap):
    """A second dashboard replica joining and leaving the group (a rolling deploy) takes
    partitions from the feed and gives them back: what was published to them meanwhile
    still shows. A dead letter stored before the feed started, then consumed as well,
    shows once."""
    asyncio.run(_rebalance_scenario(clean_database, kafka_bootstrap))


async def _rebalance_scenario(database_url, bootstrap):
    engine = async_engine(database_url, pool_size=2)
    async with engine.begin() as conn:
        await insert_dead_letters(conn, [letter(0)])
    group = "dashboard-rebalance"
    feed = LiveFeed(
        bootstrap, engine, group_id=group, buffer_rows=100, aggregate_seconds=0.2, metrics=DashboardMetrics()
    )
    following = asyncio.create_task(feed.run())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    replica = AIOKafkaConsumer(*CONTRACTS, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    shown = lambda: [row["dead_letter_id"] for row in feed.snapshot().dead_letters]
    try:
        await wait_until(lambda: feed.ready, "the feed to hold its partitions")
        every_partition = set(feed.consumer.assignment())
        assert shown() == [letter(0).dead_letter_id]
        await send_letters(producer, range(6))  # letter 0 again: published after it was stored
        await wait_until(lambda: len(shown()) >= 6, "the first letters")

        await replica.start()
        while not replica.assignment():
            await replica.getmany(timeout_ms=200)
        await wait_until(lambda: feed.positioned and set(feed.consumer.assignment()) < every_partition, "a rebalance")
        await send_letters(producer, range(6, 30))  # some to the partitions the replica holds
        await replica.stop()  # it leaves the group: the feed takes its partitions back
        await wait_until(lambda: set(feed.consumer.assignment()) == every_partition, "the partitions back")

        await wait_until(lambda: len(shown()) >= 30, "every letter", timeout=20)
        assert sorted(shown()) == sorted(letter(n).dead_letter_id for n in range(30))
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await replica.stop()
        await producer.stop()
        await engine.dispose()
