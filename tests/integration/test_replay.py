"""The replay on a real broker: every row, keyed by car, in file order, paced when asked."""

import asyncio
import json
from datetime import datetime

import pytest
from aiokafka import AIOKafkaConsumer

from producers.replay import publish_events, rental_events
from runtime.datasets import read_delay_history

pytestmark = pytest.mark.integration
ROWS = 400


async def consume_all(bootstrap, expected):
    consumer = AIOKafkaConsumer("rentals", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records = []
    try:
        async with asyncio.timeout(60):
            while len(records) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for partition_records in batch.values():
                    records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


def test_replay_publishes_each_row_keyed_by_car_in_file_order(kafka_bootstrap, delays_xlsx, pricing_csv):
    events = rental_events(delays_xlsx, pricing_csv, limit=ROWS)
    stats = asyncio.run(publish_events(kafka_bootstrap, events, rate=800))
    assert stats.published == ROWS
    assert stats.seconds >= (ROWS - 1) / 800  # paced: never faster than asked

    records = asyncio.run(consume_all(kafka_bootstrap, ROWS))
    history = read_delay_history(delays_xlsx, limit=ROWS)
    assert len(records) == ROWS
    file_position = {row["rental_id"]: i for i, row in enumerate(history)}
    by_partition: dict[int, list[int]] = {}
    for record in records:
        value = json.loads(record.value)
        assert record.key == str(value["car_id"]).encode()
        by_partition.setdefault(record.partition, []).append(file_position[value["rental_id"]])
    assert all(positions == sorted(positions) for positions in by_partition.values())
    assert sorted(p for ps in by_partition.values() for p in ps) == list(range(ROWS))
    cars_per_partition = [{json.loads(r.value)["car_id"] for r in records if r.partition == p} for p in by_partition]
    assert sum(len(c) for c in cars_per_partition) == len(set().union(*cars_per_partition))

    # Paced in steps of ~10 ms (8 events at 800/s), each step stamped as it is handed over:
    # never ahead of the schedule by more than one step, and not one send per event.
    sent_at = {file_position[json.loads(r.value)["rental_id"]]: json.loads(r.value)["event_time"] for r in records}
    times = [datetime.fromisoformat(sent_at[i]).timestamp() for i in range(ROWS)]
    assert all(t >= times[0] + (i - 8) / 800 - 0.002 for i, t in enumerate(times))
    assert times == sorted(times)
    assert len(set(times)) <= ROWS / 4
