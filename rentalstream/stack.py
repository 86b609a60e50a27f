"""`rentalstream up` / `down`: the embedded stack under ``<home>/``.

Each piece is started only when its endpoint is not configured: an external Kafka,
Postgres or MLflow set through ``RENTALSTREAM_*`` is used as is. What was started is
recorded in ``<home>/stack.json`` (endpoints and pids), which every other command
reads to find the stack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

from rentalstream import embedded, kafka_server, processes, services
from rentalstream.kafka_server import KafkaCluster
from runtime.kafka.topics import ensure_topics
from runtime.postgres import engines
from runtime.settings import Settings

log = logging.getLogger(__name__)


def is_running(settings: Settings) -> bool:
    state = settings.embedded_endpoints()
    pids = state.get("pids", {})
    return bool(state) and all(processes.alive(pid) for pid in pids.values())


def up(settings: Settings) -> dict:
    """Start what is missing, create topics and tables; return the stack description."""
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    if is_running(settings):
        state = settings.embedded_endpoints()
    else:
        if settings.stack_file.exists():
            down(settings)  # a half-dead stack: clear it before starting afresh
        state = _start(settings, home)
    # From here on the resolved endpoints are either configured or embedded.
    return {**state, **prepare(settings)}


def prepare(settings: Settings) -> dict:
    """Create the missing topics and tables (or columns) on the resolved endpoints; return
    every topic's partition count and what was created. Idempotent."""
    partitions = asyncio.run(
        ensure_topics(settings.resolved_kafka_bootstrap(), settings.topic_partitions, settings.topic_replication_factor)
    )
    return {"topics": partitions, "tables_created": engines.upgrade(settings.resolved_database_url())}


def _start(settings: Settings, home: Path) -> dict:
    state: dict = {"pids": {}}
    try:
        if not settings.kafka_bootstrap:
            broker = start_embedded_kafka(settings, home / "kafka")
            state["kafka_bootstrap"] = broker.bootstrap
            state["kafka"] = {"version": broker.runtime.version, "folder": str(broker.folder)}
            state["pids"]["broker"] = broker.nodes[0].pid
        if not settings.database_url:
            server = embedded.start_postgres(home / "postgres")
            state["database_url"] = server.url
            state["postgres"] = {"pgdata": str(server.pgdata), "system_user": server.system_user}
            state["pids"]["postgres"] = server.pid
        if not settings.mlflow_tracking_uri:
            (home / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
            state["mlflow_tracking_uri"] = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
            state["mlflow_artifact_root"] = (home / "mlflow" / "artifacts").as_uri()
    except BaseException:
        _stop(state)
        raise
    settings.stack_file.write_text(json.dumps(state, indent=2))
    return state


def start_embedded_kafka(settings: Settings, folder: Path) -> KafkaCluster:
    """One Apache Kafka node (broker and controller) with its log in ``folder``; the jars
    are fetched from Maven Central the first time, with a progress bar."""
    from tqdm import tqdm

    from rentalstream.kafka_jars import locked_jars

    with tqdm(total=len(locked_jars()), unit="jar", desc="Apache Kafka jars", leave=False, disable=None) as bar:
        runtime = kafka_server.kafka_runtime(
            settings.kafka_cache_dir,
            settings.kafka_java,
            settings.kafka_heap,
            settings.maven_repository,
            on_progress=lambda jar: bar.update(1),
        )
    return kafka_server.start_cluster(folder, runtime, nodes=1)


def up_with_services(settings: Settings, wanted=services.ALL) -> tuple[dict, list[str]]:
    """``up`` (which prepares topics and tables), then the rest of what ``rentalstream
    init`` does (train and register a model if the registry has no champion), then the
    ``wanted`` services; returns the stack and the services started now."""
    state = up(settings)
    subprocess.run([sys.executable, "-m", "rentalstream.cli", "train", "--if-no-champion"], check=True)
    started = services.ensure_services(settings, wanted)
    return settings.embedded_endpoints() | {"topics": state["topics"]}, started


def down(settings: Settings) -> list[str]:
    """Stop everything ``up`` started, services first; return what was stopped."""
    stopped = services.stop_services(settings)
    state = settings.embedded_endpoints()
    stopped += _stop(state)
    settings.stack_file.unlink(missing_ok=True)
    return stopped


def _stop(state: dict) -> list[str]:
    stopped = []
    if "postgres" in state:
        embedded.stop_postgres(Path(state["postgres"]["pgdata"]), state["postgres"]["system_user"])
        stopped.append("postgres")
    if "broker" in state.get("pids", {}):
        processes.stop_pid(state["pids"]["broker"])
        stopped.append("broker")
    return stopped
