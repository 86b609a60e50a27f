"""The scorer under faults, against the real broker and PostgreSQL: SIGKILL three times
during a replay of the whole history, and SIGTERM in the middle of one. Whatever happens,
Postgres ends up holding every rental exactly once, with the values of a run that was
never interrupted."""

import asyncio
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import create_engine, text

from producers.replay import publish_events, rental_events
from rentalstream import services
from rentalstream.db import psycopg_url
from rentalstream.embedded import free_port
from tests.helpers import spawn

pytestmark = pytest.mark.reliability
TABLES = "cars, rentals, prices, price_requests, delays, dead_letters"
# What a run stores, without the columns that say when it was stored.
SNAPSHOT_SQL = {
    "rentals": "SELECT rental_id, car_id, checkin_type, state, delay_at_checkout_minutes, previous_ended_rental_id, "
               "planned_gap_minutes, event_time, kafka_partition, kafka_offset FROM rentals ORDER BY rental_id",
    "prices": "SELECT price_id, rental_id, car_id, price_per_day, model_name, model_version, event_time "
              "FROM prices ORDER BY price_id",
    "delays": "SELECT rental_id, is_late, previous_delay_minutes, waiting_minutes, is_conflict, event_time "
              "FROM delays ORDER BY rental_id",
    "cars": "SELECT * FROM cars ORDER BY car_id",
}  # fmt: skip


def snapshot(url: str) -> dict[str, pd.DataFrame]:
    engine = create_engine(psycopg_url(url))
    with engine.connect() as conn:
        frames = {name: pd.read_sql(text(sql), conn) for name, sql in SNAPSHOT_SQL.items()}
        frames["cars"] = frames["cars"].drop(columns="updated_at")
        frames["dead_letters"] = pd.read_sql(text("SELECT * FROM dead_letters"), conn)
    engine.dispose()
    return frames


def stored_rentals(url: str) -> int:
    engine = create_engine(psycopg_url(url))
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM rentals")).scalar_one()
    engine.dispose()
    return count


def truncate(url: str) -> None:
    engine = create_engine(psycopg_url(url))
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES}"))
    engine.dispose()


class Scorer:
    """`rentalstream scorer` as a child process that the test can kill and restart."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.url = f"http://127.0.0.1:{env['RENTALSTREAM_SCORER_PORT']}"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.process = spawn("scorer", self.env, self.log)
        self.starts += 1

    def wait_ready(self) -> None:
        services.wait_ready("scorer", f"{self.url}/ready", self.process.pid, time.monotonic() + 120, str(self.log))

    def signal(self, sig: int) -> float:
        """Send ``sig`` and return how long the process took to exit."""
        started = time.monotonic()
        self.process.send_signal(sig)
        self.process.wait(60)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.signal(signal.SIGTERM)


@pytest.fixture
def scorer(scorer_env, tmp_path):
    process = Scorer(scorer_env, tmp_path / "scorer.log")
    try:
        yield process
    finally:
        process.stop()


def wait_for_rentals(url: str, expected: int, scorer: Scorer, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (stored := stored_rentals(url)) < expected:
        if scorer.process.poll() is not None:
            pytest.fail(f"the scorer exited ({scorer.process.returncode}):\n{scorer.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{stored} of {expected} rentals stored after {timeout} s")
        time.sleep(0.2)


def replay_in_background(bootstrap: str, events, rate: float | None) -> threading.Thread:
    thread = threading.Thread(target=lambda: asyncio.run(publish_events(bootstrap, events, rate=rate)), daemon=True)
    thread.start()
    return thread


def assert_same_results(crashed: dict[str, pd.DataFrame], clean: dict[str, pd.DataFrame], rentals: int) -> None:
    assert len(crashed["rentals"]) == len(crashed["delays"]) == len(crashed["prices"]) == rentals
    assert crashed["rentals"]["rental_id"].is_unique and crashed["prices"]["price_id"].is_unique
    assert crashed["dead_letters"].empty and clean["dead_letters"].empty
    for name in SNAPSHOT_SQL:
        pd.testing.assert_frame_equal(crashed[name], clean[name], check_exact=True, obj=name)


async def topic_messages(bootstrap: str, topic: str) -> list[bytes]:
    """Every message on ``topic`` (the scorer publishes at least once, so redelivered
    batches show up here twice)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            await consumer.topics()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        keys: list[bytes] = []
        deadline = time.monotonic() + 60
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]] and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                keys.extend(record.key for record in records)
        return keys
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topic: str) -> int:
    """The sum of ``group``'s committed offsets on ``topic``: the messages it has finished."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        offsets = [await consumer.committed(TopicPartition(topic, p)) for p in consumer.partitions_for_topic(topic)]
        return sum(offset or 0 for offset in offsets)
    finally:
        await consumer.stop()


def test_three_sigkills_during_a_replay_leave_every_rental_stored_once_as_a_clean_run_does(
    scorer, scorer_env, clean_database, delays_xlsx, pricing_csv
):
    bootstrap = scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
    events = rental_events(delays_xlsx, pricing_csv)
    rng = random.Random(2026)

    # The crashing run: the replay goes on while the scorer is killed three times at random points.
    scorer.env = {**scorer_env, "RENTALSTREAM_SCORER_GROUP_ID": "crashing"}
    scorer.start()
    scorer.wait_ready()
    replay = replay_in_background(bootstrap, events, rate=2000)  # ~11 s of replay
    kills = []
    for _ in range(3):
        # A random moment, then the worst one after it: right as a batch's rows commit,
        # before its offsets can be.
        time.sleep(rng.uniform(1.0, 4.0))
        before = stored_rentals(clean_database)
        while (now := stored_rentals(clean_database)) == before and replay.is_alive():
            time.sleep(0.005)
        kills.append(now)
        scorer.signal(signal.SIGKILL)
        scorer.start()
        scorer.wait_ready()
    replay.join()
    wait_for_rentals(clean_database, len(events), scorer)
    crashed = snapshot(clean_database)
    prices_published = asyncio.run(topic_messages(bootstrap, "prices"))
    scorer.stop()

    # The clean run: a new group reads the same topic from the start, nobody interrupts it.
    truncate(clean_database)
    scorer.env = {**scorer_env, "RENTALSTREAM_SCORER_GROUP_ID": "clean",
                  "RENTALSTREAM_SCORER_PORT": str(free_port())}  # fmt: skip
    scorer.url = f"http://127.0.0.1:{scorer.env['RENTALSTREAM_SCORER_PORT']}"
    scorer.start()
    wait_for_rentals(clean_database, len(events), scorer)
    clean = snapshot(clean_database)

    print(f"published {len(events):,} rentals; SIGKILL with {kills} rentals stored; afterwards "
          f"{len(crashed['rentals']):,} rentals, {len(crashed['prices']):,} prices, {len(crashed['delays']):,} "
          f"delay facts, {len(crashed['dead_letters'])} dead letters stored; {len(prices_published):,} messages on "
          f"`prices`, {len(prices_published) - len(set(prices_published)):,} of them redelivered duplicates")  # fmt: skip
    assert_same_results(crashed, clean, len(events))


def test_sigterm_finishes_the_batch_commits_and_exits_then_the_restart_resumes_without_gaps_or_duplicates(
    scorer, scorer_env, clean_database, delays_xlsx, pricing_csv
):
    bootstrap = scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
    group = f"{scorer_env.get('RENTALSTREAM_SCORER_GROUP_ID', 'rentalstream-scorer')}.rentals"
    events = rental_events(delays_xlsx, pricing_csv)
    scorer.start()
    scorer.wait_ready()
    replay = replay_in_background(bootstrap, events, rate=3000)
    wait_for_rentals(clean_database, 4000, scorer)
    exit_seconds = scorer.signal(signal.SIGTERM)
    # Everything it stored is committed, and everything committed is stored: the last
    # batch was finished, written and committed before the process left.
    stored, done = stored_rentals(clean_database), asyncio.run(committed(bootstrap, group, "rentals"))
    print(f"SIGTERM: exited in {exit_seconds:.2f} s (code {scorer.process.returncode}) with {stored:,} rentals "
          f"stored and {done:,} committed")  # fmt: skip
    # The graceful shutdown ran to its end; uvicorn then re-raises the SIGTERM it caught, so
    # the exit status is "terminated by SIGTERM", as a supervisor expects.
    assert "FastStream app shut down gracefully" in scorer.log.read_text()
    assert scorer.process.returncode in (0, -signal.SIGTERM)
    assert exit_seconds < 5
    assert 4000 <= stored == done < len(events)

    scorer.start()
    replay.join()
    wait_for_rentals(clean_database, len(events), scorer)
    resumed = snapshot(clean_database)
    assert len(resumed["rentals"]) == len(events) and resumed["rentals"]["rental_id"].is_unique
    assert sorted(resumed["rentals"]["rental_id"]) == sorted(e.rental_id for e in events)
    assert resumed["dead_letters"].empty
    assert asyncio.run(committed(bootstrap, group, "rentals")) == len(events)
