"""A price request through the real scorer: reply on the request's topic, row in Postgres."""

import asyncio
import json

import mlflow
import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import create_engine, text

from runtime.settings import normalised_database_url
from schemas.events import PriceRequest, PriceScored
from tests.helpers import reference_prices

pytestmark = pytest.mark.e2e

CAR = {
    "model_key": "citroen",
    "mileage": 140411,
    "engine_power": 100,
    "fuel": "diesel",
    "paint_color": "black",
    "car_type": "convertible",
    "private_parking_available": True,
    "has_gps": True,
    "has_air_conditioning": False,
    "automatic_car": False,
    "has_getaround_connect": True,
    "has_speed_regulator": True,
    "winter_tires": True,
}


def test_price_requests_are_answered_on_their_reply_topic_and_logged(
    scorer_process, scorer_env, clean_database, mlflow_registry
):
    bootstrap = scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
    requests = [
        PriceRequest(request_id="req-known", car=CAR, reply_to="replies-test"),
        PriceRequest(request_id="req-unknown-brand", car={**CAR, "model_key": "Tesla"}, reply_to="replies-test"),
    ]
    # Replies to a topic nobody created, or to one of the system's own, could never be
    # delivered as asked (Kafka creates no topic on first use here): dead letters.
    unanswerable = [
        PriceRequest(request_id="req-no-such-topic", car=CAR, reply_to="nobody-made-this"),
        PriceRequest(request_id="req-into-rentals", car=CAR, reply_to="rentals"),
    ]

    async def ask() -> dict[str, PriceScored]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic("replies-test", num_partitions=1, replication_factor=1)])
        await admin.close()
        consumer = AIOKafkaConsumer("replies-test", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await consumer.start()
        await producer.start()
        try:
            for request in unanswerable + requests:
                await producer.send_and_wait(
                    "price-requests", request.model_dump_json().encode(), key=request.request_id.encode()
                )
            await producer.send_and_wait("price-requests", b'{"request_id": "broken"}', key=b"broken")
            replies: dict[str, PriceScored] = {}
            async with asyncio.timeout(120):
                while len(replies) < len(requests):
                    record = await consumer.getone()
                    reply = PriceScored.model_validate_json(record.value)
                    replies[reply.request_id] = reply
            return replies
        finally:
            await producer.stop()
            await consumer.stop()

    replies = asyncio.run(ask())
    _, training = mlflow_registry
    mlflow.set_tracking_uri(mlflow_registry[0])
    model = mlflow.lightgbm.load_model(f"models:/rentalstream-price/{training.champion_version}")
    expected = reference_prices(model, pd.DataFrame([{**CAR, "model_key": "Citroën"}]))[0]

    known, unknown = replies["req-known"], replies["req-unknown-brand"]
    assert known.price_per_day == pytest.approx(expected, abs=0.006)
    assert (known.model_name, known.model_version) == ("rentalstream-price", training.champion_version)
    assert known.unknown_fields == [] and unknown.unknown_fields == ["model_key"]
    assert unknown.price_per_day > 0

    engine = create_engine(normalised_database_url(clean_database))
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT request_id, price_per_day, unknown_fields FROM prices ORDER BY request_id")
        ).all()
        letters = conn.execute(
            text("SELECT message_key, reason, raw_value FROM dead_letters WHERE topic = 'price-requests'")
        ).all()
    engine.dispose()
    assert [(r.request_id, r.unknown_fields) for r in rows] == [("req-known", []), ("req-unknown-brand", ["model_key"])]
    reasons = {letter.message_key: letter.reason for letter in letters}
    assert set(reasons) == {"broken", "req-no-such-topic", "req-into-rentals"}
    assert "car" in reasons["broken"]
    assert reasons["req-no-such-topic"].startswith("reply_to:") and "nobody-made-this" in reasons["req-no-such-topic"]
    assert reasons["req-into-rentals"].startswith("reply_to:") and "'rentals'" in reasons["req-into-rentals"]
    broken = next(letter for letter in letters if letter.message_key == "broken")
    assert json.loads(bytes(broken.raw_value)) == {"request_id": "broken"}
