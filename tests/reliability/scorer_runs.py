"""A scorer run the reliability tests can interrupt, and what they read back: the stored
results without their store timestamps, rental counts, committed offsets."""

import asyncio
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Self

import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import create_engine, text

from producers.replay import publish_events
from rentalstream import services
from runtime.kafka.topics import partition_ids
from runtime.settings import normalised_database_url
from tests.helpers import spawn

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
}


def snapshot(url: str) -> dict[str, pd.DataFrame]:
    engine = create_engine(normalised_database_url(url))
    with engine.connect() as conn:
        frames = {name: pd.read_sql(text(sql), conn) for name, sql in SNAPSHOT_SQL.items()}
        frames["cars"] = frames["cars"].drop(columns="updated_at")
        frames["dead_letters"] = pd.read_sql(text("SELECT * FROM dead_letters"), conn)
    engine.dispose()
    return frames


def stored_rentals(url: str) -> int:
    engine = create_engine(normalised_database_url(url))
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM rentals")).scalar_one()
    engine.dispose()
    return count


def truncate(url: str) -> None:
    engine = create_engine(normalised_database_url(url))
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


def wait_for_rentals(url: str, expected: int, scorer: Scorer, timeout: float = 300, stalled: float = 90) -> None:
    """Until ``expected`` rentals are stored; fail, with the scorer's log, if it exits,
    if ``timeout`` seconds pass, or if no rental is stored for ``stalled`` seconds (a
    scorer that recovers from a fault resumes within seconds, not minutes)."""
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while (stored := stored_rentals(url)) < expected:
        now = time.monotonic()
        if stored != last:
            last, moved = stored, now
        if scorer.process.poll() is not None:
            pytest.fail(f"the scorer exited ({scorer.process.returncode}):\n{scorer.log.read_text()[-3000:]}")
        if now > deadline or now - moved > stalled:
            pytest.fail(
                f"{stored} of {expected} rentals stored after {timeout if now > deadline else stalled:.0f} s "
                f"{'in all' if now > deadline else 'without a new one'}; the scorer's log ends:\n"
                f"{scorer.log.read_text()[-4000:]}"
            )
        time.sleep(0.2)


class Replay(threading.Thread):
    """The history published in a background thread; ``join()`` raises what the replay raised.

    With ``held_after``, it publishes that many events, then waits for ``resume`` before
    the rest: a test can land a fault in the middle of the replay whatever the machine's
    speed (at a fixed rate alone, a slow day's scorer stored its first rentals only after
    the replay had ended)."""

    def __init__(self, bootstrap: str, events, rate: float | None, held_after: int | None = None) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.events, self.rate = bootstrap, events, rate
        self.held_after = held_after
        self.resume = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.held_after is None:
                asyncio.run(publish_events(self.bootstrap, self.events, rate=self.rate))
                return
            asyncio.run(publish_events(self.bootstrap, self.events[: self.held_after], rate=self.rate))
            if not self.resume.wait(timeout=600):
                raise TimeoutError("nobody resumed the held replay")
            asyncio.run(publish_events(self.bootstrap, self.events[self.held_after :], rate=self.rate))
        except BaseException as error:  # noqa: BLE001  (handed to the test by join())
            self.error = error

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise AssertionError(f"the replay failed: {self.error!r}") from self.error


def replay_in_background(bootstrap: str, events, rate: float | None) -> Replay:
    replay = Replay(bootstrap, events, rate)
    replay.start()
    return replay


def assert_same_results(crashed: dict[str, pd.DataFrame], clean: dict[str, pd.DataFrame], rentals: int) -> None:
    assert len(crashed["rentals"]) == len(crashed["delays"]) == len(crashed["prices"]) == rentals
    assert crashed["rentals"]["rental_id"].is_unique and crashed["prices"]["price_id"].is_unique
    assert crashed["dead_letters"].empty and clean["dead_letters"].empty
    for name in SNAPSHOT_SQL:
        pd.testing.assert_frame_equal(crashed[name], clean[name], check_exact=True, obj=name)


async def committed(bootstrap: str, group: str, topic: str) -> int:
    """The sum of ``group``'s committed offsets on ``topic``: the messages it has finished."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        offsets = [await consumer.committed(TopicPartition(topic, p)) for p in await partition_ids(bootstrap, topic)]
        return sum(offset or 0 for offset in offsets)
    finally:
        await consumer.stop()


class OpenTransaction:
    """Whether a transaction with records on ``topic`` is open right now: a partition's
    log end (where read_uncommitted readers stop) is past its last stable offset (where
    read_committed ones stop). Asked through two consumers kept open, on a loop of its own."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.loop = asyncio.new_event_loop()

    def __enter__(self) -> Self:
        self.loop.run_until_complete(self._start())
        return self

    def __exit__(self, *exc) -> None:
        self.loop.run_until_complete(self._stop())
        self.loop.close()

    def __call__(self) -> bool:
        return self.loop.run_until_complete(self._open())

    async def _start(self) -> None:
        self.partitions = [TopicPartition(self.topic, p) for p in await partition_ids(self.bootstrap, self.topic)]
        self.consumers = [
            AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, isolation_level=level)
            for level in ("read_uncommitted", "read_committed")
        ]
        for consumer in self.consumers:
            await consumer.start()

    async def _stop(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()

    def held_open(self, probes: int = 3, interval: float = 0.1) -> bool:
        """Whether one transaction stays open over ``probes`` probes ``interval`` s apart:
        a partition's last stable offset does not move while records wait past it. A
        running producer's transactions last milliseconds, so one held this long is a
        frozen producer's, whatever other producers do meanwhile."""
        waiting = self.loop.run_until_complete(self._open_at())
        for _ in range(probes - 1):
            time.sleep(interval)
            now = self.loop.run_until_complete(self._open_at())
            waiting = {tp: stable for tp, stable in waiting.items() if now.get(tp) == stable}
        return bool(waiting)

    async def _open(self) -> bool:
        return bool(await self._open_at())

    async def _open_at(self) -> dict[TopicPartition, int]:
        """The last stable offset of each partition with records waiting past it."""
        log_end, stable = [await c.end_offsets(self.partitions) for c in self.consumers]
        return {tp: stable[tp] for tp in self.partitions if log_end[tp] > stable[tp]}
