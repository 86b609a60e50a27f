"""Fixtures that start what the tests need: a real Apache Kafka broker, a real
PostgreSQL server and an MLflow registry with a trained champion.

Backend: compose.yaml's Kafka and PostgreSQL images, run by testcontainers, when a
Docker engine answers a ping and testcontainers is installed (tests/containers.py);
otherwise Apache Kafka and PostgreSQL run here as processes, as in the embedded stack.
``RENTALSTREAM_TEST_BACKEND=embedded|containers`` forces one. Either way, the tests that
stop and restart servers of their own (broker faults, a database outage, compose's Kafka
node) run them as local processes.

The tests run in an explicit environment: the shell's ``RENTALSTREAM_*`` settings are
dropped (all but the data folder and the ``RENTALSTREAM_TEST_*`` options), and compiled
models go to a folder of the session's own, not the user's cache.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import create_engine, text

from rentalstream import embedded, kafka_server, processes, services
from rentalstream.kafka_jars import kafka_version
from rentalstream.kafka_server import KafkaRuntime
from runtime import tracing
from runtime.kafka import traces
from runtime.kafka.topics import ensure_topics
from runtime.postgres import engines, roles
from runtime.settings import Settings, normalised_database_url
from tests.helpers import once, service_process

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"


def docker_answers() -> bool:
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return False
    try:
        return bool(docker.from_env(timeout=3).ping())
    except (DockerException, OSError):  # no socket, refused, or an engine that errs
        return False


def choose_backend() -> str:
    forced = os.environ.get("RENTALSTREAM_TEST_BACKEND")
    if forced:
        return forced
    try:
        import testcontainers  # noqa: F401
    except ImportError:
        return "embedded"
    return "containers" if docker_answers() else "embedded"


BACKEND = choose_backend()


def drop_shell_settings() -> list[str]:
    """Remove the shell's rentalstream settings from this process (and so from every
    service the tests start), so that a user's exported RENTALSTREAM_KAFKA_BOOTSTRAP or
    RENTALSTREAM_KAFKA_TOPIC_PARTITIONS does not change what the tests see. Returns their names."""
    kept = {"RENTALSTREAM_DATA_DIR"}
    dropped = sorted(
        name
        for name in os.environ
        if name.startswith("RENTALSTREAM_") and name not in kept and not name.startswith("RENTALSTREAM_TEST_")
    )
    for name in dropped:
        del os.environ[name]
    return dropped


DROPPED_SETTINGS = drop_shell_settings()


def backend_description() -> str:
    if BACKEND == "containers":
        from tests.containers import SERVICES

        images = ", ".join(SERVICES[name]["image"] for name in ("kafka", "postgres"))
        return f"containers ({images}, by testcontainers)"
    return f"embedded (Apache Kafka {kafka_version()} and PostgreSQL as local processes)"


def pytest_report_header(config) -> list[str]:
    lines = [f"rentalstream test backend: {backend_description()}"]
    if DROPPED_SETTINGS:
        lines.append(f"rentalstream settings ignored from the shell: {', '.join(DROPPED_SETTINGS)}")
    return lines


@pytest.fixture(scope="session", autouse=True)
def session_model_cache(tmp_path_factory) -> Path:
    """Compiled models go to this session's folder: whether a scorer prices with compiled
    trees then depends on the tests that ran before it, never on the user's cache."""
    folder = tmp_path_factory.mktemp("compiled-models")
    os.environ["RENTALSTREAM_SCORER_MODEL_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("RENTALSTREAM_DATA_DIR", DEFAULT_DATA_DIR))
    if not (path / "get_around_pricing_project.csv").exists():
        pytest.fail(f"datasets not found in {path}; set RENTALSTREAM_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def pricing_csv(data_dir: Path) -> Path:
    return data_dir / "get_around_pricing_project.csv"


@pytest.fixture(scope="session")
def delays_xlsx(data_dir: Path) -> Path:
    return data_dir / "get_around_delay_analysis.xlsx"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    if BACKEND == "containers":
        from tests.containers import postgres_container, postgres_spec

        with postgres_container(postgres_spec(processes.free_port())) as url:
            engines.upgrade(url)
            roles.create_roles(url, ROLE_PASSWORDS)
            yield url
        return
    server = embedded.start_postgres(tmp_path_factory.mktemp("postgres") / "pgdata")
    try:
        engines.upgrade(server.url)
        roles.create_roles(server.url, ROLE_PASSWORDS)
        yield server.url
    finally:
        embedded.stop_postgres(server.pgdata, server.system_user, mode="immediate")


ROLE_PASSWORDS = {role: f"{role}-in-tests" for role in roles.ROLES}


def as_role(database_url: str, role: str) -> str:
    """``database_url`` as ``role`` of least privilege (``runtime/postgres/roles.py``): the
    services started by the fixtures below run so, so a right they lack fails their tests."""
    return roles.role_url(database_url, role, ROLE_PASSWORDS[role])


@pytest.fixture
def own_postgres(tmp_path):
    """A PostgreSQL server of this test's own, which it may stop and start again."""
    server = embedded.start_postgres(tmp_path / "pgdata")
    engines.upgrade(server.url)
    try:
        yield server
    finally:
        embedded.stop_postgres(server.pgdata, server.system_user, mode="immediate")


@pytest.fixture
def clean_database(database_url: str) -> str:
    engine = create_engine(normalised_database_url(database_url))
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE cars, rentals, prices, price_requests, delays, dead_letters, drift_events, drift_signals, "
                "retrains"
            )
        )
    engine.dispose()
    return database_url


@dataclass
class RunningBroker:
    bootstrap: str
    stop: Callable[[], None]


@pytest.fixture(scope="session")
def kafka_runtime() -> KafkaRuntime:
    """Java and the pinned Apache Kafka jars (fetched once into the user's cache)."""
    return kafka_server.kafka_runtime(Settings().kafka.cache_dir.expanduser())


@pytest.fixture
def kafka_broker(tmp_path, kafka_runtime) -> Iterator[RunningBroker]:
    """A fresh Apache Kafka node per test (KRaft, broker and controller, log in the
    test's folder), with the catalogue's topics; ``stop()`` lets a test take it away."""
    if BACKEND == "containers":
        from tests.containers import kafka_container, kafka_spec

        with ExitStack() as stack:
            bootstrap = stack.enter_context(kafka_container(kafka_spec(processes.free_port())))
            asyncio.run(ensure_topics(bootstrap, partitions=3))
            yield RunningBroker(bootstrap, once(stack.close))
        return
    cluster = kafka_server.start_cluster(tmp_path / "kafka", kafka_runtime, nodes=1)
    stop = once(cluster.stop)
    try:
        asyncio.run(ensure_topics(cluster.bootstrap, partitions=3))
        yield RunningBroker(cluster.bootstrap, stop)
    finally:
        stop()


@pytest.fixture
def kafka_bootstrap(kafka_broker: RunningBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def delay_history(delays_xlsx: Path) -> list[dict]:
    from runtime.datasets import read_delay_history

    return read_delay_history(delays_xlsx)


@pytest.fixture(scope="session")
def mlflow_registry(tmp_path_factory, pricing_csv: Path, delay_history: list[dict]):
    """An MLflow registry (SQLite + local artifacts) holding a trained champion, with its
    trees compiled for this machine (into the scorers' default cache, as `rentalstream
    train` does)."""
    from runtime.settings import Settings
    from training.features import read_pricing
    from training.train import train_and_register

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = train_and_register(
        read_pricing(pricing_csv),
        delay_history,
        tracking_uri=uri,
        experiment_name="rentalstream-price",
        model_name="rentalstream-price",
        artifact_location=(root / "artifacts").as_uri(),
        compiled_trees_dir=Settings().scorer.model_cache_dir.expanduser(),
    )
    return uri, result


@pytest.fixture
def scorer_env(tmp_path, kafka_bootstrap, clean_database, mlflow_registry, data_dir) -> dict[str, str]:
    return {
        **os.environ,
        "RENTALSTREAM_HOME": str(tmp_path / "home"),
        "RENTALSTREAM_DATA_DIR": str(data_dir),
        "RENTALSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "RENTALSTREAM_DATABASE_URL": clean_database,
        "RENTALSTREAM_REGISTRY_TRACKING_URI": mlflow_registry[0],
        "RENTALSTREAM_SCORER_PORT": str(processes.free_port()),
    }


@pytest.fixture
def scorer_process(scorer_env, tmp_path) -> Iterator[subprocess.Popen]:
    """The real scorer (`rentalstream scorer`) as a child process; stopped with SIGTERM."""
    env = {**scorer_env, "RENTALSTREAM_DATABASE_URL": as_role(scorer_env["RENTALSTREAM_DATABASE_URL"], roles.SCORER)}
    with service_process("scorer", env, tmp_path / "scorer.log") as process:
        yield process


BRIDGE_API_KEY = "s3cret-for-tests"


@pytest.fixture
def bridge_env(scorer_env) -> dict[str, str]:
    """The bridge as the tests run it: an API key, and small limits that are quick to hit."""
    return {
        **scorer_env,
        "RENTALSTREAM_BRIDGE_PORT": str(processes.free_port()),
        "RENTALSTREAM_BRIDGE_API_KEY": BRIDGE_API_KEY,
        "RENTALSTREAM_BRIDGE_MAX_CARS": "5",
        "RENTALSTREAM_BRIDGE_MAX_BODY_BYTES": "4096",
        "RENTALSTREAM_BRIDGE_TIMEOUT_SECONDS": "2",
    }


@pytest.fixture
def bridge_url(bridge_env, tmp_path) -> Iterator[str]:
    """The real HTTP bridge (`rentalstream bridge`), ready (broker, reply consumer, champion)."""
    url = f"http://127.0.0.1:{bridge_env['RENTALSTREAM_BRIDGE_PORT']}"
    log = tmp_path / "bridge.log"
    with service_process("bridge", bridge_env, log) as process:
        services.wait_ready("bridge", f"{url}/ready", process.pid, time.monotonic() + 120, str(log))
        yield url


@pytest.fixture
def monitor_env(scorer_env) -> dict[str, str]:
    return {
        **scorer_env,
        "RENTALSTREAM_MONITOR_PORT": str(processes.free_port()),
        "RENTALSTREAM_MONITOR_STATE_SECONDS": "0.5",
    }


@pytest.fixture
def monitor_process(monitor_env, tmp_path) -> Iterator[subprocess.Popen]:
    """The real drift monitor (`rentalstream monitor`), ready (reference loaded, partitions held)."""
    url = f"http://127.0.0.1:{monitor_env['RENTALSTREAM_MONITOR_PORT']}"
    log = tmp_path / "monitor.log"
    env = {**monitor_env, "RENTALSTREAM_DATABASE_URL": as_role(monitor_env["RENTALSTREAM_DATABASE_URL"], roles.MONITOR)}
    with service_process("monitor", env, log) as process:
        services.wait_ready("monitor", f"{url}/ready", process.pid, time.monotonic() + 120, str(log))
        yield process


@pytest.fixture
def exported_spans(monkeypatch) -> InMemorySpanExporter:
    """Traces kept in this process, by an SDK provider of the test's own with the SDK's
    in-memory exporter (the process's global provider stays unset)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(traces, "recording", lambda: True)
    monkeypatch.setattr(tracing, "recording", lambda: True)
    monkeypatch.setattr(traces, "tracer", lambda: provider.get_tracer("test"))
    return exporter
