"""PostgreSQL stopped for 30 s in the middle of a replay: the scorer commits nothing it
could not store, says it is not ready, keeps its memory, and catches up when the
database is back, with nothing lost and nothing doubled."""

import asyncio
import time

import httpx
import psutil
import pytest

from producers.replay import rental_events
from rentalstream import embedded
from tests.reliability.scorer_runs import (
    Scorer,
    committed,
    replay_in_background,
    snapshot,
    wait_for_rentals,
)

pytestmark = pytest.mark.reliability
OUTAGE_SECONDS = 30
MEMORY_GROWTH_ALLOWED = 64 * 2**20


def ready_status(url: str) -> tuple[int, str]:
    response = httpx.get(f"{url}/ready", timeout=10)
    return response.status_code, response.text


def test_a_30_second_database_outage_loses_nothing_doubles_nothing_and_is_reported(
    own_postgres, scorer_env, delays_xlsx, pricing_csv, tmp_path
):
    env = {**scorer_env, "RENTALSTREAM_DATABASE_URL": own_postgres.url}
    bootstrap = env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
    group = "rentalstream-scorer.rentals"
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
        time.sleep(3)  # the batch in hand when the database went away fails its first writes
        committed_early = asyncio.run(committed(bootstrap, group, "rentals"))
        statuses, rss = set(), []  # (seconds into the outage, RSS)
        while time.monotonic() - down_at < OUTAGE_SECONDS:
            statuses.add(ready_status(scorer.url))
            rss.append((time.monotonic() - down_at, process.memory_info().rss))
            assert scorer.process.poll() is None, scorer.log.read_text()[-3000:]
            time.sleep(0.5)
        committed_late = asyncio.run(committed(bootstrap, group, "rentals"))
        embedded.start_postgres(own_postgres.pgdata, own_postgres.port)
        back_at = time.monotonic()

        replay.join()
        wait_for_rentals(own_postgres.url, len(events), scorer)
        caught_up = time.monotonic() - back_at
        status_after = ready_status(scorer.url)
    finally:
        scorer.stop()

    log = scorer.log.read_text()
    retries = log.count("database write failed")
    stored = snapshot(own_postgres.url)
    peak_rss = max(r for _, r in rss)
    first_half = max(r for t, r in rss if t < OUTAGE_SECONDS / 2)
    print(f"outage {OUTAGE_SECONDS} s from {committed_early:,} rentals committed; /ready during it: {sorted(statuses)}; "
          f"committed during it: {committed_late - committed_early}; scorer RSS {rss_before / 2**20:,.0f} MiB before, "
          f"{first_half / 2**20:,.0f} MiB peak in the first half, {peak_rss / 2**20:,.0f} MiB in all; {retries} write retries logged; caught up {caught_up:.1f} s after the "
          f"database returned; stored {len(stored['rentals']):,} rentals, {len(stored['prices']):,} prices, "
          f"{len(stored['delays']):,} delay facts, {len(stored['dead_letters'])} dead letters")  # fmt: skip

    # While the database was away: not ready, saying why, no offset committed, memory flat.
    assert statuses == {(503, "not ready: the database does not answer")}
    assert committed_late == committed_early < len(events)
    assert peak_rss - rss_before < MEMORY_GROWTH_ALLOWED
    assert peak_rss - first_half < MEMORY_GROWTH_ALLOWED / 4  # no steady growth while it waits
    assert retries > 0
    # After: ready again, every rental exactly once, nothing dead-lettered.
    assert status_after == (200, "ready")
    assert len(stored["rentals"]) == len(stored["prices"]) == len(stored["delays"]) == len(events)
    assert sorted(stored["rentals"]["rental_id"]) == sorted(e.rental_id for e in events)
    assert stored["dead_letters"].empty
    # The knock-on join came out right despite the failed and repeated batches.
    delay_of = {e.rental_id: e.delay_at_checkout_minutes for e in events}
    conflicts = {
        e.rental_id for e in events
        if delay_of.get(e.previous_ended_rental_id) is not None and delay_of[e.previous_ended_rental_id] > e.planned_gap_minutes
    }  # fmt: skip
    assert set(stored["delays"].loc[stored["delays"]["is_conflict"].eq(True), "rental_id"]) == conflicts
