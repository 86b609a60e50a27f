"""`rentalstream up` / `down`: the embedded stack under ``<home>/``.

Each piece is started only when its endpoint is not configured: an external Kafka,
Postgres or MLflow set through ``RENTALSTREAM_*`` is used as is. What was started is
recorded in ``<home>/stack.json`` (endpoints and pids), which every other command
reads to find the stack.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

from rentalstream import embedded, kafka_server, processes, services
from rentalstream.kafka_server import KafkaCluster
from runtime.kafka.security import client_options
from runtime.kafka.topics import ensure_topics
from runtime.postgres import engines, roles
from runtime.settings import Settings
from runtime.stack_state import EmbeddedKafka, EmbeddedPostgres, StackState

log = logging.getLogger(__name__)


def is_running(settings: Settings) -> bool:
    state = settings.stack
    return state is not None and all(processes.alive(pid) for pid in state.pids.values())


def up(settings: Settings) -> dict:
    """Start what is missing (recorded in ``settings.stack``), create topics and tables;
    return what ``prepare`` did."""
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not is_running(settings):
        if settings.stack is not None:
            down(settings)  # a half-dead stack: clear it before starting afresh
        settings.record_stack(_start(settings, home))
    # From here on the resolved endpoints are either configured or embedded.
    return prepare(settings)


def prepare(settings: Settings) -> dict:
    """Create the missing topics and tables (or columns) on the resolved endpoints; return
    every topic's partition count and what was created. Idempotent."""
    partitions = asyncio.run(
        ensure_topics(
            settings.resolved_kafka_bootstrap(),
            settings.kafka.topic_partitions,
            settings.kafka.topic_replication_factor,
            security=client_options(settings.kafka),
        )
    )
    created = engines.upgrade(settings.resolved_database_url())
    if services.embedded_database(settings):
        roles.create_roles(settings.resolved_database_url())  # each service runs as its role (services.spawn)
    return {"topics": partitions, "tables_created": created}


def _start(settings: Settings, home: Path) -> StackState:
    state = StackState()
    try:
        if not settings.kafka.bootstrap:
            broker = start_embedded_kafka(settings, home / "kafka")
            state.kafka_bootstrap = broker.bootstrap
            state.kafka = EmbeddedKafka(version=broker.runtime.version, folder=broker.folder)
            state.pids["broker"] = broker.nodes[0].pid
        if not settings.database.url:
            server = embedded.start_postgres(home / "postgres")
            state.database_url = server.url
            state.postgres = EmbeddedPostgres(pgdata=server.pgdata, system_user=server.system_user)
            state.pids["postgres"] = server.pid
        if not settings.registry.tracking_uri:
            (home / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
            state.mlflow_tracking_uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
            state.mlflow_artifact_root = (home / "mlflow" / "artifacts").as_uri()
    except BaseException:
        _stop(state)
        raise
    return state


def start_embedded_kafka(settings: Settings, folder: Path) -> KafkaCluster:
    """One Apache Kafka node (broker and controller) with its log in ``folder``; the jars
    are fetched from Maven Central the first time, with a progress bar."""
    from tqdm import tqdm

    from rentalstream.kafka_jars import locked_jars

    with tqdm(total=len(locked_jars()), unit="jar", desc="Apache Kafka jars", leave=False, disable=None) as bar:
        runtime = kafka_server.kafka_runtime(
            settings.kafka.cache_dir,
            settings.kafka.java,
            settings.kafka.heap,
            settings.kafka.maven_repository,
            on_progress=lambda jar: bar.update(1),
        )
    return kafka_server.start_cluster(folder, runtime, nodes=1)


def up_with_services(settings: Settings, wanted: tuple[services.Service, ...] | None = None) -> tuple[dict, list[str]]:
    """``up`` (which prepares topics and tables), then the rest of what ``rentalstream
    init`` does (train and register a model if the registry has no champion), then the
    ``wanted`` services (by default those of ``services.of_stack``); returns what
    ``prepare`` did and the services started now."""
    prepared = up(settings)
    subprocess.run([sys.executable, "-m", "rentalstream.cli", "train", "--if-no-champion"], check=True)
    started = services.ensure_services(settings, services.of_stack(settings) if wanted is None else wanted)
    return prepared, started


def down(settings: Settings) -> list[str]:
    """Stop everything ``up`` started, services first; return what was stopped."""
    stopped = services.stop_services(settings)
    if settings.stack is not None:
        stopped += _stop(settings.stack)
    settings.record_stack(None)
    return stopped


def _stop(state: StackState) -> list[str]:
    stopped = []
    if state.postgres is not None:
        embedded.stop_postgres(state.postgres.pgdata, state.postgres.system_user)
        stopped.append("postgres")
    if "broker" in state.pids:
        processes.stop_pid(state.pids["broker"])
        stopped.append("broker")
    return stopped
