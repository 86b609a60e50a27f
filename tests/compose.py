"""compose.yaml as the deployment tests read it: parsed, its values as `docker compose`
sees them when no variable is set in the shell, and its Kafka node run on this machine."""

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from rentalstream.kafka_server import LOG4J_CONFIG, KafkaRuntime
from rentalstream.processes import free_port, stop_pid, wait_for_port

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[1] / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def with_defaults(value) -> str:
    """``value`` with each ``${NAME:-default}`` replaced by its default (``${NAME}`` by "")."""
    return VARIABLE.sub(lambda match: match["default"] or "", str(value))


# -- compose's Kafka, as the apache/kafka image configures it --------------------------

# Where compose's Kafka listens, and what this machine gives it instead.
ADDRESS = re.compile(r"(?P<scheme>\w+://)?(?P<host>[\w.-]*):(?P<port>\d+)")


def kafka_image_environment(environment: dict) -> dict[str, str]:
    """compose's ``kafka`` environment as the image's scripts hand it to Kafka's docker
    wrapper (docker/resources/common-scripts in apache/kafka): ``configureDefaults`` sets
    CLUSTER_ID when unset, and ``configure`` derives KAFKA_LISTENERS from
    KAFKA_ADVERTISED_LISTENERS (every host made 0.0.0.0) when it is unset and the node is
    not a controller only. The wrapper does the rest: environment to properties, then
    the storage format."""
    env = {name: with_defaults(value) for name, value in environment.items()}
    env.setdefault("CLUSTER_ID", "5L6g3nShT-eMCtK--X86sw")
    if (
        "KAFKA_LISTENERS" not in env
        and env.get("KAFKA_PROCESS_ROLES") != "controller"
        and env.get("KAFKA_ADVERTISED_LISTENERS")
    ):
        env["KAFKA_LISTENERS"] = re.sub(r"://[^:]*:", "://0.0.0.0:", env["KAFKA_ADVERTISED_LISTENERS"])
    return env


def on_this_machine(env: dict[str, str], ports: dict[int, int], log_dir: Path) -> dict[str, str]:
    """``env`` with only what ties it to compose's network changed: every host:port of the
    listeners and the controller quorum becomes 127.0.0.1 and this machine's port for
    that compose port, and the log goes to ``log_dir``. Every other setting stays as
    compose wrote it, so a wrong one still breaks the node."""
    moved = dict(env)
    for name in ("KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS", "KAFKA_CONTROLLER_QUORUM_VOTERS"):
        if name in moved:
            moved[name] = ADDRESS.sub(lambda m: f"{m['scheme'] or ''}127.0.0.1:{ports[int(m['port'])]}", moved[name])
    moved["KAFKA_LOG_DIRS"] = str(log_dir)
    return moved


def compose_ports(env: dict[str, str]) -> list[int]:
    """Every port compose's Kafka listens on (its listeners and the controller quorum's)."""
    found = set()
    for name in ("KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS", "KAFKA_CONTROLLER_QUORUM_VOTERS"):
        found |= {int(m["port"]) for m in ADDRESS.finditer(env.get(name, ""))}
    return sorted(found)


@contextmanager
def compose_kafka(runtime: KafkaRuntime, folder: Path) -> Iterator[tuple[str, Path]]:
    """A Kafka node configured from compose's ``kafka`` environment by Kafka's own docker
    wrapper (``kafka.docker.KafkaDockerWrapper setup``: environment to server.properties,
    then the storage format, as the image's launch script runs it), then started on
    that file as the image starts it. Yields compose's bootstrap (``kafka:9092``) as
    this machine reaches it, and the server.properties the wrapper wrote; stopped (by
    pid) on the way out."""
    env = kafka_image_environment(SERVICES["kafka"]["environment"])
    ports = {port: free_port() for port in compose_ports(env)}
    env = on_this_machine(env, ports, folder / "data")
    defaults, mounted, final = (folder / name for name in ("docker-defaults", "docker-mounted", "config"))
    for directory in (defaults, mounted, final):
        directory.mkdir(parents=True, exist_ok=True)
    # The image's defaults: used only where the environment says nothing.
    (defaults / "server.properties").write_text("")
    for name in ("log4j2.yaml", "tools-log4j2.yaml"):
        shutil.copy(LOG4J_CONFIG, defaults / name)
    setup = subprocess.run(
        [
            runtime.java,
            "-cp",
            f"{runtime.jars}/*",
            "kafka.docker.KafkaDockerWrapper",
            "setup",
            "--default-configs-dir",
            str(defaults),
            "--mounted-configs-dir",
            str(mounted),
            "--final-configs-dir",
            str(final),
        ],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert setup.returncode == 0, f"the docker wrapper refused compose's environment:\n{setup.stdout}{setup.stderr}"
    properties = final / "server.properties"
    bootstrap = ADDRESS.sub(
        lambda m: f"127.0.0.1:{ports[int(m['port'])]}",
        with_defaults(COMPOSE["x-endpoints"]["RENTALSTREAM_KAFKA_BOOTSTRAP"]),
    )
    with (folder / "kafka.log").open("ab") as log:
        node = subprocess.Popen(
            runtime.command("kafka.Kafka", str(properties)),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        host, port = bootstrap.split(":")
        wait_for_port(host, int(port), timeout=90, process=node)
        yield bootstrap, properties
    finally:
        stop_pid(node.pid, timeout=30)
