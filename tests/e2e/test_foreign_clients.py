"""Clients nobody here wrote, against the real scorer on Apache Kafka.

- Rentals produced by kcat (Debian's, librdkafka 2.0) and by confluent-kafka (librdkafka
  2.x) are stored exactly as the same rentals replayed by rentalstream. librdkafka puts a
  key on another partition than the Java client does (CRC32 against murmur2), so the
  knock-on join is checked against its own computation too.
- A producer written from the published contract alone (the AsyncAPI document the scorer
  serves, and a JSON line typed by hand) is scored; the same line with one field wrong is
  dead-lettered with a reason naming that field.
- Kafka's own consumer-groups tool reports the scorer's group with no lag afterwards, as
  the scorer's lag gauge does.
"""

import asyncio
import json
import shutil
import subprocess
import time

import httpx
import pandas as pd
import pytest
from confluent_kafka import Producer

from producers.replay import publish_events, rental_events
from rentalstream.kafka_tools import describe_consumer_groups, parse_group_table
from tests.helpers import metric_samples, query, wait_for
from tests.reliability.scorer_runs import SNAPSHOT_SQL, snapshot, stored_rentals, truncate

pytestmark = pytest.mark.e2e
RENTALS_SENT = 2000
GROUP = "rentalstream-scorer.rentals"
# When and where a message was published differs by producer; what was stored must not.
PUBLICATION = {"event_time", "kafka_partition", "kafka_offset"}


@pytest.fixture(scope="module")
def kcat() -> str:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat not found: `make system-packages` installs Debian's kcat (.ci/run does)")
    return path


def test_rentals_from_kcat_and_confluent_kafka_are_stored_as_replayed_ones(
    kcat, scorer_process, scorer_env, clean_database, kafka_runtime, delays_xlsx, pricing_csv, tmp_path
):
    bootstrap = scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
    events = rental_events(delays_xlsx, pricing_csv, limit=RENTALS_SENT)

    def stored_after(produce) -> dict[str, pd.DataFrame]:
        truncate(clean_database)
        produce()
        wait_for(lambda: stored_rentals(clean_database) == len(events), 120, "the rentals to be stored", scorer_process)
        return snapshot(clean_database)

    def with_kcat() -> None:
        lines = tmp_path / "rentals.tsv"
        lines.write_text("".join(f"{e.car_id}\t{e.model_dump_json()}\n" for e in events))
        subprocess.run(
            [kcat, "-P", "-b", bootstrap, "-t", "rentals", "-K", "\t", "-l", str(lines)], check=True, timeout=60
        )

    def with_confluent_kafka() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        for e in events:
            producer.produce("rentals", key=str(e.car_id), value=e.model_dump_json())
        assert producer.flush(60) == 0

    by_kcat = stored_after(with_kcat)
    by_confluent = stored_after(with_confluent_kafka)
    replayed = stored_after(lambda: asyncio.run(publish_events(bootstrap, events)))

    partition_of = {  # rental id -> partition, per producer
        name: dict(zip(run["rentals"]["rental_id"], run["rentals"]["kafka_partition"], strict=True))
        for name, run in (("kcat", by_kcat), ("confluent-kafka", by_confluent), ("replay", replayed))
    }
    moved = sum(partition_of["kcat"][r] != partition_of["replay"][r] for r in partition_of["replay"])
    print(
        f"{len(events):,} rentals each by kcat, confluent-kafka and the replay; {moved:,} of them on another "
        f"partition with librdkafka's partitioner than with the Java client's"
    )
    assert moved > 0, "librdkafka's partitioner should place some keys elsewhere, or this test checks nothing"
    assert partition_of["kcat"] == partition_of["confluent-kafka"]
    for name in SNAPSHOT_SQL:
        columns = [c for c in replayed[name].columns if c not in PUBLICATION]
        for other in (by_kcat, by_confluent):
            pd.testing.assert_frame_equal(other[name][columns], replayed[name][columns], check_exact=True, obj=name)
    # The knock-on join, computed here from the events alone.
    delay_of = {e.rental_id: e.delay_at_checkout_minutes for e in events}
    conflicts = {
        e.rental_id
        for e in events
        if delay_of.get(e.previous_ended_rental_id) is not None
        and delay_of[e.previous_ended_rental_id] > e.planned_gap_minutes
    }
    assert conflicts, "the first rentals hold conflicts, or this checks nothing"
    assert set(by_kcat["delays"].loc[by_kcat["delays"]["is_conflict"].eq(True), "rental_id"]) == conflicts

    # Kafka's own tool and the scorer's gauge: the group has consumed every message.
    scorer_url = f"http://127.0.0.1:{scorer_env['RENTALSTREAM_SCORER_PORT']}"
    deadline = time.monotonic() + 30
    while (
        (rows := parse_group_table(describe_consumer_groups(kafka_runtime, bootstrap, GROUP)))
        and any(row["LAG"] != "0" for row in rows)
        and time.monotonic() < deadline
    ):  # the last commit may land just after the last row
        time.sleep(0.5)
    assert len(rows) == 3 and all(row["LAG"] == "0" for row in rows), rows
    assert sum(int(row["LOG-END-OFFSET"]) for row in rows) == 3 * len(events)
    gauge = metric_samples(scorer_url, "rentalstream_consumer_lag")
    assert {labels: value for labels, value in gauge.items() if ("group", GROUP) in labels}
    assert all(value == 0 for value in gauge.values()), gauge


def test_a_producer_written_from_the_published_contract_is_scored_and_a_wrong_field_named(
    kcat, scorer_process, scorer_env, clean_database
):
    bootstrap = scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
    scorer_url = f"http://127.0.0.1:{scorer_env['RENTALSTREAM_SCORER_PORT']}"
    document = wait_for(lambda: asyncapi_document(scorer_url), 60, "the scorer's AsyncAPI document", scorer_process)
    channel = document["channels"]["rentals"]
    schema = document["components"]["schemas"]["RentalEvent"]
    car_schema = document["components"]["schemas"]["CarFeatures"]
    # Typed by hand, from the document: the key its channel names, the fields its schema lists.
    assert "Kafka key: car_id" in channel["description"]
    line = {
        "rental_id": 990001,
        "car_id": 4242,
        "checkin_type": "connect",
        "state": "ended",
        "delay_at_checkout_minutes": 35,
        "previous_ended_rental_id": None,
        "planned_gap_minutes": None,
        "car": {
            "model_key": "Peugeot",
            "mileage": 98000,
            "engine_power": 120,
            "fuel": "diesel",
            "paint_color": "black",
            "car_type": "sedan",
            "has_gps": True,
        },
    }
    assert set(schema["required"]) <= set(line) <= set(schema["properties"])
    assert set(car_schema["required"]) <= set(line["car"]) <= set(car_schema["properties"])
    wrong = {**line, "rental_id": 990002, "delay_at_checkout_minutes": "late"}
    for value in (line, wrong):
        subprocess.run(
            [kcat, "-P", "-b", bootstrap, "-t", "rentals", "-k", str(value["car_id"])],
            input=json.dumps(value),
            text=True,
            check=True,
            timeout=30,
        )

    def landed() -> tuple[pd.DataFrame, pd.DataFrame] | None:
        rentals = query(clean_database, "SELECT rental_id, delay_at_checkout_minutes FROM rentals")
        letters = query(clean_database, "SELECT reason, raw_value FROM dead_letters WHERE topic = 'rentals'")
        return (rentals, letters) if len(rentals) and len(letters) else None

    rentals, letters = wait_for(landed, 60, "the rental and the dead letter", scorer_process)
    prices = query(clean_database, "SELECT price_per_day FROM prices WHERE rental_id = 990001")
    assert rentals.to_dict("records") == [{"rental_id": 990001, "delay_at_checkout_minutes": 35}]
    assert len(prices) == 1 and prices["price_per_day"][0] > 0
    assert len(letters) == 1 and "delay_at_checkout_minutes" in letters["reason"][0]
    assert json.loads(bytes(letters["raw_value"][0])) == wrong
    print(
        f"from the contract: rental 990001 stored and priced {prices['price_per_day'][0]:.2f} €/day; the wrong "
        f"line dead-lettered: {letters['reason'][0]}"
    )


def asyncapi_document(scorer_url: str) -> dict | None:
    try:
        response = httpx.get(f"{scorer_url}/asyncapi.json", timeout=5)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None
