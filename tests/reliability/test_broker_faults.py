"""The scorer on a three-node Apache Kafka cluster (every node broker and controller,
topics with three replicas and min.insync.replicas=2, producers with acks=all and
idempotence) while brokers fail during a replay of the whole history:

(a) the leader of a `rentals` partition is SIGKILLed, and started again later;
(b) one broker is SIGKILLed and stays down for the rest of the replay;
(c) the whole cluster is stopped, then started again.

After each, Postgres holds what an uninterrupted run stores, value for value, each
rental once; the group has committed every offset and lags by nothing; and while the
cluster was away the scorer said it was not ready, then recovered by itself."""

import asyncio
import time
from dataclasses import dataclass

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from producers.replay import rental_events
from rentalstream import kafka_server
from rentalstream.kafka_server import KafkaCluster, KafkaNode
from rentalstream.processes import free_port
from runtime.kafka.topics import ensure_topics
from schemas.topics import RENTALS
from tests.helpers import log_end as log_end_of
from tests.helpers import metric_samples, read_topic, wait_for
from tests.reliability.scorer_runs import (
    Replay,
    Scorer,
    assert_same_results,
    committed,
    snapshot,
    stored_rentals,
    truncate,
    wait_for_rentals,
)

pytestmark = pytest.mark.reliability
RATE = 2000  # events/s: ~11 s of replay; the fault lands at its middle (start_faulted_run)


@pytest.fixture
def kafka_cluster(tmp_path, kafka_runtime):
    cluster = kafka_server.start_cluster(tmp_path / "cluster", kafka_runtime, nodes=3)
    try:
        asyncio.run(ensure_topics(cluster.bootstrap, partitions=3, replication_factor=3))
        yield cluster
    finally:
        cluster.stop(timeout=10)


@pytest.fixture
def kafka_bootstrap(kafka_cluster: KafkaCluster) -> str:
    """Every fixture built on the broker (the scorer's settings among them) gets the cluster."""
    return kafka_cluster.bootstrap


@dataclass
class Outcome:
    events: int
    stored: int
    duplicates: int
    committed: int
    log_end: int
    prices_read_committed: int
    distinct_prices: int
    recovery_seconds: float

    def describe(self, scenario: str) -> str:
        return (
            f"{scenario}: {self.events:,} rentals sent; {self.stored:,} rows stored, {self.duplicates} duplicates; "
            f"{self.committed:,} of {self.log_end:,} offsets committed; {self.prices_read_committed:,} prices read "
            f"committed ({self.distinct_prices:,} distinct); scoring resumed {self.recovery_seconds:.1f} s after the fault"
        )


def test_a_killed_partition_leader_restarted_later_loses_and_doubles_nothing(
    kafka_cluster, scorer, scorer_env, clean_database, delays_xlsx, pricing_csv
):
    events = rental_events(delays_xlsx, pricing_csv)
    replay = start_faulted_run(scorer, scorer_env, clean_database, events)
    leader = node(kafka_cluster, asyncio.run(leader_of(kafka_cluster.bootstrap, RENTALS.name, 0)))
    kafka_cluster.kill_node(leader)
    recovery = seconds_until_scoring_resumes(clean_database, scorer)
    time.sleep(3)  # then the node comes back, while the replay still runs
    kafka_cluster.start_node(leader)
    outcome = finish_and_compare(scorer, scorer_env, clean_database, events, replay, recovery)
    print(outcome.describe(f"(a) leader of rentals/0 (node {leader.node_id}) SIGKILLed, restarted 3 s later"))


def test_a_broker_killed_for_the_rest_of_the_replay_loses_and_doubles_nothing(
    kafka_cluster, scorer, scorer_env, clean_database, delays_xlsx, pricing_csv
):
    events = rental_events(delays_xlsx, pricing_csv)
    replay = start_faulted_run(scorer, scorer_env, clean_database, events)
    victim = node(kafka_cluster, asyncio.run(leader_of(kafka_cluster.bootstrap, RENTALS.name, 1)))
    kafka_cluster.kill_node(victim)
    recovery = seconds_until_scoring_resumes(clean_database, scorer)
    outcome = finish_and_compare(scorer, scorer_env, clean_database, events, replay, recovery)
    print(outcome.describe(f"(b) node {victim.node_id} SIGKILLed and left down"))


def test_the_whole_cluster_stopped_and_started_again_loses_and_doubles_nothing(
    kafka_cluster, scorer, scorer_env, clean_database, delays_xlsx, pricing_csv
):
    events = rental_events(delays_xlsx, pricing_csv)
    replay = start_faulted_run(scorer, scorer_env, clean_database, events)
    stopping_at = time.monotonic()
    kafka_cluster.stop(timeout=20)
    stopped_in = time.monotonic() - stopping_at
    # No quorum: the scorer says so instead of claiming to be ready.
    wait_for(lambda: ready(scorer)[0] == 503, 30, "the scorer to report not-ready", scorer.process, scorer.log)
    status_without_cluster = ready(scorer)
    restart_at = time.monotonic()
    kafka_cluster.start()
    cluster_back = time.monotonic() - restart_at
    wait_for(lambda: ready(scorer)[0] == 200, 120, "the scorer to be ready again", scorer.process, scorer.log)
    ready_again = time.monotonic() - restart_at
    recovery = seconds_until_scoring_resumes(clean_database, scorer, since=restart_at)
    outcome = finish_and_compare(scorer, scorer_env, clean_database, events, replay, recovery)
    print(
        outcome.describe("(c) all three nodes stopped, then started (scoring resumed counted from the restart)")
        + f"; the cluster stopped in {stopped_in:.1f} s and was back {cluster_back:.1f} s after its restart; "
        f"/ready without it: {status_without_cluster}; ready again {ready_again:.1f} s after the restart"
    )
    assert status_without_cluster[1].startswith("not ready")


# -- the run, the fault, the comparison -----------------------------------------------


def start_faulted_run(scorer: Scorer, scorer_env: dict[str, str], url: str, events) -> Replay:
    """The scorer started, the replay under way and 2,000 rentals stored: the moment to
    inject a fault, which must land during the replay. The replay holds after its first
    half until then, and goes on as the fault is injected."""
    scorer.env = {**scorer_env, "RENTALSTREAM_SCORER_GROUP_ID": "faulted"}
    scorer.start()
    scorer.wait_ready()
    replay = Replay(scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"], events, rate=RATE, held_after=len(events) // 2)
    replay.start()
    wait_for(lambda: stored_rentals(url) > 2000, 120, "the first rentals stored", scorer.process, scorer.log)
    assert replay.is_alive(), f"the replay stopped before the fault: {replay.error!r}"
    replay.resume.set()
    return replay


def seconds_until_scoring_resumes(url: str, scorer: Scorer, since: float | None = None) -> float:
    """From ``since`` (now) until more rentals are stored than were when it was called."""
    started = since or time.monotonic()
    before = stored_rentals(url)
    wait_for(lambda: stored_rentals(url) > before, 120, "scoring to resume", scorer.process, scorer.log)
    return time.monotonic() - started


def finish_and_compare(
    scorer: Scorer, scorer_env: dict[str, str], url: str, events, replay: Replay, recovery: float
) -> Outcome:
    bootstrap = scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
    replay.join()
    wait_for_rentals(url, len(events), scorer)
    # Every offset committed, the group lagging by nothing: no consumer is stuck.
    log_end = asyncio.run(log_end_of(bootstrap, RENTALS.name))
    wait_for(
        lambda: asyncio.run(committed(bootstrap, "faulted.rentals", RENTALS.name)) == log_end,
        60,
        "every offset to be committed",
        scorer.process,
        scorer.log,
    )
    lag = metric_samples(scorer.url, "rentalstream_consumer_lag")
    faulted = snapshot(url)
    prices = [r.key for r in asyncio.run(read_topic(bootstrap, "prices"))]
    scorer.stop()

    # The uninterrupted run: a new group reads the same topic from the start.
    truncate(url)
    scorer.env = {**scorer_env, "RENTALSTREAM_SCORER_GROUP_ID": "clean", "RENTALSTREAM_SCORER_PORT": str(free_port())}
    scorer.url = f"http://127.0.0.1:{scorer.env['RENTALSTREAM_SCORER_PORT']}"
    scorer.start()
    wait_for_rentals(url, len(events), scorer)
    clean = snapshot(url)
    scorer.stop()

    assert_same_results(faulted, clean, len(events))
    assert {labels: value for labels, value in lag.items() if ("topic", RENTALS.name) in labels}
    assert all(value == 0 for labels, value in lag.items() if ("topic", RENTALS.name) in labels), lag
    return Outcome(
        events=len(events),
        stored=len(faulted["rentals"]),
        duplicates=len(faulted["rentals"]) - faulted["rentals"]["rental_id"].nunique(),
        committed=log_end,
        log_end=log_end,
        prices_read_committed=len(prices),
        distinct_prices=len(set(prices)),
        recovery_seconds=recovery,
    )


def node(cluster: KafkaCluster, node_id: int) -> KafkaNode:
    return next(n for n in cluster.nodes if n.node_id == node_id)


def ready(scorer: Scorer) -> tuple[int, str]:
    try:
        response = httpx.get(f"{scorer.url}/ready", timeout=10)
    except httpx.HTTPError as error:
        return 0, repr(error)
    return response.status_code, response.text


async def leader_of(bootstrap: str, topic: str, partition: int) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return next(p["leader"] for p in described["partitions"] if p["partition"] == partition)
    finally:
        await admin.close()
