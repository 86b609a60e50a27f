"""Two dashboards side by side (two processes, as two replicas behind a proxy would run):
each one's live feed reads every partition, so each shows every price, not the share of
the partitions a common consumer group would hand it."""

import asyncio
import time
from contextlib import ExitStack
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from rentalstream import services
from rentalstream.processes import free_port
from runtime.postgres import roles
from schemas.events import PriceScored
from tests.conftest import as_role
from tests.helpers import metric_samples, service_process, wait_for

pytestmark = pytest.mark.e2e
PRICES = 60


async def publish_prices(bootstrap: str) -> set[int]:
    """``PRICES`` prices, keyed by their ids as the scorer keys them; the partitions they went to."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        sent = []
        for rental_id in range(1, PRICES + 1):
            price = PriceScored(
                price_id=f"rental-{rental_id}",
                rental_id=rental_id,
                car_id=rental_id,
                price_per_day=100.0,
                model_name="rentalstream-price",
                model_version="1",
                event_time=datetime.now(UTC),
                scored_at=datetime.now(UTC),
            )
            sent.append(await producer.send("prices", price.model_dump_json().encode(), key=price.price_id.encode()))
        return {(await delivered).partition for delivered in sent}
    finally:
        await producer.stop()


def prices_read(url: str) -> float:
    return metric_samples(url, "rentalstream_dashboard_messages_total").get((("topic", "prices"),), 0.0)


def test_two_dashboards_each_read_every_partition(scorer_env, tmp_path):
    env = {**scorer_env, "RENTALSTREAM_DATABASE_URL": as_role(scorer_env["RENTALSTREAM_DATABASE_URL"], roles.READER)}
    urls = []
    with ExitStack() as stack:
        for name in ("dashboard-1", "dashboard-2"):
            port = free_port()
            log = tmp_path / f"{name}.log"
            process = stack.enter_context(
                service_process("dashboard", {**env, "RENTALSTREAM_DASHBOARD_PORT": str(port)}, log)
            )
            urls.append((f"http://127.0.0.1:{port}", process, log))
        for url, process, log in urls:
            services.wait_ready("dashboard", f"{url}/ready", process.pid, time.monotonic() + 120, str(log))

        partitions = asyncio.run(publish_prices(scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"]))
        assert len(partitions) == 3  # the prices are spread over every partition of the topic
        for url, process, log in urls:
            wait_for(lambda url=url: prices_read(url) == PRICES, 60, f"{url} to read {PRICES} prices", process, log)
