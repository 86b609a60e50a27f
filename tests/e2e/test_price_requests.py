"""A price request through the real scorer: reply on the request's topic, row in Postgres."""

import asyncio
import json

import mlflow
import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import create_engine, text

from rentalstream.db import psycopg_url
from schemas.events import PriceRequest, PriceScored
from tests.helpers import reference_prices

pytestmark = pytest.mark.e2e

CAR = {
    "model_key": "citroen", "mileage": 140411, "engine_power": 100, "fuel": "diesel", "paint_color": "black",
    "car_type": "convertible", "private_parking_available": True, "has_gps": True, "has_air_conditioning": False,
    "automatic_car": False, "has_getaround_connect": True,
    "has_speed_regulator": True, "winter_tires": True,
}  # fmt: skip


def test_price_requests_are_answered_on_their_reply_topic_and_logged(
    scorer_process, scorer_env, clean_database, mlflow_registry
):
    bootstrap = scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
    requests = [
        PriceRequest(request_id="req-known", car=CAR, reply_to="replies-test"),
        PriceRequest(request_id="req-unknown-brand", car={**CAR, "model_key": "Tesla"}, reply_to="replies-test"),
    ]

    async def ask() -> dict[str, PriceScored]:
        consumer = AIOKafkaConsumer("replies-test", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await consumer.start()
        await producer.start()
        try:
            for request in requests:
                await producer.send_and_wait("price-requests", request.model_dump_json().encode(),
                                             key=request.request_id.encode())  # fmt: skip
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

    engine = create_engine(psycopg_url(clean_database))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT request_id, price_per_day, unknown_fields FROM prices ORDER BY request_id")).all()
        letters = conn.execute(text("SELECT reason, raw_value FROM dead_letters WHERE topic = 'price-requests'")).all()
    engine.dispose()
    assert [(r.request_id, r.unknown_fields) for r in rows] == [("req-known", []), ("req-unknown-brand", ["model_key"])]
    assert len(letters) == 1 and "car" in letters[0].reason
    assert json.loads(bytes(letters[0].raw_value)) == {"request_id": "broken"}
