"""compose.yaml as the deployment tests read it: parsed, its values as `docker compose`
sees them when no variable is set in the shell, and its Kafka node run on this machine."""

import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from rentalstream.kafka_server import LOG4J_CONFIG, TOOLS_LOG4J_CONFIG, KafkaRuntime
from rentalstream.processes import free_port, stop_pid, wait_for_port
from runtime.kafka.security import client_options
from runtime.settings import KafkaSettings

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


# What makes compose's Kafka speak TLS with SCRAM logins and enforce ACLs.
SECURITY_SETTINGS = re.compile(r"KAFKA_(SASL|SSL|OPTS$|LISTENER_NAME_|AUTHORIZER|SUPER_USERS)")
PLAINTEXT_PROTOCOLS = re.compile(r":(SASL_SSL|SSL|SASL_PLAINTEXT)\b")


def without_security(env: dict[str, str]) -> dict[str, str]:
    """``env`` with every listener in plaintext and no logins or ACLs: the tests' broker
    on a Docker engine (tests/containers.py), which the suite speaks to as to the
    embedded one. Security has tests of its own (test_kafka_security, and
    test_compose_commands on compose's own settings)."""
    plain = {name: value for name, value in env.items() if not SECURITY_SETTINGS.match(name)}
    plain["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] = PLAINTEXT_PROTOCOLS.sub(
        ":PLAINTEXT", env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    )
    return plain


# Where compose mounts a service's secrets.
SECRETS_MOUNT = "/run/secrets"


def mount_secrets(service: str, secrets: Path, into: Path | None = None) -> Path:
    """What compose mounts at /run/secrets in ``service``: its own secrets of the folder
    ``make compose-secrets`` wrote, and no other, linked into a folder of its own; or,
    for a server that runs as a user of its own, copied ``into`` a folder it can read."""
    mounted = into or secrets / ".mounted" / service
    mounted.mkdir(parents=True, exist_ok=True)
    for name in SERVICES[service].get("secrets", []):
        source = secrets / Path(COMPOSE["secrets"][name]["file"]).name
        (mounted / name).unlink(missing_ok=True)
        if into:
            shutil.copy(source, mounted / name)
        else:
            (mounted / name).symlink_to(source)
    return mounted


def on_this_machine(env: dict[str, str], ports: dict[int, int], log_dir: Path, secrets: Path) -> dict[str, str]:
    """``env`` with only what ties it to compose's network and mounts changed: every
    host:port of the listeners and the controller quorum becomes 127.0.0.1 and this
    machine's port for that compose port, the log goes to ``log_dir``, and every path in
    /run/secrets to the same file in ``secrets``. Every other setting stays as compose
    wrote it, so a wrong one still breaks the node."""
    moved = {name: value.replace(SECRETS_MOUNT, str(secrets)) for name, value in env.items()}
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


# The scripts of the image's /opt/kafka/bin that compose runs, as this machine runs them:
# Kafka's main classes, from the pinned jars, with KAFKA_OPTS (as kafka-run-class.sh).
KAFKA_SCRIPTS = {
    "kafka-storage.sh": "kafka.tools.StorageTool",
    "kafka-broker-api-versions.sh": "org.apache.kafka.tools.BrokerApiVersionsCommand",
}


def kafka_home(runtime: KafkaRuntime, folder: Path) -> Path:
    """A stand-in for the image's /opt/kafka: bin/kafka-run-class.sh and the scripts above."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    scripts = {
        "kafka-run-class.sh": f'exec "{runtime.java}" $KAFKA_OPTS -Xmx256m '
        f'-Dlog4j2.configurationFile="{TOOLS_LOG4J_CONFIG}" -cp "{runtime.jars}/*" "$@"',
        **{name: f'exec "{bin_dir}/kafka-run-class.sh" {main} "$@"' for name, main in KAFKA_SCRIPTS.items()},
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return folder


@dataclass
class ComposeKafka:
    """compose's Kafka node on this machine: compose's bootstrap (``kafka:9092``) as this
    machine reaches it, the server.properties the image's wrapper wrote, and what moves
    compose's commands here."""

    bootstrap: str
    properties: Path
    secrets: Path
    home: Path
    ports: dict[int, int]

    def moved(self, command: str, service: str) -> str:
        """A command of compose's for ``service``, its paths and addresses moved to this machine."""
        moved = command.replace("/opt/kafka", str(self.home))
        moved = moved.replace(SECRETS_MOUNT, str(mount_secrets(service, self.secrets)))
        return ADDRESS.sub(lambda m: f"127.0.0.1:{self.ports.get(int(m['port']), m['port'])}", moved)

    def options(self, user: str, password: str | None = None, ca_file: Path | None = None) -> dict:
        """aiokafka's options of a login as ``user`` (``admin`` or ``rentalstream-<service>``),
        with its password from its secret and compose's CA unless told otherwise."""
        secret = self.secrets / f"kafka_{user.removeprefix('rentalstream-')}"
        login = KafkaSettings(
            bootstrap=self.bootstrap,
            security_protocol="SASL_SSL",
            sasl_username=user,
            sasl_password=password or secret.read_text().strip(),
            ca_file=ca_file or self.secrets / "ca.pem",
        )
        return client_options(login)

    def login_of(self, service: str) -> dict[str, str]:
        """compose's RENTALSTREAM_KAFKA_* settings of ``service``, moved to this machine."""
        environment = SERVICES[service]["environment"]
        return {
            name: self.bootstrap
            if name == "RENTALSTREAM_KAFKA_BOOTSTRAP"
            else self.moved(with_defaults(value), service)
            for name, value in environment.items()
            if name.startswith("RENTALSTREAM_KAFKA_")
        }

    def healthcheck(self) -> subprocess.CompletedProcess:
        """compose's healthcheck of ``kafka``, run here, on a copy of its client
        properties with their paths moved."""
        kind, command = SERVICES["kafka"]["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        moved = self.secrets / ".moved"
        moved.mkdir(exist_ok=True)
        properties = mount_secrets("kafka", self.secrets) / "kafka_admin.properties"
        (moved / properties.name).write_text(self.moved(properties.read_text(), "kafka"))
        command = self.moved(command, "kafka").replace(str(properties), str(moved / properties.name))
        return subprocess.run(
            ["sh", "-c", command.replace("> /dev/null 2>&1", "")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def run_kafka_logins(env: dict[str, str], home: Path, secrets: Path, configs: dict[str, Path]) -> str:
    """compose's one-shot ``kafka-logins`` job: its entrypoint, the script compose mounts,
    with the job's environment and the image's paths moved here (its secrets in ``secrets``)."""
    job = SERVICES["kafka-logins"]
    (mount,) = job["configs"]
    program, target = job["entrypoint"]
    assert target == mount["target"]
    script = Path(__file__).resolve().parents[1] / COMPOSE["configs"][mount["source"]]["file"]
    done = subprocess.run(
        [program, str(script)],
        env={
            "PATH": os.environ["PATH"],
            **env,
            "KAFKA_HOME": str(home),
            "SECRETS": str(secrets),
            **{name: str(path) for name, path in configs.items()},
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"compose's kafka-logins job failed:\n{done.stdout}{done.stderr}"
    return done.stdout


@contextmanager
def compose_kafka(runtime: KafkaRuntime, folder: Path, secrets: Path) -> Iterator[ComposeKafka]:
    """compose's Kafka node, with the secrets ``make compose-secrets`` wrote in ``secrets``.

    First compose's ``kafka-logins`` job formats the log with the SCRAM logins. Then, as
    the image's launch script does, Kafka's own docker wrapper (``kafka.docker.
    KafkaDockerWrapper setup``) turns the ``kafka`` environment into server.properties
    and formats the log, which it finds formatted ("already formatted" is what the
    launch script lets pass), and the node starts on that file with KAFKA_OPTS. Stopped
    (by pid) on the way out."""
    env = kafka_image_environment(SERVICES["kafka"]["environment"])
    ports = {port: free_port() for port in compose_ports(env)}
    env = on_this_machine(env, ports, folder / "data", mount_secrets("kafka", secrets))
    job_secrets = mount_secrets("kafka-logins", secrets)
    job_env = on_this_machine(
        {name: with_defaults(value) for name, value in SERVICES["kafka-logins"]["environment"].items()},
        ports,
        folder / "data",
        job_secrets,
    )
    defaults, mounted, final = (folder / name for name in ("docker-defaults", "docker-mounted", "config"))
    for directory in (defaults, mounted, final):
        directory.mkdir(parents=True, exist_ok=True)
    # The image's defaults: used only where the environment says nothing.
    (defaults / "server.properties").write_text("")
    for name in ("log4j2.yaml", "tools-log4j2.yaml"):
        shutil.copy(LOG4J_CONFIG, defaults / name)
    home = kafka_home(runtime, folder / "opt-kafka")
    run_kafka_logins(job_env, home, job_secrets, {"DOCKER_CONFIGS": defaults, "MOUNTED_CONFIGS": mounted})
    # As the image's launch script runs it (kafka-run-class.sh, with KAFKA_OPTS).
    setup = subprocess.run(
        [
            home / "bin" / "kafka-run-class.sh",
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
    printed = setup.stdout + setup.stderr
    assert setup.returncode == 0 or "already formatted" in printed.lower(), (
        f"the docker wrapper refused compose's environment:\n{printed}"
    )
    properties = final / "server.properties"
    bootstrap = ADDRESS.sub(
        lambda m: f"127.0.0.1:{ports[int(m['port'])]}",
        with_defaults(COMPOSE["x-kafka"]["RENTALSTREAM_KAFKA_BOOTSTRAP"]),
    )
    command = runtime.command("kafka.Kafka", str(properties))
    command[1:1] = shlex.split(env.get("KAFKA_OPTS", ""))  # as kafka-server-start.sh passes it
    with (folder / "kafka.log").open("ab") as log:
        node = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        host, port = bootstrap.split(":")
        wait_for_port(host, int(port), timeout=90, process=node)
        yield ComposeKafka(bootstrap, properties, secrets, home, ports)
    finally:
        stop_pid(node.pid, timeout=30)


# -- compose's PostgreSQL, as the postgres image runs it ---------------------------------

# The entrypoint's copy of the server's key, where PostgreSQL's user alone may read it.
INSTALL = re.compile(r"install -m (?P<mode>\d+) -o postgres -g postgres (?P<source>\S+) (?P<target>\S+)")


@dataclass
class ComposePostgres:
    """compose's PostgreSQL on this machine, and what moves compose's URLs here."""

    port: int
    secrets: Path

    def moved(self, url: str, service: str) -> str:
        """A URL of compose's for ``service``: postgres:5432 as this machine reaches it,
        its CA file where that service's secrets are."""
        url = with_defaults(url).replace("@postgres:5432/", f"@127.0.0.1:{self.port}/")
        return url.replace(SECRETS_MOUNT, str(mount_secrets(service, self.secrets)))

    def url_of(self, service: str) -> str:
        return self.moved(SERVICES[service]["environment"]["RENTALSTREAM_DATABASE_URL"], service)


@contextmanager
def compose_postgres(folder: Path, secrets: Path) -> Iterator[ComposePostgres]:
    """compose's ``postgres`` service, with the secrets ``make compose-secrets`` wrote in
    ``secrets``: Debian's build of the server (the embedded one has no TLS), its data
    folder made as the image's entrypoint makes it on a first start (``initdb`` with
    POSTGRES_USER and POSTGRES_PASSWORD, then POSTGRES_DB and the scripts of
    /docker-entrypoint-initdb.d), its key copied as compose's entrypoint copies it, then
    started with compose's command line: its secrets, its key and its configs moved here,
    listening on 127.0.0.1 and a free port. Stopped by its pid on the way out."""
    from tests.debian_postgres import as_server_user, server_programs

    service = SERVICES["postgres"]
    env = {name: with_defaults(value) for name, value in service["environment"].items()}
    bin_dir, pgdata = server_programs(), folder / "data"
    pgdata.mkdir(parents=True, mode=0o700)
    # The image's paths, as this machine has them: its secrets, its home, its configs.
    paths = {
        SECRETS_MOUNT: mount_secrets("postgres", secrets, into=folder / "run-secrets"),
        "/var/lib/postgresql": folder,
    }
    configs = {}
    for config in service["configs"]:
        configs[config["target"]] = folder / "configs" / Path(config["target"]).name
        configs[config["target"]].parent.mkdir(exist_ok=True)
        configs[config["target"]].write_text(COMPOSE["configs"][config["source"]]["content"])

    def here(value: str) -> str:
        for image_path, local in {**configs, **paths}.items():
            value = value.replace(image_path, str(local))
        return value

    (install,) = INSTALL.finditer(" ".join(service["entrypoint"]))
    key = Path(here(install["target"]))
    shutil.copy(here(install["source"]), key)
    key.chmod(int(install["mode"], 8))
    password = folder / "password"
    password.write_text(env["POSTGRES_PASSWORD"] + "\n")
    user = as_server_user(folder)  # the data folder, the key and the password file are the server user's
    subprocess.run(
        [bin_dir / "initdb", "-D", pgdata, f"--username={env['POSTGRES_USER']}", f"--pwfile={password}"],
        check=True,
        capture_output=True,
        user=user,
    )
    password.unlink()
    port = free_port()
    program, *arguments = service["command"]
    assert program == "postgres"
    command = [bin_dir / "postgres", "-D", pgdata, *map(here, arguments)]
    command += ["-c", "listen_addresses=127.0.0.1", "-p", str(port), "-c", "unix_socket_directories="]
    with (folder / "server.log").open("ab") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, user=user, start_new_session=True)
    try:
        wait_for_port("127.0.0.1", port, timeout=60, process=server)
        postgres = ComposePostgres(port, secrets)
        _first_start(postgres, env, [configs[c["target"]] for c in service["configs"] if "initdb.d" in c["target"]])
        yield postgres
    finally:
        server.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
        stop_pid(server.pid, timeout=30)


def _first_start(postgres: ComposePostgres, env: dict[str, str], scripts: list[Path]) -> None:
    """What the image does on an empty data folder after initdb: POSTGRES_DB, then the scripts."""
    import psycopg

    admin = postgres.url_of("init")
    with psycopg.connect(admin.replace(f"/{env['POSTGRES_DB']}?", "/postgres?"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{env["POSTGRES_DB"]}"')
    with psycopg.connect(admin, autocommit=True) as conn:
        for script in scripts:
            conn.execute(script.read_text())
