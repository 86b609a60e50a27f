"""The dashboard process (`rentalstream dashboard`) on its own Kafka node and PostgreSQL
server, which the test takes away and brings back: the live feed keeps following, and
only the page's own origins may open its websocket."""

import asyncio
import os
import re
import time

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from rentalstream import embedded, kafka_server, processes, services
from schemas.events import PriceScored, utc_now
from tests.helpers import metric_samples, service_process, wait_for

pytestmark = pytest.mark.integration


def price(rental_id: int) -> bytes:
    now = utc_now()
    return (
        PriceScored(
            price_id=f"rental-{rental_id}",
            rental_id=rental_id,
            price_per_day=100.0,
            model_name="rentalstream-price",
            model_version="1",
            event_time=now,
            scored_at=now,
        )
        .model_dump_json()
        .encode()
    )


def send_price(bootstrap: str, rental_id: int) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("prices", price(rental_id))
        finally:
            await producer.stop()

    asyncio.run(send())


def counted(url: str, name: str, labels: tuple = ()) -> float:
    return metric_samples(url, name).get(labels, 0.0)


@pytest.fixture
def cluster(tmp_path, kafka_runtime):
    from runtime.kafka.topics import ensure_topics

    running = kafka_server.start_cluster(tmp_path / "kafka", kafka_runtime, nodes=1)
    try:
        asyncio.run(ensure_topics(running.bootstrap, partitions=3))
        yield running
    finally:
        running.stop()


def test_the_live_feed_follows_across_a_broker_restart_and_a_database_outage(
    cluster, own_postgres, mlflow_registry, data_dir, tmp_path
):
    bootstrap = cluster.bootstrap
    env = {
        **os.environ,
        "RENTALSTREAM_HOME": str(tmp_path / "home"),
        "RENTALSTREAM_DATA_DIR": str(data_dir),
        "RENTALSTREAM_REGISTRY_TRACKING_URI": mlflow_registry[0],
        "RENTALSTREAM_KAFKA_BOOTSTRAP": bootstrap,
        "RENTALSTREAM_DATABASE_URL": own_postgres.url,
        "RENTALSTREAM_DASHBOARD_PORT": str(processes.free_port()),
        "RENTALSTREAM_DASHBOARD_AGGREGATE_SECONDS": "0.5",
    }
    url = f"http://127.0.0.1:{env['RENTALSTREAM_DASHBOARD_PORT']}"
    log = tmp_path / "dashboard.log"
    prices_read = ("rentalstream_dashboard_messages_total", (("topic", "prices"),))

    def reads(n: int, what: str) -> None:
        wait_for(lambda: counted(url, *prices_read) >= n, 120, what, dashboard, log)

    with service_process("dashboard", env, log) as dashboard:
        services.wait_ready("dashboard", f"{url}/ready", dashboard.pid, time.monotonic() + 120, str(log))
        send_price(bootstrap, 1)
        reads(1, "the first price")

        [node] = cluster.nodes
        cluster.stop_node(node)
        cluster.start_node(node)
        send_price(bootstrap, 2)
        reads(2, "a price sent after the broker came back")

        embedded.stop_postgres(own_postgres.pgdata, own_postgres.system_user, mode="immediate")
        send_price(bootstrap, 3)
        reads(3, "a price sent while the database is away")
        wait_for(
            lambda: counted(url, "rentalstream_dashboard_aggregate_errors_total") > 0,
            60,
            "a failed aggregate read",
            dashboard,
            log,
        )
        embedded.start_postgres(own_postgres.pgdata, own_postgres.port)
        refreshed = counted(url, "rentalstream_dashboard_aggregate_seconds_count")
        send_price(bootstrap, 4)  # new messages make the aggregates stale: read again
        reads(4, "a price sent after the database came back")
        wait_for(
            lambda: counted(url, "rentalstream_dashboard_aggregate_seconds_count") > refreshed,
            60,
            "the aggregates to be read again",
            dashboard,
            log,
        )
        assert dashboard.poll() is None
        assert counted(url, *prices_read) == 4  # each price read once


def test_only_the_pages_own_origins_may_open_its_websocket(scorer_env, tmp_path):
    port = processes.free_port()
    env = {
        **scorer_env,
        "RENTALSTREAM_DASHBOARD_PORT": str(port),
        "RENTALSTREAM_DASHBOARD_WEBSOCKET_ORIGINS": '["dashboard.example:8443"]',
    }
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dashboard.log"
    with service_process("dashboard", env, log) as dashboard:
        services.wait_ready("dashboard", f"{url}/ready", dashboard.pid, time.monotonic() + 120, str(log))

        async def handshake(origin: str) -> int:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{url}/") as response:  # each page load gets its own session token
                    token = re.search(r'"token":\s*"([^"]+)"', await response.text()).group(1)
                try:
                    async with session.ws_connect(
                        f"ws://127.0.0.1:{port}/ws", protocols=("bokeh", token), headers={"Origin": origin}
                    ):
                        return 101
                except aiohttp.WSServerHandshakeError as refused:
                    return refused.status

        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", "https://dashboard.example:8443"):
            assert asyncio.run(handshake(origin)) == 101, origin
        for origin in ("http://evil.example", f"http://evil.example:{port}", "https://dashboard.example"):
            assert asyncio.run(handshake(origin)) == 403, origin
