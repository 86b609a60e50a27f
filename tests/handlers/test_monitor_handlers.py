"""The monitor's handlers through FastStream's TestKafkaBroker: no Kafka, but the real
PostgreSQL and the session's MLflow registry (the champion's reference statistics)."""

import asyncio
import json

import pandas as pd
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker

from monitor.app import Monitor
from monitor.metrics import MonitorMetrics
from runtime.settings import Settings
from schemas.topics import DEAD_LETTERS, DRIFT, RENTALS
from tests.handlers.in_memory import ThroughTheTestBroker, collect
from tests.helpers import query

pytestmark = pytest.mark.integration
CARS = 400


def rentals(cars: pd.DataFrame, first_id: int) -> list[bytes]:
    """One rental per car, straight from the pricing file's columns."""
    return [
        json.dumps(
            {
                "rental_id": first_id + i,
                "car_id": first_id + i,
                "checkin_type": "mobile",
                "state": "ended",
                "car": car,
            }
        ).encode()
        for i, car in enumerate(cars.to_dict("records"))
    ]


def test_doubled_mileage_raises_a_drift_alert_that_is_stored_and_published_and_the_same_cars_unshifted_do_not(
    clean_database, mlflow_registry, pricing_csv
):
    cars = pd.read_csv(pricing_csv, index_col=0).drop(columns="rental_price_per_day").sample(CARS, random_state=7)
    shifted = cars.assign(mileage=cars.mileage * 2)
    settings = Settings(
        kafka={"bootstrap": "127.0.0.1:9"},  # never dialled
        database={"url": clean_database},
        registry={"tracking_uri": mlflow_registry[0]},
        _env_file=None,
    )
    broker = KafkaBroker()
    published = collect(broker, DRIFT.name, DEAD_LETTERS.name)
    monitor = Monitor(settings, MonitorMetrics(), publisher=ThroughTheTestBroker(broker))
    monitor.subscribe(broker)
    mileage_alerts_per_batch = []

    async def scenario() -> None:
        async with TestKafkaBroker(broker):
            await monitor.start()
            try:
                for batch in (rentals(cars, 1), rentals(shifted, 1 + CARS) + [b"{}"]):
                    await broker.publish_batch(*batch, topic=RENTALS.name)
                    mileage_alerts_per_batch.append(
                        [a["state"] for a in published[DRIFT.name] if a["signal"] == "rentals/mileage"]
                    )
            finally:
                await monitor.stop()

    asyncio.run(scenario())

    assert mileage_alerts_per_batch[0] == []
    assert mileage_alerts_per_batch[1][0] == "drifting"
    mileage = next(a for a in published[DRIFT.name] if a["signal"] == "rentals/mileage")
    assert mileage["after"]["mean"] > 1.5 * mileage["reference"]["mean"]
    assert mileage["model_version"] == mlflow_registry[1].champion_version
    stored = query(clean_database, "SELECT alert_id FROM drift_events")
    assert set(stored.alert_id) == {a["alert_id"] for a in published[DRIFT.name]}
    [letter] = published[DEAD_LETTERS.name]
    assert letter["consumer"] == "monitor" and letter["reason"].startswith("invalid RentalEvent")
    states = query(clean_database, "SELECT state FROM drift_signals WHERE signal = 'rentals/mileage'")
    assert list(states.state) == ["drifting"]
