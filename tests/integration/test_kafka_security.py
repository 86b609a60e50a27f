"""Apache Kafka that speaks only TLS with SCRAM-SHA-512 logins and enforces ACLs, against
a CA made in the test (``rentalstream.kafka_server.BrokerSecurity``).

Each service logs in as its own principal, with the ACLs ``rentalstream init --kafka-acls``
grants it as the cluster's admin (``rentalstream.kafka_acls``), and no more: the replay
writes ``rentals``; the scorer reads its inputs and writes its results (in
transactions); the monitor reads what it watches and writes ``drift``; the bridge
writes price requests and reads replies; the dashboard reads the result topics. The
scorer, the monitor and the bridge run as processes configured only through their
``RENTALSTREAM_KAFKA_*`` settings (the password from a ``_FILE``), and a replay and a
``/predict`` go through all of them. Then what is refused:

- a client that speaks plaintext, one with a wrong password, and one that trusts
  another CA cannot even connect;
- the scorer's principal cannot write ``drift`` or its own input ``rentals``, nor read
  ``drift``;
- the bridge's principal cannot read ``prices``;
- the scorer's principal cannot grant ACLs.

No password shows in the services' logs or ``/metrics``.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from aiokafka.errors import ClusterAuthorizationFailedError
from sqlalchemy import create_engine, text

from dashboard.feed import LiveFeed
from dashboard.metrics import DashboardMetrics
from producers.replay import publish_events, rental_events
from rentalstream import kafka_acls, kafka_server, processes, services
from rentalstream.kafka_server import BrokerSecurity, KafkaCluster
from runtime.kafka.security import client_options
from runtime.kafka.topics import ensure_topics
from runtime.postgres import roles
from runtime.postgres.engines import async_engine
from runtime.settings import KafkaSettings, Settings, normalised_database_url
from schemas.predict import EXAMPLE_CAR
from schemas.topics import DRIFT, PRICES, RENTALS
from tests.conftest import BRIDGE_API_KEY, as_role
from tests.helpers import connects, refused_at_connect, refused_to_read, refused_to_write, service_process
from tests.tls import authority, server_certificate

pytestmark = pytest.mark.integration
SERVICES = kafka_acls.SERVICES
EVENTS = 300


class SecuredKafka:
    def __init__(self, cluster: KafkaCluster, passwords: dict[str, str], ca_file: Path, folder: Path) -> None:
        self.cluster, self.passwords, self.ca_file, self.folder = cluster, passwords, ca_file, folder
        self.admin = cluster.security.admin
        self.passwords[self.admin] = cluster.security.admin_password

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    def principal(self, service: str) -> str:
        return service if service == self.admin else kafka_acls.principal(service)

    def settings(self, service: str, password: str | None = None, ca_file: Path | None = None) -> KafkaSettings:
        """``service``'s settings: its own principal, its password."""
        return KafkaSettings(
            bootstrap=self.bootstrap,
            security_protocol="SASL_SSL",
            sasl_username=self.principal(service),
            sasl_password=password or self.passwords[service],
            ca_file=ca_file or self.ca_file,
        )

    def env(self, service: str) -> dict[str, str]:
        """A service's Kafka settings, its password in a file only it reads."""
        secret = self.folder / f"{service}.password"
        secret.write_text(self.passwords[service] + "\n")
        secret.chmod(0o600)
        return {
            "RENTALSTREAM_KAFKA_BOOTSTRAP": self.bootstrap,
            "RENTALSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "RENTALSTREAM_KAFKA_SASL_USERNAME": self.principal(service),
            "RENTALSTREAM_KAFKA_SASL_PASSWORD_FILE": str(secret),
            "RENTALSTREAM_KAFKA_CA_FILE": str(self.ca_file),
        }


@pytest.fixture
def secured_kafka(tmp_path, kafka_runtime) -> Iterator[SecuredKafka]:
    folder = tmp_path / "tls"
    folder.mkdir()
    ca = authority("rentalstream test CA")
    ca_file = ca.write(folder / "ca.pem")
    certificate, key = folder / "node.pem", folder / "node.key"
    server_certificate(ca, certificate, key, addresses=["127.0.0.1"], client=True)
    keystore = folder / "keystore.pem"  # Kafka's PEM keystore: the key, then its certificate
    keystore.write_bytes(key.read_bytes() + certificate.read_bytes())
    keystore.chmod(0o600)
    passwords = {service: secrets.token_urlsafe(16) for service in SERVICES}
    security = BrokerSecurity(
        keystore=keystore,
        truststore=ca_file,
        node_principal="CN=127.0.0.1",
        admin_password=secrets.token_urlsafe(16),
        users={kafka_acls.principal(service): password for service, password in passwords.items()},
    )
    cluster = kafka_server.start_cluster(tmp_path / "kafka", kafka_runtime, nodes=1, security=security)
    try:
        asyncio.run(ensure_topics(cluster.bootstrap, partitions=3, security=cluster.client_options))
        yield SecuredKafka(cluster, passwords, ca_file, folder)
    finally:
        cluster.stop()


@pytest.fixture
def kafka_bootstrap(secured_kafka: SecuredKafka) -> str:
    """The services of this test (``scorer_env``) reach the secured broker."""
    return secured_kafka.bootstrap


async def replay_watched_by_the_dashboard(kafka: SecuredKafka, database_url: str, events) -> LiveFeed:
    """Publish ``events`` as the replay; return the dashboard's live feed (logged in as
    the dashboard) once it has seen the price of each."""
    engine = async_engine(database_url, pool_size=1)
    feed = LiveFeed(
        kafka.bootstrap,
        engine,
        group_id="rentalstream-dashboard",
        buffer_rows=len(events),
        aggregate_seconds=1,
        metrics=DashboardMetrics(),
        security=client_options(kafka.settings("dashboard")),
    )
    following = asyncio.create_task(feed.run())
    try:
        async with asyncio.timeout(120):
            while not feed.ready:
                await asyncio.sleep(0.1)
            await publish_events(kafka.bootstrap, events, security=client_options(kafka.settings("producer")))
            while feed.prices_seen < len(events):
                await asyncio.sleep(0.1)
        return feed
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await engine.dispose()


def test_each_service_logs_in_as_its_own_principal_and_is_refused_outside_its_acls(
    secured_kafka, scorer_env, delays_xlsx, pricing_csv, tmp_path
):
    kafka = secured_kafka
    database = scorer_env["RENTALSTREAM_DATABASE_URL"]
    base = scorer_env
    ports = {name: str(processes.free_port()) for name in ("monitor", "bridge")}
    envs = {
        "scorer": {**base, **kafka.env("scorer"), "RENTALSTREAM_DATABASE_URL": as_role(database, roles.SCORER)},
        "monitor": {
            **base,
            **kafka.env("monitor"),
            "RENTALSTREAM_DATABASE_URL": as_role(database, roles.MONITOR),
            "RENTALSTREAM_MONITOR_PORT": ports["monitor"],
            "RENTALSTREAM_MONITOR_STATE_SECONDS": "0.5",
        },
        "bridge": {
            **base,
            **kafka.env("bridge"),
            "RENTALSTREAM_BRIDGE_PORT": ports["bridge"],
            "RENTALSTREAM_BRIDGE_API_KEY": BRIDGE_API_KEY,
        },
    }
    urls = {
        "scorer": f"http://127.0.0.1:{base['RENTALSTREAM_SCORER_PORT']}",
        "monitor": f"http://127.0.0.1:{ports['monitor']}",
        "bridge": f"http://127.0.0.1:{ports['bridge']}",
    }
    # A principal that is not a super user cannot grant itself more.
    with pytest.raises(ClusterAuthorizationFailedError):
        asyncio.run(
            kafka_acls.grant(Settings(kafka=kafka.settings("scorer")), client_options(kafka.settings("scorer")))
        )
    # The operator's step: init as the cluster's admin grants each service its ACLs.
    init = subprocess.run(
        [sys.executable, "-m", "rentalstream.cli", "init", "--kafka-acls"],
        env={**base, **kafka.env(kafka.admin), "COLUMNS": "500"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    assert "Kafka ACLs of rentalstream-scorer: READ topic rentals; READ topic price-requests;" in init.stdout
    assert kafka.passwords[kafka.admin] not in init.stdout + init.stderr

    events = rental_events(delays_xlsx, pricing_csv, limit=EVENTS)
    with ExitStack() as stack:
        for name, env in envs.items():
            log = tmp_path / f"{name}.log"
            process = stack.enter_context(service_process(name, env, log))
            services.wait_ready(name, f"{urls[name]}/ready", process.pid, time.monotonic() + 180, str(log))

        feed = asyncio.run(replay_watched_by_the_dashboard(kafka, as_role(database, roles.READER), events))
        assert {row["rental_id"] for row in feed.snapshot().prices} == {e.rental_id for e in events}
        answer = httpx.post(
            f"{urls['bridge']}/predict", json=EXAMPLE_CAR, headers={"X-API-Key": BRIDGE_API_KEY}, timeout=10
        )
        assert answer.status_code == 200 and answer.json()["price_per_day"] > 0, answer.text
        engine = create_engine(normalised_database_url(database))
        with engine.connect() as conn:
            seen = conn.execute(text("SELECT events_seen FROM drift_signals WHERE signal = 'rentals/mileage'")).scalar()
        engine.dispose()
        assert seen == EVENTS  # the monitor read every rental as its own principal
        metrics = {name: httpx.get(f"{url}/metrics", timeout=10).text for name, url in urls.items()}
    for name in envs:  # no password in any log or /metrics
        told = (tmp_path / f"{name}.log").read_text() + metrics[name]
        assert not [user for user, password in kafka.passwords.items() if password in told], name

    # Refused before any request: plaintext, a wrong password, another CA.
    other_ca = authority("another CA").write(tmp_path / "other-ca.pem")
    asyncio.run(connects(bootstrap_servers=kafka.bootstrap, **client_options(kafka.settings("scorer"))))
    asyncio.run(refused_at_connect(bootstrap_servers=kafka.bootstrap))
    wrong_password = kafka.settings("scorer", password="not-its-password")
    asyncio.run(refused_at_connect(bootstrap_servers=kafka.bootstrap, **client_options(wrong_password)))
    wrong_ca = kafka.settings("scorer", ca_file=other_ca)
    asyncio.run(refused_at_connect(bootstrap_servers=kafka.bootstrap, **client_options(wrong_ca)))
    # Logged in, but outside its ACLs.
    as_scorer = {"bootstrap_servers": kafka.bootstrap, **client_options(kafka.settings("scorer"))}
    asyncio.run(refused_to_write(DRIFT.name, **as_scorer))
    asyncio.run(refused_to_write(RENTALS.name, **as_scorer))
    asyncio.run(refused_to_read(DRIFT.name, **as_scorer))
    as_bridge = {"bootstrap_servers": kafka.bootstrap, **client_options(kafka.settings("bridge"))}
    asyncio.run(refused_to_read(PRICES.name, **as_bridge))
