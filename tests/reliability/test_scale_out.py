"""Scale-out is Kafka's: scorer replicas share one consumer group per topic and split its
partitions. When a replica dies without a word to the group (SIGKILL), the broker hands
its partitions to the survivor once the session timeout expires, and the survivor
resumes from the dead replica's last committed offsets. What the dead one scored but
had not committed is scored again; the upserts make that harmless. Postgres must end up
as a run by one uninterrupted scorer leaves it: every rental once, the same values.

A replica killed without a word is noticed only when its session timeout expires, so the
replicas run with the shortest one Apache Kafka accepts by default (6 s,
group.min.session.timeout.ms; the client's default is 10 s)."""

import asyncio
import random
import signal
import time
from collections import Counter

import pytest

from producers.replay import rental_events
from rentalstream.processes import free_port
from schemas.topics import RENTALS
from tests.helpers import metric_samples, read_topic, wait_for
from tests.reliability.scorer_runs import (
    OpenTransaction,
    Scorer,
    assert_same_results,
    committed,
    replay_in_background,
    snapshot,
    truncate,
    wait_for_rentals,
)

pytestmark = pytest.mark.reliability

SESSION_TIMEOUT_MS = 6000


def held(scorer: Scorer, topic: str) -> int:
    """Partitions of ``topic`` the replica says it holds now (its Prometheus gauge)."""
    return int(metric_samples(scorer.url, "rentalstream_assigned_partitions").get((("topic", topic),), 0))


def scored(scorer: Scorer) -> int:
    return int(metric_samples(scorer.url, "rentalstream_events_scored_total").get((("topic", RENTALS.name),), 0))


def test_two_replicas_split_the_partitions_and_the_survivor_takes_over_a_killed_one_with_nothing_lost(
    scorer_env, clean_database, delays_xlsx, pricing_csv, tmp_path
):
    bootstrap = scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
    events = rental_events(delays_xlsx, pricing_csv)
    group = {
        **scorer_env,
        "RENTALSTREAM_SCORER_GROUP_ID": "replicas",
        "RENTALSTREAM_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "RENTALSTREAM_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
    }
    survivor, victim = replicas = [
        Scorer({**group, "RENTALSTREAM_SCORER_PORT": str(free_port())}, tmp_path / f"scorer-{name}.log")
        for name in ("survivor", "victim")
    ]
    clean_run = Scorer({**scorer_env, "RENTALSTREAM_SCORER_GROUP_ID": "clean"}, tmp_path / "scorer-clean.log")
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready()

        # The group settles with every partition held, by both replicas.
        def settled() -> list[int] | None:
            counts = [held(r, RENTALS.name) for r in replicas]
            return counts if sorted(counts) == [1, 2] else None

        split = wait_for(settled, 60, "the two replicas to split the 3 rentals partitions")

        replay = replay_in_background(bootstrap, events, rate=1000)  # ~21 s of replay
        wait_for(lambda: min(scored(r) for r in replicas) > 0, 60, "both replicas to score rentals")
        # The worst moment: the victim's batch stored in Postgres, its Kafka transaction
        # (prices and input offsets) still open. The victim is frozen (SIGSTOP) at random
        # moments until the broker shows a transaction held open, then SIGKILLed.
        victim_scored = scored(victim)
        probes = 0
        with OpenTransaction(bootstrap, "prices") as transactions:
            while replay.is_alive():
                probes += 1
                time.sleep(random.uniform(0, 0.02))
                victim.process.send_signal(signal.SIGSTOP)
                if transactions() and transactions.held_open():
                    break
                victim.process.send_signal(signal.SIGCONT)
                victim_scored = scored(victim)
        replay_running = replay.is_alive()
        victim.signal(signal.SIGKILL)
        killed_at, killed_clock = time.monotonic(), time.strftime("%H:%M:%S")
        wait_for(
            lambda: held(survivor, RENTALS.name) == 3,
            60,
            "the survivor to take every partition",
            survivor.process,
            survivor.log,
        )
        takeover_seconds = time.monotonic() - killed_at
        replay.join()
        wait_for_rentals(clean_database, len(events), survivor)
        shared = snapshot(clean_database)
        done = asyncio.run(committed(bootstrap, "replicas.rentals", RENTALS.name))
        # The victim's last transaction stays open until the broker aborts it (the
        # producer's transaction timeout): a read_committed reader sees every price after.
        published = wait_for(lambda: committed_prices(bootstrap, len(events)), 60, "every price to be readable")
        attempted = asyncio.run(read_topic(bootstrap, "prices", isolation_level="read_uncommitted"))
        aborted = len(attempted) - len(published)  # records of transactions cut short
        redelivered = sum(1 for n in Counter(r.key for r in attempted).values() if n > 1)
        survivor_scored = scored(survivor)
        survivor.stop()

        # The reference: one scorer, a new group, the same topic from the start, no interruption.
        truncate(clean_database)
        clean_run.start()
        wait_for_rentals(clean_database, len(events), clean_run)
        clean = snapshot(clean_database)
    finally:
        for scorer in (*replicas, clean_run):
            scorer.stop()

    print(
        f"split of the 3 rentals partitions: {split}; victim scored >= {victim_scored:,} rentals, then SIGKILL "
        f"inside an open transaction (found in {probes} freezes), {aborted:,} prices aborted and "
        f"{redelivered:,} rentals priced again; "
        f"survivor held all 3 after {takeover_seconds:.1f} s (session timeout {SESSION_TIMEOUT_MS / 1000:.0f} s) "
        f"and scored {survivor_scored:,} in all; {len(published) - len(set(published)):,} of {len(published):,} "
        f"messages on `prices` (read_committed) were redeliveries; committed offsets {done:,} of {len(events):,}"
    )
    # The fault landed: during the replay, on a replica that had scored and committed,
    # inside one of its transactions, so its batch was aborted and handed to the survivor.
    assert replay_running and victim_scored > 0
    assert aborted > 0
    # And the survivor scored again what the victim had stored but not committed: those
    # rentals' prices are on the topic twice, in the aborted transaction and in a committed one.
    assert redelivered > 0
    assert done == len(events)
    # The rebalance did not hand a batch on twice: each price once for a read_committed reader.
    twice = [key for key, n in Counter(published).items() if n > 1]
    assert not twice, diagnosis(bootstrap, twice, tmp_path, killed_clock)
    assert sorted(published) == sorted(f"rental-{e.rental_id}" for e in events)
    assert_same_results(shared, clean, len(events))


def committed_prices(bootstrap: str, expected: int) -> list[str] | None:
    """The keys on `prices` a read_committed reader sees, once there are ``expected`` of them."""
    keys = [r.key.decode() for r in asyncio.run(read_topic(bootstrap, "prices"))]
    return keys if len(keys) >= expected else None


def diagnosis(bootstrap: str, twice: list[str], tmp_path, killed_clock: str) -> str:
    """What a reader needs to tell where prices published twice came from: where each
    copy sits on `prices`, and what each replica said when partitions were assigned."""
    wanted = {key.encode() for key in twice[:20]}
    copies = [
        f"{r.key.decode()} at prices/{r.partition}@{r.offset} (timestamp {r.timestamp})"
        for r in asyncio.run(read_topic(bootstrap, "prices"))
        if r.key in wanted
    ]
    said = [
        f"{log.stem}: {line.strip()}"
        for log in sorted(tmp_path.glob("scorer-*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if "partitions assigned" in line or "still in hand" in line
    ]
    return (
        f"{len(twice)} prices read twice by a read_committed reader; the victim was killed at {killed_clock}\n"
        + "\n".join(copies)
        + "\n"
        + "\n".join(said)
    )
