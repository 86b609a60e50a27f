"""PostgreSQL stopped for 30 s in the middle of a replay: the scorer commits nothing it
could not store, says it is not ready, keeps its memory bounded, reports its growing lag
as Kafka's own tool does, and catches up when the database is back, with nothing lost
and nothing doubled.

The scorer runs with one retry per batch write, so the outage is many cycles of
"write fails, batch handed back to Kafka, consumed and scored again" (about two a
second) instead of five: memory kept per cycle would show as growth, whatever the
speed of the machine."""

import asyncio
import time

import httpx
import psutil
import pytest

from producers.replay import rental_events
from rentalstream import embedded
from rentalstream.kafka_tools import describe_consumer_groups, parse_group_table
from tests.helpers import metric_samples, wait_for
from tests.reliability.scorer_runs import (
    Scorer,
    committed,
    replay_in_background,
    snapshot,
    wait_for_rentals,
)

pytestmark = pytest.mark.reliability
OUTAGE_SECONDS = 30
GROUP = "rentalstream-scorer.rentals"


def ready_status(url: str) -> tuple[int, str]:
    response = httpx.get(f"{url}/ready", timeout=10)
    return response.status_code, response.text


def retries(scorer: Scorer) -> float:
    return sum(metric_samples(scorer.url, "rentalstream_db_write_retries_total").values())


def test_a_30_second_database_outage_loses_nothing_doubles_nothing_and_is_reported(
    own_postgres, scorer_env, kafka_runtime, delays_xlsx, pricing_csv, tmp_path
):
    env = {**scorer_env, "RENTALSTREAM_DATABASE_URL": own_postgres.url, "RENTALSTREAM_SCORER_DB_RETRIES": "1"}
    bootstrap = env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
    events = rental_events(delays_xlsx, pricing_csv)
    scorer = Scorer(env, tmp_path / "scorer.log")
    scorer.start()
    try:
        scorer.wait_ready()
        replay = replay_in_background(bootstrap, events, rate=1500)  # ~14 s of replay, most of it during the outage
        wait_for_rentals(own_postgres.url, 3000, scorer)

        embedded.stop_postgres(own_postgres.pgdata, own_postgres.system_user, mode="immediate")
        down_at = time.monotonic()
        process = psutil.Process(scorer.process.pid)
        rss_before = process.memory_info().rss
        retries_before = retries(scorer)
        # The batch in hand when the database went away fails its write: from here on nothing commits.
        wait_for(lambda: retries(scorer) > retries_before, 30, "a failed write", scorer.process, scorer.log)
        committed_early = asyncio.run(committed(bootstrap, GROUP, "rentals"))
        statuses, rss = set(), []  # (seconds into the outage, RSS)
        while time.monotonic() - down_at < OUTAGE_SECONDS:
            statuses.add(ready_status(scorer.url))
            rss.append((time.monotonic() - down_at, process.memory_info().rss))
            assert scorer.process.poll() is None, scorer.log.read_text()[-3000:]
            time.sleep(0.5)
        replay.join()  # over by now: nothing moves on the topic or in the group
        lag_gauge = {
            int(dict(labels)["partition"]): value
            for labels, value in metric_samples(scorer.url, "rentalstream_consumer_lag").items()
            if dict(labels)["group"] == GROUP
        }
        lag_tool = parse_group_table(describe_consumer_groups(kafka_runtime, bootstrap, GROUP))
        committed_late = asyncio.run(committed(bootstrap, GROUP, "rentals"))
        cycles = retries(scorer) - retries_before
        embedded.start_postgres(own_postgres.pgdata, own_postgres.port)
        back_at = time.monotonic()

        wait_for_rentals(own_postgres.url, len(events), scorer)
        caught_up = time.monotonic() - back_at
        status_after = ready_status(scorer.url)
    finally:
        scorer.stop()

    stored = snapshot(own_postgres.url)
    third = OUTAGE_SECONDS / 3
    middle_peak = max(r for t, r in rss if third <= t < 2 * third)
    late_peak = max(r for t, r in rss if t >= 2 * third)
    print(
        f"outage {OUTAGE_SECONDS} s from {committed_early:,} rentals committed; {cycles:.0f} failed writes during it; "
        f"/ready during it: {sorted(statuses)}; committed during it: {committed_late - committed_early}; scorer RSS "
        f"{rss_before / 2**20:,.1f} MiB before, peaks {middle_peak / 2**20:,.1f} MiB in its middle third and "
        f"{late_peak / 2**20:,.1f} MiB in its last; lag per partition, the gauge: {sorted(lag_gauge.values())}, "
        f"Kafka's tool: {sorted(int(row['LAG']) for row in lag_tool)}; caught up {caught_up:.1f} s after the "
        f"database returned; stored {len(stored['rentals']):,} rentals, {len(stored['prices']):,} prices, "
        f"{len(stored['delays']):,} delay facts, {len(stored['dead_letters'])} dead letters"
    )

    # While the database was away: not ready, saying why, no offset committed.
    assert {code for code, _ in statuses} == {503}
    assert all("the database does not answer" in text for _, text in statuses), statuses
    assert committed_late == committed_early < len(events)
    # Many failed cycles, and memory that stopped growing: the last third of the outage
    # peaks no higher than the middle third (within 1%, the allocator's rounding).
    assert cycles >= 10
    assert late_peak <= middle_peak * 1.01
    # The lag an autoscaler would read is Kafka's own figure, partition by partition.
    by_partition = {int(row["PARTITION"]): int(row["LAG"]) for row in lag_tool}
    assert lag_gauge == by_partition
    assert sum(by_partition.values()) == len(events) - committed_late
    # After: ready again, every rental exactly once, nothing dead-lettered.
    assert status_after == (200, "ready")
    assert len(stored["rentals"]) == len(stored["prices"]) == len(stored["delays"]) == len(events)
    assert sorted(stored["rentals"]["rental_id"]) == sorted(e.rental_id for e in events)
    assert stored["dead_letters"].empty
    # The knock-on join came out right despite the failed and repeated batches.
    delay_of = {e.rental_id: e.delay_at_checkout_minutes for e in events}
    conflicts = {
        e.rental_id
        for e in events
        if delay_of.get(e.previous_ended_rental_id) is not None
        and delay_of[e.previous_ended_rental_id] > e.planned_gap_minutes
    }
    assert set(stored["delays"].loc[stored["delays"]["is_conflict"].eq(True), "rental_id"]) == conflicts
